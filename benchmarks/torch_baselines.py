"""PyTorch baselines (optional: ``pip install sgdlab[bench]`` or any torch wheel).

The same models as the JAX workloads, written the way a PyTorch user would:

* ``torch_eager_loop``: one member at a time, autograd per step, a Python loop
  over steps (and over members);
* ``torch_vmap``: ``torch.func.vmap(torch.func.grad(loss))`` over parameters
  stacked along a member axis, each member drawing its own data every step (the
  naive pattern), a Python loop over steps.

Only throughput matters here; the random streams are torch's own.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import torch
from torch.func import grad, vmap


def _reduce(err: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "half_mean":
        return 0.5 * err.mean()
    if reduction == "mean":
        return err.mean()
    if reduction == "half_sum":
        return 0.5 * err.sum()
    return err.sum()


def _mlp_apply(params, x):
    h = x
    n = len(params) // 2
    for i in range(n):
        h = h @ params[2 * i] + params[2 * i + 1]
        if i < n - 1:
            h = torch.relu(h)
    return h[..., 0]


class MLP:
    """A ReLU MLP on online inputs with a teacher or constant target."""

    aux_in_dim, batch_in_dims = None, (0, 0)

    def __init__(self, sizes, batch, inputs="gaussian", target="teacher", teacher_sizes=None,
                 target_value=0.0, reduction="half_mean", box=(0.0, 1.0)):
        self.sizes, self.batch, self.inputs, self.target = tuple(sizes), batch, inputs, target
        self.target_value, self.reduction, self.box = target_value, reduction, box
        gen = torch.Generator().manual_seed(12345)
        self.teacher = (self._init((), tuple(teacher_sizes or sizes), gen)
                        if target == "teacher" else None)

    @staticmethod
    def _init(prefix, sizes, gen):
        params = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
            params.append(torch.randn(prefix + (n_in, n_out), generator=gen)
                          * math.sqrt(2.0 / n_in))
            params.append(torch.zeros(prefix + (n_out,)))
        return params

    def init(self, prefix, gen):
        return self._init(prefix, self.sizes, gen), None

    def draw(self, prefix, gen):
        shape = prefix + (self.batch, self.sizes[0])
        if self.inputs == "gaussian":
            x = torch.randn(shape, generator=gen)
        else:
            lo, hi = self.box
            x = lo + (hi - lo) * torch.rand(shape, generator=gen)
        with torch.no_grad():
            if self.teacher is None:
                y = torch.full(x.shape[:-1], self.target_value)
            else:
                y = _mlp_apply(self.teacher, x)
        return x, y

    def loss(self, params, aux, x, y):
        return _reduce((_mlp_apply(params, x) - y) ** 2, self.reduction)


class DuTwoLayer:
    """Du et al.'s ``m^{-1/2} Σ a_r ReLU(w_r·x)`` on a fixed data set, ``a`` fixed."""

    aux_in_dim, batch_in_dims = 0, (None, None)

    def __init__(self, width, n_data, dim, reduction="half_sum"):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n_data, dim))
        self.X = torch.tensor(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=torch.float32)
        self.y = torch.tensor(rng.standard_normal(n_data), dtype=torch.float32)
        self.width, self.dim, self.reduction = width, dim, reduction

    def init(self, prefix, gen):
        W = torch.randn(prefix + (self.width, self.dim), generator=gen)
        a = torch.randint(0, 2, prefix + (self.width,), generator=gen).float() * 2 - 1
        return [W], a

    def draw(self, prefix, gen):
        return self.X, self.y

    def loss(self, params, a, X, y):
        f = torch.relu(X @ params[0].T) @ a / math.sqrt(self.width)
        return _reduce((f - y) ** 2, self.reduction)


class Quadratic:
    """``½ k w² + ξ w`` with ξ ~ N(0, c): the 1-D noisy quadratic."""

    aux_in_dim, batch_in_dims = None, (0,)

    def __init__(self, curvature=1.0, noise_var=1.0):
        self.k, self.s = float(curvature), math.sqrt(float(noise_var))

    def init(self, prefix, gen):
        return [torch.zeros(prefix + (1,))], None

    def draw(self, prefix, gen):
        return (torch.randn(prefix + (1,), generator=gen),)

    def loss(self, params, aux, xi):
        w = params[0]
        return (0.5 * self.k * w * w + self.s * xi * w).sum()


def _lr(hp, t):
    """The step size of update ``t`` (1-based): constant or ``γ0/(t+n0)^α``."""
    if "learning_rate" in hp:
        return hp["learning_rate"]
    return hp["gamma0"] / (t + hp.get("n0", 0.0)) ** hp["alpha"]


def eager_loop(model, hps: list[dict], steps: int, stat_burn_in: int | None = None):
    """``run()``: each member in turn, autograd per step, Python loops."""
    def run():
        gen = torch.Generator().manual_seed(0)
        out = []
        for hp in hps:
            params, aux = model.init((), gen)
            for p in params:
                p.requires_grad_(True)
            acc = 0.0
            for t in range(1, steps + 1):
                batch = model.draw((), gen)
                loss = model.loss(params, aux, *batch)
                grads = torch.autograd.grad(loss, params)
                with torch.no_grad():
                    lr = _lr(hp, t)
                    for p, g in zip(params, grads, strict=True):
                        p.sub_(lr * g)
                    if stat_burn_in is not None and t > stat_burn_in:
                        acc = acc + params[0].square().sum()
            out.append((float(loss.detach()), float(acc)))
        return out
    return run


def vmapped(model, hp: dict, members: int, steps: int, stat_burn_in: int | None = None):
    """``run()``: ``vmap(grad(loss))`` over stacked members, own data per member."""
    g = vmap(grad(model.loss), in_dims=(0, model.aux_in_dim) + model.batch_in_dims)
    hp_t = {k: torch.as_tensor(np.asarray(v), dtype=torch.float32) for k, v in hp.items()}

    def run():
        gen = torch.Generator().manual_seed(0)
        params, aux = model.init((members,), gen)
        acc = torch.zeros(members)
        with torch.no_grad():
            for t in range(1, steps + 1):
                batch = model.draw((members,), gen)
                grads = g(params, aux, *batch)
                lr = _lr(hp_t, t)
                params = [p - lr.reshape((-1,) + (1,) * (p.ndim - 1)) * gp
                          for p, gp in zip(params, grads, strict=True)]
                if stat_burn_in is not None and t > stat_burn_in:
                    acc += params[0].square().reshape(members, -1).sum(1)
        return params, acc
    return run


def set_threads():
    torch.set_num_threads(os.cpu_count() or 1)


def best_of_threads(run, probe=None):
    """``run`` with the faster of 1 and all intra-op threads (recorded as ``.threads``).

    The choice is made by timing ``probe`` (default ``run`` itself) with each setting,
    alternating, twice.
    Per-member eager steps are too small to gain from threads, and on a loaded
    machine torch's thread pool can make small operations many times slower; the
    baseline gets the better setting.
    """
    probe = probe or run
    n = os.cpu_count() or 1
    best: dict[int, float] = {}
    for _ in range(2):  # alternate the settings twice; keep each one's best time
        for threads in sorted({1, n}):
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            probe()
            best[threads] = min(best.get(threads, math.inf), time.perf_counter() - t0)
    threads = min(best, key=best.get)

    def timed():
        torch.set_num_threads(threads)
        try:
            return run()
        finally:
            torch.set_num_threads(n)

    timed.threads = threads
    return timed


def version() -> str:
    return torch.__version__
