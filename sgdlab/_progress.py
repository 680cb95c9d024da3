"""Progress of a run on stderr: a tqdm bar on a terminal, sparse plain lines in a log.

:class:`Progress` has the interface of the engine's bar (``Progress(total, enabled,
label, done)``, ``tick(n, note)``, ``close()``, a settable ``total``). On a terminal it
draws a `tqdm <https://tqdm.github.io>`_ bar with the elapsed time, the ETA and the
throughput in member-steps per second (when ``work_per_tick`` says how many
member-steps a tick stands for). When the stream is not a terminal (a log file, a
pipe, CI) it writes a plain line at most every ``min_interval`` seconds *and* every
``min_fraction`` of the work, whichever comes later, and one closing line: never a
carriage return, never a line per tick.

:func:`human_names` turns the internal names of an experiment's studies into what a
reader recognises, e.g. ``learning_rate=0.1, batch_size=4 (3/8)``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from typing import IO, Any

import numpy as np

__all__ = ["Progress", "human_names"]


def _duration(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


def _rate(x: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.3g}"


class Progress:
    """Progress of ``total`` ticks (segments) on ``stream`` (default: stderr).

    Args:
        total: number of ticks the run will make.
        enabled: False draws nothing.
        label: what is running (e.g. the study's human name).
        done: ticks already done (a resumed run).
        work_per_tick: member-steps per tick; with it the throughput is given in
            member-steps/s (else in ticks/s).
        stream: where to write (default ``sys.stderr`` at construction).
        delay: seconds before anything is shown (short runs stay silent).
        min_interval, min_fraction: on a non-terminal, a line is written only once
            both this many seconds and this fraction of ``total`` have passed since
            the last line.
        tty: force the terminal (True) or the plain-line (False) display; default:
            ``stream.isatty()``.
    """

    def __init__(self, total: int, enabled: bool = True, label: str = "sgdlab", done: int = 0,
                 *, work_per_tick: float | None = None, stream: IO[str] | None = None,
                 delay: float = 2.0, min_interval: float = 10.0, min_fraction: float = 0.1,
                 tty: bool | None = None):
        self.enabled, self.label = enabled, label
        self.done, self.start_done = done, done
        self.work_per_tick = work_per_tick
        self.stream = sys.stderr if stream is None else stream
        self.delay, self.min_interval, self.min_fraction = delay, min_interval, min_fraction
        self.start = time.perf_counter()
        self.shown, self.closed, self.note = False, False, ""
        self._total = total
        self._last_time, self._last_done = self.start, done
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty and isatty())
        self.tty = tty
        self._bar = None
        if enabled and tty:
            from tqdm import tqdm

            self._scale = work_per_tick or 1
            self._bar = tqdm(total=total * self._scale, initial=done * self._scale, desc=label,
                             file=self.stream, delay=delay,
                             unit="member-steps" if work_per_tick else "segments",
                             unit_scale=True, dynamic_ncols=True, leave=True, smoothing=0.1)

    @property
    def total(self) -> int:
        return self._total

    @total.setter
    def total(self, value: int) -> None:
        self._total = value
        if self._bar is not None:
            self._bar.total = value * self._scale
            self._bar.refresh()

    def tick(self, n: int = 1, note: str = "") -> None:
        """Record ``n`` more ticks; ``note`` (e.g. ``chunk 2/3``) is shown with them."""
        self.done += n
        self.note = note
        if not self.enabled or self.closed:
            return
        if self._bar is not None:
            if note:
                self._bar.set_postfix_str(note, refresh=False)
            self._bar.update(n * self._scale)
            return
        now = time.perf_counter()
        if now - self.start < self.delay:
            return
        due_time = now - self._last_time >= self.min_interval
        due_work = (self.done - self._last_done) >= self.min_fraction * max(self.total, 1)
        if due_time and due_work and self.done < self.total:
            self._line(now)

    def _line(self, now: float, final: bool = False) -> None:
        elapsed = now - self.start
        new = self.done - self.start_done
        rate = new / elapsed if elapsed > 0 else math.nan
        frac = self.done / max(self.total, 1)
        parts = [f"[{self.label}] {100 * frac:3.0f}% ({self.done}/{self.total})",
                 f"{_duration(elapsed)} elapsed"]
        if not final:
            eta = (self.total - self.done) / rate if rate > 0 else math.inf
            parts.append(f"ETA {_duration(eta)}")
        if self.work_per_tick and rate > 0:
            parts.append(f"{_rate(rate * self.work_per_tick)} member-steps/s")
        elif rate > 0:
            parts.append(f"{rate:.3g} segments/s")
        if self.note and not final:
            parts.append(self.note)
        self.stream.write(", ".join(parts) + ("  done" if final else "") + "\n")
        self.stream.flush()
        self.shown, self._last_time, self._last_done = True, now, self.done

    def close(self) -> None:
        """Finish the display (a closing line when anything was shown or the run was long)."""
        if self.closed:
            return
        self.closed = True
        if self._bar is not None:
            self._bar.close()
            return
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.shown or now - self.start >= self.min_interval:
            self._line(now, final=True)


def _fmt(v: Any) -> str:
    try:
        import numpy as np

        a = np.asarray(v)
        if a.ndim == 0:
            x = a.item()
            return f"{x:g}" if isinstance(x, float) else str(x)
        return "[" + ", ".join(_fmt(x) for x in a.tolist()) + "]"
    except (TypeError, ValueError):
        return str(v)


def human_names(hparams: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Readable labels for several studies from their hyperparameters.

    Each study is named by the hyperparameters whose values differ between the
    studies, in the order of the first study, followed by ``(i/n)``; a lone study
    (or studies that differ in nothing shown) keeps its internal name.

    Args:
        hparams: internal study name -> its hyperparameters (``Study.hparams``).

    Returns:
        internal name -> label, e.g. ``{"S1_lr0": "learning_rate=0.1, batch_size=4 (1/8)"}``.
    """
    names = list(hparams)
    count = len(names)
    keys: list[str] = []
    for study in hparams.values():
        keys += [k for k in study if k not in keys]
    # a key names the study when it takes one value per study and differs between them;
    # swept lists (grid dimensions inside each study) do not name a study
    shown = [k for k in keys
             if all(np.ndim(h.get(k, 0)) == 0 for h in hparams.values())
             and len({_fmt(h[k]) if k in h else None for h in hparams.values()}) > 1]
    out = {}
    for i, name in enumerate(names):
        h = hparams[name]
        text = ", ".join(f"{k}={_fmt(h[k])}" for k in shown if k in h) or name
        out[name] = f"{text} ({i + 1}/{count})" if count > 1 else text
    return out
