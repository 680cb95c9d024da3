"""Exact discrete-time mean first-passage times of 1-D SGD (Nyström) and Arrhenius
temperatures."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from sgdlab.theory._checks import as_output, check_1d, finite_array, fmt


def _gauss_legendre_panels(
    lo: float, hi: float, n_panels: int, order: int
) -> tuple[np.ndarray, np.ndarray]:
    xg, wg = np.polynomial.legendre.leggauss(order)
    edges = np.linspace(lo, hi, n_panels + 1)
    half = 0.5 * np.diff(edges)
    mid = 0.5 * (edges[:-1] + edges[1:])
    nodes = (mid[:, None] + half[:, None] * xg[None, :]).ravel()
    weights = (half[:, None] * wg[None, :]).ravel()
    return nodes, weights


def _mfpt_setup(grad_U, lr, noise_var, lo, hi, order):
    lam = float(finite_array(lr, "lr"))
    s2 = float(finite_array(noise_var, "noise_var"))
    lo = float(finite_array(lo, "lo"))
    hi = float(finite_array(hi, "hi"))
    if lam <= 0 or s2 <= 0:
        raise ValueError(f"need lr > 0 and noise_var > 0, got {lr!r}, {noise_var!r}")
    if not lo < hi:
        raise ValueError(f"need lo < hi, got {lo!r}, {hi!r}")
    if int(order) != order or order < 2:
        raise ValueError(f"order must be an integer ≥ 2, got {order!r}")
    width = lam * math.sqrt(s2)
    min_panels = math.ceil((hi - lo) / (2.0 * width))
    return lam, width, lo, hi, min_panels


def _mfpt_solve(grad_U, lam, width, lo, hi, n_nodes, order, x0):
    """τ at ``x0`` and the node count, by an accurate solve of (I − P W) τ = 1.

    At large τ the system is nearly singular (its smallest eigenvalue is ≈ 1/τ),
    and a plain solve loses about log10(τ) digits to rounding: ~10⁻⁴ relative at
    τ ≈ 10⁹. So the operator is written ``A = diag(e) + L`` with ``e_i`` the exact
    Gaussian mass leaving [lo, hi] from node i (erfc; the quadrature's own row sums
    are replaced by ``1 − e_i``, exact mass conservation) and ``L = diag(P·1) − P``
    a generator (rows summing to 0), and the LU solve is followed by iterative
    refinement with the residual ``1 − e∘τ − L(τ − c)`` (c a constant; ``L·1 = 0``)
    computed without the cancellation of ``τ − Pτ``.
    """
    import scipy.linalg
    from scipy.special import ndtr

    n_panels = max(1, math.ceil(n_nodes / order))
    y, w = _gauss_legendre_panels(lo, hi, n_panels, order)

    def mean_of(x):
        g = np.asarray(grad_U(x), dtype=np.float64)
        if g.shape != x.shape or not np.all(np.isfinite(g)):
            raise ValueError("grad_U must return finite values of the input's shape")
        return x - lam * g

    norm = 1.0 / (width * math.sqrt(2 * math.pi))

    def kernel(x):  # p(x -> y_j) w_j, shape (len(x), n)
        z = (y[None, :] - mean_of(x)[:, None]) / width
        return norm * np.exp(-0.5 * z * z) * w[None, :]

    P = kernel(y)
    m = mean_of(y)
    e = ndtr((lo - m) / width) + ndtr((m - hi) / width)  # exact mass leaving [lo, hi]
    rows = P.sum(axis=1)
    A = -P
    A[np.diag_indices_from(A)] += rows + e
    lu = scipy.linalg.lu_factor(A, check_finite=False)
    tau = scipy.linalg.lu_solve(lu, np.ones(y.size), check_finite=False)
    for _ in range(6):
        c = float(np.max(tau))
        u = tau - c
        r = 1.0 - e * tau - (rows * u - P @ u)
        d = scipy.linalg.lu_solve(lu, r, check_finite=False)
        tau = tau + d
        if np.max(np.abs(d) / np.abs(tau)) < 1e-15:
            break
    return 1.0 + kernel(x0) @ tau, y.size


def mfpt_nystrom(
    grad_U: Callable[[np.ndarray], Any],
    lr: Any,
    noise_var: Any,
    lo: Any,
    hi: Any,
    n_nodes: int = 200,
    x0: Any = None,
    *,
    order: int = 10,
) -> float | np.ndarray:
    """Exact mean first-passage time of 1-D SGD with Gaussian gradient noise (Nyström).

    Chain: w_{t+1} = w_t − λ(U'(w_t) + σ ξ_t), ξ_t ~ N(0, 1). The walker has
    escaped at the first step t ≥ 1 after which w_t ∉ [lo, hi] (checked once per
    step, after the step; the start may lie anywhere). The mean number of steps
    τ(x) solves the Fredholm equation of the second kind

      τ(x) = 1 + ∫_lo^hi p(x → y) τ(y) dy,
      p(x → y) = N(y; x − λU'(x), (λσ)²).

    Nyström method: composite Gauss–Legendre quadrature (``order`` nodes on
    each of equal panels) gives (I − P W) τ = 1 on the nodes y_j, and then
    τ(x0) = 1 + Σ_j w_j p(x0 → y_j) τ_j. The kernel is a Gaussian of width λσ
    in y, so the panel width is capped at 2λσ (≥ 5 nodes per standard
    deviation at order 10): the node count actually used is
    max(n_nodes, order·⌈(hi − lo)/(2λσ)⌉), rounded up to a multiple of
    ``order``. Memory and time are O(n²) and O(n³). Check convergence with
    :func:`mfpt_nystrom_converged`.

    Accuracy at large τ: (I − PW) has an eigenvalue ≈ 1/τ, so a plain solve loses
    about log10(τ) digits to rounding. The solve uses the exact Gaussian mass
    leaving [lo, hi] for the diagonal (erfc) and iterative refinement with a
    cancellation-free residual, which keeps near machine precision up to
    τ ≈ 10¹³ (relative changes under node doubling stay at the discretization
    error, not the rounding error). The method is the exact discrete-time oracle
    for the escape experiments of Liu, Ziyin, Ueda, arXiv:2012.03636.

    To model escape through one side only (e.g. over the barrier of a double
    well) put the other bound where the chain never goes (a negligible kernel
    mass leaks there); the result is then insensitive to that bound.

    Args:
      grad_U: vectorised U', mapping a float64 array to an array of its shape.
      lr: λ > 0.
      noise_var: σ² > 0, the variance of the gradient noise.
      lo, hi: the non-escaped region [lo, hi].
      n_nodes: minimum number of quadrature nodes.
      x0: starting point(s); default the midpoint (lo + hi)/2.
      order: Gauss–Legendre nodes per panel.

    Returns:
      τ(x0) in steps (float for scalar x0, else an array of x0's shape).

    Raises:
      ValueError: malformed input or a grad_U with non-finite output.
    """
    lam, width, lo, hi, min_panels = _mfpt_setup(grad_U, lr, noise_var, lo, hi, order)
    n = max(int(n_nodes), min_panels * order)
    x = np.asarray((lo + hi) / 2 if x0 is None else finite_array(x0, "x0"), dtype=np.float64)
    tau, _ = _mfpt_solve(grad_U, lam, width, lo, hi, n, order, x.reshape(-1))
    return as_output(tau.reshape(x.shape))


def mfpt_nystrom_converged(
    grad_U: Callable[[np.ndarray], Any],
    lr: Any,
    noise_var: Any,
    lo: Any,
    hi: Any,
    n_nodes: int = 200,
    x0: Any = None,
    *,
    tol: float = 1e-6,
    max_nodes: int = 8192,
    order: int = 10,
) -> tuple[float, int, float]:
    """:func:`mfpt_nystrom` with the node count doubled until τ(x0) has converged.

    Starting from max(n_nodes, the resolution floor of :func:`mfpt_nystrom`),
    the node count is doubled until |τ_2n − τ_n| / |τ_2n| < ``tol``. The solve
    refines its rounding error away (see :func:`mfpt_nystrom`), so the doubling
    measures the discretization alone and converges at τ up to 10¹⁰ and beyond.

    Args:
      grad_U, lr, noise_var, lo, hi, x0, order: as in :func:`mfpt_nystrom`
        (x0 a scalar).
      n_nodes: starting node count.
      tol: relative-change tolerance.
      max_nodes: the largest node count tried.

    Returns:
      (tau, n_nodes, rel_change): the finer value, the node count that gave it,
      and the relative change on the last doubling.

    Raises:
      RuntimeError: not converged by ``max_nodes`` (raise it or loosen ``tol``).
      ValueError: malformed input.
    """
    lam, width, lo, hi, min_panels = _mfpt_setup(grad_U, lr, noise_var, lo, hi, order)
    x = np.array([(lo + hi) / 2 if x0 is None else float(finite_array(x0, "x0"))])
    n = max(int(n_nodes), min_panels * order)
    n = order * math.ceil(n / order)
    prev, _ = _mfpt_solve(grad_U, lam, width, lo, hi, n, order, x)
    rel = math.inf
    while 2 * n <= max_nodes:
        n *= 2
        cur, _ = _mfpt_solve(grad_U, lam, width, lo, hi, n, order, x)
        rel = abs(float(cur[0]) - float(prev[0])) / abs(float(cur[0]))
        if rel < tol:
            return float(cur[0]), n, rel
        prev = cur
    raise RuntimeError(
        f"MFPT not converged to tol = {fmt(tol)} by {n} nodes (last relative change "
        f"{fmt(rel)}); increase max_nodes"
    )


class Temperatures(NamedTuple):
    """Effective temperatures of SGD in a quadratic well (see :func:`arrhenius_sharp_well`).

    Attributes:
      effective: discrete-time T_eff = λσ²/(2 − λa).
      continuous: continuous-time T = λσ²/2.
    """

    effective: float
    continuous: float


def arrhenius_sharp_well(lr: Any, curvature: Any, noise_var: Any) -> Temperatures:
    """Temperatures that set escape rates from a sharp quadratic minimum.

    In a well U = a w²/2 the exact stationary variance is λσ²/(a(2 − λa))
    (:func:`lzu_variance_1d`, μ = 0), i.e. a Boltzmann law exp(−U/T_eff) with
    T_eff = λσ²/(2 − λa); the continuous-time (SDE) temperature is T = λσ²/2.
    Liu, Ziyin, Ueda, arXiv:2012.03636 (escape section).

    Args:
      lr: λ > 0.
      curvature: a > 0.
      noise_var: σ² ≥ 0.

    Returns:
      ``Temperatures(effective, continuous)``.

    Raises:
      NoStationaryDistribution: unless 0 < λa < 2.
    """
    lam, a, _ = check_1d(lr, curvature, 0.0)
    s2 = float(finite_array(noise_var, "noise_var"))
    if s2 < 0:
        raise ValueError(f"noise_var must be ≥ 0, got {noise_var!r}")
    lam, a = float(lam), float(a)
    return Temperatures(lam * s2 / (2 - lam * a), lam * s2 / 2)


def arrhenius_slope(lr: Any, curvature: Any, discrete: bool = True) -> float:
    """Predicted slope of ln τ against ΔL/T with T = λσ²/2.

    Continuous time: ln τ ≈ ΔL/T + const, slope 1. With the discrete-time
    temperature of a sharp well, ln τ ≈ ΔL/T_eff, so the slope against ΔL/T is
    T/T_eff = (2 − λa)/2. Liu, Ziyin, Ueda, arXiv:2012.03636. (For a smooth
    barrier with a saddle the discrete correction is different.)

    Args:
      lr: λ > 0.
      curvature: the curvature a of the well.
      discrete: return (2 − λa)/2 if True, else 1.

    Returns:
      The slope.

    Raises:
      NoStationaryDistribution: unless 0 < λa < 2.
    """
    lam, a, _ = check_1d(lr, curvature, 0.0)
    return (2 - float(lam) * float(a)) / 2 if discrete else 1.0


def escape_rate_from_mfpt(tau: Any) -> float | np.ndarray:
    """Escape rate per step, 1/τ.

    Exact for an exponentially distributed escape time; for metastable wells
    (ΔL/T ≫ 1) the escape time is approximately exponential, so this is the
    Kramers/Arrhenius rate. Liu, Ziyin, Ueda, arXiv:2012.03636.

    Args:
      tau: mean first-passage time(s) > 0.

    Returns:
      1/τ.

    Raises:
      ValueError: τ not finite and positive.
    """
    t = finite_array(tau, "tau")
    if np.any(t <= 0):
        raise ValueError(f"tau must be > 0, got {tau!r}")
    return as_output(1.0 / t)


# exact survival of the discretized chain (the escape experiment's oracle)

TAIL_TOL = 1e-3
"""The hazard counts as in its exponential tail once within this relative distance of 1 − ρ."""


@dataclass(frozen=True)
class ChainOracle:
    """Exact escape statistics of one discrete-time chain: τ, survival, tail hazard."""

    tau: float            # mean first-passage time (steps) from the start
    tau_censored: float   # Σ_{t<c} S(t) / (1 − S(c)): the censored MLE's target at c
    hazard: float         # 1 − ρ: per-step escape probability in the exponential tail
    t_tail: int           # the hazard is within TAIL_TOL of 1 − ρ from this step on
    nodes: int            # quadrature / collocation nodes used
    t_exact: np.ndarray   # steps 0..T at which the survival was iterated
    s_exact: np.ndarray   # S(t) there; S(t) = S(T) ρ^(t−T) beyond

    def survival(self, t) -> np.ndarray:
        t = np.asarray(t, dtype=float)
        T = self.t_exact[-1]
        rho = 1.0 - self.hazard
        inside = np.interp(np.minimum(t, T), self.t_exact, self.s_exact)
        return np.where(t <= T, inside, self.s_exact[-1] * rho ** np.maximum(t - T, 0.0))


def _gauss_legendre(lo, hi, n, order=10):
    """Composite Gauss–Legendre nodes and weights, as in :func:`theory.mfpt_nystrom`."""
    panels = max(1, math.ceil(n / order))
    xg, wg = np.polynomial.legendre.leggauss(order)
    edges = np.linspace(lo, hi, panels + 1)
    half = 0.5 * np.diff(edges)
    mid = 0.5 * (edges[:-1] + edges[1:])
    return (mid[:, None] + half[:, None] * xg).ravel(), (half[:, None] * wg).ravel()


def gaussian_kernel(dU, lr, s2, lo, hi, x0, n):
    """Nyström discretization of one SGD step with Gaussian noise, killed outside [lo, hi].

    Returns ``(P, k0)``: ``P[i, j] = w_j p(y_i → y_j)`` on the Gauss–Legendre nodes
    y (the node count of :func:`sgdlab.theory.mfpt_nystrom` for ``n``) and ``k0`` the
    same row from the start ``x0``; then ``τ(x0) = 1 + k0·(I − P)⁻¹ 1`` and the
    survival is ``S(t) = k0 Pᵗ⁻¹ 1`` (t ≥ 1).
    """
    y, w = _gauss_legendre(lo, hi, n)
    width = lr * math.sqrt(s2)

    def rows(x):
        z = (y[None, :] - (x - lr * dU(x))[:, None]) / width
        return np.exp(-0.5 * z * z) / (width * math.sqrt(2 * math.pi)) * w[None, :]

    return rows(y), rows(np.array([float(x0)]))[0]


def lattice_kernel(dU, lr, atoms, probs, lo, hi, x0, m):
    """One SGD step with a discrete noise law, killed outside [lo, hi], by collocation.

    τ and the survival are represented by their values on ``m + 1`` equispaced
    nodes of [lo, hi] and interpolated linearly; the noise ζ takes the values
    ``atoms`` with probabilities ``probs``. Returns ``(P, k0)`` as
    :func:`gaussian_kernel` does.
    """
    nodes = np.linspace(lo, hi, m + 1)
    h = (hi - lo) / m

    def rows(x):
        y = (x - lr * dU(x))[:, None] - lr * atoms[None, :]
        inside = (y >= lo) & (y <= hi)
        u = np.clip((y - lo) / h, 0.0, m)
        j = np.minimum(np.floor(u).astype(np.int64), m - 1)
        f = u - j
        p = np.where(inside, probs[None, :], 0.0)
        r = np.broadcast_to(np.arange(x.size)[:, None], y.shape)
        out = np.zeros((x.size, m + 1))
        np.add.at(out, (r, j), p * (1 - f))
        np.add.at(out, (r, j + 1), p * f)
        return out

    return rows(nodes), rows(np.array([float(x0)]))[0]


def _bin(values, weights, lo, spacing, size):
    """Linear (mean-preserving) binning of point masses onto ``lo + spacing·k``."""
    u = (values - lo) / spacing
    k = np.clip(np.floor(u).astype(np.int64), 0, size - 2)
    f = u - k
    out = np.zeros(size)
    np.add.at(out, k, weights * (1 - f))
    np.add.at(out, k + 1, weights * f)
    return out


def minibatch_noise_law(z, S, per_sd: int = 100):
    """Law of the mean of S draws with replacement from the values ``z``, on a lattice.

    The empirical law of z is binned (mean-preserving) on spacing sd(z)/(2·per_sd),
    convolved S times (FFT, binary powers), mapped to the mean and re-binned on
    spacing sd(mean)/per_sd; atoms below 1e-16 are dropped. Returns ``(atoms, probs)``.
    """
    import scipy.signal  # here, not at import: it is 0.45 s of ``import sgdlab``

    z = np.asarray(z, dtype=np.float64)
    sd = float(z.std())
    dz = sd / (2 * per_sd)
    base = _bin(z, np.full(z.size, 1.0 / z.size), z.min(), dz,
                int(math.ceil((z.max() - z.min()) / dz)) + 2)
    law, k = np.array([1.0]), S
    while k:
        if k & 1:
            law = np.clip(scipy.signal.fftconvolve(law, base), 0.0, None)
        k >>= 1
        if k:
            base = np.clip(scipy.signal.fftconvolve(base, base), 0.0, None)
    mean = (S * z.min() + dz * np.arange(law.size)) / S
    keep = law > 1e-16 * law.max()
    mean, law = mean[keep], law[keep] / law[keep].sum()
    d = sd / math.sqrt(S) / per_sd
    if d > dz / S:
        grid_lo = mean.min()
        size = int(math.ceil((mean.max() - grid_lo) / d)) + 2
        law = _bin(mean, law, grid_lo, d, size)
        mean = grid_lo + d * np.arange(size)
        keep = law > 1e-16 * law.max()
        mean, law = mean[keep], law[keep] / law[keep].sum()
    return mean, law


def kernel_tau(P, k0) -> float:
    """Mean first-passage time ``1 + k0·(I − P)⁻¹·1`` of a discretized chain."""
    return 1.0 + float(k0 @ np.linalg.solve(np.eye(P.shape[0]) - P, np.ones(P.shape[0])))


def kernel_survival(P, k0, tol: float = 1e-9, max_iter: int = 50000):
    """``(S, h)``: S(t) = k0·Pᵗ⁻¹·1 for t = 0, 1, ... (S(0) = 1) and the hazards
    h(t) = 1 − S(t+1)/S(t), iterated until h has converged (power iteration on P)."""
    v = np.ones(P.shape[0])
    a = float(k0 @ v)
    ratios = [a]
    while a > 0 and len(ratios) <= max_iter:
        pv = P @ v
        a_next = float(k0 @ pv)
        ratios.append(a_next / a)
        if len(ratios) > 5 and abs(ratios[-1] - ratios[-2]) <= tol * abs(1.0 - ratios[-1]):
            break
        top = float(np.max(np.abs(pv)))
        if not top > 0:
            break
        v, a = pv / top, a_next / top
    else:
        if a > 0:
            raise RuntimeError("the survival of the escape oracle did not reach its "
                               f"exponential tail within {max_iter} steps")
    ratios = np.array(ratios)
    with np.errstate(divide="ignore"):
        s = np.exp(np.concatenate([[0.0], np.cumsum(np.log(ratios))]))
    return s, 1.0 - ratios


def oracle_from_kernel(P, k0, max_steps: int, nodes: int, tau: float | None = None) -> ChainOracle:
    """Exact survival, hazard, τ and the censored-MLE target of a discretized chain ``(P, k0)``."""
    s, h = kernel_survival(P, k0)
    haz = float(h[-1])
    rho = 1.0 - haz
    T = s.size - 1
    far = np.nonzero(np.abs(h - haz) > TAIL_TOL * haz)[0]
    t_tail = int(far[-1] + 1) if far.size else 0
    head = float(np.sum(s[:-1]))
    tau_sum = head + s[-1] / haz
    if tau is None:
        tau = kernel_tau(P, k0)
    c = max_steps
    if c <= T:
        tau_c = float(np.sum(s[:c]) / (1.0 - s[c]))
    else:
        tail_c = rho ** (c - T)
        tau_c = (head + s[-1] * (1.0 - tail_c) / haz) / (1.0 - s[-1] * tail_c)
    # the power iteration and the linear solve must agree on τ
    if not abs(tau_sum - tau) <= 1e-6 * tau:
        raise RuntimeError(f"escape oracle inconsistent: τ = {tau:.8g} by solve, "
                           f"{tau_sum:.8g} by summing the survival")
    tau_c *= tau / tau_sum
    return ChainOracle(float(tau), float(tau_c), haz, t_tail, nodes, np.arange(T + 1.0), s)


def double_well_left_bound(dU, lr, s2, hi, x0, w_min):
    """A left bound for a one-sided (double-well) escape that the chain never reaches.

    The bound is moved left until moving it 0.5 further changes τ by less than the
    solve's own accuracy: 10× the relative change of τ under node doubling
    (:func:`sgdlab.theory.mfpt_nystrom_converged`), and at least 10⁻¹⁰.
    """
    extra = 1.0
    while extra < 20:
        a, n, rel = mfpt_nystrom_converged(dU, lr, s2, w_min - extra, hi, x0=x0)
        b = mfpt_nystrom(dU, lr, s2, w_min - extra - 0.5, hi, x0=x0,
                                n_nodes=math.ceil(n * (hi - w_min + extra + 0.5)
                                                  / (hi - w_min + extra)))
        if abs(a - b) <= max(1e-10, 10 * rel) * abs(b):
            return w_min - extra
        extra += 0.5
    raise RuntimeError("no left bound found for the double-well oracle")
