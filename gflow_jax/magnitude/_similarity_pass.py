"""The fused pass that builds Z(t) = exp(−t·D) for the CPU engine, compiled with Numba.

docs/theory.md#magnitude-numerics. One pass over the lower triangle of D, row by row (each row
stays in the core's L1/L2 cache while it is used), computes per entry:

* the exponential, by a vectorisable polynomial (:func:`exp_nonpositive`, ≤ 1 ulp);
* its float32 rounding (the float32 copy of Z that the engine's factors and products use);
* the row sums Z·1 of the symmetric matrix (``rs[j] += z`` for the entries left of the diagonal,
  the row's own sum for row i);
* optionally the product Z·x with one vector (the engine's initial residual of the scale);
* with the weights w of the scale *previously* held in the buffer, the derivative wᵀ(D∘Z)w of
  that scale, read from the old entries just before they are overwritten.

NumPy needs five passes for the same (multiply, exp, cast, the derivative's product and its
reduction, each a call per row block) and BLAS one more for the row sums; this pass reads D and
the old Z once and writes Z and its float32 copy once: 7 ms against 17.6 ms per scale at
m = 2000 (benchmarks/README.md).

Numba compiles these functions on first use (about two seconds; cached on disk after that).
The exponential is not NumPy's, so entries may differ from ``np.exp`` by one unit in the last
place (tested against NumPy and against 40-digit decimal arithmetic).
"""

from __future__ import annotations

import numba
import numpy as np

_LOG2E = 1.4426950408889634
# ln 2 split in two (Cody–Waite): k·_LN2_HI is exact for |k| < 2^11
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
# adding 1.5·2^52 rounds a double of magnitude < 2^51 to an integer, kept in the low bits
_ROUND = 6755399441055744.0
_ROUND_BITS = np.int64(np.float64(_ROUND).view(np.int64))
# below this, exp underflows to 0 in float64 (exp(−745.2) is the smallest subnormal); the
# clamp keeps the two power-of-two factors below normal floats
_X_MIN = -1400.0
# 1/k! for k = 2 … 13: the Taylor polynomial of exp on |r| ≤ ln2/2 (remainder < 2e-18)
_C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10, _C11, _C12, _C13 = (
    1.0 / float(np.prod(np.arange(1, k + 1), dtype=np.float64)) for k in range(2, 14)
)

# the exponential must keep its operation order (no reassociation: the rounding trick and the
# split of ln 2 rely on it); fused multiply–adds only make it more accurate
_EXACT = {"contract"}
# reductions may be reordered (vectorised sums)
_SUMS = {"contract", "reassoc", "nsz"}
_jit = dict(nogil=True, boundscheck=False, cache=True)


@numba.njit(fastmath=_EXACT, **_jit)
def exp_nonpositive(x: float) -> float:
    """exp(x) for x ≤ 0, to ≤ 1 ulp, subnormal results included, in operations that
    vectorise: x = k·ln2 + r with |r| ≤ ln2/2, exp(r) by its Taylor polynomial of degree 13,
    2^k as two powers of two built from their bits (so that subnormal results round once).
    NaN stays NaN (a NaN distance must not become a zero entry); −inf gives 0."""
    x = _X_MIN if x < _X_MIN else x  # (a comparison with NaN is false: NaN passes through)
    kf = x * _LOG2E + _ROUND
    k = kf - _ROUND
    r = (x - k * _LN2_HI) - k * _LN2_LO
    r2 = r * r
    r4 = r2 * r2
    # the orders 4 … 13 by Estrin's scheme (short dependency chains), then the low orders from
    # small to large, so that the sums that decide the last bits round once each
    a0 = _C4 + _C5 * r
    a1 = _C6 + _C7 * r
    a2 = _C8 + _C9 * r
    a3 = _C10 + _C11 * r
    a4 = _C12 + _C13 * r
    high = (a0 + a1 * r2) + ((a2 + a3 * r2) + a4 * r4) * r4
    p = 1.0 + (r + r2 * (_C2 + r * (_C3 + r * high)))
    n = np.float64(kf).view(np.int64) - _ROUND_BITS
    n1 = n >> 1
    n2 = n - n1
    s1 = np.int64((n1 + 1023) << 52).view(np.float64)
    s2 = np.int64((n2 + 1023) << 52).view(np.float64)
    return (p * s1) * s2


@numba.njit(fastmath=_EXACT, **_jit)
def _exp_row(d, t, z, z32, rs, n, single):
    """z[:n] = exp(−t·d[:n]) (and its float32 rounding), rs[:n] += z[:n]."""
    if single:
        for j in range(n):
            v = exp_nonpositive(-t * d[j])
            z[j] = v
            z32[j] = np.float32(v)
            rs[j] += v
    else:
        for j in range(n):
            v = exp_nonpositive(-t * d[j])
            z[j] = v
            rs[j] += v


@numba.njit(fastmath=_SUMS, **_jit)
def _weighted_dot(w, d, z, n):
    """Σ_{j<n} w_j d_j z_j."""
    s = 0.0
    for j in range(n):
        s += w[j] * d[j] * z[j]
    return s


@numba.njit(fastmath=_SUMS, **_jit)
def _sum(z, n):
    s = 0.0
    for j in range(n):
        s += z[j]
    return s


@numba.njit(fastmath=_SUMS, **_jit)
def _dot(a, b, n):
    s = 0.0
    for j in range(n):
        s += a[j] * b[j]
    return s


@numba.njit(fastmath={"contract"}, **_jit)
def _axpy(a, x, y, n):
    """y[:n] += a·x[:n]."""
    for j in range(n):
        y[j] += a * x[j]


@numba.njit(**_jit)
def build_rows(D, t, Z, Z32, w, rs, x, y, rows, single, with_derivative, with_product):
    """For each row i in ``rows``: the derivative term of the old row (when
    ``with_derivative``), then Z[i, :i+1] = exp(−t·D[i, :i+1]) (and Z32, when ``single``), with
    the row sums added into ``rs`` ``(m,)`` and, when ``with_product``, the product Z·x added
    into ``y`` ``(m,)`` (the caller zeroes both; symmetric: row i adds z·x_i to the entries left
    of the diagonal and Σ_j z_j x_j to its own). Returns the rows' share of wᵀ(D∘Z_old)w:
    2·Σ_i w_i Σ_{j<i} w_j D_ij Z_old,ij (the diagonal of D is 0)."""
    total = 0.0
    for i in rows:
        d = D[i]
        z = Z[i]
        if with_derivative:
            total += 2.0 * w[i] * _weighted_dot(w, d, z, i)
        _exp_row(d, t, z, Z32[i], rs, i + 1, single)
        rs[i] += _sum(z, i)
        if with_product:
            _axpy(x[i], z, y, i + 1)
            y[i] += _dot(z, x, i)
    return total


@numba.njit(**_jit)
def derivative_rows(D, Z, w, rows):
    """The rows' share of wᵀ(D∘Z)w from the lower triangle of Z (see :func:`build_rows`)."""
    total = 0.0
    for i in rows:
        total += 2.0 * w[i] * _weighted_dot(w, D[i], Z[i], i)
    return total


@numba.njit(fastmath=_EXACT, **_jit)
def exp_array(x, out):
    """out = exp(x) elementwise for x ≤ 0 ``(k,)`` (the tests' access to the exponential)."""
    for j in range(x.shape[0]):
        out[j] = exp_nonpositive(x[j])
