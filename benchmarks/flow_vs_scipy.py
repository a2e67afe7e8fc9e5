"""Effective flow: diffrax vs scipy.integrate.solve_ivp, and vmapped vs sequential solves.

Run:  .venv/bin/python benchmarks/flow_vs_scipy.py  (needs scipy: `pip install -e .[bench]`)

Part 1 — one problem, N = 1000 points, M = 16, L = 4 (bias-only flow of C_in,
docs/theory.md#effective-flows, flow 1), solved to the same tolerance (rtol = 1e-6, atol = 1e-9) by
  * diffrax, compiled, with the toolkit's default Tsit5 + PID(0.3, 0.3) controller, and with
    Dopri5 + a plain integral controller — the same Runge–Kutta pair and controller as scipy;
  * scipy's RK45 with a numpy vector field (the closed-form gradient, vectorised).
Both answers are compared; compile time is reported separately; the ratio is scipy time over
diffrax time per solve.

Part 2 — 64 small problems (N = 100, M = 4, L = 2, different data and thresholds): one vmapped
compiled solve against 64 sequential calls of the same compiled solver, for the default diffrax
solve and for the exact event-driven solver (``solver="exact"``), whose event loop must keep
skipping its rare, dear work under vmap.

The load average is printed before and after each part (with a warning above 1).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from scipy.integrate import solve_ivp

import gflow_jax  # noqa: F401  (enables float64)
from gflow_jax.core import AdaptedParameters, make_clusters
from gflow_jax.dynamics import FlowProblem, SolverSettings, solve_flow

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' shared helpers
from _load import load_line  # noqa: E402


def make_problem(key, *, n_classes, n_per_class, dim, layers):
    """Separated clusters on the diagonal; layers alternate truncation sides; each cluster's
    target is its centre shifted by 0.3 towards the middle of the cloud."""
    data = make_clusters(
        key, n_classes=n_classes, n_per_class=n_per_class, dim=dim, radius=0.6, separation=2.0
    )
    middle = jnp.mean(data.centers, axis=0, keepdims=True)
    shift = 0.3 * jnp.sign(middle - data.centers)
    targets = (data.centers + shift)[data.labels]
    signs = jnp.array([1.0 if ell % 2 == 0 else -1.0 for ell in range(layers)])[:, None]
    d = signs * jnp.linspace(0.8, 1.2, dim)[None, :]
    q = jnp.linspace(0.05, 0.2, layers)[:, None]
    lower = jnp.quantile(data.x, q[:, 0], axis=0)
    upper = jnp.quantile(data.x, 1.0 - q[:, 0], axis=0)
    c = jnp.where(d > 0, lower, upper)
    N = data.n_points
    problem = FlowProblem(
        u=data.x,
        targets=targets,
        y=jnp.zeros((N, 1)),
        out_weight=jnp.zeros((1, dim)),
        out_bias=jnp.zeros(1),
        mode="bias",
    )
    return problem, AdaptedParameters.from_thresholds(d, c)


def numpy_field(u, targets, d):
    """Closed-form bias-only field in numpy: ∂_s b_{ℓ,k} = (1/(N d)) Σ_owned (x̃_k − ỹ_k)."""
    L, M = d.shape
    N = u.shape[0]
    positive = d > 0

    def rhs(t, y):
        b = y.reshape(L, M)
        c = -b / d
        z = u.copy()
        hits = np.empty((L, N, M), dtype=bool)
        for ell in range(L):
            hit = np.where(positive[ell], z < c[ell], z > c[ell])
            z = np.where(hit, c[ell], z)
            hits[ell] = hit
        residual = z - targets
        later = np.zeros((N, M), dtype=bool)
        g = np.empty((L, M))
        for ell in range(L - 1, -1, -1):
            owned = hits[ell] & ~later
            g[ell] = (owned * residual).sum(axis=0) / N
            later |= hits[ell]
        return (g / d).ravel()  # −∇_b C_in = g/d

    return rhs


def numpy_sorted_field(u, targets, d):
    """The same O(L·M·log N) sorted-interval field the toolkit uses
    (gflow_jax.core.threshold_gradient), in numpy: np.searchsorted per coordinate, prefix sums of
    the sorted targets."""
    L, M = d.shape
    N = u.shape[0]
    order = np.argsort(u, axis=0)
    values = np.take_along_axis(u, order, axis=0).T
    prefix = np.concatenate(
        [np.zeros((M, 1)), np.cumsum(np.take_along_axis(targets, order, axis=0).T, axis=1)], 1
    )
    positive = d > 0

    def rhs(t, y):
        c = -y.reshape(L, M) / d
        a, beta = np.full(M, -np.inf), np.full(M, np.inf)
        cuts = np.empty((L, M))
        for ell in range(L):
            cl, pos = c[ell], positive[ell]
            cut_below = np.where(beta < cl, np.inf, np.where(a >= cl, -np.inf, cl))
            cut_above = np.where(beta <= cl, np.inf, np.where(a > cl, -np.inf, cl))
            cuts[ell] = np.where(pos, cut_below, cut_above)
            a = np.where(pos, np.maximum(a, cl), a)
            beta = np.where(pos, np.maximum(beta, cl), np.minimum(beta, cl))
        below = np.empty((L, M), dtype=np.int64)
        at_most = np.empty((L, M), dtype=np.int64)
        for k in range(M):
            below[:, k] = np.searchsorted(values[k], cuts[:, k], side="left")
            at_most[:, k] = np.searchsorted(values[k], cuts[:, k], side="right")
        later_below = np.maximum.accumulate(np.where(positive, below, 0)[::-1], axis=0)[::-1]
        later_at_most = np.minimum.accumulate(np.where(positive, N, at_most)[::-1], axis=0)[::-1]
        first = np.concatenate([later_below[1:], np.zeros((1, M), dtype=np.int64)])
        last = np.concatenate([later_at_most[1:], np.full((1, M), N)])
        lo = np.where(positive, first, np.maximum(first, at_most))
        hi = np.maximum(np.where(positive, np.minimum(last, below), last), lo)
        cols = np.arange(M)[None, :]
        g = ((hi - lo) * c - (prefix[cols, hi] - prefix[cols, lo])) / N
        return (g / d).ravel()

    return rhs


def timeit(fn, repeat):
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def part1(args):
    print("== Part 1: one solve, N = 1000, M = 16, L = 4 (bias-only flow of C_in) ==")
    print(load_line("before"))
    problem, params0 = make_problem(
        jax.random.PRNGKey(0), n_classes=4, n_per_class=250, dim=16, layers=4
    )
    ts = jnp.linspace(0.0, args.t_final, 21)
    rtol, atol = 1e-6, 1e-9
    configs = {
        "diffrax Tsit5 + PID(0.3,0.3)": SolverSettings(rtol=rtol, atol=atol, max_steps=500_000),
        "diffrax Dopri5 + I-controller": SolverSettings(
            rtol=rtol, atol=atol, pcoeff=0.0, icoeff=1.0, solver="dopri5", max_steps=500_000
        ),
    }
    results = {}
    for name, settings in configs.items():
        t0 = time.perf_counter()
        sol = jax.block_until_ready(solve_flow(problem, params0, ts, settings))
        compile_s = time.perf_counter() - t0
        run_s = timeit(
            lambda s=settings: jax.block_until_ready(solve_flow(problem, params0, ts, s)),
            args.repeat,
        )
        assert bool(sol.success), name
        results[name] = (sol, compile_s, run_s)
        print(
            f"{name:32s} compile+first {compile_s:7.3f} s  per solve {run_s:8.4f} s  "
            f"steps {int(sol.num_steps)} (rejected {int(sol.num_rejected_steps)})"
        )

    u, targets = np.asarray(problem.u), np.asarray(problem.targets)
    d = np.asarray(params0.d)
    y0 = np.asarray(params0.b).ravel()
    scipy_runs = {}
    for name, rhs in (
        ("naive masks, O(NLM)", numpy_field(u, targets, d)),
        ("sorted intervals", numpy_sorted_field(u, targets, d)),
    ):

        def scipy_solve(rhs=rhs):
            return solve_ivp(
                rhs,
                (0.0, args.t_final),
                y0,
                method="RK45",
                rtol=rtol,
                atol=atol,
                t_eval=np.asarray(ts),
            )

        ref = scipy_solve()
        assert ref.success, ref.message
        scipy_s = timeit(scipy_solve, max(1, args.repeat // 2))
        scipy_runs[name] = (ref, scipy_s)
        print(f"scipy RK45, numpy field ({name}): per solve {scipy_s:8.4f} s, nfev {ref.nfev}")
    ref_a, ref_b = (r for r, _ in scipy_runs.values())
    print(f"  the two numpy fields agree: max |Δb| = {np.max(np.abs(ref_a.y - ref_b.y)):.1e}")
    tight = SolverSettings(rtol=1e-12, atol=1e-14, solver="dopri8", max_steps=500_000)
    truth = np.asarray(solve_flow(problem, params0, ts, tight).params.b).reshape(len(ts), -1)
    print("error against a tight reference (diffrax Dopri8, rtol 1e-12):")
    for name, (r, _) in scipy_runs.items():
        print(f"  scipy ({name}): {np.max(np.abs(r.y.T - truth)):.2e}")
    for name, (sol, _, _) in results.items():
        b = np.asarray(sol.params.b).reshape(len(ts), -1)
        print(f"  {name}: {np.max(np.abs(b - truth)):.2e}")
    best_name, (ref, scipy_s) = min(scipy_runs.items(), key=lambda kv: kv[1][1])
    print(f"ratio fastest scipy ({best_name}) / diffrax, per solve after compilation:")
    for name, (sol, _, run_s) in results.items():
        b = np.asarray(sol.params.b).reshape(len(ts), -1)
        diff = np.max(np.abs(b - ref.y.T))
        scale = np.max(np.abs(ref.y))
        print(
            f"  {name:32s} {scipy_s / run_s:7.1f}x   max |b_diffrax - b_scipy| = {diff:.2e}"
            f" (|b| ≤ {scale:.2f})"
        )
    print(load_line("after"))


def part2(args):
    print("\n== Part 2: 64 problems N = 100, M = 4, L = 2: vmapped vs 64 sequential calls ==")
    print(load_line("before"))
    keys = jax.random.split(jax.random.PRNGKey(1), 64)
    problems, params = zip(
        *(make_problem(k, n_classes=2, n_per_class=50, dim=4, layers=2) for k in keys), strict=True
    )
    batch_problem = jax.tree.map(lambda *xs: jnp.stack(xs), *problems)
    batch_params = jax.tree.map(lambda *xs: jnp.stack(xs), *params)
    ts = jnp.linspace(0.0, args.t_final, 21)
    solvers = {
        "diffrax Tsit5 + PID (default), rtol 1e-6": SolverSettings(
            rtol=1e-6, atol=1e-9, max_steps=100_000
        ),
        "exact": SolverSettings(solver="exact"),
    }
    for name, settings in solvers.items():
        print(f"-- {name}")
        single = eqx.filter_jit(lambda p, x, s=settings: solve_flow(p, x, ts, s))
        batched = eqx.filter_jit(eqx.filter_vmap(lambda p, x, s=settings: solve_flow(p, x, ts, s)))
        t0 = time.perf_counter()
        jax.block_until_ready(single(problems[0], params[0]))
        print(f"compile single  {time.perf_counter() - t0:.3f} s")
        t0 = time.perf_counter()
        out = jax.block_until_ready(batched(batch_problem, batch_params))
        print(f"compile batched {time.perf_counter() - t0:.3f} s")
        assert bool(jnp.all(out.success))

        def sequential(single=single):
            pairs = zip(problems, params, strict=True)
            return [jax.block_until_ready(single(p, x)) for p, x in pairs]

        seq_s = timeit(sequential, args.repeat)
        vm_s = timeit(
            lambda batched=batched: jax.block_until_ready(batched(batch_problem, batch_params)),
            args.repeat,
        )
        seq = sequential()
        err = max(float(jnp.max(jnp.abs(out.params.b[i] - s.params.b))) for i, s in enumerate(seq))
        steps = [int(s.num_steps) for s in seq]
        print(
            f"64 sequential calls {seq_s:.4f} s; one vmapped solve {vm_s:.4f} s "
            f"(steps or events per problem {min(steps)}..{max(steps)}; max |Δb| = {err:.1e})"
        )
        print(f"ratio sequential / vmapped: {seq_s / vm_s:.1f}x")
    print(load_line("after"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--t-final", type=float, default=20.0)
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, "
        f"{jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend()}), "
        f"float64={jax.config.read('jax_enable_x64')}"
    )
    part1(args)
    part2(args)


if __name__ == "__main__":
    main()
