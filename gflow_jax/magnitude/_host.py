"""Host kernels of the CPU magnitude engine (NumPy, SciPy BLAS/LAPACK and one Numba pass; no
JAX).

docs/theory.md#magnitude-numerics. Z(t) = exp(−t·D) is symmetric, so only its lower triangle
is built and read. It lives in a C-ordered ``(m, m)`` float64 buffer whose strictly upper part
is never written (zeros): that lower triangle is the *upper* triangle of the Fortran-ordered
transpose ``Z.T`` (no copy), so every BLAS/LAPACK call gets ``Z.T`` with ``lower=0``.

* products Z v: BLAS ``dsymv`` (reads one triangle);
* factors Z = UᵀU: LAPACK ``dpotrf`` (float64) or ``spotrf`` (float32, about half the time) on
  a Fortran-ordered copy;
* preconditioner r ↦ (UᵀU)⁻¹ r: two BLAS-2 triangular solves (``dtrsv``/``strsv``; OpenBLAS's
  single-column ``dpotrs`` goes through ``dtrsm`` and is several times slower);
* conjugate gradients (stopping on the recursive residual; the caller verifies);
* Z itself, its float32 copy, its row sums and the derivative wᵀ(D∘Z)w of the scale built
  before it, in one fused pass (:mod:`gflow_jax.magnitude._similarity_pass`: D is read once,
  the old Z where it is overwritten);
* duplicate groups of a distance matrix (the same greedy rule as
  :func:`gflow_jax.magnitude.duplicate_groups`, without compiling anything).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.linalg as sla
from jaxtyping import Bool, Float, Int
from scipy.linalg import blas

# rows per block of the threads' interleaved shares of the build
_SHARE_ROWS = 16
# rows per block of the duplicate search (bounds the boolean temporary to ~64 MiB at m = 10⁵)
_DUP_BLOCK = 512

Vector = Float[np.ndarray, " m"]
Matrix = Float[np.ndarray, "m m"]


def _fused():
    """The Numba pass, imported on first use (importing Numba takes ~0.3 s: not at
    ``import gflow_jax``)."""
    from . import _similarity_pass

    return _similarity_pass


def _shares(m: int, threads: int) -> list[np.ndarray]:
    """Rows 0 … m−1 in ``threads`` interleaved shares of :data:`_SHARE_ROWS`-row blocks,
    largest rows first (the rows of a lower triangle grow: interleaving balances them)."""
    starts = np.arange(0, m, _SHARE_ROWS)[::-1]
    return [
        np.concatenate([np.arange(s, min(m, s + _SHARE_ROWS)) for s in starts[k::threads]])
        for k in range(threads)
        if starts[k::threads].size
    ]


def build_lower(
    D: Matrix,
    t: float,
    out: Matrix,
    out32: np.ndarray | None = None,
    w_old: Vector | None = None,
    threads: int = 1,
    row_sums: Vector | None = None,
    x: Vector | None = None,
    product: Vector | None = None,
) -> float:
    """Z = exp(−t·D) written into the lower triangle (diagonal included) of ``out`` (and
    rounded to float32 into ``out32`` when given), in one fused pass
    (:mod:`gflow_jax.magnitude._similarity_pass`); nothing above the diagonal is written.

    With ``w_old``, the same pass first reads the *previous* content of ``out`` (a Z built
    here, with weights ``w_old``) and returns its derivative wᵀ(D∘Z)w; otherwise NaN. With
    ``row_sums`` ``(m,)``, the row sums Z·1 of the new (symmetric) Z are written there; with
    ``x`` and ``product`` ``(m,)``, the product Z·x.
    ``threads`` > 1 shares the rows among that many threads (the pass releases the GIL).
    """
    m = D.shape[0]
    single = out32 is not None
    z32 = out32 if single else np.zeros((1, 1), np.float32)
    with_derivative = w_old is not None
    w = np.ascontiguousarray(w_old, dtype=np.float64) if with_derivative else np.zeros(1)
    with_product = x is not None and product is not None
    xs = np.ascontiguousarray(x, dtype=np.float64) if with_product else np.zeros(1)
    shares = _shares(m, threads) if threads > 1 else [np.arange(m)]
    kernel = _fused()

    def rows(share) -> tuple[float, np.ndarray, np.ndarray]:
        rs, y = np.zeros(m), np.zeros(m if with_product else 1)
        part = kernel.build_rows(
            D, t, out, z32, w, rs, xs, y, share, single, with_derivative, with_product
        )
        return part, rs, y

    if len(shares) > 1:
        # a pool per call (its start costs microseconds): nothing outlives the call, e.g.
        # across a fork
        with ThreadPoolExecutor(max_workers=len(shares)) as pool:
            parts = list(pool.map(rows, shares))
    else:
        parts = [rows(shares[0])]
    for target, k in ((row_sums, 1), (product if with_product else None, 2)):
        if target is not None:
            target[:] = parts[0][k]
            for part in parts[1:]:
                target += part[k]
    return float(sum(p[0] for p in parts)) if with_derivative else np.nan


def derivative(D: Matrix, Z: Matrix, w: Vector) -> float:
    """wᵀ(D∘Z)w for a Z built by :func:`build_lower` (one pass over D and Z)."""
    w = np.ascontiguousarray(w, dtype=np.float64)
    return float(_fused().derivative_rows(D, Z, w, np.arange(D.shape[0])))


def symv(Z: Matrix, v: Vector) -> Vector:
    """Z v from the lower triangle of ``Z`` (BLAS ``dsymv``)."""
    return blas.dsymv(1.0, Z.T, v, lower=0)


def symv32(Z32: np.ndarray, v: Vector) -> Vector:
    """Z v from the float32 lower triangle of Z (BLAS ``ssymv``: half the bytes of ``dsymv``
    and, with OpenBLAS, several times faster), returned in float64; accurate to ~ε₃₂‖Z‖‖v‖."""
    return blas.ssymv(1.0, Z32.T, v.astype(np.float32)).astype(np.float64)


def full(Z: Matrix) -> Matrix:
    """The full symmetric matrix from the lower triangle of ``Z`` (a new array)."""
    L = np.tril(Z)
    return L + np.tril(L, -1).T


def factor64(Z: Matrix) -> np.ndarray | None:
    """Float64 Cholesky factor U (Z = UᵀU, upper, Fortran order), or None if ``dpotrf`` fails."""
    F = np.array(Z.T, order="F", copy=True)
    c, info = sla.lapack.dpotrf(F, lower=0, clean=0, overwrite_a=1)
    return c if info == 0 else None


def factor32(Z: Matrix, Z32: np.ndarray | None = None) -> np.ndarray | None:
    """Cholesky factor of Z rounded to float32 (``spotrf``, upper; from ``Z32`` when the caller
    has the rounded triangle), or None if it fails (Z not positive definite in single
    precision: κ(Z) ≳ 1/ε₃₂ ≈ 10⁷)."""
    F = Z.T.astype(np.float32, order="F") if Z32 is None else np.array(Z32.T, order="F")
    c, info = sla.lapack.spotrf(F, lower=0, clean=0, overwrite_a=1)
    return c if info == 0 else None


def preconditioner64(c: np.ndarray) -> Callable[[Vector], Vector]:
    """r ↦ (UᵀU)⁻¹ r by two float64 triangular solves."""

    def apply(r):
        return blas.dtrsv(c, blas.dtrsv(c, r, lower=0, trans=1), lower=0, trans=0)

    return apply


def preconditioner32(c: np.ndarray) -> Callable[[Vector], Vector]:
    """r ↦ (UᵀU)⁻¹ r for a float32 factor by two float32 triangular solves, in float64 out."""

    def apply(r):
        y = blas.strsv(c, r.astype(np.float32), lower=0, trans=1)
        return blas.strsv(c, y, lower=0, trans=0, overwrite_x=1).astype(np.float64)

    return apply


def cho_solve64(c: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Z⁻¹B from a float64 factor (``dpotrs``)."""
    x, info = sla.lapack.dpotrs(c, B, lower=0)
    if info != 0:  # pragma: no cover - only on invalid arguments
        raise np.linalg.LinAlgError(f"dpotrs failed with info={info}")
    return x


