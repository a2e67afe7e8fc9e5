"""Magnitude of the truncated data vs the flow solve that produced it.

Run:  .venv/bin/python benchmarks/truncated_magnitude_vs_flow.py [--points-per-class 250]

The `collapse` experiment (two ball clusters in the plane, layer 1 clamps from below, layer 2
from above, docs/theory.md#closed-forms) with N = 2·points_per_class points and n_save saves:

1. the effective flow (diffrax Tsit5, rtol 1e-10 / atol 1e-12 as in collapse.toml) is solved
   once to compile, then timed (best of ``--repeats``);
2. the truncated clouds X̃(s) (T, N, 2) are formed (not timed: the run stores them anyway);
3. |tX̃(s)| at every save × ``--n-scales`` log-spaced scales is computed by
   :func:`gflow_jax.magnitude.cloud_magnitudes` (exact duplicates removed on the host,
   clouds padded to size buckets, one compiled program per bucket, float64 Cholesky batched over
   scales and clouds) — once to compile, then timed (best of ``--repeats``);
4. optionally (``--full-saves K``) the same without compaction (every save at the full N) on K
   saves, extrapolated to T saves — the cost compaction saves.

Prints both times and the ratio, the distinct-point counts, and the Cholesky work
Σ_saves S·B³/3 (B the padded bucket size) that the magnitude computation actually does.
"""

from __future__ import annotations

import os

# Must precede the first import of numpy/jax: jaxlib's LAPACK (Cholesky) runs on OpenBLAS, whose
# worker threads busy-wait; on a 2-core machine shared with other jobs a multithreaded potrf
# was measured 50-100x slower than a single-threaded one (2-4 ms for n = 500). ``--blas-threads``
# lets you compare; the default is 1.
if "--blas-threads" in os.sys.argv:
    os.environ["OPENBLAS_NUM_THREADS"] = os.sys.argv[os.sys.argv.index("--blas-threads") + 1]
else:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

import gflow_jax  # noqa: F401, E402  (enables float64)
from gflow_jax.diagnostics import truncation_diagnostics  # noqa: E402
from gflow_jax.dynamics import check_solution, solve_flow  # noqa: E402
from gflow_jax.experiments.truncation import (
    load_config,  # noqa: E402
    setup_experiment,  # noqa: E402
)
from gflow_jax.magnitude import bucket_size, cloud_magnitudes, magnitude_scales


def best_of(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times), out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--points-per-class", type=int, default=250)
    p.add_argument("--n-save", type=int, default=200)
    p.add_argument("--n-scales", type=int, default=32)
    p.add_argument("--t-min", type=float, default=0.1)
    p.add_argument("--t-max", type=float, default=100.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--full-saves", type=int, default=0, help="also time K saves uncompacted")
    p.add_argument("--blas-threads", default="1", help="OPENBLAS_NUM_THREADS (read at start)")
    args = p.parse_args(argv)

    cfg = load_config(
        "experiments/collapse.toml",
        [
            f"data.points_per_class={args.points_per_class}",
            f"flow.n_save={args.n_save}",
            "gd.etas=[]",
            "output.progress=false",
        ],
    )
    setup = setup_experiment(cfg)
    N = setup.problem.u.shape[0]
    print(
        f"# {platform.machine()}, {os.cpu_count()} CPU cores, {jax.default_backend()}, "
        f"JAX {jax.__version__}, float64; OPENBLAS_NUM_THREADS="
        f"{os.environ.get('OPENBLAS_NUM_THREADS')}; load average {os.getloadavg()[0]:.2f}"
    )
    print(f"# collapse config: N = {N}, M = {cfg.data.dim}, T = {args.n_save} saves")

    def solve():
        return solve_flow(setup.problem, setup.params0, setup.save_ts, setup.settings)

    t0 = time.perf_counter()
    sol = check_solution(jax.block_until_ready(solve()), setup.settings)
    flow_compile = time.perf_counter() - t0
    flow_time, sol = best_of(solve, args.repeats)
    print(
        f"flow solve:      {flow_time:8.3f} s  ({int(sol.num_steps)} steps, "
        f"{int(sol.num_rejected_steps)} rejected; first call incl. compile {flow_compile:.1f} s)"
    )

    diag = truncation_diagnostics(sol.params, setup.problem.u, setup.data.labels, 2)
    xt = np.asarray(diag.x_tilde @ setup.frame)  # (T, N, M) in input space
    scales = magnitude_scales(args.t_min, args.t_max, args.n_scales)

    t0 = time.perf_counter()
    res = cloud_magnitudes(xt, scales)
    mag_compile = time.perf_counter() - t0
    mag_time, res = best_of(lambda: cloud_magnitudes(xt, scales), args.repeats)
    n_unique = np.asarray(res.n_unique)
    buckets = np.array([bucket_size(int(n)) for n in n_unique])
    flops = float(np.sum(args.n_scales * buckets.astype(float) ** 3 / 3))
    floor = float(np.sum(args.n_scales * n_unique.astype(float) ** 3 / 3))  # without padding
    print(
        f"magnitude:       {mag_time:8.3f} s  ({args.n_save} saves × {args.n_scales} scales, "
        f"t in [{args.t_min:g}, {args.t_max:g}]; first call incl. compile {mag_compile:.1f} s, "
        f"{len(set(buckets.tolist()))} bucket sizes)"
    )
    print(f"ratio magnitude / flow solve: {mag_time / flow_time:.2f}")
    big = n_unique > 2
    print(
        f"# distinct points per save: first {n_unique[0]}, last {n_unique[-1]}; "
        f"{int(big.sum())} saves with more than 2 (max {n_unique.max()}); "
        f"Cholesky work Σ S·B³/3 = {flops / 1e9:.2f} GFLOP "
        f"({flops / 1e9 / mag_time:.2f} GFLOP/s achieved); without bucket padding "
        f"Σ S·n³/3 = {floor / 1e9:.2f} GFLOP, the least any Cholesky-based method does"
    )
    print(
        f"# solver codes: {np.bincount(np.asarray(res.solver).ravel(), minlength=3).tolist()} "
        f"(Cholesky, LU, failed); max condition {float(np.nanmax(res.condition)):.3g}; "
        f"max residual {float(np.nanmax(res.residual)):.2e}"
    )
    if args.full_saves:
        K = min(args.full_saves, args.n_save)
        sub = xt[:K]
        cloud_magnitudes(sub, scales, compact=False)  # compile
        full_time, full = best_of(lambda: cloud_magnitudes(sub, scales, compact=False), 1)
        gap = np.max(np.abs(np.asarray(full.magnitude) - np.asarray(res.magnitude[:K])))
        print(
            f"uncompacted:     {full_time:8.3f} s for {K} saves at B = {bucket_size(N)} → "
            f"{full_time * args.n_save / K:.1f} s extrapolated to {args.n_save} saves "
            f"(max |difference| on those saves {gap:.1e})"
        )


if __name__ == "__main__":
    main()
