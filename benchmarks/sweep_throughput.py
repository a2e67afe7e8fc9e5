"""Sweep throughput: one vmapped program over 256 configurations vs a loop of the same compiled
solver, for the effective flow (diffrax) and for SGD training (optax).

Run:  .venv/bin/python benchmarks/sweep_throughput.py [--n-configs 256] [--repeat 3] [--profile]
          [--parts flow,sgd]

The configurations are the truncation experiment (:mod:`gflow_jax.experiments.truncation`) at N =
100 points (2 clusters × 50), M = 4, L = 2, differing in seed (data, minibatches) and cluster
radius; flow on [0, 20] saved at 21 times (Tsit5, PID(0.3, 0.3), rtol 1e-8, atol 1e-10); SGD with η
= 0.05 and minibatches of 10 (400 steps). The batched side is exactly what ``gflow sweep`` runs
(:func:`gflow_jax.core.batched`): every configuration's arrays stacked, one ``eqx.filter_jit`` of a
``vmap``, timed on one device and sharded across every local device (on a CPU one device per core,
:func:`gflow_jax.core.use_cpu_cores`, unless ``JAX_NUM_CPU_DEVICES`` says otherwise), as ``gflow
sweep`` does; the sequential side calls the toolkit's compiled ``solve_flow`` / ``gradient_descent``
once per configuration (one compilation, shapes agree). Compile (first call) times are reported
separately; progress meters are off.

``--profile`` adds the vmapped flow's per-step cost under variants that the solver does not
expose (the benchmark's own copy of the solve): the sorted gradient's
``searchsorted(method=...)`` ("scan", the toolkit's choice, vs "compare_all" and "sort"), saving
only the final state instead of ``SaveAt(ts)``, and a small ``max_steps``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import gflow_jax  # noqa: F401  (float64)
from gflow_jax.core import (
    AdaptedParameters,
    _sorted_field as sorted_field,
    call_batched,
    resolve_devices,
    stack,
    use_cpu_cores,
)
from gflow_jax.dynamics import (
    FlowProblem,
    SolverSettings,
    descend,
    gradient_descent,
    solve_flow,
    steps_per_interval,
)
from gflow_jax.experiments.truncation import load_config, setup_experiment

OVERRIDES = [
    "data.points_per_class=50",
    "data.dim=4",
    "targets.points=[[1.0, 1.0, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0]]",
    "network.layers=2",
    "flow.t_final=20.0",
    "flow.n_save=21",
    "gd.etas=[0.05]",
    "sgd.eta=0.05",
    "sgd.batch_size=10",
    "output.progress=false",
]


def make_setups(n: int):
    radii = [0.3, 0.4, 0.5, 0.6]
    return [
        setup_experiment(
            load_config(
                "experiments/truncation.toml",
                [*OVERRIDES, f"seed={k}", f"data.radius={radii[k % len(radii)]}"],
            )
        )
        for k in range(n)
    ]


def timed(fn, repeat: int) -> tuple[float, float]:
    """(first call incl. compilation, best of ``repeat`` later calls), seconds."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return first, best


def flow_member(problem, params0, save_ts, settings):
    return solve_flow(problem, params0, save_ts, settings)


def sgd_member(problem, params0, eta, n_steps, key, batch_size):
    return descend(problem, params0, eta, n_steps, key, batch_size, False)


def traced(settings: SolverSettings) -> SolverSettings:
    return SolverSettings(
        rtol=jnp.asarray(settings.rtol),
        atol=jnp.asarray(settings.atol),
        pcoeff=jnp.asarray(settings.pcoeff),
        icoeff=jnp.asarray(settings.icoeff),
        dtmin=float(settings.dtmin),
        dt0=jnp.asarray(settings.dt0),
        solver=settings.solver,
        max_steps=settings.max_steps,
    )


def report(name: str, n: int, seq: tuple, vm: tuple, extra: str = "", where: str = "") -> float:
    ratio = seq[1] / vm[1]
    print(
        f"{name}: compile single {seq[0] - seq[1]:6.2f} s, batched {vm[0] - vm[1]:6.2f} s | "
        f"{n} sequential calls {seq[1]:7.3f} s ({n / seq[1]:7.1f}/s), one vmapped call{where} "
        f"{vm[1]:7.3f} s ({n / vm[1]:7.1f}/s) | throughput ratio {ratio:5.1f}x {extra}"
    )
    return ratio


