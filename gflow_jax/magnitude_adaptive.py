"""Adaptive host solver for large clouds on CPU: CG, neighbour-preconditioned CG, Cholesky.

A direct method pays one Cholesky factorisation (m³/3 flops) per scale. Two facts let us pay
fewer (MATH.md Part B, numerics):

1. Z(t) = exp(−t·D) is well conditioned at *large* t (Z → I), where plain conjugate gradients
   converge in a few matrix–vector products (2m² flops each).
2. Z(t) changes smoothly with t: the Cholesky factor of a *neighbouring* scale is an excellent
   preconditioner (typically 5–15 CG iterations for neighbours on a 32-point log grid).

Scales are processed from the largest to the smallest, warm-starting each solve from the
previous scale's weights. Plain CG is used while it converges within an iteration budget; then
a factorisation is made at the *next* scale down and reused as preconditioner on both sides of
it (so each factorisation serves the scales just above and below it at distance one); a new one
is made as soon as the predicted preconditioned cost exceeds that of a factorisation. Budgets
come from the timings measured during the run (a factorisation vs one iteration), so the choice
adapts to the machine and to m.

Nothing is approximated silently: every iterative solve ends with an explicit float64 residual
‖Zw − 1‖₂/‖1‖₂ ≤ ``rtol``; if it does not get there within its budget, the scale is solved
directly (Cholesky, or LU when Cholesky fails). The solver, iteration count and achieved
residual of every scale are reported. Condition estimates: λ_max ≤ largest row sum of Z; λ_min
from the Rayleigh quotients of one inverse iteration (direct solves, as in
:mod:`gflow_jax.magnitude_core`) or from the Lanczos tridiagonal of the (preconditioned) CG run
(λ_min(Z) ≈ θ_min(P⁻¹Z)·λ_min(P)), an estimate, not a bound.

This engine uses NumPy/SciPy LAPACK (dpotrf/dpotrs) on the host: JAX's CPU triangular solves
copy the factor on every call, which would dominate preconditioned CG. Z is built in one reused
buffer (NumPy exp), so at most one Z, one factor and D are held at a time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg as sla

__all__ = ["AdaptiveSettings", "solve_adaptive"]

# rows per block for the elementwise passes over Z (derivative)
_ROW_BLOCK = 1024


@dataclass(frozen=True)
class AdaptiveSettings:
    """Knobs of :func:`solve_adaptive`.

    Attributes:
        rtol: required relative residual ‖Zw − 1‖₂/‖1‖₂ of every iterative solve.
        budget: an iterative solve may cost at most this fraction of one factorisation.
        allow_cg: try plain CG at the large scales.
        allow_pcg: reuse neighbouring factorisations as preconditioners.
        mixed_precision: factorise in float32 (LAPACK spotrf, about twice as fast) and use the
            factor only as a preconditioner of float64 CG, which must reach ``rtol``; float64
            Cholesky when it does not.
        progress: show a tqdm bar over the scales.
    """

    rtol: float = 1e-12
    budget: float = 0.8
    allow_cg: bool = True
    allow_pcg: bool = True
    mixed_precision: bool = False
    progress: bool = False


@dataclass
class _Clock:
    """Running estimates (seconds) of one factorisation and of one (P)CG iteration."""

    m: int
    chol: list = field(default_factory=list)
    cg_iter: list = field(default_factory=list)
    pcg_iter: list = field(default_factory=list)

    def t_chol(self) -> float:
        return float(np.median(self.chol)) if self.chol else self.m**3 / 3 / 2e10

    def t_cg(self) -> float:
        return float(np.median(self.cg_iter)) if self.cg_iter else 2 * 8 * self.m**2 / 1e10

    def t_pcg(self) -> float:
        return float(np.median(self.pcg_iter)) if self.pcg_iter else 4 * 8 * self.m**2 / 1e10


def _probe(m: int) -> np.ndarray:
    r = np.random.default_rng(20240531).standard_normal(m)
    return r / np.linalg.norm(r)


def _tridiagonal_extremes(alphas, betas):
    """Extreme Ritz values of the Lanczos tridiagonal of a CG run (α_k step lengths, β_k)."""
    k = len(alphas)
    if k == 0:
        return np.nan, np.nan
    a, b = np.asarray(alphas), np.asarray(betas[: k - 1])
    diag = 1.0 / a
    diag[1:] += b / a[:-1]
    off = np.sqrt(np.maximum(b, 0.0)) / a[:-1]
    theta = sla.eigvalsh_tridiagonal(diag, off) if k > 1 else diag
    return float(theta.min()), float(theta.max())


def _cg(Z, b, x0, precondition, rtol, max_iter):
    """(Preconditioned) CG on Z x = b from x0; returns x, iterations, converged, Ritz extremes.
    Convergence is checked on the explicitly recomputed residual."""
    x = x0.copy()
    r = b - Z @ x
    bnorm = np.linalg.norm(b)
    z = precondition(r)
    p = z.copy()
    rz = r @ z
    alphas, betas = [], []
    k = 0
    while k < max_iter and np.linalg.norm(r) > rtol * bnorm:
        Ap = Z @ p
        alpha = rz / (p @ Ap)
        x += alpha * p
        r -= alpha * Ap
        z = precondition(r)
        rz_new = r @ z
        beta = rz_new / rz
        p = z + beta * p
        rz = rz_new
        alphas.append(alpha)
        betas.append(beta)
        k += 1
    residual = np.linalg.norm(b - Z @ x) / bnorm
    return x, k, residual <= rtol, residual, _tridiagonal_extremes(alphas, betas)


def _factor(Z):
    """Lower Cholesky factor of Z (LAPACK dpotrf on a Fortran-ordered copy), or None."""
    F = np.array(Z.T, order="F", copy=True)  # Z symmetric: the transpose is Z itself
    c, info = sla.lapack.dpotrf(F, lower=1, clean=0, overwrite_a=1)
    if info != 0:
        return None
    return c


def _factor32(Z):
    """Lower Cholesky factor of Z rounded to float32 (LAPACK spotrf), or None."""
    c, info = sla.lapack.spotrf(Z.T.astype(np.float32, order="F"), lower=1, clean=0, overwrite_a=1)
    if info != 0:
        return None
    return c


def _cho_solve32(c, r):
    x, info = sla.lapack.spotrs(c, r.astype(np.float32), lower=1)
    if info != 0:  # pragma: no cover - only on invalid arguments
        raise np.linalg.LinAlgError(f"spotrs failed with info={info}")
    return x.astype(np.float64)


def _cho_solve(c, B):
    x, info = sla.lapack.dpotrs(c, B, lower=1)
    if info != 0:  # pragma: no cover - only on invalid arguments
        raise np.linalg.LinAlgError(f"dpotrs failed with info={info}")
    return x


def _derivative(D, Z, w):
    """wᵀ(D∘Z)w in row blocks (no m×m temporary)."""
    total = 0.0
    for s in range(0, D.shape[0], _ROW_BLOCK):
        e = min(D.shape[0], s + _ROW_BLOCK)
        total += w[s:e] @ ((D[s:e] * Z[s:e]) @ w)
    return float(total)


def solve_adaptive(D, scales, settings: AdaptiveSettings = AdaptiveSettings()) -> dict:
    """Weights of the (deduplicated) distance matrix ``D`` ``(m, m)`` at ``scales`` ``(S,)``.

    Returns a dict of NumPy arrays: ``weights`` ``(m, S)`` and, per scale, ``magnitude``,
    ``derivative``, ``positive_magnitude``, ``spread``, ``max_eigenvalue``, ``min_eigenvalue``,
    ``condition``, ``residual``, ``iterations``, and ``solver`` (a list of names: ``"cg"``,
    ``"pcg"`` — preconditioned by the factorisation of the scale named in ``preconditioner`` —,
    ``"cholesky32"`` — float64 CG preconditioned by this scale's own float32 factor —,
    ``"cholesky"``, ``"lu"``).
    """
    D_host = np.asarray(D, dtype=np.float64)
    scales = np.asarray(scales, dtype=np.float64)
    m, S = D_host.shape[0], scales.shape[0]
    b = np.ones(m)
    probe = _probe(m)
    out = {
        k: np.full(S, np.nan)
        for k in (
            "magnitude",
            "derivative",
            "positive_magnitude",
            "spread",
            "max_eigenvalue",
            "min_eigenvalue",
            "condition",
            "residual",
            "preconditioner",
        )
    }
    out["iterations"] = np.zeros(S, dtype=np.int64)
    out["weights"] = np.zeros((m, S))
    solver = [""] * S
    clock = _Clock(m)
    order = np.argsort(-scales, kind="stable")  # largest scale first
    buffer = np.empty((m, m))  # one Z at a time: at m = 20000 each is 3.2 GB
    current = [-1]

    def Z_of(i):
        if current[0] != i:
            np.multiply(D_host, -scales[i], out=buffer)
            np.exp(buffer, out=buffer)
            current[0] = i
        return buffer

    factor = None  # (position in order, cholesky factor, λ_min estimate of that Z)
    last_pcg_iters = 0
    cg_phase = settings.allow_cg
    w_prev = None
    bar = None
    if settings.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=S, desc=f"magnitude m={m}", leave=False)

    def finish(i, w, Z, name, iters, lam_min, residual, precond_scale=np.nan):
        row_sums = Z @ b
        out["weights"][:, i] = w
        out["magnitude"][i] = w.sum()
        out["derivative"][i] = _derivative(D_host, Z, w)
        out["positive_magnitude"][i] = np.maximum(w, 0).sum()
        out["spread"][i] = (1.0 / row_sums).sum()
        out["max_eigenvalue"][i] = row_sums.max()
        out["min_eigenvalue"][i] = lam_min
        out["condition"][i] = row_sums.max() / lam_min
        out["residual"][i] = residual
        out["iterations"][i] = iters
        out["preconditioner"][i] = precond_scale
        solver[i] = name
        if bar is not None:
            bar.update(1)

    def direct(pos):
        """Factorise the scale at ``pos`` in ``order``, solve it, and return the factor entry
        ``(pos, preconditioner, λ_min estimate)``: a float32 factor used as preconditioner of
        float64 CG when that converges (``"cholesky32"``), else float64 Cholesky or LU."""
        i = order[pos]
        Z = Z_of(i)
        if settings.mixed_precision:
            c32 = _factor32(Z)
            if c32 is not None:
                solve32 = lambda r: _cho_solve32(c32, r)  # noqa: E731
                w, k, ok, residual, _ = _cg(Z, b, solve32(b), solve32, settings.rtol, 50)
                if ok:
                    y = solve32(probe)
                    lam_min = min(w.sum() / (w @ w), (y @ (Z @ y)) / (y @ y))
                    finish(i, w, Z, "cholesky32", k, lam_min, residual)
                    return (pos, solve32, lam_min), w
        start = time.perf_counter()
        c = _factor(Z)
        if c is None:  # not positive definite (or numerically singular): LU, reported
            lu = sla.lu_factor(Z, check_finite=False)
            W = sla.lu_solve(lu, np.stack([b, probe], axis=1), check_finite=False)
            name = "lu"
        else:
            clock.chol.append(time.perf_counter() - start)
            W = _cho_solve(c, np.stack([b, probe], axis=1))
            name = "cholesky"
        w, y = W[:, 0], W[:, 1]
        residual = np.linalg.norm(Z @ w - b) / np.sqrt(m)
        lam_min = min(w.sum() / (w @ w), (y @ probe) / (y @ y))
        finish(i, w, Z, name, 0, lam_min, residual)
        entry = (pos, lambda r: _cho_solve(c, r), lam_min)
        return (entry if c is not None else None), w

    def try_pcg(pos, fac, x0, max_iter):
        i = order[pos]
        Z = Z_of(i)
        fpos, precondition, lam_p = fac
        start = time.perf_counter()
        w, k, ok, residual, (theta_min, _) = _cg(Z, b, x0, precondition, settings.rtol, max_iter)
        if k:
            clock.pcg_iter.append((time.perf_counter() - start) / k)
        if ok:
            finish(i, w, Z, "pcg", k, theta_min * lam_p, residual, scales[order[fpos]])
        return ok, w, k

    pos = 0
    while pos < S:
        i = order[pos]
        x0 = b if w_prev is None else w_prev
        if cg_phase:
            max_iter = max(2, int(settings.budget * clock.t_chol() / clock.t_cg()))
            Z = Z_of(i)
            start = time.perf_counter()
            w, k, ok, residual, (theta_min, _) = _cg(Z, b, x0, lambda r: r, settings.rtol, max_iter)
            if k:
                clock.cg_iter.append((time.perf_counter() - start) / k)
            if ok:
                finish(i, w, Z, "cg", k, theta_min, residual)
                w_prev, pos = w, pos + 1
                continue
            cg_phase = False
        budget = max(2, int(settings.budget * clock.t_chol() / clock.t_pcg()))
        if factor is not None and settings.allow_pcg:
            # predicted iterations one scale further from the factor: 1.5× the last count
            distance = pos - factor[0]
            if distance == 1 or 1.5 * last_pcg_iters <= budget:
                ok, w, k = try_pcg(pos, factor, x0, budget)
                if ok:
                    last_pcg_iters, w_prev, pos = k, w, pos + 1
                    continue
        # need a new factorisation: make it at the next scale down and use it here too
        if settings.allow_pcg and pos + 1 < S:
            factor, w_next = direct(pos + 1)
            if factor is not None:
                ok, w, k = try_pcg(pos, factor, x0 if w_prev is not None else w_next, budget)
                if ok:
                    last_pcg_iters, w_prev, pos = k, w_next, pos + 2
                    continue
            factor_here, w = direct(pos)
            factor = factor or factor_here
            last_pcg_iters, w_prev, pos = 0, w_next, pos + 2
            continue
        factor, w = direct(pos)
        last_pcg_iters, w_prev, pos = 0, w, pos + 1
    if bar is not None:
        bar.close()
    out["solver"] = solver
    return out
