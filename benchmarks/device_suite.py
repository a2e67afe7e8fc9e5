"""The accelerator suite: every figure the toolkit's GPU/TPU goals name, in one command.

Run:  python benchmarks/device_suite.py [--out DIR] [--parts flow_vs_scipy,sweep_flow,...]
          [--sweep-sizes 256,4096,16384] [--magnitude-sizes 4000,20000]
      python benchmarks/device_suite.py --smoke --out DIR   (tiny sizes; part of the test suite)

Writes ``DIR/device_suite.json`` (the environment — device named, memory, float64 — the load and
every row) and ``DIR/device_suite.md`` (a markdown table), and prints the table. Times are the
best of a few runs after a first (compiling) call, whose time is reported separately; every
computation runs on JAX's default device (the accelerator when there is one), float64.

Parts (full sizes; --smoke shrinks each to seconds on a CPU):

1. ``flow_vs_scipy`` — one effective-flow solve, N = 1000, M = 16, L = 4 (bias-only flow of
   C_in, rtol 1e-6, atol 1e-9; benchmarks/flow_vs_scipy.py part 1), diffrax on the device vs
   scipy's RK45 with the sorted numpy field on the host.
2. ``sweep_flow`` — 256, 4096 and 16384 flow configurations (N = 100, M = 4, L = 2, 21 saves;
   benchmarks/sweep_throughput.py's truncation points: 64 distinct configurations, tiled, each
   copy's thresholds shifted by its own offset), vmapped and sharded over every local device in
   chunks sized from the devices' memory (:func:`gflow_jax.core.memory_batch_size`, as ``gflow
   sweep`` does) vs a sequential loop of the compiled single solve — timed on 16 members and
   extrapolated (a loop of 16384 solves would take most of the budget). Goal: 4096 ≥ 50×.
3. ``sweep_sgd`` — the same configurations trained by SGD (η = 0.05, minibatches of 10, 400
   steps), vmapped vs a sequential loop.
4. ``magnitude`` — n = 4000 and 20000 Gaussian points in R¹⁰ × 32 scales: the device engine
   (``method="device"``: distances, duplicates, factorisations on the device) vs the CPU
   engine (``method="adaptive"``, host LAPACK) on the same machine; at n = 20000 the CPU engine
   runs 4 of the 32 scales and is extrapolated. Goal: n = 20000 in under 15 s.
5. ``truncated`` — the collapse experiment, N = 500, 200 saves × 32 scales: magnitude of every
   truncated cloud X̃(s) (:func:`~gflow_jax.magnitude.cloud_magnitudes`, the device engine on an
   accelerator) vs the flow solve that produced them. Goal: faster than the solve.
6. ``digits`` — the 36-network digits generalisation sweep (experiments/
   magnitude_generalization.toml: training, trajectories, every measure), wall time including
   compilation. Goal: under 3 minutes.
"""

from __future__ import annotations

import os

# BLAS threads of the host engines, read when numpy loads: ``--blas-threads N`` (on a shared,
# loaded CPU OpenBLAS's busy-waiting threads were measured 50-100x slower than one thread)
if "--blas-threads" in os.sys.argv:
    os.environ["OPENBLAS_NUM_THREADS"] = os.sys.argv[os.sys.argv.index("--blas-threads") + 1]

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import gflow_jax  # noqa: F401  (float64)
from gflow_jax.core import (
    call_batched,
    memory_batch_size,
    on_accelerator,
    pad_batch,
    resolve_devices,
    stack,
    use_cpu_cores,
)
from gflow_jax.dynamics import check_solution, descend, solve_flow, steps_per_interval
from gflow_jax.io import environment_info

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
PARTS = ("flow_vs_scipy", "sweep_flow", "sweep_sgd", "magnitude", "truncated", "digits")