def device_sets() -> list[list]:
    """One device, and every local device when there are several (JAX_NUM_CPU_DEVICES=2 gives
    a CPU process one device per core: the batch axis is then sharded, one slice per core)."""
    every = resolve_devices(None)
    return [every[:1]] + ([every] if len(every) > 1 else [])


def batched_side(name, n, member, args, seq, repeat, extra_of):
    """Time the vmapped ``member`` on each device set; report each against ``seq``."""
    ratios = []
    for devices in device_sets():
        vm = timed(lambda devices=devices: call_batched(member, args, devices), repeat)
        out = call_batched(member, args, devices)
        where = f" on {len(devices)} device{'s' if len(devices) > 1 else ''}"
        ratios.append(report(name, n, seq, vm, extra_of(out), where))
    return ratios


def bench_flow(setups, repeat):
    settings = setups[0].settings
    ts = setups[0].save_ts
    problems = [s.problem for s in setups]
    params = [s.params0 for s in setups]

    def sequential():
        return [solve_flow(p, x, ts, settings) for p, x in zip(problems, params, strict=True)]

    args = stack([(s.problem, s.params0, s.save_ts, traced(s.settings)) for s in setups])
    seq = timed(sequential, repeat)
    singles = sequential()
    steps = np.array([int(s.num_steps) for s in singles])

    def extra(out):
        assert bool(jnp.all(out.success))
        b = out.params.b
        err = max(float(jnp.max(jnp.abs(b[i] - s.params.b))) for i, s in enumerate(singles))
        return f"(steps {steps.min()}..{steps.max()}, mean {steps.mean():.0f}; max |Δb| {err:.1e})"

    return batched_side("flow", len(setups), flow_member, args, seq, repeat, extra), steps


def bench_sgd(setups, repeat):
    cfg = setups[0].config
    ts = setups[0].save_ts
    keys = [jax.random.fold_in(jax.random.PRNGKey(s.config.seed), 1) for s in setups]

    def sequential():
        return [
            gradient_descent(
                s.problem, s.params0, ts, cfg.sgd.eta, batch_size=cfg.sgd.batch_size, key=k
            )
            for s, k in zip(setups, keys, strict=True)
        ]

    n_steps = jnp.asarray(steps_per_interval(np.asarray(ts), cfg.sgd.eta))
    args = stack(
        [
            (s.problem, s.params0, jnp.asarray(cfg.sgd.eta), n_steps, k, cfg.sgd.batch_size)
            for s, k in zip(setups, keys, strict=True)
        ]
    )
    seq = timed(sequential, repeat)
    singles = sequential()
    total = int(n_steps.sum())

    def extra(out):
        params, _ = out
        err = max(float(jnp.max(jnp.abs(params.b[i] - s.params.b))) for i, s in enumerate(singles))
        return f"({total} steps each; max |Δb| {err:.1e})"

    return batched_side("sgd ", len(setups), sgd_member, args, seq, repeat, extra)


# --------------------------------------------------------------------------------------------
# --profile: variants of the vmapped flow that the toolkit's solve_flow does not expose


def _variant_gradient(method: str):
    """sorted_field.threshold_gradient with another searchsorted method (same arithmetic)."""

    def counts(values, run_end, cuts):
        n_points = values.shape[0]
        below = jnp.searchsorted(values, cuts, side="left", method=method).astype(jnp.int32)
        index = jnp.minimum(below, n_points - 1)
        tie = (below < n_points) & (values[index] == cuts)
        return below, jnp.where(tie, run_end[index], below)

    def gradient(thresholds, d, data):
        original = sorted_field._counts
        sorted_field._counts = counts  # only while tracing this variant
        try:
            return sorted_field.threshold_gradient(thresholds, d, data)
        finally:
            sorted_field._counts = original

    return gradient