def lanczos_tridiagonal(alphas, betas) -> tuple[np.ndarray, np.ndarray]:
    """The Lanczos tridiagonal of a CG run of k iterations from its step lengths α_k, β_k: its
    diagonal ``(k,)`` 1/α_j + β_{j−1}/α_{j−1} and off-diagonal ``(k − 1,)`` √β_j/α_j."""
    k = len(alphas)
    a, b = np.asarray(alphas, float), np.asarray(betas[: k - 1], float)
    diag = 1.0 / a
    diag[1:] += b / a[:-1]
    return diag, np.sqrt(np.maximum(b, 0.0)) / a[:-1]


def tridiagonal_extremes(alphas: list, betas: list) -> tuple[float, float]:
    """Extreme Ritz values of the Lanczos tridiagonal of a CG run (:func:`lanczos_tridiagonal`),
    each by bisection (LAPACK ``dstebz``): O(k) for a run of k iterations, where all k
    eigenvalues would cost O(k²) (6 s for a 20 000-iteration run)."""
    k = len(alphas)
    if k == 0:
        return np.nan, np.nan
    a, b = np.asarray(alphas), np.asarray(betas[: k - 1])
    if not (np.all(np.isfinite(a)) and np.all(a != 0) and np.all(np.isfinite(b))):
        return np.nan, np.nan  # a broken-down run estimates nothing
    diag, off = lanczos_tridiagonal(alphas, betas)
    if k == 1:
        return float(diag[0]), float(diag[0])
    lo, hi = (
        sla.eigvalsh_tridiagonal(diag, off, select="i", select_range=(j, j), lapack_driver="stebz")
        for j in (0, k - 1)
    )
    return float(lo[0]), float(hi[0])


