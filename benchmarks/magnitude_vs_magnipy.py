"""Magnitude functions: gflow_jax vs magnipy (cholesky and cg), and vs the floor of a direct
method; the magnitude of a K-iterate trajectory.

Run:  .venv/bin/python benchmarks/magnitude_vs_magnipy.py [--sizes 2000 4000] [--threads 1]
      [--repeats 2] [--trajectory 5000] [--n-large 20000]

Problem (docs/theory.md#magnitude): n standard-normal points in R^10, Euclidean distances, 32
log-spaced scales spanning |tX| from 1.5 to 0.9·n (found beforehand with
:func:`gflow_jax.convergence_scale`; not timed), float64. Everything starts from the same distance
matrix. Timed, one after the other on the same CPU, each ``--repeats`` times (median and spread
printed); our engine and magnipy's three configurations alternate, one repetition of each at a
time, so both sides see the same state of a shared machine:

* gflow_jax ``magnitude_function(method="adaptive")``, the CPU engine
  (:mod:`gflow_jax.magnitude._adaptive`: CG at large scales, CG preconditioned by a neighbouring
  scale's float32 or float64 Cholesky factor, float32 factors refined by float64 CG; every
  scale's residual ‖Zw − 1‖/‖1‖ ≤ 1e-12 is checked; the solver of every scale is summarised and
  one more run prints where the time goes, per phase);
* gflow_jax ``method="cholesky"`` (the JAX core: one Cholesky per scale, batched), with
  ``--with-core``;
* magnipy 1.0 ``compute_magnitude_from_distances(D, ts, method=...)`` in its two configurations
  for this task: ``"cholesky"`` (Z = exp(−D)**t, scipy ``cho_factor`` + two triangular solves
  per scale) and ``"cg"`` (scipy's conjugate gradients on Z = exp(−D)**t, warm-started across
  scales, at scipy's default tolerance rtol = 1e-5, which magnipy does not expose: its answer
  agrees to ~1e-5 only), and ``"cg-1e-9"``: the same with scipy's rtol set to 1e-9 in the
  worker, the loosest power of ten that meets the 1e-8 agreement bar here (magnipy's cg at the
  accuracy of the comparison; ours stops at a residual of 1e-12);
* the floor of any direct method: 32 bare LAPACK ``dpotrf`` factorisations of size n (scipy),
  Z already built and not timed.

Printed: times, the speed-up over each magnipy method, the ratio of our time to the Cholesky
floor, and the largest relative difference between the magnitude functions (must be ≤ 1e-8).

``--trajectory K`` (default 5000; 0 skips): the magnitude of a synthetic training trajectory, K
iterates of a random walk in R^2000 (steps N(0, I/2000)), through
:func:`gflow_jax.diagnostics.trajectory_measures` (16 scales t·diam ∈ [0.1, 10⁴] plus t = √K and
0.01; E_α not computed): distances and magnitude timed separately.

Threads: ``--threads`` (default 1) sets ``OPENBLAS_NUM_THREADS`` and ``NUMEXPR_NUM_THREADS`` for
this process and the magnipy worker before NumPy loads; the number of BLAS threads actually in
use is printed. Load: the load average is printed before and after every size, with a WARNING
when it exceeds 1 (figures taken above that are not comparable with quiet-machine ones).

magnipy lives in its own environment: it pins scipy==1.13.0 and imports
``scipy.integrate.trapz`` (removed in scipy 1.14), while jax/jaxlib 0.10.2 require
scipy ≥ 1.14 — the two cannot share an environment, so magnipy is not in the ``bench`` extra.
Create the environment once (the CPU wheel of torch is on local disk; installing torch any other
way pulls gigabytes of CUDA packages):

    python3 -m venv .venv-bench
    .venv-bench/bin/pip install torch==2.13.0
    .venv-bench/bin/pip install magnipy

This script (run with the project's .venv) calls ``.venv-bench/bin/python`` on itself in
``--magnipy-worker`` mode for the magnipy timings (override with ``--magnipy-python``); the
worker imports only numpy and magnipy. Without it the script prints
"magnipy not installed: skipping the magnipy comparison".

``--n-large 20000`` adds one large cloud (20000² float64 = 3.2 GB per matrix): the adaptive
engine processes scales one at a time (peak ≈ 4 such matrices) with a progress bar; its floor
is extrapolated from two timed factorisations (32 × the mean) and magnipy is not run.
Measured figures: benchmarks/README.md.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":  # BLAS/numexpr threads must be fixed before NumPy loads
    _threads = sys.argv[sys.argv.index("--threads") + 1] if "--threads" in sys.argv else "1"
    if "--magnipy-worker" not in sys.argv:
        os.environ["OPENBLAS_NUM_THREADS"] = _threads
        os.environ["NUMEXPR_NUM_THREADS"] = _threads

import argparse  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' shared helpers
from _load import load_line  # noqa: E402

MISSING = "magnipy not installed: skipping the magnipy comparison"
# magnipy's methods as its API runs them, and its "cg" with scipy's tolerance tightened to the
# loosest power of ten at which it meets the 1e-8 agreement bar on this problem (1e-8 gives
# 9.7e-9 at n = 2000: too close; 1e-9 gives 7e-10)
PEER_METHODS = ("cholesky", "cg", "cg-1e-9")


# --------------------------------------------------------------------------------------------
# magnipy worker (runs inside .venv-bench: numpy + magnipy only)


def magnipy_worker(inp: str, out: str) -> None:
    import functools

    import magnipy.magnitude.weights as magnipy_weights
    from magnipy.magnitude.compute import compute_magnitude_from_distances
    from scipy.sparse.linalg import cg

    data = np.load(inp)
    D, ts, repeats = data["D"], data["ts"], int(data["repeats"])
    result = {}
    for method in PEER_METHODS:
        name, _, rtol = method.partition("-")
        # magnipy calls scipy's cg at its default rtol 1e-5; "cg-<rtol>" asks for another
        tight = functools.partial(cg, rtol=float(rtol)) if rtol else cg
        magnipy_weights.cg = tight
        compute_magnitude_from_distances(D[:50, :50], ts[:2], method=name)  # warm-up
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            mag = compute_magnitude_from_distances(D, ts, method=name)
            seconds.append(time.perf_counter() - start)
        result[f"{method}_magnitude"] = np.asarray(mag)
        result[f"{method}_seconds"] = np.asarray(seconds)
    np.savez(out, **result)


def find_magnipy(explicit: str | None) -> list[str] | None:
    """The command running the magnipy worker, or None when magnipy is not available."""
    try:
        import magnipy  # noqa: F401  (same environment: possible with a future magnipy)

        return [sys.executable]
    except ImportError:
        pass
    candidates = [explicit] if explicit else [str(ROOT / ".venv-bench" / "bin" / "python")]
    for python in candidates:
        if python and Path(python).exists():
            probe = subprocess.run(
                [python, "-c", "import magnipy.magnitude.compute"], capture_output=True
            )
            if probe.returncode == 0:
                return [python]
    return None


def run_magnipy(cmd: list[str], D: np.ndarray, ts: np.ndarray, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.npz")
        np.savez(inp, D=D, ts=ts, repeats=repeats)
        subprocess.run([*cmd, __file__, "--magnipy-worker", inp, out], check=True)
        return dict(np.load(out))


# --------------------------------------------------------------------------------------------
# measuring honestly


def stats(seconds) -> str:
    """Median and spread (max − min) of repeated timings."""
    s = np.asarray(seconds, dtype=float)
    spread = f" ± {(s.max() - s.min()) / 2:.2f}" if s.size > 1 else ""
    return f"{np.median(s):8.3f} s{spread} (runs: {', '.join(f'{x:.3f}' for x in s)})"


def timed(fn, repeats: int) -> tuple[list[float], object]:
    seconds, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - start)
    return seconds, out


def cholesky_floor(D: np.ndarray, ts: np.ndarray) -> float:
    """Seconds of bare LAPACK dpotrf on exp(−tD) for each scale (Z built outside the clock)."""
    from scipy.linalg import lapack

    total = 0.0
    for t in ts:
        Z = np.exp(-t * D).T  # symmetric, so Z.T is Z in Fortran order: no copy inside dpotrf
        start = time.perf_counter()
        _, info = lapack.dpotrf(Z, lower=1, clean=0, overwrite_a=1)
        total += time.perf_counter() - start
        assert info == 0
        del Z
    return total


def scale_range(D, n: int) -> tuple[float, float]:
    from gflow_jax import convergence_scale

    lo = convergence_scale(D, metric="precomputed", fraction=1.5 / n, rtol=1e-6)
    hi = convergence_scale(D, metric="precomputed", fraction=0.9, rtol=1e-6)
    return lo, hi


def solver_summary(solver, iterations) -> str:
    names = list(solver)
    counts = {s: names.count(s) for s in dict.fromkeys(names)}
    it = [int(i) for i, s in zip(np.asarray(iterations), names, strict=True) if s != "cholesky"]
    extra = f", CG iterations {min(it)}–{max(it)} (total {sum(it)})" if it else ""
    return ", ".join(f"{k} ×{v}" for k, v in counts.items()) + extra


def profile_line(D, ts) -> str:
    """One more engine run on the same problem: seconds per phase (where the time goes)."""
    from gflow_jax.magnitude import solve_adaptive

    start = time.perf_counter()
    out = solve_adaptive(D, ts)
    total = time.perf_counter() - start
    phases = ", ".join(f"{k} {v:.3f}" for k, v in out["profile"].items())
    rest = total - sum(out["profile"].values())
    fallback = sorted({f for f in out["fallback"] if f})
    note = f"; float32 fallbacks: {'; '.join(fallback)}" if fallback else ""
    return f"{total:.3f} s = {phases}, other {rest:.3f}{note}"


# --------------------------------------------------------------------------------------------
# the comparisons


def bench_size(n: int, args, magnipy_cmd) -> None:
    import jax

    from gflow_jax import magnitude_function, pairwise_distances

    rng = np.random.default_rng(args.seed)
    X = rng.standard_normal((n, args.dim))
    D = pairwise_distances(X)
    D_host = np.asarray(D)
    if args.t_range:
        t_lo, t_hi = args.t_range
    else:
        t_lo, t_hi = scale_range(D, n)
    ts = np.geomspace(t_lo, t_hi, args.n_scales)
    print(f"\n== n = {n} points in R^{args.dim}, {args.n_scales} scales", end="")
    print(f" t ∈ [{t_lo:.4g}, {t_hi:.4g}]")
    print(load_line("before"))

    def ours(method, scales=ts):
        r = magnitude_function(D_host, scales, metric="precomputed", method=method)
        jax.block_until_ready(r.magnitude)
        return r

    warm, _ = timed(lambda: ours("adaptive", ts[-1:]), 1)  # compiles the input checks for n
    # ours and magnipy alternate, one repetition of each at a time, so that both see the same
    # state of a shared machine (its speed drifts by tens of percent over minutes)
    seconds, result, peer_runs = [], None, []
    for _ in range(args.repeats):
        one, result = timed(lambda: ours("adaptive"), 1)
        seconds += one
        if magnipy_cmd is not None:
            peer_runs.append(run_magnipy(magnipy_cmd, D_host, ts, 1))
    t_ours = float(np.median(seconds))
    mag = np.asarray(result.magnitude)
    print(f"gflow_jax adaptive : {stats(seconds)}", end="")
    print(f"   (first call at this n, 1 scale: {warm[0]:.3f} s)")
    print(
        f"                     |tX| from {mag[0]:.4g} to {mag[-1]:.6g}; max residual"
        f" {float(np.max(result.residual)):.1e}; {solver_summary(result.solver, result.iterations)}"
    )
    print(f"  profile (1 run)  : {profile_line(D_host, ts)}")
    if args.with_core and n <= 8000:
        ours("cholesky", ts[:8])  # compile
        core_s, core = timed(lambda: ours("cholesky"), 1)
        diff = np.max(np.abs(np.asarray(core.magnitude) - mag) / mag)
        print(f"gflow_jax cholesky : {stats(core_s)}   (JAX core; max |Δ|/|tX| {diff:.1e})")
    floors = [cholesky_floor(D_host, ts) for _ in range(args.repeats)]
    t_floor = float(np.median(floors))
    print(f"Cholesky floor     : {stats(floors)}   ({args.n_scales} bare LAPACK dpotrf, n = {n})")
    print(f"ratio ours / floor : {t_ours / t_floor:8.3f}")
    if magnipy_cmd is None:
        print(MISSING)
    else:
        for method in PEER_METHODS:
            ref = peer_runs[-1][f"{method}_magnitude"]
            secs = np.concatenate([run[f"{method}_seconds"] for run in peer_runs])
            rel = float(np.max(np.abs(ref - mag) / np.abs(ref)))
            flag = "" if rel <= 1e-8 else "   (agreement > 1e-8: not the same answer)"
            print(f"magnipy {method:<10s} : {stats(secs)}", end="")
            print(f"   max relative difference {rel:.1e}{flag}")
            print(
                f"  speed-up vs magnipy {method}: {np.median(secs) / t_ours:6.2f}×"
                f"   (magnipy {method} / floor = {np.median(secs) / t_floor:.2f})"
            )
    print(load_line("after"))


def bench_trajectory(K: int, args) -> None:
    from gflow_jax.diagnostics import trajectory_measures
    from gflow_jax.magnitude import pairwise_distances

    p = args.trajectory_dim
    rng = np.random.default_rng(args.seed)
    X = np.cumsum(rng.standard_normal((K, p)) / np.sqrt(p), axis=0)
    print(f"\n== trajectory: K = {K} iterates of a random walk in R^{p}, 16 scales + 2")
    print(load_line("before"))
    dist_s, D = timed(lambda: np.asarray(pairwise_distances(X)), 1)
    print(f"distances          : {stats(dist_s)}   (gflow_jax pairwise_distances, float64)")

    def measures():
        return trajectory_measures(D, n_scales=16, e_alpha_measure=False)

    seconds, m = timed(measures, args.repeats)
    print(f"trajectory_measures: {stats(seconds)}   (magnitude at 18 scales; first run included)")
    print(
        f"                     |tX| from {m.magnitude[0]:.4g} to {m.magnitude[-1]:.6g};"
        f" max condition {m.values['max_condition']:.2g}; warnings {len(m.warnings)}"
    )
    from gflow_jax.diagnostics._trajectory import relative_scales

    ts = np.concatenate([relative_scales(D, 16, (-1.0, 4.0)), [np.sqrt(K), 0.01]])
    print(f"  profile (1 run)  : {profile_line(D, ts)}")
    print(load_line("after"))


def bench_large(n: int, args) -> None:
    import jax

    from gflow_jax import magnitude_function, pairwise_distances

    rng = np.random.default_rng(args.seed)
    X = rng.standard_normal((n, args.dim))
    # scale range: |tX| = 1.5 is set by the diameter (as at n = 4000); the 0.9·n end by the
    # nearest-neighbour distance ∝ n^(−1/dim): extrapolated from n = 4000, then reported
    if args.large_t_range:
        t_lo, t_hi = args.large_t_range
    else:
        D4 = pairwise_distances(X[:4000])
        t_lo, t_hi = scale_range(D4, 4000)
        t_hi *= (n / 4000) ** (1.0 / args.dim)
        del D4
    ts = np.geomspace(t_lo, t_hi, args.n_scales)
    print(f"\n== n = {n} (large), {args.n_scales} scales t ∈ [{t_lo:.4g}, {t_hi:.4g}]")
    print(load_line("before"))
    start = time.perf_counter()
    r = magnitude_function(X, ts, method="adaptive", progress=True)
    jax.block_until_ready(r.magnitude)
    t_ours = time.perf_counter() - start
    mag = np.asarray(r.magnitude)
    print(
        f"gflow_jax adaptive : {t_ours:8.1f} s (distances included)  |tX| from {mag[0]:.4g} to"
        f" {mag[-1]:.6g}; max residual {float(np.max(r.residual)):.1e};"
        f" {solver_summary(r.solver, r.iterations)}"
    )
    D = np.asarray(pairwise_distances(X))
    floor = cholesky_floor(D, ts[[0, -1]]) / 2 * args.n_scales
    print(f"Cholesky floor     : {floor:8.1f} s   (32 × mean of 2 timed dpotrf, extrapolated)")
    print(f"ratio ours / floor : {t_ours / floor:8.3f}")
    print("magnipy            : not run at this size (it would cost more than the floor)")
    print(load_line("after"))


def blas_threads() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    pools = {(p["internal_api"], p["num_threads"]) for p in threadpool_info()}
    return ", ".join(f"{api} {threads}" for api, threads in sorted(pools))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--sizes", type=int, nargs="*", default=[2000, 4000], help="(none: only the others)"
    )
    p.add_argument("--n-scales", type=int, default=32)
    p.add_argument("--dim", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=2, help="runs of every configuration")
    p.add_argument("--threads", type=int, default=1, help="BLAS/numexpr threads (all sides)")
    p.add_argument("--trajectory", type=int, default=5000, help="iterates K (0: skip)")
    p.add_argument("--trajectory-dim", type=int, default=2000)
    p.add_argument("--n-large", type=int, default=None, help="also run one large cloud")
    p.add_argument("--with-core", action="store_true", help="also time the JAX Cholesky core")
    p.add_argument("--t-range", type=float, nargs=2, default=None, help="fix t_min t_max")
    p.add_argument("--large-t-range", type=float, nargs=2, default=None)
    p.add_argument("--magnipy-python", default=None, help="python of the magnipy environment")
    p.add_argument("--magnipy-worker", nargs=2, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.magnipy_worker:
        magnipy_worker(*args.magnipy_worker)
        return 0

    import jax

    import gflow_jax  # noqa: F401  (float64)

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs;"
        f" OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')},"
        f" NUMEXPR_NUM_THREADS={os.environ.get('NUMEXPR_NUM_THREADS', 'unset')}"
        f" (BLAS pools: {blas_threads()}); jax {jax.__version__} ({jax.default_backend()}),"
        f" float64 = {jax.config.read('jax_enable_x64')}; repeats {args.repeats}"
    )
    print(load_line("at start"))
    magnipy_cmd = find_magnipy(args.magnipy_python)
    if magnipy_cmd is None:
        print(MISSING)
    for n in args.sizes:
        bench_size(n, args, magnipy_cmd)
    if args.trajectory:
        bench_trajectory(args.trajectory, args)
    if args.n_large:
        bench_large(args.n_large, args)
    print("\n" + load_line("at end"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
