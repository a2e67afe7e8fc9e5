"""Work-precision of the effective flow: error against the exact solver versus time per solve.

Run:  .venv/bin/python benchmarks/work_precision.py [--quick] [--out DIR]

The bias-only flow of C_in (docs/theory.md#effective-flows, flow 1) is discontinuous wherever a
face meets a data value (docs/theory.md#sliding); every solver below is scored by the largest
error of the saved thresholds c against the exact event-driven solution (``solver="exact"``,
docs/theory.md#meeting-faces, closed form between events: the reference, at rounding level), and
by its time per solve (median of ``--repeat`` runs after compilation; jit-compiled diffrax,
``block_until_ready``). Two problems of one shape (so every compiled program serves both):

* ``separated``: N = 1000 points in 4 clusters, M = 16 coordinates, L = 4 layers of alternating
  sides (benchmarks/flow_vs_scipy.py's problem): faces sweep their clusters, thousands of data
  crossings, no sliding;
* ``sliding``: the same sizes, two clusters per coordinate whose targets make the face from
  below sweep the first and stick at the lowest point of the second, owning a fraction of it
  (Filippov sliding: the one-sided fields point at each other; docs/theory.md#sliding) — which
  an adaptive solver without events can only follow by chattering across the discontinuity in
  ever smaller steps.

Methods, at rtol 1e-4 … 1e-12 with atol = rtol·1e-2 (the thresholds are O(1), so this keeps the
absolute part from dominating the relative one):

* scipy ``solve_ivp`` RK45, DOP853, LSODA and Radau with a vectorised NumPy field (the library's
  sorted-interval algorithm: one lexicographic ``searchsorted`` for every face, prefix sums of
  the sorted targets) and, for Radau, the analytic Jacobian, which is diagonal:
  ∂(∂_s b_{ℓ,k})/∂b_{ℓ,k} = −n_{ℓ,k}/(N d²_{ℓ,k}) (``--no-jacobian``: finite differences). It
  barely matters: Radau evaluates it about four times per solve (N = 1000, rtol 1e-6: 4
  Jacobians, 5397 field evaluations either way, times within noise), and LSODA never leaves its
  non-stiff Adams mode here (0 Jacobians), so it gets none. A solve that needs more than
  ``--max-nfev`` evaluations is stopped and reported;
* diffrax Tsit5, Dopri5 and Dopri8, each with the toolkit's PID controller
  (pcoeff, icoeff = ``DEFAULTS``) and with the classical I controller (pcoeff 0, icoeff 1);
  ``max_steps`` reached is reported as a failure, never a hang;
* the event-located diffrax solve (``events=True``: Tsit5 + PID between events, every
  discontinuity located and resolved);
* the exact solver (no tolerance).

Writes ``work_precision.md`` (the tables and ratios), ``work_precision.json`` (every row) and
``work_precision.png`` (log-log error against time, one line per method) into ``--out``
(default ``runs/work_precision``), and prints the table, the exact solver's events and time per
event, and the two ratios of the goals: the exact solver against the default (Tsit5 + PID at
rtol 1e-8; goal ≥ 10×) and the best diffrax configuration against Tsit5 + PID at equal error
(the time each needs to reach the error Tsit5 + PID reaches at rtol 1e-8; goal ≥ 2×). The first
ratio is also timed *interleaved* (``--interleave`` rounds, each the median of
``--interleave-solves`` exact solves and as many default solves, the order alternating between
rounds): both sides then see the same state of a shared machine, whose speed can drift by tens of
percent between the blocks of the table. The load average is printed before and after, with a
warning above 1. ``--quick``: tiny sizes and three
tolerances, under a minute (tests/test_work_precision.py runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy.integrate import solve_ivp

import gflow_jax  # noqa: F401  (enables float64)
from gflow_jax.core import AdaptedParameters, make_clusters
from gflow_jax.dynamics import DEFAULTS, FlowProblem, SolverSettings, solve_flow
from gflow_jax.io import pyplot, save_figure

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' shared helpers
from _load import load_line  # noqa: E402

PID = (DEFAULTS["pcoeff"], DEFAULTS["icoeff"])
I_CONTROLLER = (0.0, 1.0)
DIFFRAX = [
    (solver, name, coeffs)
    for solver in ("tsit5", "dopri5", "dopri8")
    for name, coeffs in (("PID", PID), ("I", I_CONTROLLER))
]
SCIPY = ("RK45", "DOP853", "LSODA", "Radau")
DEFAULT_METHOD = "diffrax tsit5 + PID"
LOCATED_METHOD = "diffrax tsit5 + PID, events"
EXACT_METHOD = "exact"


# --------------------------------------------------------------------------------------------
# problems


@dataclass(frozen=True)
class Sizes:
    n_points: int
    dim: int
    layers: int
    t_final: float
    n_save: int


FULL = Sizes(n_points=1000, dim=16, layers=4, t_final=20.0, n_save=21)
QUICK = Sizes(n_points=48, dim=3, layers=2, t_final=8.0, n_save=9)


def _faces(x, layers: int, dim: int):
    """Layers alternate sides (from below, from above, ...), |d| from 0.8 to 1.2 across the
    coordinates; each face starts at a quantile 0.05 … 0.2 of the data from its side."""
    signs = jnp.array([1.0 if ell % 2 == 0 else -1.0 for ell in range(layers)])[:, None]
    d = signs * jnp.linspace(0.8, 1.2, dim)[None, :]
    q = jnp.linspace(0.05, 0.2, layers)
    lower = jnp.quantile(x, q, axis=0)
    upper = jnp.quantile(x, 1.0 - q, axis=0)
    return AdaptedParameters.from_thresholds(d, jnp.where(d > 0, lower, upper))


def separated_problem(key, sizes: Sizes):
    """Four separated ball clusters on the diagonal; each cluster's target is its centre shifted
    by 0.3 towards the middle of the cloud (benchmarks/flow_vs_scipy.py)."""
    data = make_clusters(
        key, n_classes=4, n_per_class=sizes.n_points // 4, dim=sizes.dim, radius=0.6,
        separation=2.0,
    )  # fmt: skip
    middle = jnp.mean(data.centers, axis=0, keepdims=True)
    targets = (data.centers + 0.3 * jnp.sign(middle - data.centers))[data.labels]
    return FlowProblem(data.x, targets), _faces(data.x, sizes.layers, sizes.dim)


def sliding_problem(key, sizes: Sizes):
    """Per coordinate k, cluster A: N/2 points uniform in [0, 1], cluster B: N/2 in [1.2, 2.2].
    Every point of A has the target ξ_B + δ_k, just above B's lowest point ξ_B; that point's
    target is −6, the rest of B's is 2. The face from below sweeps A (N/2 crossings) and reaches
    ξ_B, where g(ξ_B⁻) = −(N/2)δ_k and g(ξ_B⁺) = g(ξ_B⁻) + (ξ_B + 6): it sticks there when
    (N/2)δ_k < ξ_B + 6 (docs/theory.md#sliding), owning A and a fraction of ξ_B: a face shared by
    both clusters. (N/2)δ_k runs from 1 to 12 over the coordinates, so most faces stick and a few
    cross. The face from above relaxes to 2 inside B."""
    k_a, k_b = jax.random.split(key)
    half, dim = sizes.n_points // 2, sizes.dim
    a = jax.random.uniform(k_a, (half, dim))
    b = 1.2 + jax.random.uniform(k_b, (half, dim))
    xi = jnp.min(b, axis=0)
    delta = jnp.linspace(1.0, 12.0, dim) / half
    targets_b = jnp.where(b == xi[None, :], -6.0, 2.0)
    targets = jnp.concatenate([jnp.broadcast_to((xi + delta)[None, :], (half, dim)), targets_b])
    x = jnp.concatenate([a, b])
    return FlowProblem(x, targets), _faces(x, sizes.layers, dim)


PROBLEMS = {"separated": separated_problem, "sliding": sliding_problem}


# --------------------------------------------------------------------------------------------
# the NumPy field for scipy


def _complex(real, imag) -> np.ndarray:
    """real + i·imag, also for infinite imag (where ``1j * inf`` has a NaN real part)."""
    out = np.empty(np.broadcast_shapes(np.shape(real), np.shape(imag)), np.complex128)
    out.real, out.imag = real, imag
    return out


class NumpyField:
    """∂_s b = −∇_b C_in = g/d of the bias-only flow in NumPy, by the algorithm of
    :func:`gflow_jax.core.threshold_gradient`: each layer's cut on the raw coordinate from the
    composite clamp, the counts #{u < cut} and #{u ≤ cut} of every (ℓ, k) from ONE
    ``np.searchsorted`` on the coordinate-major complex keys k + i·u (NumPy orders complex numbers
    lexicographically, so the search is exact and vectorised over coordinates), the owned
    interval from running maxima/minima over the later layers, and Σ_owned ỹ from prefix sums.
    ``jacobian``: the diagonal −n_{ℓ,k}/(N d²_{ℓ,k}) of the same evaluation (exact between
    discontinuities)."""

    def __init__(self, u: np.ndarray, targets: np.ndarray, d: np.ndarray):
        N, M = u.shape
        self.N, self.L, self.M = N, d.shape[0], M
        order = np.argsort(u, axis=0, kind="stable")
        values = np.take_along_axis(u, order, axis=0).T  # (M, N)
        self.keys = _complex(np.arange(M)[:, None], values).ravel()
        sorted_targets = np.take_along_axis(targets, order, axis=0).T
        prefix = np.concatenate([np.zeros((M, 1)), np.cumsum(sorted_targets, axis=1)], axis=1)
        self.prefix = prefix.ravel()
        self.key_base = (np.arange(M) * N)[None, :]
        self.prefix_base = (np.arange(M) * (N + 1))[None, :]
        self.d = d
        self.positive = d > 0
        self.nfev = 0

    def _owned(self, b: np.ndarray):
        """(c, lo, hi): thresholds and each face's owned interval of sorted positions."""
        L, M, N = self.L, self.M, self.N
        c = -b.reshape(L, M) / self.d
        a, beta = np.full(M, -np.inf), np.full(M, np.inf)
        cuts = np.empty((L, M))
        for ell in range(L):
            cl, pos = c[ell], self.positive[ell]
            cut_below = np.where(beta < cl, np.inf, np.where(a >= cl, -np.inf, cl))
            cut_above = np.where(beta <= cl, np.inf, np.where(a > cl, -np.inf, cl))
            cuts[ell] = np.where(pos, cut_below, cut_above)
            a = np.where(pos, np.maximum(a, cl), a)
            beta = np.where(pos, np.maximum(beta, cl), np.minimum(beta, cl))
        queries = _complex(np.arange(M)[None, :], cuts).ravel()
        below = np.searchsorted(self.keys, queries, side="left").reshape(L, M) - self.key_base
        at_most = np.searchsorted(self.keys, queries, side="right").reshape(L, M) - self.key_base
        later_below = np.maximum.accumulate(np.where(self.positive, below, 0)[::-1], axis=0)[::-1]
        later_at_most = np.minimum.accumulate(np.where(self.positive, N, at_most)[::-1], 0)[::-1]
        first = np.concatenate([later_below[1:], np.zeros((1, M), dtype=below.dtype)])
        last = np.concatenate([later_at_most[1:], np.full((1, M), N, dtype=below.dtype)])
        lo = np.where(self.positive, first, np.maximum(first, at_most))
        hi = np.maximum(np.where(self.positive, np.minimum(last, below), last), lo)
        return c, lo, hi

    def __call__(self, t, b):
        self.nfev += 1
        c, lo, hi = self._owned(b)
        owned_sum = self.prefix[self.prefix_base + hi] - self.prefix[self.prefix_base + lo]
        g = ((hi - lo) * c - owned_sum) / self.N
        return (g / self.d).ravel()

    def jacobian(self, t, b):
        _, lo, hi = self._owned(b)
        return np.diag((-(hi - lo) / (self.N * self.d**2)).ravel())


class TooManyEvaluations(Exception):
    pass


# --------------------------------------------------------------------------------------------
# rows


@dataclass
class Row:
    problem: str
    method: str
    family: str  # scipy | diffrax | located | exact
    rtol: float | None
    atol: float | None
    seconds: float  # median per solve after compilation (or the time to failure)
    seconds_all: list
    steps: int  # diffrax: steps (accepted + rejected); scipy: nfev; exact: events
    rejected: int | None
    success: bool
    error: float  # max |c − c_exact| over every save, inf on failure
    note: str = ""

    def work(self) -> str:
        if self.family == "scipy":
            return f"nfev {self.steps}"
        if self.family == "exact":
            return f"{self.steps} events"
        return f"{self.steps} ({self.rejected} rej.)"


def _median_time(fn, repeat: int, out, first_seconds: float):
    """``fn``'s output and time per call, median of ``repeat`` timings: the first (``out``,
    ``first_seconds``) is given, ``fn`` runs for the others."""
    times = [first_seconds]
    while len(times) < repeat:
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, float(np.median(times)), times


def _error(c: np.ndarray, reference: np.ndarray) -> float:
    return float(np.max(np.abs(c - reference))) if np.all(np.isfinite(c)) else np.inf


def _settings(args, **fixed):
    """rtol ↦ the SolverSettings of one diffrax run (atol = rtol·``--atol-factor``); the
    static fields are the same for every rtol, so one compiled program serves them all."""

    def make(rtol: float) -> SolverSettings:
        return SolverSettings(
            rtol=rtol, atol=rtol * args.atol_factor, max_steps=args.max_steps,
            max_events=args.max_located_events, **fixed,
        )  # fmt: skip

    return make


class Bench:
    def __init__(self, args, sizes: Sizes):
        self.args, self.sizes = args, sizes
        self.compile_seconds: dict[str, float] = {}
        self.rows: list[Row] = []
        self.ts = jnp.linspace(0.0, sizes.t_final, sizes.n_save)

    # ---- diffrax (plain, located, exact) through the public solve_flow
    def _solve(self, problem, params0, settings: SolverSettings):
        return jax.block_until_ready(solve_flow(problem, params0, self.ts, settings))

    def _diffrax_run(self, name, family, problem, params0, settings, reference, repeat):
        key = f"{settings.solver}, events={settings.events}"
        t0 = time.perf_counter()
        sol = self._solve(problem, params0, settings)
        first = time.perf_counter() - t0
        if key not in self.compile_seconds:  # the first call compiled: time it again
            self.compile_seconds[key] = first
            t0 = time.perf_counter()
            sol = self._solve(problem, params0, settings)
            first = time.perf_counter() - t0
        ok = bool(sol.success)
        if ok and first < self.args.repeat_below:
            sol, seconds, times = _median_time(
                lambda: self._solve(problem, params0, settings), repeat, sol, first
            )
        else:  # a failure, or a solve too slow to repeat
            seconds, times = first, [first]
        c = np.asarray(sol.params.thresholds)
        note = ""
        if not ok:
            reached = int(sol.num_steps) >= settings.max_steps
            note = f"failed: max_steps = {settings.max_steps} reached" if reached else "failed"
        return sol, Row(
            problem=self.current, method=name, family=family,
            rtol=None if settings.solver == "exact" else float(settings.rtol),
            atol=None if settings.solver == "exact" else float(settings.atol),
            seconds=seconds, seconds_all=times, steps=int(sol.num_steps),
            rejected=int(sol.num_rejected_steps), success=ok,
            error=_error(c, reference) if ok and reference is not None else np.inf, note=note,
        )  # fmt: skip

    # ---- scipy
    def _scipy_run(self, method, problem, params0, rtol, atol, reference, repeat):
        u, targets = np.asarray(problem.u), np.asarray(problem.targets)
        d = np.asarray(params0.d)
        field = NumpyField(u, targets, d)
        cap = self.args.max_nfev

        def rhs(t, y):
            if field.nfev >= cap:
                raise TooManyEvaluations
            return field(t, y)

        options = {}
        if method == "Radau" and not self.args.no_jacobian:
            options["jac"] = field.jacobian

        def solve():
            field.nfev = 0
            return solve_ivp(
                rhs, (0.0, self.sizes.t_final), np.asarray(params0.b).ravel(), method=method,
                rtol=rtol, atol=atol, t_eval=np.asarray(self.ts), **options,
            )  # fmt: skip

        t0 = time.perf_counter()
        try:
            sol = solve()
        except TooManyEvaluations:
            seconds = time.perf_counter() - t0
            return Row(
                self.current, f"scipy {method}", "scipy", rtol, atol, seconds, [seconds],
                cap, None, False, np.inf, f"stopped: more than {cap} evaluations",
            )  # fmt: skip
        first = time.perf_counter() - t0
        repeat = repeat if first < self.args.repeat_below else 1
        sol, seconds, times = _median_time(solve, repeat, sol, first)
        ok = bool(sol.success) and sol.y.shape[1] == self.sizes.n_save
        c = (-sol.y.T.reshape(-1, *d.shape) / d) if ok else None
        return Row(
            self.current, f"scipy {method}", "scipy", rtol, atol, seconds, times, int(sol.nfev),
            None, ok, _error(c, reference) if ok else np.inf, "" if ok else sol.message,
        )  # fmt: skip

    def run_problem(self, name: str, problem, params0, log=print):
        self.current = name
        args, sizes = self.args, self.sizes
        log(f"\n== {name}: N = {sizes.n_points}, M = {sizes.dim}, L = {sizes.layers}, "
            f"s ∈ [0, {sizes.t_final:g}], {sizes.n_save} saves ==")  # fmt: skip
        log(load_line("before"))
        exact_settings = SolverSettings(solver="exact", max_events=args.max_events)
        exact, row = self._diffrax_run(
            EXACT_METHOD, "exact", problem, params0, exact_settings, None, args.repeat
        )
        assert row.success, f"{name}: the exact solver failed"
        reference = np.asarray(exact.params.thresholds)
        row.error = 0.0
        row.note = "the reference"
        self.rows.append(row)
        kinds = np.asarray(exact.events.kind)
        coords = np.asarray(exact.events.coord)[kinds >= 0]
        per_coord = np.bincount(coords, minlength=sizes.dim)
        stuck = np.asarray(exact.sliding.stuck)
        info = {
            "events": int(exact.num_steps),
            "events_by_kind": {
                kind: int(np.sum(kinds == i))
                for i, kind in enumerate(("cross", "stick", "meet", "glue", "release"))
            },
            "max_events_per_coordinate": int(per_coord.max()),
            "stuck_faces_at_end": int(stuck.sum()),
            "faces": int(stuck.size),
            "seconds": row.seconds,
            "microseconds_per_event": 1e6 * row.seconds / max(int(exact.num_steps), 1),
            "rounding_floor": float(np.finfo(float).eps * np.max(np.abs(reference))),
        }
        log(f"exact solver: {info['events']} events {info['events_by_kind']}, at most "
            f"{info['max_events_per_coordinate']} in one coordinate, "
            f"{info['stuck_faces_at_end']} of {info['faces']} faces stuck at the end; "
            f"{row.seconds * 1e3:.2f} ms per solve = {info['microseconds_per_event']:.2f} µs "
            "per event")  # fmt: skip
        if args.interleave and "diffrax" in args.families:
            info["interleaved"] = self._interleaved(problem, params0, exact_settings, log)
        runs = []  # (method, family, how: the settings of one rtol, or scipy's method)
        if "diffrax" in args.families:
            for solver, controller, (p, i) in DIFFRAX:
                how = _settings(args, solver=solver, pcoeff=p, icoeff=i)
                runs.append((f"diffrax {solver} + {controller}", "diffrax", how))
        if "located" in args.families:
            runs.append((LOCATED_METHOD, "located", _settings(args, events=True)))
        if "scipy" in args.families:
            runs += [(f"scipy {method}", "scipy", method) for method in SCIPY]
        for method, family, how in runs:
            skip = None
            for rtol in args.tolerances:
                # a failed (or slow) method is not run at tighter tolerances, except today's
                # default at its default rtol (the ratio needs its time to failure)
                forced = method == DEFAULT_METHOD and rtol == DEFAULTS["rtol"]
                if skip is not None and not forced:
                    log(f"  {method:30s} rtol {rtol:.0e}: skipped ({skip})")
                    continue
                if family == "scipy":
                    row = self._scipy_run(
                        how, problem, params0, rtol, rtol * args.atol_factor, reference,
                        args.scipy_repeat,
                    )  # fmt: skip
                else:
                    _, row = self._diffrax_run(
                        method, family, problem, params0, how(rtol), reference, args.repeat
                    )
                self._log_row(log, row)
                if skip is None and (not row.success or row.seconds > args.time_limit):
                    what = "failed" if not row.success else f"took {row.seconds:.1f} s"
                    skip = f"rtol {rtol:.0e} {what}"
        log(load_line("after"))
        return info

    def _interleaved(self, problem, params0, exact_settings, log) -> dict:
        """The exact solver against the default (Tsit5 + PID at its rtol) timed in alternation:
        per round the median of ``--interleave-solves`` solves of each, the order switching
        every round; the ratio of every round and their median."""
        args = self.args
        p, i = PID
        default = _settings(args, solver="tsit5", pcoeff=p, icoeff=i)(DEFAULTS["rtol"])
        sides = {"exact": exact_settings, "default": default}
        for settings in sides.values():
            self._solve(problem, params0, settings)  # compiled already; warm
        ms: dict = {"exact": [], "default": []}
        for r in range(args.interleave):
            for side in ("exact", "default") if r % 2 == 0 else ("default", "exact"):
                times = []
                for _ in range(args.interleave_solves):
                    t0 = time.perf_counter()
                    self._solve(problem, params0, sides[side])
                    times.append(time.perf_counter() - t0)
                ms[side].append(1e3 * float(np.median(times)))
        rounds = [d / e for d, e in zip(ms["default"], ms["exact"], strict=True)]
        out = {
            "exact_ms": ms["exact"],
            "default_ms": ms["default"],
            "ratios": rounds,
            "median_ratio": float(np.median(rounds)),
        }
        log(
            f"interleaved, {args.interleave} rounds × {args.interleave_solves} solves: exact "
            f"{min(ms['exact']):.2f}–{max(ms['exact']):.2f} ms, {DEFAULT_METHOD} "
            f"{min(ms['default']):.2f}–{max(ms['default']):.2f} ms; ratio per round "
            f"{', '.join(f'{x:.1f}' for x in rounds)}: median {out['median_ratio']:.1f}×"
        )
        return out

    def _log_row(self, log, row: Row):
        self.rows.append(row)
        log(f"  {row.method:30s} rtol {row.rtol:.0e}  {row.seconds * 1e3:10.2f} ms  "
            f"{row.work():>22s}  error {row.error:.2e}  {row.note}")  # fmt: skip


# --------------------------------------------------------------------------------------------
# summaries


def time_to_reach(rows: list[Row], method: str, error: float) -> float:
    """The least time per solve among ``method``'s successful runs with error ≤ ``error``
    (inf if none reaches it): the work-precision curve read at equal error."""
    times = [r.seconds for r in rows if r.method == method and r.success and r.error <= error]
    return min(times, default=np.inf)


def ratios(rows: list[Row], default_rtol: float) -> dict:
    """The issue's two ratios on one problem's rows."""
    exact = next(r for r in rows if r.method == EXACT_METHOD)
    default = next((r for r in rows if r.method == DEFAULT_METHOD and r.rtol == default_rtol), None)
    out: dict = {"default_rtol": default_rtol}
    if default is None:
        return out
    out["default"] = asdict(default)
    out["exact_vs_default"] = default.seconds / exact.seconds
    out["exact_vs_default_is_lower_bound"] = not default.success
    reached = [r for r in rows if r.method == DEFAULT_METHOD and r.success]
    if not reached:
        return out  # no error to compare at
    # the error the default reaches at its rtol, else (it failed there) the least it reaches
    target = default.error if default.success else min(r.error for r in reached)
    out["equal_error_from_rtol"] = (
        default_rtol if default.success else min(reached, key=lambda r: r.error).rtol
    )
    diffrax = sorted({r.method for r in rows if r.family in ("diffrax", "located")})
    at_equal = {m: time_to_reach(rows, m, target) for m in diffrax}
    out["equal_error"] = target
    out["time_to_reach"] = at_equal
    best = min((m for m in diffrax if m != DEFAULT_METHOD), key=lambda m: at_equal[m])
    out["best_diffrax"] = best
    out["best_vs_default"] = at_equal[DEFAULT_METHOD] / at_equal[best]
    plain = [m for m in diffrax if m != DEFAULT_METHOD and m != LOCATED_METHOD]
    best_plain = min(plain, key=lambda m: at_equal[m])
    out["best_plain_diffrax"] = best_plain
    out["best_plain_vs_default"] = at_equal[DEFAULT_METHOD] / at_equal[best_plain]
    return out


REACH_LEVELS = (1e-4, 1e-6, 1e-8, 1e-10, 1e-12)


def reach_table(rows: list[Row], levels=REACH_LEVELS) -> str:
    """The time each method needs to reach an error ≤ each level (the work-precision curves
    read at equal error; the exact solver reaches every level in one solve)."""
    methods = list(dict.fromkeys(r.method for r in rows))
    head = " | ".join(f"≤ {e:.0e}" for e in levels)
    lines = [f"| method | {head} |", "|---|" + "---|" * len(levels)]
    for m in methods:
        cells = []
        for e in levels:
            t = time_to_reach(rows, m, e)
            cells.append(_seconds(t) if np.isfinite(t) else "—")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt_tol(x):
    return "—" if x is None else f"{x:.0e}"


def table(rows: list[Row]) -> str:
    lines = [
        "| method | rtol | atol | steps (rejected) / nfev / events | time per solve | "
        "max \\|c − c_exact\\| | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        err = f"{r.error:.1e}" if r.success else "—"
        if r.family == "exact":
            err = "0 (reference)"
        lines.append(
            f"| {r.method} | {_fmt_tol(r.rtol)} | {_fmt_tol(r.atol)} | {r.work()} | "
            f"{_seconds(r.seconds)} | {err} | {r.note} |"
        )
    return "\n".join(lines)


def _seconds(s: float) -> str:
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def ratio_lines(name: str, info: dict, rat: dict) -> list[str]:
    kinds = ", ".join(f"{k} {v}" for k, v in info["events_by_kind"].items() if v)
    lines = [
        f"* exact solver: {info['events']} events ({kinds}), at most "
        f"{info['max_events_per_coordinate']} in one coordinate; {info['stuck_faces_at_end']} of "
        f"{info['faces']} faces stuck at the end; {_seconds(info['seconds'])} per solve, "
        f"{info['microseconds_per_event']:.2f} µs per event.",
    ]
    if "exact_vs_default" in rat:
        d = rat["default"]
        bound = "≥ " if rat["exact_vs_default_is_lower_bound"] else ""
        what = "failed after" if not d["success"] else "took"
        lines.append(
            f"* exact vs {DEFAULT_METHOD} at rtol {rat['default_rtol']:.0e} (the default, which "
            f"{what} {_seconds(d['seconds'])}): **{bound}{rat['exact_vs_default']:.1f}×** "
            "(goal ≥ 10×)."
        )
    if "interleaved" in info:
        r = info["interleaved"]
        lines.append(
            f"* the same, timed interleaved ({len(r['ratios'])} rounds): per round "
            f"{', '.join(f'{x:.1f}' for x in r['ratios'])}×, median **{r['median_ratio']:.1f}×**."
        )
    if "best_vs_default" in rat:
        t = rat["time_to_reach"]
        lines.append(
            f"* at equal error (≤ {rat['equal_error']:.1e}, what {DEFAULT_METHOD} reaches at "
            f"rtol {rat['equal_error_from_rtol']:.0e}): best diffrax configuration "
            f"**{rat['best_diffrax']}**, {_seconds(t[rat['best_diffrax']])} against "
            f"{_seconds(t[DEFAULT_METHOD])}: "
            f"**{rat['best_vs_default']:.1f}×** (goal ≥ 2×); best without events: "
            f"{rat['best_plain_diffrax']}, {rat['best_plain_vs_default']:.1f}×."
        )
        lines.append(
            "* time to reach that error, per diffrax configuration: "
            + ", ".join(f"{m} {_seconds(s) if np.isfinite(s) else 'never'}" for m, s in t.items())
            + "."
        )
    return lines


COLORS = {
    "scipy RK45": ("tab:gray", "o", ":"),
    "scipy DOP853": ("0.35", "s", ":"),
    "scipy LSODA": ("tab:olive", "^", ":"),
    "scipy Radau": ("tab:brown", "v", ":"),
    "diffrax tsit5 + PID": ("tab:blue", "o", "-"),
    "diffrax tsit5 + I": ("tab:blue", "o", "--"),
    "diffrax dopri5 + PID": ("tab:orange", "s", "-"),
    "diffrax dopri5 + I": ("tab:orange", "s", "--"),
    "diffrax dopri8 + PID": ("tab:green", "D", "-"),
    "diffrax dopri8 + I": ("tab:green", "D", "--"),
    LOCATED_METHOD: ("tab:purple", "P", "-"),
    EXACT_METHOD: ("k", "*", ""),
}


def figure(rows: list[Row], infos: dict, out: Path, subtitle: str) -> Path:
    plt = pyplot()
    problems = list(infos)
    fig, axes = plt.subplots(1, len(problems), figsize=(7.2 * len(problems), 6.0), squeeze=False)
    for ax, name in zip(axes[0], problems, strict=True):
        mine = [r for r in rows if r.problem == name]
        floor = infos[name]["rounding_floor"]
        for method, (color, marker, ls) in COLORS.items():
            runs = [r for r in mine if r.method == method]
            ok = [r for r in runs if r.success]
            failed = len(runs) - len(ok)
            if method == EXACT_METHOD:
                for r in runs:
                    ax.plot(r.seconds, floor, marker="*", ms=16, color="k", ls="",
                            label="exact (reference; plotted at rounding ε·max|c|)")  # fmt: skip
                continue
            if not ok:
                if runs:
                    ax.plot([], [], color=color, marker=marker, ls=ls,
                            label=f"{method}: all {failed} failed")  # fmt: skip
                continue
            x = [r.seconds for r in ok]
            y = [max(r.error, floor) for r in ok]
            label = method + (f" ({failed} failed)" if failed else "")
            ax.plot(x, y, color=color, marker=marker, ls=ls, ms=5, lw=1.3, label=label)
            if method == DEFAULT_METHOD:
                for r in ok:
                    ax.annotate(f"{r.rtol:.0e}", (r.seconds, max(r.error, floor)), fontsize=6,
                                xytext=(3, 3), textcoords="offset points", color=color)  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("time per solve (s, median after compilation)")
        ax.set_ylabel("max |c − c_exact| over the saves")
        ax.set_title(f"{name}: {infos[name]['events']} events, "
                     f"{infos[name]['stuck_faces_at_end']} faces stuck", fontsize=10)  # fmt: skip
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3)
    fig.suptitle(f"Work-precision of the effective flow (bias-only, C_in)\n{subtitle}", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out / "work_precision.png", layout=False, dpi=130)


# --------------------------------------------------------------------------------------------


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, three tolerances")
    parser.add_argument("--out", type=Path, default=Path("runs") / "work_precision")
    parser.add_argument("--repeat", type=int, default=None, help="timed runs per diffrax point")
    parser.add_argument("--scipy-repeat", type=int, default=None)
    parser.add_argument(
        "--repeat-below",
        type=float,
        default=2.0,
        help="repeat a solve only when its first run took less (s)",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="skip a method's tighter tolerances once a solve took longer (s) or failed",
    )
    parser.add_argument(
        "--families",
        nargs="+",
        default=["diffrax", "located", "scipy"],
        choices=["diffrax", "located", "scipy"],
        help="which methods to run (the exact solver always runs: it is the reference)",
    )
    parser.add_argument("--tolerances", type=float, nargs="+", default=None)
    parser.add_argument("--atol-factor", type=float, default=1e-2)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--max-nfev", type=int, default=None)
    parser.add_argument(
        "--max-events", type=int, default=4000, help="exact solver: events per coordinate"
    )
    parser.add_argument("--max-located-events", type=int, default=None)
    parser.add_argument(
        "--no-jacobian",
        action="store_true",
        help="Radau by finite differences instead of the analytic Jacobian",
    )
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--interleave",
        type=int,
        default=None,
        help="rounds of the interleaved exact-vs-default timing (0: skip)",
    )
    parser.add_argument(
        "--interleave-solves", type=int, default=5, help="solves per side and round"
    )
    args = parser.parse_args(argv)  # fmt: skip
    quick = args.quick
    defaults = {
        "repeat": 2 if quick else 5,
        "interleave": 2 if quick else 7,
        "scipy_repeat": 1 if quick else 3,
        "time_limit": 2.0 if quick else 30.0,
        "tolerances": [1e-4, 1e-6, 1e-8] if quick else [10.0**-k for k in range(4, 13)],
        "max_steps": 5_000 if quick else DEFAULTS["max_steps"],
        "max_nfev": 10_000 if quick else 400_000,
        "max_located_events": 2_000 if quick else 40_000,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    sizes = QUICK if args.quick else FULL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend()}), "
        f"float64={jax.config.read('jax_enable_x64')}, jax {jax.__version__}"
    )
    print(f"machine: {machine}")
    start_load = os.getloadavg()
    print(load_line("at start"))
    bench = Bench(args, sizes)
    infos, rats = {}, {}
    for i, name in enumerate(args.problems):
        problem, params0 = PROBLEMS[name](jax.random.PRNGKey(args.seed + i), sizes)
        infos[name] = bench.run_problem(name, problem, params0)
        rats[name] = ratios([r for r in bench.rows if r.problem == name], DEFAULTS["rtol"])
    end_load = os.getloadavg()
    print(load_line("at end"))
    subtitle = (
        f"N = {sizes.n_points}, M = {sizes.dim}, L = {sizes.layers}, s ∈ [0, {sizes.t_final:g}],"
        f" atol = rtol·{args.atol_factor:g}; {machine.split(',')[0]}, load "
        f"{start_load[0]:.2f} → {end_load[0]:.2f}"
    )
    md = [
        "# Work-precision of the effective flow",
        "",
        f"`benchmarks/work_precision.py{' --quick' if args.quick else ''}`: {subtitle}.",
        f"Machine: {machine}. Compilation (s): "
        + ", ".join(f"{k} {v:.1f}" for k, v in bench.compile_seconds.items())
        + ".",
        "",
    ]
    for name in args.problems:
        mine = [r for r in bench.rows if r.problem == name]
        md += [f"## {name}", "", *ratio_lines(name, infos[name], rats[name]), ""]
        md += ["Time per solve to reach an error ≤ (— : never, within the tolerances run):", ""]
        md += [reach_table(mine), "", "Every run:", "", table(mine), ""]
    text = "\n".join(md)
    print("\n" + text)
    (out / "work_precision.md").write_text(text + "\n")
    payload = {
        "machine": machine,
        "sizes": asdict(sizes),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "load_start": start_load,
        "load_end": end_load,
        "compile_seconds": bench.compile_seconds,
        "exact": infos,
        "ratios": rats,
        "rows": [asdict(r) for r in bench.rows],
    }
    (out / "work_precision.json").write_text(json.dumps(payload, indent=1, default=float) + "\n")
    path = figure(bench.rows, infos, out, subtitle)
    print(f"wrote {out / 'work_precision.md'}, {out / 'work_precision.json'}, {path}")
    return payload


if __name__ == "__main__":
    main()
