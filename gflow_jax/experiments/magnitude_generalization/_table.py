"""The correlation table of a ``magnitude_generalization`` run: every measure (and, as a reference,
every hyperparameter) against both generalisation gaps — Kendall τ, ψ_lr, ψ_bs, Ψ and τ
conditional on (lr, batch size), each with a bootstrap interval
(docs/theory.md#generalisation-statistics)."""

from __future__ import annotations

import io
import math
import re

import numpy as np

from ...diagnostics import bootstrap_weights, kendall_statistics

GAPS = ("acc_gap", "loss_gap")
#: the statistics of a row, in table order
STATISTICS = ("tau", "psi_lr", "psi_bs", "Psi", "tau_given")
#: reference rows: the hyperparameters themselves (a measure that knows only them)
REFERENCE = {"hyper_lr": "lr", "hyper_batch_size": "batch_size"}
_SKIP = ("n_points", "n_unique", "max_condition", "argmax_scale", "ph_dim_r2")


def _measure_names(ok: list[dict]) -> list[str]:
    names = sorted({k for r in ok for k in r["measures"]})
    return [n for n in names if not n.endswith(_SKIP)]


def correlation_table(results: list[dict], statistics=None) -> tuple[list[dict], dict]:
    """Rows ``{measure, <stat>[gap], <stat>_lo[gap], <stat>_hi[gap]}`` over the successful
    points, and the τ within every seed-only cell ``{measure: {gap: {"lr=…,bs=…": τ}}}``.

    ``statistics``: the run's ``[statistics]`` section (Kendall variant, bootstrap resamples,
    level, seed); default :class:`StatisticsConfig` values. Every row is computed on the same
    bootstrap resamples of the networks. The reference rows ``hyper_lr`` and
    ``hyper_batch_size`` use the hyperparameter as the measure.
    """
    from ._config import StatisticsConfig

    st = statistics or StatisticsConfig()
    ok = [r for r in results if r.get("status") == "ok"]
    if not ok:
        return [], {}
    factors = {
        "lr": [r["lr"] for r in ok],
        "bs": [r["batch_size"] for r in ok],
        "seed": [r["seed"] for r in ok],
    }
    weights = bootstrap_weights(len(ok), st.n_bootstrap, st.seed)
    columns = {n: [r["measures"].get(n, math.nan) for r in ok] for n in _measure_names(ok)}
    columns.update({name: [r[key] for r in ok] for name, key in REFERENCE.items()})
    rows, cells = [], {}
    for name, values in columns.items():
        row, cells[name] = {"measure": name}, {}
        for gap in GAPS:
            s = kendall_statistics(
                values, [r[gap] for r in ok], factors, over=("lr", "bs"), given=("lr", "bs"),
                variant=st.kendall_variant, level=st.level, weights=weights,
            )  # fmt: skip
            est = {"tau": s.tau, "psi_lr": s.psi["lr"], "psi_bs": s.psi["bs"], "Psi": s.Psi}
            est["tau_given"] = s.tau_given
            for q, e in est.items():
                row[f"{q}[{gap}]"] = e.value
                row[f"{q}_lo[{gap}]"] = e.low
                row[f"{q}_hi[{gap}]"] = e.high
            cells[name][gap] = {f"lr={lr:g},bs={bs}": t for (lr, bs), t in s.cell_taus.items()}
        rows.append(row)
    return rows, cells


def _cell(row: dict, q: str, gap: str, signed=True) -> str:
    v, lo, hi = (row[f"{q}{s}[{gap}]"] for s in ("", "_lo", "_hi"))
    f = "{:+.2f}" if signed else "{:.2f}"
    if not math.isfinite(v):
        return "–"
    text = f.format(v)
    if math.isfinite(lo):
        text += f" [{f.format(lo)}, {f.format(hi)}]"
    return text.replace("-", "−")


