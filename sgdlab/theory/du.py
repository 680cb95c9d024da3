"""Du, Zhai, Poczos, Singh (arXiv:1810.02054): infinite-width Gram matrices and the
linearised (kernel) dynamics of two-layer ReLU nets."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sgdlab.theory._checks import as_output, finite_array, fmt, square_matrix


def _cosines(X: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = finite_array(X, "X")
    if X.ndim != 2:
        raise ValueError(f"X must have shape (n, d), got {X.shape}")
    gram = X @ X.T
    norms = np.sqrt(np.diag(gram))
    if np.any(norms == 0):
        raise ValueError("inputs must be non-zero")
    cos = np.clip(gram / np.outer(norms, norms), -1.0, 1.0)
    return gram, norms, cos


def du_H_inf(X: Any) -> np.ndarray:
    """Infinite-width first-layer Gram matrix H∞ of a two-layer ReLU net.

    H∞_ij = E_{w~N(0,I)}[x_i·x_j 1{wᵀx_i ≥ 0, wᵀx_j ≥ 0}]
          = x_i·x_j (π − arccos cos θ_ij) / (2π),

    cos θ_ij = x_i·x_j/(‖x_i‖‖x_j‖), clipped to [−1, 1]. For unit inputs (the
    paper's setting) cos θ = x_i·x_j. Du, Zhai, Poczos, Singh,
    arXiv:1810.02054, eq. for H∞ (Section 3).

    Args:
      X: inputs as rows, shape (n, d).

    Returns:
      H∞, symmetric (n, n).

    Raises:
      ValueError: non-finite or zero inputs.
    """
    gram, _, cos = _cosines(X)
    H = gram * (np.pi - np.arccos(cos)) / (2 * np.pi)
    return 0.5 * (H + H.T)


def du_G_inf(X: Any) -> np.ndarray:
    """Infinite-width second-layer Gram matrix G∞ (training the output layer too).

    G∞_ij = E_{w~N(0,I)}[ReLU(wᵀx_i) ReLU(wᵀx_j)]
          = ‖x_i‖‖x_j‖ (sin θ + (π − θ) cos θ) / (2π),

    the degree-1 arc-cosine kernel; for unit inputs the norms are 1.
    Du, Zhai, Poczos, Singh, arXiv:1810.02054 (Section 3, second layer).

    Args:
      X: inputs as rows, shape (n, d).

    Returns:
      G∞, symmetric (n, n).

    Raises:
      ValueError: non-finite or zero inputs.
    """
    _, norms, cos = _cosines(X)
    theta = np.arccos(cos)
    G = np.outer(norms, norms) * (np.sin(theta) + (np.pi - theta) * cos) / (2 * np.pi)
    return 0.5 * (G + G.T)


def du_lambda0(X: Any) -> float:
    """λ0 = λ_min(H∞), positive when no two inputs are parallel (Du et al., arXiv:1810.02054).

    Args:
      X: inputs as rows, shape (n, d).

    Returns:
      The smallest eigenvalue of :func:`du_H_inf` (X).
    """
    return float(np.linalg.eigvalsh(du_H_inf(X))[0])


def du_kernel_loss(H: Any, y: Any, u0: Any, lr: Any, steps: Any) -> float | np.ndarray:
    """Loss ½‖u(k) − y‖² predicted by the linearised (kernel) GD dynamics.

    With L = ½ Σ_i (u_i − y_i)² (a sum, the paper's convention), full-batch GD
    in the infinite-width limit gives u(k) − y = (I − ηH)^k (u(0) − y), so with
    H = Σ_i λ_i v_i v_iᵀ and c_i = v_iᵀ(u(0) − y):

      ½‖u(k) − y‖² = ½ Σ_i (1 − ηλ_i)^{2k} c_i².

    Du, Zhai, Poczos, Singh, arXiv:1810.02054 (the kernel dynamics behind
    Theorem 4.1).

    Args:
      H: symmetric Gram matrix (usually H∞), (n, n).
      y: labels, (n,).
      u0: network outputs at initialisation, (n,).
      lr: step size η.
      steps: int or array of step counts k ≥ 0.

    Returns:
      ½‖u(k) − y‖² for each k (float for scalar ``steps``).

    Raises:
      ValueError: malformed input or negative steps.
    """
    H = square_matrix(H, "H")
    n = H.shape[0]
    y = finite_array(y, "y").reshape(-1)
    u0 = finite_array(u0, "u0").reshape(-1)
    if y.shape != (n,) or u0.shape != (n,):
        raise ValueError(f"y and u0 must have shape ({n},), got {y.shape}, {u0.shape}")
    eta = float(finite_array(lr, "lr"))
    k = finite_array(steps, "steps")
    if np.any(k < 0):
        raise ValueError("steps must be ≥ 0")
    lam, V = np.linalg.eigh(H)
    c2 = (V.T @ (u0 - y)) ** 2
    base = np.abs(1 - eta * lam)
    decay = base[:, None] ** (2 * k.reshape(-1)[None, :])
    out = 0.5 * (c2 @ decay)
    return as_output(out.reshape(k.shape))


def du_kernel_residual(H: Any, r0: Any, lr: Any, steps: Any) -> np.ndarray:
    """Residual ``u(k) − y`` predicted by the linearised (kernel) GD dynamics.

    With L = ½ Σ_i (u_i − y_i)² (a sum) and a fixed Gram matrix H, full-batch GD
    in the infinite-width limit is the linear recursion
    ``u(k+1) − y = (I − ηH)(u(k) − y)``, so

      u(k) − y = (I − ηH)^k (u(0) − y) = V diag((1 − ηλ_i)^k) Vᵀ (u(0) − y)

    with H = V diag(λ) Vᵀ. H = H∞ when only the first layer is trained
    (Theorem 4.1), H∞ + G∞ when both layers are (Theorem 3.3); Du, Zhai, Poczos,
    Singh, arXiv:1810.02054.

    Args:
      H: symmetric Gram matrix, (n, n).
      r0: initial residuals ``u(0) − y``, shape (n,) or (..., n) (one row per seed).
      lr: step size η.
      steps: 1-D array of step counts k ≥ 0 (integers).

    Returns:
      Array of shape ``r0.shape[:-1] + (len(steps), n)``.

    Raises:
      ValueError: malformed input or negative steps.
    """
    H = square_matrix(H, "H")
    n = H.shape[0]
    r0 = finite_array(r0, "r0")
    if r0.ndim < 1 or r0.shape[-1] != n:
        raise ValueError(f"r0 must have shape (..., {n}), got {r0.shape}")
    eta = float(finite_array(lr, "lr"))
    k = finite_array(steps, "steps")
    if k.ndim != 1 or np.any(k < 0) or np.any(k != np.round(k)):
        raise ValueError(f"steps must be a 1-D array of integers ≥ 0, got {steps!r}")
    lam, V = np.linalg.eigh(H)
    c = r0 @ V                                        # (..., n) coordinates in the eigenbasis
    decay = (1.0 - eta * lam)[None, :] ** k[:, None]  # (K, n); integer powers keep the sign
    return np.einsum("...j,kj,ij->...ki", c, decay, V)


def du_rate_bound(lr: Any, lambda0: Any, steps: Any, initial_loss: Any) -> float | np.ndarray:
    """Linear-rate bound of Du et al.: L(k) ≤ (1 − ηλ0/2)^k L(0).

    Theorem 4.1 of Du, Zhai, Poczos, Singh, arXiv:1810.02054 states it for
    ‖u(k) − y‖²; the bound is homogeneous, so ``initial_loss`` may be
    ‖u(0) − y‖² or ½‖u(0) − y‖² and the output has the same normalisation.

    Args:
      lr: η > 0.
      lambda0: λ0 > 0.
      steps: int or array of k ≥ 0.
      initial_loss: L(0) ≥ 0.

    Returns:
      (1 − ηλ0/2)^k · L(0).

    Raises:
      ValueError: non-finite input, or ηλ0 outside (0, 2].
    """
    eta = float(finite_array(lr, "lr"))
    l0 = float(finite_array(lambda0, "lambda0"))
    if not 0 < eta * l0 <= 2:
        raise ValueError(f"the bound needs 0 < ηλ0 ≤ 2, got ηλ0 = {fmt(eta * l0)}")
    k = finite_array(steps, "steps")
    return as_output((1 - eta * l0 / 2) ** k * float(finite_array(initial_loss, "initial_loss")))


def du_distance_bound(n: int, m: int, lambda0: Any, residual_norm: Any) -> float:
    """Bound R' on how far each first-layer weight moves during GD.

    R' = 4 √n ‖y − u(0)‖ / (√m λ0),

    the radius of the discrete-time analysis of Du, Zhai, Poczos, Singh,
    arXiv:1810.02054 (Section 4): with ‖u(k) − y‖² ≤ (1 − ηλ0/2)^k ‖u(0) − y‖²,
    ‖w_r(k+1) − w_r(k)‖ ≤ η √n ‖u(k) − y‖/√m, and summing the geometric series
    Σ_k (1 − ηλ0/2)^{k/2} ≤ 4/(ηλ0) gives the constant 4. (The gradient-flow
    version of Section 3 has 2 instead.) The constant is the paper's, not 1.

    Args:
      n: number of training points.
      m: width.
      lambda0: λ0 > 0.
      residual_norm: ‖y − u(0)‖ (Euclidean norm, not squared).

    Returns:
      R'.

    Raises:
      ValueError: non-finite or non-positive input.
    """
    l0 = float(finite_array(lambda0, "lambda0"))
    if n < 1 or m < 1 or l0 <= 0:
        raise ValueError(f"need n, m ≥ 1 and λ0 > 0, got {n}, {m}, {fmt(l0)}")
    r = float(finite_array(residual_norm, "residual_norm"))
    return 4 * math.sqrt(n) * r / (math.sqrt(m) * l0)