FULL = {
    "flow": dict(n_classes=4, n_per_class=250, dim=16, layers=4),
    "flow_max_steps": 500_000,
    "sweep_sizes": (256, 4096, 16384),
    "sweep_points_per_class": 50,
    "sweep_dim": 4,
    "distinct": 64,
    "sequential": 16,
    "magnitude_sizes": (4000, 20000),
    "cpu_scales_from": 10000,  # from this n the CPU engine runs 4 scales, extrapolated
    "scales": 32,
    "truncated": dict(points_per_class=250, n_save=200, n_scales=32),
    "digits": [],
    "repeat": 2,
}
SMOKE = {
    "flow": dict(n_classes=2, n_per_class=10, dim=2, layers=2),  # the sweep's shapes: one compile
    "flow_max_steps": 100_000,
    "sweep_sizes": (8,),
    "sweep_points_per_class": 10,
    "sweep_dim": 2,
    "distinct": 4,
    "sequential": 2,
    "magnitude_sizes": (60,),
    "cpu_scales_from": 50,
    "scales": 8,
    "truncated": dict(points_per_class=10, n_save=21, n_scales=6),
    "digits": [
        "model.hidden=[8]",
        "grid.learning_rates=[0.1]",
        "grid.batch_sizes=[64]",
        "grid.seeds=[0, 1]",
        "trajectory.mode='every'",
        "trajectory.every=2",
        "trajectory.chunk_steps=10",
        "trajectory.max_steps=20",
        "trajectory.monitor_every=10",
        "trajectory.probe_size=8",
        "trajectory.probe_layers=[1]",
        "measures.metrics=['euclidean']",
        "measures.n_scales=6",
        "measures.monitor_window=4",
        "measures.representation_scales=3",
        "measures.ph_sizes=[4, 10, 3]",
    ],
    "repeat": 1,
}


