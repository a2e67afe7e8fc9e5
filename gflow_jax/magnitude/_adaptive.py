"""Adaptive host solver for large clouds on CPU: CG, neighbour-preconditioned CG, Cholesky.

A direct method pays one Cholesky factorisation (m³/3 flops) per scale. Two facts let us pay
fewer (docs/theory.md#magnitude-numerics):

1. Z(t) = exp(−t·D) is well conditioned at *large* t (Z → I), where plain conjugate gradients
   converge in a few matrix–vector products (2m² flops each).
2. Z(t) changes smoothly with t: the Cholesky factor of a *neighbouring* scale is an excellent
   preconditioner (typically 5–15 CG iterations for neighbours on a 32-point log grid).

Scales are processed from the largest to the smallest, warm-starting each solve from the
previous scale's weights. Plain CG is used while its predicted cost at the next scale (the
last iteration count extrapolated linearly) stays below a fraction of a factorisation; then a
factorisation is made ``lead`` (2) scales further down and reused as preconditioner on both sides
of it: for the scales between (warm-started from their upper neighbours) and for those below it,
until the predicted preconditioned cost exceeds a fraction of a factorisation, when a new one is
made the same way. Budgets come from the timings measured during the run (a factorisation vs one
iteration), so the choice adapts to the machine and to m.

Nothing is approximated silently: every iterative solve ends with an explicit float64 residual
‖Zw − 1‖₂/‖1‖₂ ≤ ``rtol``; if it does not get there within its budget, the scale is solved
directly (Cholesky, or LU when Cholesky fails). The solver, iteration count and achieved
residual of every scale are reported. Condition estimates: λ_max ≤ largest row sum of Z; λ_min
from the Rayleigh quotients of one inverse iteration (direct solves, as in
:mod:`gflow_jax.magnitude._core`) or from the Lanczos tridiagonal of the (preconditioned) CG run
(λ_min(Z) ≈ θ_min(P⁻¹Z)·λ_min(P)), an estimate, not a bound.

This engine uses NumPy/SciPy BLAS/LAPACK on the host: JAX's CPU triangular solves copy the
factor on every call, which would dominate preconditioned CG. Only the lower triangle of the
symmetric Z is built (row blocks, NumPy exp, into one reused buffer: at most one Z, one factor and
D are held at a time), which halves the cost of building Z; products with Z use BLAS ``dsymv``
(which reads one triangle: about half the memory traffic of ``dgemv``) and the preconditioner
applies the factor by two BLAS-2 ``dtrsv`` calls (several times faster than OpenBLAS's
single-column ``dpotrs``, which goes through ``dtrsm``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg as sla
from scipy.linalg import blas

# rows per block for the elementwise passes over Z (building its lower triangle, derivative)
_ROW_BLOCK = 64


@dataclass(frozen=True)
class AdaptiveSettings:
    """Knobs of :func:`solve_adaptive`.

    Attributes:
        rtol: required relative residual ‖Zw − 1‖₂/‖1‖₂ of every iterative solve.
        budget: an iterative solve may cost at most this fraction of one factorisation.
        cg_switch: plain CG continues while its predicted cost at the next scale is at most
            this fraction of ``budget`` (then factorisations and preconditioned CG).
        pcg_switch: a factor keeps serving the scales below it while the predicted cost of the
            next preconditioned solve is at most this fraction of ``budget``.
        lead: a new factorisation is made this many scales below the first scale that needs
            it, and preconditions the scales above it as well as those below.
        allow_cg: try plain CG at the large scales.
        allow_pcg: reuse neighbouring factorisations as preconditioners.
        mixed_precision: factorise in float32 (LAPACK spotrf, about twice as fast) and use the
            factor only as a preconditioner of float64 CG, which must reach ``rtol``; float64
            Cholesky when it does not.
        progress: show a tqdm bar over the scales.
    """

    rtol: float = 1e-12
    budget: float = 0.8
    cg_switch: float = 0.5
    pcg_switch: float = 0.5
    lead: int = 2
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
        if self.pcg_iter:
            return float(np.median(self.pcg_iter))
        # a product with Z (one triangle) plus two triangular solves (one triangle each)
        return 3 * self.t_cg()


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


def _cg(matvec, b, x0, precondition, rtol, max_iter):
    """(Preconditioned) CG on Z x = b from x0 (``matvec(v)`` = Z v); returns x, iterations,
    converged, residual, Ritz extremes. Convergence is checked on the explicitly recomputed
    float64 residual."""
    x = x0.copy()
    r = b - matvec(x)
    bnorm = np.linalg.norm(b)
    z = precondition(r)
    p = z.copy()
    rz = r @ z
    alphas, betas = [], []
    k = 0
    while k < max_iter and np.linalg.norm(r) > rtol * bnorm:
        Ap = matvec(p)
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
    residual = np.linalg.norm(b - matvec(x)) / bnorm
    return x, k, residual <= rtol, residual, _tridiagonal_extremes(alphas, betas)


# Z is held as the lower triangle of a C-ordered buffer, i.e. the *upper* triangle of its
# Fortran-ordered transpose (no copy): BLAS/LAPACK are called on ``Z.T`` with ``lower=0``; the
# strictly upper part of the C buffer is never read.


def _build_lower(D, t, out):
    """Lower triangle (with diagonal) of exp(−t·D) into ``out``, in row blocks."""
    m = D.shape[0]
    for s in range(0, m, _ROW_BLOCK):
        e = min(m, s + _ROW_BLOCK)
        o = out[s:e, :e]
        np.multiply(D[s:e, :e], -t, out=o)
        np.exp(o, out=o)
    return out


def _symv(Z, v):
    """Z v from the lower triangle of ``Z`` (BLAS dsymv)."""
    return blas.dsymv(1.0, Z.T, v, lower=0)


def _full(Z):
    """The full symmetric matrix from the lower triangle of ``Z`` (a new array)."""
    L = np.tril(Z)
    return L + np.tril(L, -1).T


def _factor(Z):
    """Cholesky factor U (Z = UᵀU, upper, Fortran order) from the lower triangle of Z, or None."""
    F = np.array(Z.T, order="F", copy=True)
    c, info = sla.lapack.dpotrf(F, lower=0, clean=0, overwrite_a=1)
    if info != 0:
        return None
    return c


def _precondition(c):
    """r ↦ (UᵀU)⁻¹ r by two BLAS-2 triangular solves."""

    def apply(r):
        return blas.dtrsv(c, blas.dtrsv(c, r, lower=0, trans=1), lower=0, trans=0)

    return apply


def _factor32(Z):
    """Cholesky factor of Z rounded to float32 (LAPACK spotrf, upper), or None."""
    c, info = sla.lapack.spotrf(Z.T.astype(np.float32, order="F"), lower=0, clean=0, overwrite_a=1)
    if info != 0:
        return None
    return c


def _precondition32(c):
    """r ↦ (UᵀU)⁻¹ r for a float32 factor U by two BLAS-2 single-precision triangular solves,
    returned in float64."""

    def apply(r):
        y = blas.strsv(c, r.astype(np.float32), lower=0, trans=1)
        return blas.strsv(c, y, lower=0, trans=0, overwrite_x=1).astype(np.float64)

    return apply


def _cho_solve(c, B):
    x, info = sla.lapack.dpotrs(c, B, lower=0)
    if info != 0:  # pragma: no cover - only on invalid arguments
        raise np.linalg.LinAlgError(f"dpotrs failed with info={info}")
    return x


def _derivative(D, Z, w):
    """wᵀ(D∘Z)w from the lower triangles (D symmetric), in row blocks (no m×m temporary)."""
    total = 0.0
    diagonal = 0.0
    for s in range(0, D.shape[0], _ROW_BLOCK):
        e = min(D.shape[0], s + _ROW_BLOCK)
        total += w[s:e] @ ((D[s:e, :s] * Z[s:e, :s]) @ w[:s])
        block = D[s:e, s:e] * Z[s:e, s:e]
        diagonal += w[s:e] @ (np.tril(block, -1) @ w[s:e])
        diagonal += 0.5 * (w[s:e] ** 2) @ np.diag(block)
    return float(2.0 * (total + diagonal))


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
    # one Z at a time (at m = 20000 each is 3.2 GB); zeros: its strict upper triangle is never
    # written, and the float32 rounding of the whole buffer must see finite numbers
    buffer = np.zeros((m, m))
    current = [-1]

    def Z_of(i):
        if current[0] != i:
            _build_lower(D_host, scales[i], buffer)
            current[0] = i
        return buffer

    factor = None  # (position in order, cholesky factor, λ_min estimate of that Z)
    cg_phase = settings.allow_cg
    w_prev = None
    bar = None
    if settings.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=S, desc=f"magnitude m={m}", leave=False)

    def finish(i, w, Z, name, iters, lam_min, residual, precond_scale=np.nan):
        row_sums = _symv(Z, b)
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
                solve32 = _precondition32(c32)
                matvec = lambda v: _symv(Z, v)  # noqa: E731
                w, k, ok, residual, _ = _cg(matvec, b, solve32(b), solve32, settings.rtol, 50)
                if ok:
                    y = solve32(probe)
                    lam_min = min(w.sum() / (w @ w), (y @ matvec(y)) / (y @ y))
                    finish(i, w, Z, "cholesky32", k, lam_min, residual)
                    return (pos, solve32, lam_min), w
        start = time.perf_counter()
        c = _factor(Z)
        if c is None:  # not positive definite (or numerically singular): LU, reported
            lu = sla.lu_factor(_full(Z), check_finite=False)
            W = sla.lu_solve(lu, np.stack([b, probe], axis=1), check_finite=False)
            name = "lu"
        else:
            clock.chol.append(time.perf_counter() - start)
            W = _cho_solve(c, np.stack([b, probe], axis=1))
            name = "cholesky"
        w, y = W[:, 0], W[:, 1]
        residual = np.linalg.norm(_symv(Z, w) - b) / np.sqrt(m)
        lam_min = min(w.sum() / (w @ w), (y @ probe) / (y @ y))
        finish(i, w, Z, name, 0, lam_min, residual)
        entry = (pos, _precondition(c), lam_min) if c is not None else None
        return entry, w

    def try_pcg(pos, fac, x0, max_iter):
        i = order[pos]
        Z = Z_of(i)
        fpos, precondition, lam_p = fac
        start = time.perf_counter()
        matvec = lambda v: _symv(Z, v)  # noqa: E731
        w, k, ok, residual, (theta_min, _) = _cg(
            matvec, b, x0, precondition, settings.rtol, max_iter
        )
        if k:
            clock.pcg_iter.append((time.perf_counter() - start) / k)
        if ok:
            finish(i, w, Z, "pcg", k, theta_min * lam_p, residual, scales[order[fpos]])
        return ok, w, k

    def predict(counts):
        """Iterations expected at the next scale from the last counts (growth never negative)."""
        if not counts:
            return 0.0
        if len(counts) == 1:
            return 1.25 * counts[-1]
        return counts[-1] + max(counts[-1] - counts[-2], 0)

    cg_counts: list = []
    pcg_counts: list = []  # iterations of the current factor's scales below it
    pos = 0
    while pos < S:
        i = order[pos]
        x0 = b if w_prev is None else w_prev
        if cg_phase:
            if (
                predict(cg_counts) * clock.t_cg()
                <= settings.cg_switch * settings.budget * clock.t_chol()
            ):
                max_iter = max(2, int(settings.budget * clock.t_chol() / clock.t_cg()))
                Z = Z_of(i)
                matvec = lambda v, Z=Z: _symv(Z, v)  # noqa: E731
                start = time.perf_counter()
                w, k, ok, residual, (theta_min, _) = _cg(
                    matvec, b, x0, lambda r: r, settings.rtol, max_iter
                )
                if k:
                    clock.cg_iter.append((time.perf_counter() - start) / k)
                if ok:
                    finish(i, w, Z, "cg", k, theta_min, residual)
                    cg_counts.append(k)
                    w_prev, pos = w, pos + 1
                    continue
            cg_phase = False
        budget = max(2, int(settings.budget * clock.t_chol() / clock.t_pcg()))
        if factor is not None and settings.allow_pcg:
            if (
                predict(pcg_counts) * clock.t_pcg()
                <= settings.pcg_switch * settings.budget * clock.t_chol()
            ):
                ok, w, k = try_pcg(pos, factor, x0, budget)
                if ok:
                    pcg_counts.append(k)
                    w_prev, pos = w, pos + 1
                    continue
        if settings.allow_pcg and pos + 1 < S:
            # a new factorisation `lead` scales further down; it also preconditions the
            # scales between (warm-started from their upper neighbours), then those below it
            fpos = min(pos + max(settings.lead, 1), S - 1)
            entry, w_f = direct(fpos)
            factor = entry or factor
            pcg_counts = []
            for q in range(pos, fpos):
                ok = False
                if entry is not None:
                    ok, w, k = try_pcg(q, entry, w_f if w_prev is None else w_prev, budget)
                if ok:
                    pcg_counts = [k]
                else:
                    _, w = direct(q)
                w_prev = w
            w_prev, pos = w_f, fpos + 1
            continue
        factor, w = direct(pos)
        pcg_counts = []
        w_prev, pos = w, pos + 1
    if bar is not None:
        bar.close()
    out["solver"] = solver
    return out
