"""Atomic checkpoints of a run: one .npz file, or chunk files of a multi-process run."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping

import jax
import numpy as np

from sgdlab._files import TMP_MARK, atomic_npz, atomic_text


def _flatten(tree, prefix="") -> dict[str, np.ndarray]:
    """Nested dicts of arrays -> {"a/b/c": array} (for npz checkpoints, no pickle)."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = np.asarray(v)
    return out


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict:
    out: dict = {}
    for path, v in flat.items():
        node = out
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


def _read_npz(path: str) -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as z:
        return json.loads(str(z["meta"])), {k: z[k] for k in z.files if k != "meta"}


class Checkpoint:
    """Atomic checkpoints of a run in one ``.npz`` file (no pickle).

    Holds the configuration (JSON) and its hash, the layout (chunk and segment
    sizes), the host results of finished chunks and the carried state of the
    current chunk (members, optimizer and recorder states) at a segment boundary.
    """

    def __init__(self, path, every_seconds: float = 60.0, every_steps: int | None = None):
        self.path = os.fspath(path)
        self.every_seconds, self.every_steps = every_seconds, every_steps
        self.last_time, self.last_step = time.perf_counter(), 0
        self.writes = 0

    def due(self, global_step: int) -> bool:
        if self.every_steps is not None and global_step - self.last_step >= self.every_steps:
            return True
        return time.perf_counter() - self.last_time >= self.every_seconds

    def write(self, meta: dict, done: dict, carry, global_step: int):
        arrays = {f"done/{k}": v for k, v in _flatten(done).items()}
        if carry is not None:
            for i, leaf in enumerate(jax.tree_util.tree_leaves(jax.device_get(carry))):
                arrays[f"carry/{i}"] = np.asarray(leaf)
        arrays["meta"] = np.asarray(json.dumps(meta, sort_keys=True))
        atomic_npz(self.path, arrays)
        self.last_time, self.last_step = time.perf_counter(), global_step
        self.writes += 1

    def read(self) -> tuple[dict, dict, list[np.ndarray]] | None:
        if not os.path.exists(self.path):
            return None
        with np.load(self.path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            done = _unflatten({k[5:]: z[k] for k in z.files if k.startswith("done/")})
            n = sum(k.startswith("carry/") for k in z.files)
            leaves = [z[f"carry/{i}"] for i in range(n)]
        return meta, done, leaves


class ChunkStore:
    """Chunk-level checkpoints of a multi-process run (``jax.distributed``), no pickle.

    The manifest sits at the checkpoint's path (an ``.npz`` holding only ``meta``:
    configuration, layout, random-stream version, finished chunks; written by
    process 0). Next to it, the directory ``<path>.d`` holds one file per finished
    chunk (``chunk<c>.npz``, its host results) and one per unfinished chunk that
    was checkpointed (``carry<c>.npz``, its carried state at a segment boundary),
    each written atomically by the process that ran the chunk, and ``token``, by
    which process 0 checks at start that every process sees the same directory.
    The files are the truth: the manifest's list of finished chunks may lag.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self.dir = f"{self.path}.d"

    def read_manifest(self) -> dict | None:
        if not os.path.exists(self.path):
            return None
        with np.load(self.path, allow_pickle=False) as z:
            return json.loads(str(z["meta"]))

    def write_manifest(self, meta: dict) -> None:
        atomic_npz(self.path, {"meta": np.asarray(json.dumps(meta, sort_keys=True))})

    def prepare(self, fresh: bool = False) -> None:
        """Create the directory and drop temporaries of writes a kill interrupted (with
        ``fresh``, everything: parts left without a manifest belong to no resumable run)."""
        os.makedirs(self.dir, exist_ok=True)
        for name in os.listdir(self.dir):
            if fresh or TMP_MARK in name:
                os.unlink(os.path.join(self.dir, name))

    def write_token(self) -> str:
        token = os.urandom(16).hex()
        atomic_text(os.path.join(self.dir, "token"), token)
        return token

    def read_token(self) -> str | None:
        try:
            with open(os.path.join(self.dir, "token")) as f:
                return f.read()
        except OSError:
            return None

    def scan(self) -> tuple[list[int], dict[int, int]]:
        """Finished chunks, and the segment each checkpointed unfinished chunk is at."""
        done, carries = set(), {}
        for name in os.listdir(self.dir) if os.path.isdir(self.dir) else ():
            stem, ext = os.path.splitext(name)
            if ext != ".npz":
                continue
            if stem.startswith("chunk") and stem[5:].isdigit():
                done.add(int(stem[5:]))
            elif stem.startswith("carry") and stem[5:].isdigit():
                try:
                    meta, _ = _read_npz(os.path.join(self.dir, name))
                except FileNotFoundError:
                    # another process finished that chunk since the listing and removed the
                    # carry (its chunk file is on disk: the next scan lists it)
                    continue
                carries[int(stem[5:])] = int(meta["segment"])
        return sorted(done), {c: s for c, s in carries.items() if c not in done}

    def _file(self, kind: str, c: int) -> str:
        return os.path.join(self.dir, f"{kind}{c}.npz")

    def write_chunk(self, c: int, result: dict, meta: dict) -> None:
        arrays = {f"done/{k}": v for k, v in _flatten(result).items()}
        arrays["meta"] = np.asarray(json.dumps({**meta, "chunk": c}, sort_keys=True))
        atomic_npz(self._file("chunk", c), arrays)
        if os.path.exists(self._file("carry", c)):
            os.unlink(self._file("carry", c))

    def read_chunk(self, c: int) -> tuple[dict, dict]:
        meta, arrays = _read_npz(self._file("chunk", c))
        return meta, _unflatten({k[5:]: v for k, v in arrays.items() if k.startswith("done/")})

    def write_carry(self, c: int, segment: int, carry, meta: dict) -> None:
        arrays = {f"carry/{i}": np.asarray(leaf) for i, leaf
                  in enumerate(jax.tree_util.tree_leaves(jax.device_get(carry)))}
        arrays["meta"] = np.asarray(json.dumps({**meta, "chunk": c, "segment": segment},
                                               sort_keys=True))
        atomic_npz(self._file("carry", c), arrays)

    def read_carry(self, c: int) -> tuple[dict, list[np.ndarray]]:
        meta, arrays = _read_npz(self._file("carry", c))
        n = sum(k.startswith("carry/") for k in arrays)
        return meta, [arrays[f"carry/{i}"] for i in range(n)]
