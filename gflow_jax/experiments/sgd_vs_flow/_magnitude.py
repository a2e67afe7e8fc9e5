"""Magnitude of input space (truncated data x̃(s)) and feature space (hidden layers x⁽ℓ⁾(s)) of
an ``sgd_vs_flow`` run: computed once (``representation_magnitude.{npz,json}``) and drawn."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Float

from ...diagnostics import hidden_representations, magnitude_increases, truncated_magnitude
from ...diagnostics._truncated_magnitude import SCALE_CONVENTION
from ...io import load_arrays, pyplot, read_json, save_figure, save_npz, time_axis, write_json
from ...magnitude import magnitude_scales
from ...magnitude._core import FAILED
from .._arrays import trajectory_prefixes


def write_network_magnitude(
    run_dir: str | Path, scales: Float[ArrayLike, " S"] | None = None
) -> tuple[dict, dict]:
    """Magnitude of the truncated data x̃(s) (input space) and of every hidden layer's
    representation x⁽ℓ⁾(s) (feature space) for every trajectory of an ``sgd_vs_flow`` run,
    whole and per class; stored once as ``representation_magnitude.{npz,json}``.

    Keys ``<traj>/<space>/magnitude`` (T, S) and ``…/cluster_magnitude`` (T, Q, S), ``…/n_unique``
    (T,), with ``<space>`` = ``input`` or ``layer1`` … ``layerL``. Default scales: 16 log-spaced in
    [0.1, 100]. Note x⁽ᴸ⁾ = W⁽ᴸ⁾x̃ + b⁽ᴸ⁾ (docs/theory.md#network-and-truncation-maps): the last
    hidden layer is an affine image of the truncated data, with the same duplicates.
    """
    run_dir = Path(run_dir)
    jpath, npath = (
        run_dir / "representation_magnitude.json",
        run_dir / "representation_magnitude.npz",
    )
    if jpath.is_file() and npath.is_file():
        return read_json(jpath), load_arrays(npath)
    s = magnitude_scales(0.1, 100.0, 16) if scales is None else magnitude_scales(scales=scales)
    a = load_arrays(run_dir)
    ts, x, labels = a["ts"], a["data/x"], a["data/labels"]
    Q = int(labels.max()) + 1
    prefixes = trajectory_prefixes(a, "x_tilde")
    tables: dict[str, np.ndarray] = {"scales": s, "ts": ts}
    summary: dict = {"scale_convention": SCALE_CONVENTION, "scales": s.tolist()}
    for prefix in prefixes:
        hidden = np.asarray(
            hidden_representations(
                jnp.asarray(a[f"{prefix}/weights"]), jnp.asarray(a[f"{prefix}/biases"]), x
            )
        )
        spaces = {"input": a[f"{prefix}/x_tilde"]}
        spaces.update({f"layer{ell + 1}": hidden[:, ell] for ell in range(hidden.shape[1])})
        entry = {}
        for space, cloud in spaces.items():
            r = truncated_magnitude(cloud, s, labels=labels, n_classes=Q)
            key = f"{prefix}/{space}"
            tables[f"{key}/magnitude"] = np.asarray(r.whole.magnitude)
            tables[f"{key}/n_unique"] = np.asarray(r.whole.n_unique)
            tables[f"{key}/cluster_magnitude"] = r.cluster_field("magnitude")
            entry[space] = {
                "n_unique_first_last": [int(r.whole.n_unique[0]), int(r.whole.n_unique[-1])],
                "magnitude_first_last": [
                    tables[f"{key}/magnitude"][0].tolist(),
                    tables[f"{key}/magnitude"][-1].tolist(),
                ],
                "monotonicity": magnitude_increases(ts, tables[f"{key}/magnitude"]),
                "failed_solves": int((np.asarray(r.whole.solver) == FAILED).sum()),
            }
        summary[prefix] = entry
    save_npz(npath, **tables)
    write_json(jpath, summary)
    return summary, tables


def plot_network_magnitude(run_dir: str | Path) -> list[Path]:
    """One figure (``figures/representation_magnitude.png``): |tX(s)| at the middle scale of
    the grid in input space (truncated data x̃) and in each hidden layer x⁽ℓ⁾, every
    trajectory of an ``sgd_vs_flow`` run (flow thick black)."""
    plt = pyplot()
    run_dir = Path(run_dir)
    summary, t = write_network_magnitude(run_dir)
    ts, s = t["ts"], t["scales"]
    i = s.size // 2
    prefixes = [p for p in summary if isinstance(summary[p], dict)]
    spaces = list(summary[prefixes[0]])
    fig, axes = plt.subplots(1, len(spaces), figsize=(4.6 * len(spaces), 4.0), squeeze=False)
    for ax, space in zip(axes[0], spaces, strict=True):
        for prefix in prefixes:
            flow = prefix == "flow"
            ax.plot(
                ts,
                t[f"{prefix}/{space}/magnitude"][:, i],
                color="k" if flow else None,
                lw=2.2 if flow else 1.0,
                ls="-" if flow or prefix.startswith("sgd") else "--",
                label=prefix,
            )
        ax.set_xlabel("flow time s = η·k")
        ax.set_title(
            "input space: truncated data x̃(s)"
            if space == "input"
            else f"feature space: hidden {space} activations",
            fontsize=9,
        )
        time_axis(ax, ts)
    axes[0, 0].set_ylabel(f"|tX(s)| at t = {s[i]:.3g} (distinct points)")
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(
        f"{run_dir.name}: magnitude in input and feature space; "
        "Z_ij = exp(-t |x_i - x_j|_2) in each space"
    )
    return [save_figure(fig, run_dir / "figures" / "representation_magnitude.png")]
