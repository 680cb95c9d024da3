"""Atomic checkpoints of a run in one .npz file (no pickle)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping

import jax
import numpy as np


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
        tmp = f"{self.path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
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