def timed(fn, repeat: int) -> tuple[float, float, object]:
    """(first call incl. compilation, best of ``repeat`` later calls, last result), seconds."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return first, best, out


def row(part, case, seconds, reference, reference_seconds, goal=None, met=None, **notes):
    ratio = reference_seconds / seconds if reference_seconds and seconds else None
    return dict(
        part=part,
        case=case,
        seconds=seconds,
        reference=reference,
        reference_seconds=reference_seconds,
        ratio=ratio,
        goal=goal,
        met=met,
        **notes,
    )


# --------------------------------------------------------------------------------------------
# 1. one solve vs scipy


def part_flow_vs_scipy(sz, repeat):
    from flow_vs_scipy import make_problem, numpy_sorted_field
    from scipy.integrate import solve_ivp

    from gflow_jax.dynamics import SolverSettings

    f = sz["flow"]
    problem, params0 = make_problem(jax.random.PRNGKey(0), **f)
    ts = jnp.linspace(0.0, 20.0, 21)
    settings = SolverSettings(rtol=1e-6, atol=1e-9, max_steps=sz["flow_max_steps"])
    first, best, sol = timed(lambda: solve_flow(problem, params0, ts, settings), repeat)
    check_solution(sol, settings)
    u, targets, d = (np.asarray(a) for a in (problem.u, problem.targets, params0.d))
    rhs = numpy_sorted_field(u, targets, d)
    y0 = np.asarray(params0.b).ravel()

    def scipy_solve():
        return solve_ivp(rhs, (0.0, 20.0), y0, rtol=1e-6, atol=1e-9, t_eval=np.asarray(ts))

    t0 = time.perf_counter()
    ref = scipy_solve()
    scipy_s = time.perf_counter() - t0
    gap = float(np.max(np.abs(np.asarray(sol.params.b).reshape(len(ts), -1) - ref.y.T)))
    n = f["n_classes"] * f["n_per_class"]
    return [
        row(
            "flow_vs_scipy",
            f"one flow solve, N = {n}, M = {f['dim']}, L = {f['layers']}",
            best,
            "scipy RK45, sorted numpy field (host)",
            scipy_s,
            compile_seconds=first - best,
            steps=int(sol.num_steps),
            max_abs_difference=gap,
        )
    ]


# --------------------------------------------------------------------------------------------
# 2, 3. sweep throughput


def _setups(sz):
    from gflow_jax.experiments.truncation import load_config, setup_experiment

    dim, ppc = sz["sweep_dim"], sz["sweep_points_per_class"]
    points = [[1.0] * dim, [2.0] * dim]
    over = [
        f"data.points_per_class={ppc}",
        f"data.dim={dim}",
        f"targets.points={points}",
        "network.layers=2",
        "flow.t_final=20.0",
        "flow.n_save=21",
        "gd.etas=[0.05]",
        "sgd.eta=0.05",
        "sgd.batch_size=10",
        "output.progress=false",
    ]
    radii = [0.3, 0.4, 0.5, 0.6]
    path = ROOT / "experiments" / "truncation.toml"
    return [
        setup_experiment(load_config(path, [*over, f"seed={k}", f"data.radius={radii[k % 4]}"]))
        for k in range(sz["distinct"])
    ]


def _tile(stacked, n: int, distinct: int):
    """``n`` members from ``distinct`` stacked ones: copy k of member j shifts every bias by
    its own offset (a few per mille of the thresholds' spread)."""
    index = jnp.arange(n) % distinct
    tiled = jax.tree.map(lambda a: a[index] if hasattr(a, "shape") and a.ndim else a, stacked)
    shift = 0.01 * (jnp.mod(jnp.arange(n) * 0.618034, 1.0) - 0.5) * (jnp.arange(n) >= distinct)
    params = tiled[1]
    params = type(params)(d=params.d, b=params.b + shift[:, None, None] * params.d)
    return (tiled[0], params, *tiled[2:])


def flow_member(problem, params0, save_ts, settings):
    return solve_flow(problem, params0, save_ts, settings)


def sgd_member(problem, params0, eta, n_steps, key, batch_size):
    return descend(problem, params0, eta, n_steps, key, batch_size, False)


def _member(args, i):
    return jax.tree.map(lambda a: a[i] if hasattr(a, "shape") and a.ndim else a, args)


def _run_chunks(member, args, n, size, devices):
    """Every chunk of the batch dispatched (asynchronously), then waited for."""
    outs = []
    for start in range(0, n, size):
        part = jax.tree.map(
            lambda a, s=start: a[s : s + size] if hasattr(a, "shape") and a.ndim else a, args
        )
        outs.append(call_batched(member, pad_batch(part, size), devices))
    return outs


def _sweep(part, name, member, member_args, single, sz, repeat, devices, compare, steps_of):
    """Vmapped chunks vs a sequential loop for every size; ``steps_of(out)``: steps per member
    (a vmapped adaptive solve runs until its slowest member is done)."""
    base = stack(member_args)
    rows = []
    for n in sz["sweep_sizes"]:
        args = _tile(base, n, sz["distinct"])
        size = memory_batch_size(member, _member(args, 0), n, devices)  # as gflow sweep does

        def run(a=args, n=n, size=size):
            return _run_chunks(member, a, n, size, devices)

        first, best, outs = timed(run, repeat)
        picks = np.linspace(0, n - 1, sz["sequential"]).astype(int)
        members = [_member(args, i) for i in picks]
        jax.block_until_ready(single(members[0]))  # compiled once
        t0 = time.perf_counter()
        singles = [jax.block_until_ready(single(m)) for m in members]
        per_solve = (time.perf_counter() - t0) / len(members)
        gap = max(
            compare(outs[i // size], i % size, s) for i, s in zip(picks, singles, strict=True)
        )
        steps = np.concatenate(
            [np.ravel(steps_of(o))[: min(size, n - k * size)] for k, o in enumerate(outs)]
        )
        goal = "≥ 50× at 4096 (GPU)" if n == 4096 else None
        met = (best and per_solve * n / best >= 50) if n == 4096 and on_accelerator() else None
        rows.append(
            row(
                part,
                f"{n} {name}, vmapped on {len(devices)} device(s), chunks of {size}",
                best,
                f"sequential loop (extrapolated from {len(members)})",
                per_solve * n,
                goal,
                met,
                compile_seconds=first - best,
                max_abs_difference=gap,
                steps_min_mean_max=[int(steps.min()), float(steps.mean()), int(steps.max())],
            )
        )
    return rows


def part_sweep_flow(sz, repeat, devices, setups):
    args = [(s.problem, s.params0, s.save_ts, s.settings) for s in setups]

    def single(m):
        return solve_flow(*m)

    def compare(out, j, s):
        assert bool(out.success[j])
        return float(jnp.max(jnp.abs(out.params.b[j] - s.params.b)))

    return _sweep(
        "sweep_flow",
        "flow configurations",
        flow_member,
        args,
        single,
        sz,
        repeat,
        devices,
        compare,
        lambda out: out.num_steps,
    )


def part_sweep_sgd(sz, repeat, devices, setups):
    from gflow_jax.dynamics._descent import _descend

    cfg = setups[0].config
    n_steps = jnp.asarray(steps_per_interval(np.asarray(setups[0].save_ts), cfg.sgd.eta))
    args = [
        (
            s.problem,
            s.params0,
            jnp.asarray(cfg.sgd.eta),
            n_steps,
            jax.random.fold_in(jax.random.PRNGKey(s.config.seed), 1),
            cfg.sgd.batch_size,
        )
        for s in setups
    ]

    def single(m):
        return _descend(*m, False)

    def compare(out, j, s):
        return float(jnp.max(jnp.abs(out[0].b[j] - s[0].b)))

    total = int(n_steps.sum())
    return _sweep(
        "sweep_sgd",
        "SGD trainings",
        sgd_member,
        args,
        single,
        sz,
        repeat,
        devices,
        compare,
        lambda out: np.full(out[1].shape[0], total),
    )


# --------------------------------------------------------------------------------------------
# 4. magnitude: device engine vs the CPU engine


def part_magnitude(sz, repeat):
    from gflow_jax.magnitude import magnitude_function

    rows = []
    cpu = jax.devices("cpu")[0]
    for n in sz["magnitude_sizes"]:
        X = np.random.default_rng(n).normal(size=(n, 10))
        s = np.geomspace(0.1, 100.0, sz["scales"])
        first, best, dev = timed(lambda X=X, s=s: magnitude_function(X, s, method="device"), repeat)
        sub = (
            np.arange(len(s))
            if n < sz["cpu_scales_from"]
            else np.linspace(0, len(s) - 1, 4).astype(int)
        )
        with jax.default_device(cpu), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # conditioning notes, reported anyway
            magnitude_function(X, s[-1:], method="adaptive")  # compiles its helpers (cheap scale)
            t0 = time.perf_counter()
            ref = magnitude_function(X, s[sub], method="adaptive")
            cpu_s = (time.perf_counter() - t0) * len(s) / len(sub)
        rel = float(
            np.max(np.abs(np.asarray(dev.magnitude)[sub] - ref.magnitude) / np.abs(ref.magnitude))
        )
        goal = "< 15 s at n = 20000 (GPU)" if n == 20000 else None
        met = best < 15.0 if n == 20000 and on_accelerator() else None
        extrapolated = "" if len(sub) == len(s) else f", {len(sub)} scales extrapolated"
        rows.append(
            row(
                "magnitude",
                f"n = {n} × {len(s)} scales, device engine",
                best,
                f"CPU engine (adaptive, host LAPACK{extrapolated})",
                cpu_s,
                goal,
                met,
                compile_seconds=first - best,
                max_relative_difference=rel,
                max_residual=float(np.max(dev.residual)),
                refinement_steps=int(np.sum(dev.iterations)),
            )
        )
    return rows


# --------------------------------------------------------------------------------------------
# 5. truncated-data magnitude vs the flow solve


def part_truncated(sz, repeat):
    from gflow_jax.diagnostics import truncation_diagnostics
    from gflow_jax.experiments.truncation import load_config, setup_experiment
    from gflow_jax.magnitude import cloud_magnitudes, magnitude_scales

    t = sz["truncated"]
    cfg = load_config(
        ROOT / "experiments" / "collapse.toml",
        [
            f"data.points_per_class={t['points_per_class']}",
            f"flow.n_save={t['n_save']}",
            "gd.etas=[]",
            "output.progress=false",
        ],
    )
    setup = setup_experiment(cfg)
    flow_first, flow_s, sol = timed(
        lambda: solve_flow(setup.problem, setup.params0, setup.save_ts, setup.settings), repeat
    )
    check_solution(sol, setup.settings)
    diag = truncation_diagnostics(sol.params, setup.problem.u, setup.data.labels, 2)
    xt = np.asarray(diag.x_tilde @ setup.frame)
    scales = magnitude_scales(0.1, 100.0, t["n_scales"])
    first, best, res = timed(lambda: cloud_magnitudes(xt, scales), repeat)
    N = setup.problem.n_points
    return [
        row(
            "truncated",
            f"magnitude of {t['n_save']} truncated clouds (N = {N}) × {t['n_scales']} scales",
            best,
            "the flow solve that produced them",
            flow_s,
            "faster than the solve (GPU)",
            bool(best < flow_s) if on_accelerator() else None,
            compile_seconds=first - best,
            flow_steps=int(sol.num_steps),
            max_residual=float(np.nanmax(res.residual)),
            solvers=np.bincount(np.asarray(res.solver).ravel(), minlength=3).tolist(),
        )
    ]


# --------------------------------------------------------------------------------------------
# 6. the digits generalisation sweep


def part_digits(sz):
    from gflow_jax.experiments import load_experiment

    over = [*sz["digits"], "output.progress=false", "output.figures=false"]
    kind, cfg = load_experiment(ROOT / "experiments" / "magnitude_generalization.toml", over)
    n = len(cfg.grid.learning_rates) * len(cfg.grid.batch_sizes) * len(cfg.grid.seeds)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = kind.run(cfg, Path(tmp), False)
        seconds = time.perf_counter() - t0
    return [
        row(
            "digits",
            f"{n}-network digits generalisation sweep (train, record, measure)",
            seconds,
            None,
            None,
            "< 180 s (GPU)",
            bool(seconds < 180) if on_accelerator() else None,
            networks_ok=summary["n_ok"],
            timings=summary.get("timings"),
        )
    ]


# --------------------------------------------------------------------------------------------


def markdown(result: dict) -> str:
    env = result["environment"]
    kinds: dict[str, int] = {}
    for d in env["devices"]:
        memory = f" ({d['memory_bytes'] / 2**30:.0f} GiB)" if d.get("memory_bytes") else ""
        kinds[d["kind"] + memory] = kinds.get(d["kind"] + memory, 0) + 1
    devices = ", ".join(f"{k} × {name}" for name, k in kinds.items())
    lines = [
        f"Device: {env['backend']}, {devices}; float64 "
        f"{'on' if env['float64'] else 'off'}; jax {env['packages']['jax']}; load average "
        f"{result['load_average']:.2f}; {result['mode']} sizes; total {result['seconds']:.0f} s",
        "",
        "| part | case | time | reference | reference time | ratio | goal | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["parts"]:
        ref_s = f"{r['reference_seconds']:.3g} s" if r["reference_seconds"] else "—"
        ratio = f"{r['ratio']:.1f}×" if r["ratio"] else "—"
        met = {True: "yes", False: "**no**", None: "—"}[r["met"]]
        lines.append(
            f"| {r['part']} | {r['case']} | {r['seconds']:.3g} s | {r['reference'] or '—'} | "
            f"{ref_s} | {ratio} | {r['goal'] or '—'} | {met} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--parts", default=",".join(PARTS), help="comma-separated: " + ", ".join(PARTS))
    p.add_argument("--smoke", action="store_true", help="every part at tiny sizes (CPU, seconds)")
    p.add_argument("--sweep-sizes", default=None, help="e.g. 256,4096 (default 256,4096,16384)")
    p.add_argument("--magnitude-sizes", default=None, help="e.g. 2000 (default 4000,20000)")
    p.add_argument("--blas-threads", default=None, help="OPENBLAS_NUM_THREADS (read at start)")
    args = p.parse_args(argv)
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        p.error(f"unknown parts {sorted(unknown)}; known: {', '.join(PARTS)}")
    use_cpu_cores()  # on a CPU: one device per core, as `gflow sweep` does
    sz, repeat = (SMOKE, SMOKE["repeat"]) if args.smoke else (FULL, FULL["repeat"])
    sz = dict(sz)
    for key, text in (("sweep_sizes", args.sweep_sizes), ("magnitude_sizes", args.magnitude_sizes)):
        if text:
            sz[key] = tuple(int(v) for v in text.split(","))
    devices = resolve_devices(None)
    t_start = time.perf_counter()
    rows: list[dict] = []
    setups = _setups(sz) if {"sweep_flow", "sweep_sgd"} & set(parts) else None
    for name in parts:
        t0 = time.perf_counter()
        if name == "flow_vs_scipy":
            new = part_flow_vs_scipy(sz, repeat)
        elif name == "sweep_flow":
            new = part_sweep_flow(sz, repeat, devices, setups)
        elif name == "sweep_sgd":
            new = part_sweep_sgd(sz, repeat, devices, setups)
        elif name == "magnitude":
            new = part_magnitude(sz, repeat)
        elif name == "truncated":
            new = part_truncated(sz, repeat)
        else:
            new = part_digits(sz)
        for r in new:
            r["part_seconds"] = time.perf_counter() - t0
        rows += new
        print(f"device suite: {name} done in {time.perf_counter() - t0:.1f} s", flush=True)
        jax.clear_caches()  # the parts share no program: memory stays that of the largest part
    result = {
        "mode": "smoke" if args.smoke else "full",
        "environment": environment_info(),
        "load_average": os.getloadavg()[0],
        "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "seconds": time.perf_counter() - t_start,
        "parts": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "device_suite.json").write_text(json.dumps(result, indent=2, default=str))
    table = markdown(result)
    (args.out / "device_suite.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
