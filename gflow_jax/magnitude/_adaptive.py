"""Adaptive CPU engine for large clouds: CG, neighbour-preconditioned CG, mixed-precision
Cholesky (docs/theory.md#magnitude-numerics).

A direct method pays one float64 Cholesky factorisation (m³/3 flops) per scale. Three facts let
us pay far less:

1. Z(t) = exp(−t·D) is well conditioned at *large* t (Z → I), where plain conjugate gradients
   converge in a few matrix–vector products (2m² flops each).
2. Z(t) changes smoothly with t: the Cholesky factor of a *neighbouring* scale is an excellent
   preconditioner (typically 5–20 CG iterations for scales up to ~6 grid points away on a
   32-point log grid, fewer at small t).
3. A factor used only as a preconditioner need not be exact: a float32 factor (LAPACK
   ``spotrf``, about half the time of ``dpotrf``; its triangular solves read half the bytes)
   preconditions float64 CG as well as a float64 one while κ(Z)·ε₃₂ ≪ 1 (ε₃₂ ≈ 6·10⁻⁸).

Scales are processed from the largest to the smallest, each solve warm-started from the
previous scale's weights. Plain CG runs while its predicted cost at the next scale (the last
iteration count extrapolated linearly) stays below ``cg_switch`` of a factorisation. Then a
factorisation is made ``lead`` scales further down (or half as far as the previous factor
reached below itself); it preconditions the scales between (from above) and then those below
it while the next solve is predicted to cost at most the average cost per scale of its window,
factorisation included (the renewal rule: stop when the marginal cost exceeds the average). Costs
are modelled as the fastest timings seen during the run (factorisations by precision, one
iteration by kind; priors from flop counts until measured) times exact iteration counts: the
choice adapts to the machine and to m, and the noise of other jobs does not steer it.

**Mixed precision** (``mixed_precision``, default): a factorisation is tried in float32 while
the condition estimate of the latest scale is ≤ ``single_max_condition``. Its own scale is then
solved by float64 CG preconditioned with it (solver ``"cholesky32"``: iterative refinement with
Krylov acceleration). If ``spotrf`` fails (Z not positive definite in single precision) or that
CG does not converge within the time a float64 factorisation would have saved, the scale is
factorised in float64 instead, the reason is recorded in ``fallback``, and every smaller scale
(worse conditioned) uses float64 factors. While κ ≤ ``single_products_max_condition`` the
products inside CG use Z rounded to float32 (``ssymv``: half the bytes), the float64 residual
being recomputed whenever the recursive one has fallen by ~30·ε₃₂·κ ("reliable updates"), so
the float32 errors never limit the final accuracy.

Nothing is approximated silently: every iterative solve ends with an explicit float64 residual
‖Zw − 1‖₂/‖1‖₂ ≤ ``rtol``; if it does not get there within its budget, the scale is solved
directly (float64 Cholesky, or LU when Cholesky fails). The solver, iteration count, precision of
the factor used and achieved residual of every scale are reported, and the seconds spent per
phase (:data:`PHASES`: building Z, its row sums and the previous scale's derivative wᵀ(D∘Z)w
in one pass; factorisations by precision; CG iterations; the explicit residuals that verify
them). Condition estimates:
λ_max ≤ largest row sum of Z; λ_min from the Rayleigh quotients of one inverse iteration (direct
solves, as in :mod:`gflow_jax.magnitude._core`) or from the Lanczos tridiagonal of the
(preconditioned) CG run (λ_min(Z) ≈ θ_min(P⁻¹Z)·λ_min(P)), an estimate, not a bound.

Kernels (lower triangle only; D, one Z with its float32 copy and one factor held at a time):
:mod:`gflow_jax.magnitude._host`, with Z built by :mod:`gflow_jax.magnitude._similarity_pass`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import jax
import numpy as np
import scipy.linalg as sla

from ..core._shapes import Shapes
from . import _host
from ._adaptive_costs import Clock, predict_iterations

#: distinct points from which ``method="auto"`` (and the many-clouds engine) use this engine on CPU
ADAPTIVE_FROM = 1024
#: the phases of :func:`solve_adaptive`'s ``profile`` (seconds)
PHASES = ("build", "factor32", "factor64", "iterate", "verify")
_EPS32 = float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class AdaptiveSettings:
    """Knobs of :func:`solve_adaptive`.

    Attributes:
        rtol: required relative residual ‖Zw − 1‖₂/‖1‖₂ of every iterative solve.
        budget: an iterative solve may cost at most this multiple of one factorisation (and
            at least ``min_iter`` iterations) before the scale is solved directly: generous,
            since giving up means paying for a factorisation on top.
        min_iter: the smallest iteration budget of an iterative solve.
        cg_switch: plain CG continues while its predicted cost at the next scale is at most
            this fraction of one factorisation.
        pcg_switch: a factor keeps serving the scales below it while the predicted cost of the
            next preconditioned solve is at most this multiple of the average cost per scale of
            its window so far (its factorisation included): the renewal rule, which minimises
            the long-run cost per scale when costs grow with the distance to the factor.
        lead: a new factorisation is made at least this many scales below the first scale that
            needs it (more when the previous factor reached further), and preconditions the
            scales above it as well as those below.
        allow_cg: try plain CG at the large scales.
        allow_pcg: reuse neighbouring factorisations as preconditioners.
        mixed_precision: factorise in float32 while the conditioning allows it (see module);
            the answer is still float64 with residual ≤ ``rtol``.
        single_products: with ``mixed_precision``, also compute the products inside CG in
            float32 (float64 "reliable updates" of the residual keep the final accuracy) while
            the latest condition estimate is at most ``single_products_max_condition``; a solve
            that does not converge so continues with float64 products.
        single_max_condition: float32 factorisations are tried while the latest scale's
            condition estimate is at most this.
        threads: threads of the pass that builds Z (with its derivative and row sums);
            None: as many as BLAS uses (threadpoolctl). One by default: the pass is bound by
            memory bandwidth, and beside OpenBLAS's own threads, which keep spinning between
            the products, a second thread slowed the whole solve on a 2-core machine
            (n = 2000, 32 scales, ``OPENBLAS_NUM_THREADS=2``: 1.02–1.29 s against 0.91–1.03 s).
        progress: show a tqdm bar over the scales.
    """

    rtol: float = 1e-12
    budget: float = 2.0
    min_iter: int = 30
    cg_switch: float = 0.4
    pcg_switch: float = 1.0
    lead: int = 1
    allow_cg: bool = True
    allow_pcg: bool = True
    mixed_precision: bool = True
    single_products: bool = True
    single_products_max_condition: float = 1e4
    single_max_condition: float = 1e6
    threads: int | None = 1
    progress: bool = False


@dataclass
class _Factor:
    """A factorisation serving as preconditioner: its position in the processing order, the
    map r ↦ P⁻¹r, the λ_min estimate of its Z and its precision (32 or 64 bits)."""

    pos: int
    apply: Callable
    lam_min: float
    bits: int


@dataclass
class _Solve:
    """Outcome of one (P)CG run."""

    ok: bool
    w: np.ndarray
    iterations: int
    residual: float
    seconds: float


class _Run:
    """State of one :func:`solve_adaptive` call (one Z buffer, the current factor, timings)."""

    def __init__(self, D, scales, settings):
        self.D, self.scales, self.settings = D, scales, settings
        m, S = D.shape[0], scales.shape[0]
        self.b, self.probe = np.ones(m), _host.probe(m)
        keys = ("magnitude", "derivative", "positive_magnitude", "spread", "max_eigenvalue")
        keys += ("min_eigenvalue", "condition", "residual", "preconditioner")
        self.out = {k: np.full(S, np.nan) for k in keys}
        self.out["iterations"] = np.zeros(S, dtype=np.int64)
        self.out["precision"] = np.zeros(S, dtype=np.int64)
        self.out["weights"] = np.zeros((m, S))
        self.solver, self.fallback = [""] * S, [""] * S
        self.profile = dict.fromkeys(PHASES, 0.0)
        self.clock = Clock(m)
        self.order = np.argsort(-scales, kind="stable")  # largest scale first
        # one Z at a time (at m = 20000 it is 3.2 GB); zeros: the strict upper triangle is never
        # written, and the float32 rounding of the whole buffer must see finite numbers
        self.buffer = np.zeros((m, m))
        # its float32 rounding, for the products inside CG while float32 is in use
        low = settings.mixed_precision and settings.single_products
        self.buffer32 = np.zeros((m, m), np.float32) if low else None
        self.has32 = False
        self.row_sums = np.zeros(m)  # Z·1 of the Z in the buffer (from its build)
        self.product = None  # Z·x of the latest build, when it was asked for
        self.current = -1
        self.pending = None  # (scale, weights) finished in the buffer, derivative still due
        self.threads = settings.threads or _host.blas_threads()
        self.single = settings.mixed_precision
        self.abandoned = ""  # why float32 was abandoned, once it was
        self.kappa = 1.0  # condition estimate of the latest finished scale
        self.bar = None
        if settings.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=S, desc=f"magnitude m={m}", leave=False)

    def Z(self, i: int, x: np.ndarray | None = None) -> np.ndarray:
        """Z at scale ``i`` in the buffer (built unless it is there); the build also gives the
        derivative of the scale finished in the buffer before and, with ``x``, the product Z·x
        (``self.product``; None when Z was there already)."""
        self.product = None
        if self.current != i:
            start = time.perf_counter()
            self.has32 = self.single and self.buffer32 is not None
            out32 = self.buffer32 if self.has32 else None
            done, w_old = self.pending if self.pending else (None, None)
            self.product = None if x is None else np.empty_like(self.b)
            value = _host.build_lower(
                self.D, self.scales[i], self.buffer, out32, w_old, self.threads, self.row_sums,
                x, self.product,
            )  # fmt: skip
            if done is not None:
                self.out["derivative"][done] = value
            self.pending = None
            self.profile["build"] += time.perf_counter() - start
            self.current = i
        return self.buffer

    def settle(self) -> None:
        """The derivative of the scale still in the buffer (the last one finished)."""
        if self.pending:
            done, w = self.pending
            start = time.perf_counter()
            self.out["derivative"][done] = _host.derivative(self.D, self.buffer, w)
            self.profile["build"] += time.perf_counter() - start
            self.pending = None

    def matvec(self, v):
        return _host.symv(self.buffer, v)

    def reliable(self) -> float:
        """Residual reduction between float64 recomputations when products are float32: each
        stretch of float32 products can gain about a factor ε₃₂·κ, so ask for a bit less."""
        return float(np.clip(30 * _EPS32 * self.kappa, 1e-4, 0.1))

    def matvec32(self, v):
        return _host.symv32(self.buffer32, v)

    def next_factor_bits(self) -> int:
        return 32 if self.single else 64

    def verify(self, w) -> tuple[np.ndarray, float]:
        """The explicit float64 residual b − Zw and its relative norm (current Z)."""
        start = time.perf_counter()
        r = self.b - self.matvec(w)
        self.profile["verify"] += time.perf_counter() - start
        return r, float(np.linalg.norm(r) / np.linalg.norm(self.b))

    def finish(self, i, solve, name, lam_min, bits=0, precond_scale=np.nan):
        out, w, row_sums = self.out, solve.w, self.row_sums
        out["weights"][:, i] = w
        out["magnitude"][i] = w.sum()
        self.pending = (i, w)  # its derivative comes with the next build (or settle)
        out["positive_magnitude"][i] = np.maximum(w, 0).sum()
        out["spread"][i] = (1.0 / row_sums).sum()
        out["max_eigenvalue"][i] = row_sums.max()
        out["min_eigenvalue"][i] = lam_min
        out["condition"][i] = row_sums.max() / lam_min
        out["residual"][i] = solve.residual
        out["iterations"][i] = solve.iterations
        out["precision"][i] = bits
        out["preconditioner"][i] = precond_scale
        self.solver[i] = name
        if np.isfinite(out["condition"][i]) and out["condition"][i] > 0:
            self.kappa = float(out["condition"][i])
        if self.bar is not None:
            self.bar.update(1)

    def iterate(self, pos, factor, x0, max_iter, own=False) -> _Solve:
        """(P)CG at the scale at ``pos`` preconditioned by ``factor`` (None: plain CG), each
        stop verified by the explicit float64 residual (and continued from there if it fails);
        on success the scale is finished (unless ``own``: the caller finishes it)."""
        i = self.order[pos]
        self.Z(i, x0)  # a fresh build gives the initial residual's product too
        r0 = None if self.product is None else self.b - self.product
        kind = 0 if factor is None else factor.bits
        precondition = (lambda r: r) if factor is None else factor.apply
        rtol = self.settings.rtol
        start, verifying = time.perf_counter(), self.profile["verify"]
        w, r, k, theta_min = x0, r0, 0, np.nan
        # float32 products while κ·ε₃₂ is small; float64 ones after any failure
        low = self.has32 and self.kappa <= self.settings.single_products_max_condition
        while True:
            w, done, converged, _, (theta, _) = _host.cg(
                self.matvec,
                self.b,
                w,
                precondition,
                rtol,
                max_iter - k,
                r,
                self.matvec32 if low else None,
                self.reliable(),
            )
            k += done
            theta_min = theta if np.isfinite(theta) else theta_min
            r, residual = self.verify(w)
            ok = residual <= rtol
            if ok or k >= max_iter or not (converged or low):
                break
            low = False
        # CG only: the verification pass is the same fixed cost for every kind of solve
        elapsed = time.perf_counter() - start - (self.profile["verify"] - verifying)
        self.profile["iterate"] += elapsed
        products = k + (r0 is None)  # the initial product, unless the build gave it
        if products:  # (a solve that took no step and no product times nothing)
            self.clock.iteration[kind].append(elapsed / products)
        solve = _Solve(ok, w, k, residual, elapsed)
        if ok and not own:
            lam = theta_min * (1.0 if factor is None else factor.lam_min)
            if not np.isfinite(lam):  # no iteration ran: the Rayleigh quotient of w
                lam = w.sum() / (w @ w)
            scale = np.nan if factor is None else self.scales[self.order[factor.pos]]
            self.finish(i, solve, "cg" if factor is None else "pcg", lam, kind, scale)
        return solve

    def abandon(self, i: int, reason: str) -> None:
        """Stop factorising in float32 (from the scale ``i`` down), saying why."""
        self.single = False
        self.clock.iteration = {0: [], 32: [], 64: []}  # products are float64 from here
        self.fallback[i] = reason
        self.abandoned = f"float32 abandoned at t = {self.scales[i]:.4g} ({reason})"

    def max_iter(self, kind: int) -> int:
        """Iterations one solve may spend: ``budget`` × (one factorisation)."""
        t_f = self.clock.t_factor(self.next_factor_bits())
        budget = int(self.settings.budget * t_f / self.clock.t_iter(kind))
        return max(self.settings.min_iter, budget)

    def direct(self, pos) -> tuple[_Factor | None, int]:
        """Factorise the scale at ``pos`` and solve it: float32 factor + float64 CG when allowed
        and successful (``"cholesky32"``), else float64 Cholesky (or LU). Returns the factor
        (None after LU) and the CG iterations its own solve took."""
        i = self.order[pos]
        Z = self.Z(i)
        settings, clock = self.settings, self.clock
        if self.single and self.kappa > settings.single_max_condition:
            self.abandon(i, f"condition estimate {self.kappa:.2g} > single_max_condition")
        elif not self.single and self.abandoned:
            self.fallback[i] = f"float64: {self.abandoned}"
        if self.single:
            start = time.perf_counter()
            c32 = _host.factor32(Z, self.buffer32 if self.has32 else None)
            elapsed = time.perf_counter() - start
            self.profile["factor32"] += elapsed
            if c32 is None:
                self.abandon(i, "float32 Cholesky failed (not positive definite in float32)")
            else:
                clock.factor[32].append(elapsed)
                apply = _host.preconditioner32(c32)
                saved = clock.t_factor(64) - clock.t_factor(32)
                max_iter = max(4, int(settings.budget * saved / clock.t_iter(32)))
                own = _Factor(pos, apply, np.nan, 32)
                solve = self.iterate(pos, own, apply(self.b), max_iter, own=True)
                if solve.ok:
                    w, y = solve.w, apply(self.probe)
                    lam_min = min(w.sum() / (w @ w), (y @ self.matvec(y)) / (y @ y))
                    self.finish(i, solve, "cholesky32", lam_min, 32)
                    return _Factor(pos, apply, lam_min, 32), solve.iterations
                self.abandon(
                    i,
                    f"float32 factor as preconditioner: residual {solve.residual:.1e} after"
                    f" {solve.iterations} iterations",
                )
        start = time.perf_counter()
        c = _host.factor64(Z)
        if c is None:  # not positive definite (or numerically singular): LU, reported
            lu = sla.lu_factor(_host.full(Z), check_finite=False)
            W = sla.lu_solve(lu, np.stack([self.b, self.probe], axis=1), check_finite=False)
            name = "lu"
        else:
            clock.factor[64].append(time.perf_counter() - start)
            W = _host.cho_solve64(c, np.stack([self.b, self.probe], axis=1))
            name = "cholesky"
        elapsed = time.perf_counter() - start
        self.profile["factor64"] += elapsed
        w, y = W[:, 0], W[:, 1]
        _, residual = self.verify(w)
        lam_min = min(w.sum() / (w @ w), (y @ self.probe) / (y @ y))
        self.finish(i, _Solve(True, w, 0, residual, elapsed), name, lam_min, 64)
        factor = _Factor(pos, _host.preconditioner64(c), lam_min, 64) if c is not None else None
        return factor, 0

    def run(self) -> dict:
        """Largest scale first: plain CG, then factors each serving a window of scales around
        it while the next solve is predicted to cost no more than the window's average."""
        settings, clock = self.settings, self.clock
        S = self.scales.shape[0]
        weights = self.out["weights"]
        cg_phase = settings.allow_cg
        cg_counts: list = []
        factor: _Factor | None = None
        counts: list = []  # iterations of the current factor's scales below it
        served = 0  # scales below the current factor that it served
        window: list = []  # iterations of every solve in the current factor's window

        def average() -> float:
            """Modelled seconds per scale of the current window, its factorisation included
            (timings are the fastest seen, iteration counts exact: the decision follows the
            work, not the noise of a shared machine)."""
            t_it = clock.t_iter(factor.bits)
            return (clock.t_factor(factor.bits) + t_it * sum(k + 1 for k in window)) / len(window)

        w_prev = None
        pos = 0
        while pos < S:
            x0 = self.b if w_prev is None else w_prev
            t_f = clock.t_factor(self.next_factor_bits())
            if cg_phase:
                predicted = (predict_iterations(cg_counts) + 1) * clock.t_iter(0)
                if predicted <= settings.cg_switch * t_f:
                    solve = self.iterate(pos, None, x0, self.max_iter(0))
                    if solve.ok:
                        cg_counts.append(solve.iterations)
                        w_prev, pos = solve.w, pos + 1
                        continue
                cg_phase = False
            if factor is not None and settings.allow_pcg and window:
                predicted = (predict_iterations(counts) + 1) * clock.t_iter(factor.bits)
                if predicted <= settings.pcg_switch * average():
                    solve = self.iterate(pos, factor, x0, self.max_iter(factor.bits))
                    window.append(solve.iterations)
                    if solve.ok:
                        counts.append(solve.iterations)
                        served += 1
                        w_prev, pos = solve.w, pos + 1
                        continue
            if settings.allow_pcg and pos + 1 < S:
                # a new factorisation `lead` scales further down (or half as far as the
                # previous factor reached below itself); it preconditions the scales between
                # (warm-started from their upper neighbours), then those below it
                fpos = min(pos + max(settings.lead, served // 2), S - 1)
                entry, own = self.direct(fpos)
                window, counts, served = [own], [], 0
                factor = entry or factor
                for q in range(pos, fpos):
                    solve = None
                    if entry is not None:
                        start = weights[:, self.order[fpos]] if w_prev is None else w_prev
                        solve = self.iterate(q, entry, start, self.max_iter(entry.bits))
                        window.append(solve.iterations)
                        counts = [solve.iterations]
                    if solve is None or not solve.ok:
                        self.direct(q)
                    w_prev = weights[:, self.order[q]]
                if entry is None:
                    window = []
                w_prev, pos = weights[:, self.order[fpos]], fpos + 1
                continue
            entry, own = self.direct(pos)
            factor = entry or factor
            counts, served, window = [], 0, ([own] if entry is not None else [])
            w_prev, pos = weights[:, self.order[pos]], pos + 1
        self.settle()
        if self.bar is not None:
            self.bar.close()
        self.out["solver"], self.out["fallback"] = self.solver, self.fallback
        self.out["profile"] = self.profile
        return self.out


def use_adaptive(n_unique: float) -> bool:
    """The CPU engine rule: this engine for ≥ :data:`ADAPTIVE_FROM` distinct points when JAX
    runs on CPU (elsewhere the batched JAX Cholesky core)."""
    return jax.default_backend() == "cpu" and n_unique >= ADAPTIVE_FROM


def solve_adaptive(D, scales, settings: AdaptiveSettings = AdaptiveSettings()) -> dict:
    """Weights of the (deduplicated) distance matrix ``D`` ``(m, m)`` at ``scales`` ``(S,)``.

    Returns a dict of NumPy arrays: ``weights`` ``(m, S)`` and, per scale, ``magnitude``,
    ``derivative``, ``positive_magnitude``, ``spread``, ``max_eigenvalue``, ``min_eigenvalue``,
    ``condition``, ``residual``, ``iterations``, ``precision`` (bits of the factor the solve
    used: 0 none, 32, 64), ``preconditioner`` (the scale whose factor preconditioned a
    ``"pcg"`` solve), ``solver`` (names: ``"cg"``, ``"pcg"`` — preconditioned by a neighbouring
    scale's factor —, ``"cholesky32"`` — float64 CG preconditioned by this scale's own float32
    factor —, ``"cholesky"``, ``"lu"``), ``fallback`` (why float32 was abandoned at a scale,
    else ``""``) and ``profile`` (seconds per phase, :data:`PHASES`). Batch axis: refused.
    """
    D_host = np.ascontiguousarray(D, dtype=np.float64)
    scales = np.asarray(scales, dtype=np.float64)
    check = Shapes("solve_adaptive")
    check("D", D_host, "m m")
    check("scales", scales, "S")
    return _Run(D_host, scales, settings).run()
