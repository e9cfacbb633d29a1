"""Non-negative least squares (Lawson–Hanson) on the normal equations."""

from __future__ import annotations

import numpy as np

from ...errors import InvalidArgumentError

__all__ = ["nnls"]


def _solve_sub(G: np.ndarray, h: np.ndarray, idx: np.ndarray) -> np.ndarray:
    Gs = G[np.ix_(idx, idx)]
    try:
        z = np.linalg.solve(Gs, h[idx])
        if np.all(np.isfinite(z)):
            return z
    except np.linalg.LinAlgError:
        pass
    return np.linalg.lstsq(Gs, h[idx], rcond=None)[0]


def _nnls_gram(G: np.ndarray, h: np.ndarray, init: np.ndarray | None = None,
               max_iter: int | None = None) -> np.ndarray:
    """min ||A x - b||^2, x >= 0, given G = A'A and h = A'b (columns scaled to O(1))."""
    p = h.size
    tol = 1e-10 * max(float(np.abs(h).max()) if p else 0.0, 1e-300)
    if init is not None and init.any():
        # Warm start: the passive set of a nearby problem (bootstrap replicates).
        idx = np.flatnonzero(init)
        z = _solve_sub(G, h, idx)
        if np.all(z > 0):
            x = np.zeros(p)
            x[idx] = z
            w = h - G @ x
            w[idx] = 0.0
            if np.all(w <= tol):
                return x
    x = np.zeros(p)
    passive = np.zeros(p, dtype=bool)
    # A warm start that is not optimal still saves work: begin from x = 0 (feasible) with its
    # passive set, and let the inner loop drop what must go (Lawson–Hanson from a passive set).
    inner_first = init is not None and bool(init.any())
    if inner_first:
        passive = np.asarray(init, dtype=bool).copy()
    w = h - G @ x
    limit = max_iter if max_iter is not None else 3 * p + 10
    it = 0
    while it < limit:
        if not inner_first:
            cand = np.where(passive, -np.inf, w)
            j = int(np.argmax(cand)) if p else 0
            if p == 0 or cand[j] <= tol:
                break
            passive[j] = True
        inner_first = False
        while True:
            it += 1
            idx = np.flatnonzero(passive)
            z = np.zeros(p)
            z[idx] = _solve_sub(G, h, idx)
            if np.all(z[idx] > 0):
                x = z
                break
            neg = passive & (z <= 0)
            denom = x[neg] - z[neg]
            alpha = float(np.min(np.where(denom > 0, x[neg] / np.where(denom > 0, denom, 1.0), 0.0)))
            x = x + alpha * (z - x)
            passive &= x > tol * 1e-3
            x[~passive] = 0.0
            if not passive.any() or it >= limit:
                break
        w = h - G @ x
    return np.maximum(x, 0.0)


def nnls(A: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
    """Non-negative least squares: ``x >= 0`` minimising ``||A x - b||``; returns ``(x, ||A x - b||)``.

    Lawson–Hanson active-set method on the normal equations, with the columns
    scaled to unit norm first (numpy only). All-zero columns get 0.
    """
    A = np.asarray(A, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if A.ndim != 2 or b.shape != (A.shape[0],):
        raise InvalidArgumentError(f"nnls: A must be (m, n) and b (m,), got {A.shape} and {b.shape}")
    norms = np.sqrt(np.einsum("ij,ij->j", A, A))
    live = norms > 0
    scale = np.where(live, norms, 1.0)
    As = A / scale
    y = np.zeros(A.shape[1])
    if live.any():
        Al = As[:, live]
        y[live] = _nnls_gram(Al.T @ Al, Al.T @ b)
    x = y / scale
    return x, float(np.linalg.norm(A @ x - b))