def format_table(rows: list[dict], n_ok: int, n_total: int, statistics) -> str:
    """Plain-text table for the terminal: value [low, high] of every statistic, per gap."""
    out = io.StringIO()
    out.write(
        f"Kendall tau_{statistics.kendall_variant} over {n_ok} of {n_total} networks; "
        f"{statistics.level:.0%} bootstrap intervals ({statistics.n_bootstrap} resamples); "
        "tau_given = conditional on (lr, batch size)\n"
    )
    for gap in GAPS:
        out.write(f"\n{gap}\n{'measure':32s}" + "".join(f"{q:>22s}" for q in STATISTICS) + "\n")
        for r in rows:
            cells = "".join(f"{_cell(r, q, gap):>22s}" for q in STATISTICS)
            out.write(f"{r['measure']:32s}{cells}\n")
    return out.getvalue()


def markdown_table(rows: list[dict], gap: str) -> str:
    """The rows as a Markdown table for one gap (the form used in the docs)."""
    head = "| measure | τ | ψ_lr | ψ_bs | Ψ | τ given (lr, bs) |\n|---|---|---|---|---|---|\n"
    lines = [
        f"| `{r['measure']}` | " + " | ".join(_cell(r, q, gap) for q in STATISTICS) + " |"
        for r in rows
    ]
    return head + "\n".join(lines) + "\n"


def gap_summary(ok: list[dict]) -> dict:
    """Per gap: range, distinct values, the share of its variance between (lr, bs) cells and its
    mean at each learning rate and at each batch size (keys ``f"{lr:g}"``, ``f"{bs}"``)."""
    out = {}
    for gap in GAPS:
        g = np.array([r[gap] for r in ok])
        cells: dict[tuple, list[float]] = {}
        for r in ok:
            cells.setdefault((r["lr"], r["batch_size"]), []).append(r[gap])
        means = {c: np.mean(v) for c, v in cells.items()}
        between = np.mean([(means[(r["lr"], r["batch_size"])] - g.mean()) ** 2 for r in ok])
        out[gap] = {
            "min": float(g.min()),
            "max": float(g.max()),
            "n_distinct": int(np.unique(g).size),
            "between_cell_variance_share": float(between / g.var()) if g.var() > 0 else math.nan,
            "mean_by_lr": _means_by(ok, gap, "lr", "{:g}"),
            "mean_by_batch_size": _means_by(ok, gap, "batch_size", "{}"),
        }
    return out


def _means_by(ok: list[dict], value: str, key: str, label: str) -> dict[str, float]:
    groups: dict = {}
    for r in ok:
        groups.setdefault(r[key], []).append(r[value])
    return {label.format(k): float(np.mean(v)) for k, v in sorted(groups.items())}


def _step_range(ok: list[dict], step: str) -> dict:
    """Smallest and largest training step ``step`` over the points (None where no point has it:
    e.g. no onset of 100 % training accuracy outside the ``after_interpolation`` mode)."""
    steps = [r["training"][step] for r in ok if r.get("training", {}).get(step) is not None]
    return {"min": min(steps), "max": max(steps)} if steps else {"min": None, "max": None}


def run_summary(ok: list[dict], cells: dict) -> dict:
    """What the docs quote about a grid beyond the table: test-accuracy range, training steps
    (first step at 100 % training accuracy, last kept iterate), the worst R² of each PH-dimension
    fit, and per measure and gap how many seed-only cells have τ > 0, τ = +1 and τ < 0."""
    acc = np.array([r["test_acc"] for r in ok])
    fits = [n for n in sorted(ok[0]["measures"]) if re.fullmatch(r"traj_(.+)_ph_dim_r2", n)]
    r2 = {
        n[len("traj_") : -len("_ph_dim_r2")]: float(
            np.nanmin([r["measures"].get(n, math.nan) for r in ok])
        )
        for n in fits
    }
    counts = {
        measure: {
            gap: {
                "positive": int(np.sum(t > 0)),
                "one": int(np.sum(t == 1)),
                "negative": int(np.sum(t < 0)),
            }
            for gap, taus in by_gap.items()
            for t in [np.array([math.nan if v is None else v for v in taus.values()], float)]
        }
        for measure, by_gap in cells.items()
    }
    return {
        "test_acc": {"min": float(acc.min()), "max": float(acc.max())},
        **{step: _step_range(ok, step) for step in ("onset_step", "end_step")},
        "ph_fit_r2_min": r2,
        "cell_tau_counts": counts,
    }