def cg(
    matvec: Callable[[Vector], Vector],
    b: Vector,
    x0: Vector,
    precondition: Callable[[Vector], Vector],
    rtol: float,
    max_iter: int,
    r0: Vector | None = None,
    matvec_low: Callable[[Vector], Vector] | None = None,
    reliable: float = 0.1,
) -> tuple[Vector, int, bool, float, tuple[float, float]]:
    """(Preconditioned) conjugate gradients on Z x = b from ``x0`` (``matvec(v)`` = Z v;
    ``r0`` = b − Z x0 when the caller has it).

    With ``matvec_low`` (a cheaper, less accurate product, e.g. :func:`symv32`) the iterations
    use it, and the residual is recomputed with ``matvec`` ("reliable updates") whenever the
    recursive residual has fallen by the factor ``reliable`` since the last recomputation: the
    float32 errors then only perturb each stretch of iterations, not the final accuracy.

    Stops when the recursively updated residual reaches ``rtol``·‖b‖ or after ``max_iter``
    iterations. The recursive residual drifts from the true one, so callers must verify the
    result with an explicit float64 residual and call again from x if it fails.

    Returns:
        x, iterations, recursive residual ≤ rtol, that relative residual, extreme Ritz values
        of P⁻¹Z.
    """
    x = x0.copy()
    r = b - matvec(x) if r0 is None else r0.copy()
    product = matvec if matvec_low is None else matvec_low
    bnorm = np.linalg.norm(b)
    z = precondition(r)
    p = z.copy()
    rz = r @ z
    alphas, betas = [], []
    k = 0
    residual = np.linalg.norm(r) / bnorm
    anchor = residual  # the residual at the last recomputation
    while k < max_iter and residual > rtol:
        Ap = product(p)
        curvature = p @ Ap
        # breakdown (indefinite or perturbed operator, or a preconditioner that overflowed):
        # stop here; the caller's explicit residual then decides
        if not curvature > 0:
            break
        alpha = rz / curvature
        if not (np.isfinite(alpha) and alpha > 0):
            break
        x += alpha * p
        r -= alpha * Ap
        k += 1
        alphas.append(alpha)
        residual = np.linalg.norm(r) / bnorm
        if residual <= rtol:
            break
        if matvec_low is not None and residual < reliable * anchor:
            r = b - matvec(x)
            residual = anchor = np.linalg.norm(r) / bnorm
        z = precondition(r)
        rz_new = r @ z
        beta = rz_new / rz
        p = z + beta * p
        rz = rz_new
        betas.append(beta)
    return x, k, bool(residual <= rtol), float(residual), tridiagonal_extremes(alphas, betas)


def duplicate_groups(
    D: Matrix, duplicate_tol: float = 0.0
) -> tuple[Bool[np.ndarray, " m"], Int[np.ndarray, " m"], Int[np.ndarray, " m"]]:
    """Greedy duplicate groups in index order, on the host: point i starts a group unless
    D_ij ≤ ``duplicate_tol`` for an earlier representative j, else it joins the first such j
    (the rule of :func:`gflow_jax.magnitude.duplicate_groups`). Only points with a neighbour
    within the tolerance enter the sequential pass, so distinct clouds cost one O(m²) scan.

    Returns:
        keep ``(m,)`` (representatives), representative ``(m,)``, group_size ``(m,)``.
    """
    m = D.shape[0]
    has_close = np.zeros(m, dtype=bool)
    for s in range(0, m, _DUP_BLOCK):
        e = min(m, s + _DUP_BLOCK)
        close = D[s:e] <= duplicate_tol
        close[np.arange(e - s), np.arange(s, e)] = False
        has_close[s:e] = close.any(axis=1)
    keep = np.ones(m, dtype=bool)
    representative = np.arange(m)
    candidates = np.flatnonzero(has_close)
    for k, i in enumerate(candidates.tolist()):
        earlier = candidates[:k]
        near = earlier[keep[earlier] & (D[i, earlier] <= duplicate_tol)]
        if near.size:
            keep[i] = False
            representative[i] = near[0]
    counts = np.bincount(representative, minlength=m)
    return keep, representative, counts[representative]


def blas_threads() -> int:
    """Threads of the BLAS library NumPy/SciPy use (1 if that cannot be told)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return 1
    counts = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
    return max(1, min(counts)) if counts else 1


def probe(m: int) -> np.ndarray:
    """A fixed pseudo-random unit vector (m,) for the inverse-iteration estimate of λ_min."""
    r = np.random.default_rng(20240531).standard_normal(m)
    return r / np.linalg.norm(r)
