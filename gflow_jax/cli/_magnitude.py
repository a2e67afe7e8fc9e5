"""``gflow magnitude POINTS.npy``: table and figure of the magnitude function and the exact
dimension profile of a point cloud (docs/theory.md#magnitude).

The input is an ``.npy`` (or ``.npz``, first array) file with points ``(n, p)``, or a distance
matrix with ``--metric precomputed``. The table goes to stdout; the figure (PNG, matplotlib Agg)
next to the input as ``<stem>_magnitude.png`` or to ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ._errors import CommandError, add_command

#: the command's line in ``gflow --help``
HELP = "magnitude function and dimension profile of a point cloud (.npy)"


def default_scales(D: np.ndarray, n_scales: int) -> np.ndarray:
    """Log-spaced scales from 0.1/diameter (|tX| close to 1) to 20/(smallest nonzero
    distance) (|tX| close to the number of distinct points)."""
    off = D[D > 0]
    if off.size == 0:
        return np.ones(1)
    return np.geomspace(0.1 / off.max(), 20.0 / off.min(), n_scales)


def _parse_scales(text: str) -> np.ndarray:
    """argparse type of ``--scales``: ``a:b:S`` (S log-spaced scales from a to b) or a
    comma-separated list of positive numbers."""
    try:
        if ":" in text:
            a, b, s = text.split(":")
            a, b, s = float(a), float(b), int(s)
            if not (0 < a < b and np.isfinite(b) and s >= 2):
                raise argparse.ArgumentTypeError(
                    f"a:b:S needs 0 < a < b and S >= 2 scales, got {text!r}"
                )
            return np.geomspace(a, b, s)
        scales = np.array([float(v) for v in text.split(",")])
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a:b:S (S log-spaced scales from a to b) or a comma-separated list of "
            f"positive numbers, got {text!r}"
        ) from None
    if scales.size < 2 or not np.all(np.isfinite(scales) & (scales > 0)):
        raise argparse.ArgumentTypeError(f"give at least two positive, finite scales, got {text!r}")
    return scales


def _metric(text: str) -> str:
    from ..magnitude import canonical_metric

    try:
        return canonical_metric(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _n_scales(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 2:
        raise argparse.ArgumentTypeError(f"must be an integer >= 2, got {text!r}")
    return n


def _load(path: Path) -> np.ndarray:
    """The array in ``path`` (``.npy``, or the first array of an ``.npz``), as float64."""
    if not path.is_file():
        raise CommandError(f"no such file: {path}")
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            if not data.files:
                raise ValueError("the .npz holds no array")
            data = data[data.files[0]]
        return np.asarray(data, dtype=np.float64)
    except (ValueError, OSError, TypeError, EOFError) as err:
        reason = str(err).split(". ")[0].rstrip(".") or type(err).__name__
        if "pickle" in reason:  # text, or Python objects: numpy would need to unpickle it
            reason = "it holds no numeric array"
        raise CommandError(
            f"{path}: not a .npy/.npz file of points (n, p) or distances (n, n): {reason}"
        ) from None


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
    from ..magnitude import check_distance_matrix, magnitude_dimension, pairwise_distances

    metric = args.metric
    data = _load(args.points)
    try:
        if metric == "precomputed":
            D = np.asarray(check_distance_matrix(data))
        else:
            if data.ndim == 1:
                data = data[:, None]  # n points on a line
            D = np.asarray(pairwise_distances(data, metric=metric))
    except ValueError as err:
        raise CommandError(f"{args.points}: {err}") from None
    if not np.any(D > 0):
        raise CommandError(
            f"{args.points}: {len(D)} point(s), all equal: the magnitude is 1 at every scale; "
            "give at least two distinct points"
        )
    scales = args.scales if args.scales is not None else default_scales(D, args.n_scales)
    dim = magnitude_dimension(
        D, scales, metric="precomputed", method=args.method, progress=args.progress
    )
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
    p = add_command(sub, "magnitude", _cmd_magnitude, HELP, __doc__)
    p.add_argument("points", type=Path, help=".npy file: points (n, p) or a distance matrix")
    p.add_argument(
        "--metric",
        type=_metric,
        default="euclidean",
        help="euclidean, cityblock, chebyshev or precomputed (default euclidean)",
    )
    p.add_argument(
        "--scales",
        type=_parse_scales,
        default=None,
        help="a:b:S for S log-spaced scales, or a comma-separated list (default: automatic)",
    )
    p.add_argument(
        "--n-scales", type=_n_scales, default=32, help="number of automatic scales (>= 2)"
    )
    p.add_argument("--method", default="auto", choices=("auto", "cholesky", "adaptive", "device"))
    p.add_argument("--out", type=Path, default=None, help="PNG path (default: next to input)")
    p.add_argument("--progress", action="store_true", help="progress bar (large clouds)")
