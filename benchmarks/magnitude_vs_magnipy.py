"""Magnitude functions: gflow_jax vs magnipy, and vs the floor of a direct method.

Run:  .venv/bin/python benchmarks/magnitude_vs_magnipy.py [--sizes 2000 4000] [--n-large 20000]

Problem (docs/theory.md#magnitude): n standard-normal points in R^10, Euclidean distances, 32
log-spaced scales spanning |tX| from 1.5 to 0.9·n (found beforehand with
:func:`gflow_jax.convergence_scale`; not timed), float64. Everything starts from the same distance
matrix. Timed, one after the other on the same CPU:

* gflow_jax ``method="adaptive"`` (CG at large scales, CG preconditioned by a neighbouring
  scale's Cholesky factor, Cholesky; every scale's residual ‖Zw − 1‖/‖1‖ ≤ 1e-12 is checked,
  and the solver of every scale is printed);
* gflow_jax ``method="cholesky"`` (the JAX core: one Cholesky per scale, batched), for reference;
* magnipy 1.0 ``compute_magnitude_from_distances(D, ts, method="cholesky")`` (Z = exp(−D)**t,
  scipy ``cho_factor`` + two triangular solves per scale);
* the floor of any direct method: 32 bare LAPACK ``dpotrf`` factorisations of size n (scipy),
  Z already built and not timed.

Printed: times, the speed-up over magnipy, the ratio of our time to the Cholesky floor, and the
largest relative difference between the two magnitude functions (must be ≤ 1e-8).

magnipy lives in its own environment: it pins scipy==1.13.0 and imports
``scipy.integrate.trapz`` (removed in scipy 1.14), while jax/jaxlib 0.10.2 require
scipy ≥ 1.14 — the two cannot share an environment, so magnipy is not in the ``bench`` extra.
Create the environment once (the CPU wheel of torch is on local disk; installing torch any other
way pulls gigabytes of CUDA packages):

    python3 -m venv .venv-bench
    .venv-bench/bin/pip install torch==2.13.0
    .venv-bench/bin/pip install magnipy

Timings on a shared machine are only comparable under the same load: the script prints the load
average, and ``OPENBLAS_NUM_THREADS=1`` (inherited by the magnipy worker) avoids the collapse
of multi-threaded LAPACK when other processes hold the cores.

This script (run with the project's .venv) calls ``.venv-bench/bin/python`` on itself in
``--magnipy-worker`` mode for the magnipy timings (override with ``--magnipy-python``); the
worker imports only numpy and magnipy. Without it the script prints
"magnipy not installed: skipping the magnipy comparison".

Measured on this 2-core machine while other jobs held it (load average 4.6; OPENBLAS_NUM_THREADS=1):
n = 2000: ours 2.49 s, magnipy 8.97 s (3.60×), floor 3.51 s (ours/floor 0.71);
n = 4000: ours 12.2 s, magnipy 42.8 s (3.52×), floor 23.5 s (ours/floor 0.52);
magnitude functions agree to 2.4e-13 relative. The engine builds only the lower triangle of Z,
multiplies by it with ``dsymv`` and applies a neighbouring factor with two ``dtrsv`` calls
(OpenBLAS's single-column ``dpotrs`` was 3–4× slower). Before these changes, under the load
average 8 of the previous measurement: n = 2000 ours 5.8 s (1.78×), n = 4000 ours 26.8 s (2.46×);
old and new engines interleaved in one process: n = 2000 4.4–6.1 s → 2.5–3.0 s, n = 4000
19.9–21.9 s → 9.4–11.3 s.
n = 20000 (``--n-large``): ours 663.9 s (distances included; CG at all 32 scales, 12–316
iterations, 6518 in all, max residual 9.9e-13), extrapolated floor 2360 s (ours/floor 0.28).

``--n-large 20000`` adds one large cloud (20000² float64 = 3.2 GB per matrix): the adaptive
engine processes scales one at a time (peak ≈ 4 such matrices) with a progress bar; its floor
is extrapolated from two timed factorisations (32 × the mean) and magnipy is not run.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MISSING = "magnipy not installed: skipping the magnipy comparison"


# --------------------------------------------------------------------------------------------
# magnipy worker (runs inside .venv-bench: numpy + magnipy only)


def magnipy_worker(inp: str, out: str) -> None:
    from magnipy.magnitude.compute import compute_magnitude_from_distances

    data = np.load(inp)
    D, ts = data["D"], data["ts"]
    compute_magnitude_from_distances(D[:50, :50], ts[:2], method="cholesky")  # warm-up
    start = time.perf_counter()
    mag = compute_magnitude_from_distances(D, ts, method="cholesky")
    seconds = time.perf_counter() - start
    np.savez(out, magnitude=np.asarray(mag), seconds=seconds)


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


def run_magnipy(cmd: list[str], D: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, float]:
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.npz")
        np.savez(inp, D=D, ts=ts)
        subprocess.run([*cmd, __file__, "--magnipy-worker", inp, out], check=True)
        res = np.load(out)
        return res["magnitude"], float(res["seconds"])


# --------------------------------------------------------------------------------------------
# our side


def cholesky_floor(D: np.ndarray, ts: np.ndarray, count: int | None = None) -> float:
    """Seconds of bare LAPACK dpotrf on exp(−tD) for each scale (Z built outside the clock)."""
    from scipy.linalg import lapack

    total = 0.0
    for t in ts[:count] if count else ts:
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


def solver_summary(result) -> str:
    names = list(result.solver)
    counts = {s: names.count(s) for s in dict.fromkeys(names)}
    iters = np.asarray(result.iterations)
    it = [int(i) for i, s in zip(iters, names, strict=True) if s in ("cg", "pcg")]
    extra = f", CG iterations {min(it)}–{max(it)} (total {sum(it)})" if it else ""
    return ", ".join(f"{k} ×{v}" for k, v in counts.items()) + extra


def bench_size(n: int, args, magnipy_cmd) -> None:
    import jax

    from gflow_jax import magnitude_function, pairwise_distances

    rng = np.random.default_rng(args.seed)
    X = rng.standard_normal((n, args.dim))
    start = time.perf_counter()
    D = pairwise_distances(X)
    t_dist = time.perf_counter() - start
    D_host = np.asarray(D)
    if args.t_range:
        t_lo, t_hi = args.t_range
    else:
        t_lo, t_hi = scale_range(D, n)
    ts = np.geomspace(t_lo, t_hi, args.n_scales)
    print(
        f"\n== n = {n} points in R^{args.dim}, {args.n_scales} scales t ∈ [{t_lo:.4g}, {t_hi:.4g}]"
    )
    print(f"distances (gflow_jax, chunked float64): {t_dist:.3f} s")

    def ours(method):
        start = time.perf_counter()
        r = magnitude_function(D, ts, metric="precomputed", method=method)
        jax.block_until_ready(r.magnitude)
        return r, time.perf_counter() - start

    magnitude_function(D[:64, :64], ts[:8], metric="precomputed", method="cholesky")  # compile
    result, t_ours = min((ours("adaptive") for _ in range(args.repeats)), key=lambda a: a[1])
    mag = np.asarray(result.magnitude)
    print(
        f"gflow_jax adaptive : {t_ours:8.3f} s   |tX| from {mag[0]:.4g} to {mag[-1]:.6g};"
        f" max residual {float(np.max(result.residual)):.1e}; {solver_summary(result)}"
    )
    if args.with_core and n <= 8000:
        core, t_core = ours("cholesky")
        print(
            f"gflow_jax cholesky : {t_core:8.3f} s   (JAX core; max |Δ|/|tX| vs adaptive "
            f"{np.max(np.abs(np.asarray(core.magnitude) - mag) / mag):.1e})"
        )
    t_floor = cholesky_floor(D_host, ts)
    print(f"Cholesky floor     : {t_floor:8.3f} s   ({args.n_scales} bare LAPACK dpotrf, n = {n})")
    print(f"ratio ours / floor : {t_ours / t_floor:8.3f}")
    if magnipy_cmd is None:
        print(MISSING)
        return
    ref, t_mp = run_magnipy(magnipy_cmd, D_host, ts)
    rel = float(np.max(np.abs(ref - mag) / np.abs(ref)))
    print(f"magnipy cholesky   : {t_mp:8.3f} s   max relative difference {rel:.1e}")
    print(f"speed-up vs magnipy: {t_mp / t_ours:8.2f}×   (magnipy / floor = {t_mp / t_floor:.2f})")
    if rel > 1e-8:
        print("WARNING: the two magnitude functions differ by more than 1e-8 (relative)")


def bench_large(n: int, args) -> None:
    import jax

    from gflow_jax import magnitude_function

    rng = np.random.default_rng(args.seed)
    X = rng.standard_normal((n, args.dim))
    # scale range: |tX| = 1.5 is set by the diameter (as at n = 4000); the 0.9·n end by the
    # nearest-neighbour distance ∝ n^(−1/dim): extrapolated from n = 4000, then reported
    if args.large_t_range:
        t_lo, t_hi = args.large_t_range
    else:
        from gflow_jax import pairwise_distances

        D4 = pairwise_distances(X[:4000])
        t_lo, t_hi = scale_range(D4, 4000)
        t_hi *= (n / 4000) ** (1.0 / args.dim)
        del D4
    ts = np.geomspace(t_lo, t_hi, args.n_scales)
    print(f"\n== n = {n} (large), {args.n_scales} scales t ∈ [{t_lo:.4g}, {t_hi:.4g}]")
    start = time.perf_counter()
    r = magnitude_function(X, ts, method="adaptive", progress=True)
    jax.block_until_ready(r.magnitude)
    t_ours = time.perf_counter() - start
    mag = np.asarray(r.magnitude)
    print(
        f"gflow_jax adaptive : {t_ours:8.1f} s (distances included)  |tX| from {mag[0]:.4g} to"
        f" {mag[-1]:.6g}; max residual {float(np.max(r.residual)):.1e}; {solver_summary(r)}"
    )
    from gflow_jax import pairwise_distances

    D = np.asarray(pairwise_distances(X))
    two = cholesky_floor(D, ts[[0, -1]])
    floor = two / 2 * args.n_scales
    print(f"Cholesky floor     : {floor:8.1f} s   (32 × mean of 2 timed dpotrf, extrapolated)")
    print(f"ratio ours / floor : {t_ours / floor:8.3f}")
    print("magnipy            : not run at this size (it would cost more than the floor)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--sizes", type=int, nargs="*", default=[2000, 4000], help="(none: only --n-large)"
    )
    p.add_argument("--n-scales", type=int, default=32)
    p.add_argument("--dim", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="best of this many runs of ours")
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

    threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load"
        f" average {os.getloadavg()[0]:.1f}; OPENBLAS_NUM_THREADS={threads}; jax"
        f" {jax.__version__} ({jax.default_backend()}), float64 ="
        f" {jax.config.read('jax_enable_x64')}"
    )
    magnipy_cmd = find_magnipy(args.magnipy_python)
    if magnipy_cmd is None:
        print(MISSING)
    for n in args.sizes:
        bench_size(n, args, magnipy_cmd)
    if args.n_large:
        bench_large(args.n_large, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