def variant_member(method: str, save: str, max_steps: int):
    gradient = _variant_gradient(method)

    def field(s, params, problem: FlowProblem):
        c = params.thresholds
        g, _ = gradient(c, params.d, problem.sorted)
        grad = AdaptedParameters(d=-g * c / params.d, b=-g / params.d)
        return jax.tree.map(lambda gr, m: -gr * m, grad, problem.mask(params))

    def member(problem, params0, save_ts, settings):
        saveat = diffrax.SaveAt(ts=save_ts) if save == "ts" else diffrax.SaveAt(t1=True)
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field),
            diffrax.Tsit5(),
            t0=save_ts[0],
            t1=save_ts[-1],
            dt0=settings.dt0,
            y0=params0,
            args=problem,
            saveat=saveat,
            stepsize_controller=diffrax.PIDController(
                rtol=settings.rtol,
                atol=settings.atol,
                pcoeff=settings.pcoeff,
                icoeff=settings.icoeff,
            ),
            max_steps=max_steps,
            throw=False,
        )
        return sol.ys.b, sol.stats["num_steps"]

    member.__name__ = f"flow_{method}_{save}_{max_steps}"
    return member


def profile_flow(setups, repeat, steps):
    print("\n-- profile: vmapped flow per step (wall time / steps of the slowest member) --")
    args = stack([(s.problem, s.params0, s.save_ts, traced(s.settings)) for s in setups])
    single_args = jax.tree.map(lambda a: a[:1] if eqx.is_array(a) else a, args)
    ref = None
    for method, save, max_steps in [
        ("scan", "ts", 200_000),
        ("scan", "t1", 200_000),
        ("scan", "ts", 4_096),
        ("compare_all", "ts", 200_000),
        ("sort", "ts", 200_000),
        ("compare_all", "t1", 4_096),
    ]:
        run = eqx.filter_jit(eqx.filter_vmap(variant_member(method, save, max_steps)))
        first, best = timed(lambda run=run: run(*args), repeat)
        one_first, one = timed(lambda run=run: run(*single_args), repeat)
        b, n_steps = run(*args)
        final = np.asarray(b[:, -1])
        if ref is None:
            ref = final
        per_step = best / int(n_steps.max())
        print(
            f"searchsorted={method:11s} SaveAt={save:2s} max_steps={max_steps:6d}: "
            f"batch of {len(setups)} {best:7.3f} s ({1e6 * per_step:7.1f} µs/step, "
            f"{1e6 * per_step / len(setups):5.2f} µs/member-step), batch of 1 {one * 1e3:6.2f} ms "
            f"| compile {first - best:5.2f} s | max |Δb_final| vs first row "
            f"{np.max(np.abs(final - ref)):.1e}"
        )
    if steps is not None:
        print(f"(steps per member: {steps.min()}..{steps.max()}; the batch runs max(steps))")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-configs", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="also profile flow variants")
    parser.add_argument("--parts", default="flow,sgd", help="comma-separated: flow, sgd")
    args = parser.parse_args()
    use_cpu_cores()  # one CPU device per core, as `gflow sweep` does (before the backend starts)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend()}), "
        f"float64={jax.config.read('jax_enable_x64')}, jax {jax.__version__}"
    )
    t0 = time.perf_counter()
    setups = make_setups(args.n_configs)
    s = setups[0]
    print(
        f"{args.n_configs} configurations: N = {s.problem.n_points}, M = {s.problem.u.shape[1]}, "
        f"L = {s.params0.d.shape[0]}, save times {s.save_ts.shape[0]}, "
        f"setup {time.perf_counter() - t0:.1f} s"
    )
    steps, ratios = None, []
    names = ["1 device"] + ([f"{jax.device_count()} devices"] if jax.device_count() > 1 else [])
    if "flow" in args.parts:
        flow_ratios, steps = bench_flow(setups, args.repeat)
        ratios += [f"flow {r:.1f}x ({w})" for r, w in zip(flow_ratios, names, strict=True)]
    if "sgd" in args.parts:
        sgd_ratios = bench_sgd(setups, args.repeat)
        ratios += [f"sgd {r:.1f}x ({w})" for r, w in zip(sgd_ratios, names, strict=True)]
    print(f"throughput ratios (vmapped / sequential): {', '.join(ratios)}")
    if args.profile:
        profile_flow(setups, args.repeat, steps)


if __name__ == "__main__":
    main()
