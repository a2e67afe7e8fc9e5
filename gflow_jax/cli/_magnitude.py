"""``gflow magnitude POINTS.npy``: table and figure of the magnitude function and the exact
dimension profile of a point cloud (docs/theory.md#magnitude).

The input is an ``.npy`` (or ``.npz``, first array) file with points ``(n, p)``, or a distance
matrix with ``--metric precomputed``. The table goes to stdout; the figure (PNG, matplotlib Agg)
next to the input as ``<stem>_magnitude.png`` or to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def default_scales(D: np.ndarray, n_scales: int) -> np.ndarray:
    """Log-spaced scales from 0.1/diameter (|tX| close to 1) to 20/(smallest nonzero
    distance) (|tX| close to the number of distinct points)."""
    off = D[D > 0]
    if off.size == 0:
        return np.ones(1)
    return np.geomspace(0.1 / off.max(), 20.0 / off.min(), n_scales)


def _parse_scales(text: str) -> np.ndarray:
    """``a:b:S`` (S log-spaced scales from a to b) or a comma-separated list."""
    if ":" in text:
        a, b, s = text.split(":")
        return np.geomspace(float(a), float(b), int(s))
    return np.array([float(v) for v in text.split(",")])


def _load(path: Path) -> np.ndarray:
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    data = np.load(path, allow_pickle=False)
    if isinstance(data, np.lib.npyio.NpzFile):
        data = data[data.files[0]]
    return np.asarray(data, dtype=np.float64)


def _plot(result, path: Path, title: str) -> None:
    from ..io import pyplot, save_figure

    plt = pyplot()
    t = np.asarray(result.scales)
    order = np.argsort(t)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(t[order], np.asarray(result.magnitude)[order], "o-", ms=3, label="|tX|")
    ax1.plot(t[order], np.asarray(result.positive_magnitude)[order], "--", label="PMag")
    ax1.axhline(result.n_unique, color="grey", lw=0.8, ls=":", label="distinct points")
    ax1.set_xscale("log")
    ax1.set_xlabel("scale t")
    ax1.set_ylabel("magnitude")
    ax1.legend()
    ax1.set_title("magnitude function")
    ax2.plot(t[order], np.asarray(result.dimension)[order], "o-", ms=3)
    ax2.set_xscale("log")
    ax2.set_xlabel("scale t")
    ax2.set_ylabel("dim(t) = d log|tX| / d log t")
    ax2.set_title("magnitude dimension profile (exact)")
    fig.suptitle(f"{title}: {result.scale_convention}", fontsize=9)
    save_figure(fig, path)


def _cmd_magnitude(args: argparse.Namespace) -> int:
    from ..magnitude import (
        canonical_metric,
        check_distance_matrix,
        magnitude_dimension,
        pairwise_distances,
    )

    try:
        metric = canonical_metric(args.metric)
        data = _load(args.points)
        if metric == "precomputed":
            D = np.asarray(check_distance_matrix(data))
        else:
            D = np.asarray(pairwise_distances(data, metric=metric))
        scales = _parse_scales(args.scales) if args.scales else default_scales(D, args.n_scales)
        if scales.size < 2:
            raise ValueError("give at least two scales")
        dim = magnitude_dimension(
            D, scales, metric="precomputed", method=args.method, progress=args.progress
        )
    except ValueError as err:
        print(f"gflow magnitude: error: {err}", file=sys.stderr)
        return 2
    result = dim.profile
    print(result.table().replace("metric precomputed", f"metric {metric}", 1))
    groups = result.duplicate_groups()
    if groups:
        print(f"# {len(groups)} group(s) of exact duplicates merged, e.g. rows {groups[0][:8]}")
    print(
        f"# dimension profile max {dim.max:.6f} at t = {dim.argmax_scale:.6g};"
        f" log-log slope {dim.slope:.6f} over t in [{dim.window[0]:.4g}, {dim.window[1]:.4g}]"
    )
    out = args.out or args.points.with_name(args.points.stem + "_magnitude.png")
    _plot(result, out, args.points.name)
    print(f"gflow: figure {out}")
    return 0


def register(sub) -> None:
    """Add the ``magnitude`` command to the ``gflow`` argparse subparsers."""
    p = sub.add_parser(
        "magnitude",
        help="magnitude function and dimension profile of a point cloud (.npy)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("points", type=Path, help=".npy file: points (n, p) or a distance matrix")
    p.add_argument(
        "--metric",
        default="euclidean",
        help="euclidean, cityblock, chebyshev or precomputed (default euclidean)",
    )
    p.add_argument(
        "--scales",
        default=None,
        help="a:b:S for S log-spaced scales, or a comma-separated list (default: automatic)",
    )
    p.add_argument("--n-scales", type=int, default=32, help="number of automatic scales")
    p.add_argument("--method", default="auto", choices=("auto", "cholesky", "adaptive", "device"))
    p.add_argument("--out", type=Path, default=None, help="PNG path (default: next to input)")
    p.add_argument("--progress", action="store_true", help="progress bar (large clouds)")
    p.set_defaults(func=_cmd_magnitude)
