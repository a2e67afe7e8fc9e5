"""The figures of the docs and the numbers they quote: one :class:`Reproduction` per experiment
behind a figure of ``docs/figures/`` (``gflow reproduce --list``; docs/results.md shows them)."""

from __future__ import annotations

import re

from ._reproduce import Quoted as Q, QuotedTable, Reproduction

_REPRODUCTIONS: dict[str, Reproduction] = {}


def register_reproduction(entry: Reproduction) -> None:
    """Add (or replace) an entry of the registry behind ``gflow reproduce``."""
    if not re.fullmatch(r"[a-z0-9_]+", entry.name):
        raise ValueError(f"reproduction names are lower_snake_case, got {entry.name!r}")
    _REPRODUCTIONS[entry.name] = entry


def reproductions() -> dict[str, Reproduction]:
    """Every registered :class:`Reproduction`, by name, in registration order."""
    return dict(_REPRODUCTIONS)


README = "README.md"
TRUNCATED_MAGNITUDE = "docs/truncated_magnitude.md"
SGD_VS_FLOW = "docs/sgd_vs_flow.md"

register_reproduction(
    Reproduction(
        name="spectral_gap",
        config="experiments/spectral_gap.toml",
        figures={"spectral_gap.png": "spectral_gap.png"},
        description="standard cost, output map frozen: |e(s)| under e^{−(N_j/N)μs}|e(0)|; "
        "μ = 0 when Q < M",
        cheap=True,
        minutes=0.3,
        numbers=(
            Q("μ, injective output map (Q = M = 3)", "0.0366", ("summary.json", "injective", "mu")),
            Q("μ, Q = 2 < M = 3", "0", ("summary.json", "not_injective", "mu"), atol=1e-12),
            Q("max(|e(s)| − bound), injective", "0",
              ("summary.json", "injective", "max_bound_violation"), atol=1e-12),
            Q("max(|e(s)| − bound), Q < M", "0",
              ("summary.json", "not_injective", "max_bound_violation"), atol=1e-12),
            Q("max |e − e_exact| (eigendecomposition)", "1e-11",
              ("summary.json", "injective", "max_abs_error_vs_exact"), at_most=1e-9),
        ),
    )
)  # fmt: skip

register_reproduction(
    Reproduction(
        name="rates",
        config="experiments/rates.toml",
        figures={"rates.png": "rates.png"},
        description="fitted truncation rate × N d² against n for 20 (N, d), one vmapped solve",
        minutes=0.5,
        numbers=(
            Q("max relative error of the fitted rates", "1.3e-9",
              ("summary.json", "max_rel_rate_error"), at_most=1e-8, docs=README),
            Q("max |c − c_exact| (event-driven solution)", "1e-7",
              ("summary.json", "max_abs_error_vs_event_driven"), at_most=1e-7, docs=README),
            Q("inter-event intervals fitted", "490", ("summary.json", "intervals")),
        ),
    )
)  # fmt: skip

register_reproduction(
    Reproduction(
        name="collapse",
        config="experiments/collapse.toml",
        figures={"collapse.png": "collapse.png"},
        description="complete truncation of each cluster at a finite s*, NC1 to rounding, GD "
        "event times within O(η) of the flow's",
        minutes=1.0,
        numbers=(
            Q("max |GD − flow| crossing time, η = 0.05", "0.027",
              ("analysis.json", "gd/eta=0.05", "max_event_time_gap_to_flow"), docs=README),
            Q("max |GD − flow| crossing time, η = 0.025", "0.014",
              ("analysis.json", "gd/eta=0.025", "max_event_time_gap_to_flow"), docs=README),
            Q("final NC1 of the flow (rounding)", "1e-30",
              ("analysis.json", "flow", "final_nc1"), at_most=1e-28, docs=README),
            Q("final gap |tX̃| − |t{ỹ_j}|, flow", "4.4e-9",
              ("truncated_magnitude.json", "flow", "max_abs_final_gap_to_targets"),
              docs=TRUNCATED_MAGNITUDE),
            Q("|tX̃(0)| at t ≈ 0.93", "2.984",
              ("truncated_magnitude.npz", "flow/magnitude", 0, 10), docs=TRUNCATED_MAGNITUDE),
            Q("|tX̃(s_end)| at t ≈ 0.93", "1.5760",
              ("truncated_magnitude.npz", "flow/magnitude", -1, 10), docs=TRUNCATED_MAGNITUDE),
            Q("|tX̃(0)| at t ≈ 10.8", "19.77",
              ("truncated_magnitude.npz", "flow/magnitude", 0, 21), docs=TRUNCATED_MAGNITUDE),
            Q("cluster 0 a single point from s =", "3.2",
              ("truncated_magnitude.json", "flow", "cluster_first_single_point_s", 0),
              docs=TRUNCATED_MAGNITUDE),
            Q("cluster 1 a single point from s =", "3.05",
              ("truncated_magnitude.json", "flow", "cluster_first_single_point_s", 1),
              docs=TRUNCATED_MAGNITUDE),
        ),
    )
)  # fmt: skip

register_reproduction(
    Reproduction(
        name="two_sided",
        config="experiments/two_sided.toml",
        figures={"two_sided_width.png": "two_sided_width.png"},
        description="a cluster clamped from both sides: width A e^{−λ₁s} + B e^{−λ₂s}",
        minutes=0.7,
        numbers=(
            Q("GD η = 0.1: max |c − c_flow|", "3.2e-3",
              ("summary.json", "gd/eta=0.1", "max_threshold_gap_to_flow")),
            Q("final cost of the flow", "3.2e-14", ("summary.json", "flow", "final_loss"),
              at_most=1e-12),
        ),
    )
)  # fmt: skip

_STUCK = ("summary.json", "exact", "stuck_faces", 0)

register_reproduction(
    Reproduction(
        name="sliding",
        config="experiments/sliding.toml",
        figures={"sliding.png": "sliding.png"},
        description="a face shared by two clusters sticks at a data value (Filippov sliding, "
        "docs/theory.md#sliding): diffrax with its events located, the exact solution and GD on "
        "one clock, GD chattering around the stick value by O(η); s* = 6 ln(3.75/3.5) + "
        "3 ln(3.5/3) + 2 ln(3/2)",
        minutes=0.5,
        numbers=(
            Q("stick value (the data value ξ = 2)", "2", (*_STUCK, "value"), atol=0.0),
            Q("stick time s* (exact solver)", "1.6873", (*_STUCK, "time")),
            Q("stick time s* (analysis of the diffrax flow's saves)", "1.6873",
              ("analysis.json", "flow", "stick_events", 0, "time")),
            Q("max |c_flow − c_exact| (diffrax, events located)", "1.5e-9",
              ("summary.json", "exact", "max_threshold_gap_to_flow"), at_most=1e-7),
            Q("GD η = 0.05: max |c − c_flow|", "4.95e-2",
              ("summary.json", "gd/eta=0.05", "max_threshold_gap_to_flow")),
            Q("GD η = 0.01: max |c − c_flow|", "9.999e-3",
              ("summary.json", "gd/eta=0.01", "max_threshold_gap_to_flow")),
        ),
    )
)  # fmt: skip

_SVF = "sgd/eta=0.2,B=6"

register_reproduction(
    Reproduction(
        name="sgd_vs_flow",
        config="experiments/sgd_vs_flow.toml",
        figures={
            "truncation.png": "sgd_vs_flow_truncation.png",
            "collapse.png": "sgd_vs_flow_collapse.png",
        },
        description="gradient flow of every parameter of a ReLU network beside GD and SGD: "
        "truncation is partial and early, collapse comes from the weights",
        minutes=1.5,
        numbers=(
            Q("truncated share of (point, unit) pairs, s = 0", "0.29",
              ("arrays.npz", "flow/truncated_fraction", 0), docs=README),
            Q("truncated share, s = 10", "0.38",
              ("arrays.npz", "flow/truncated_fraction", 10), docs=README),
            Q("mean rank of dx̃/dx, s = 0", "1.60", ("arrays.npz", "flow/mean_rank", 0),
              docs=README),
            Q("mean rank of dx̃/dx, s = 100", "1.35", ("arrays.npz", "flow/mean_rank", -1),
              docs=README),
            Q("off-diagonality of layer 1, s = 100", "0.45",
              ("summary.json", "flow", "offdiag", 0), docs=README),
            Q("off-diagonality of layer 2, s = 100", "0.34",
              ("summary.json", "flow", "offdiag", 1), docs=SGD_VS_FLOW),
            Q("Papyan NC1 of the flow, s = 100", "0.033", ("summary.json", "flow", "nc1"),
              docs=README),
            Q("Papyan NC1 of SGD η = 0.2, B = 6, s = 100", "0.017",
              ("summary.json", _SVF, "nc1"), docs=README),
            Q("NC1 in input space, s = 0", "84", ("arrays.npz", "flow/nc1_input", 0),
              docs=SGD_VS_FLOW),
            Q("NC1 in input space, s = 10", "0.18", ("arrays.npz", "flow/nc1_input", 10),
              docs=SGD_VS_FLOW),
            Q("NC1 in input space, s = 100", "0.149", ("summary.json", "flow", "nc1_input"),
              docs=SGD_VS_FLOW),
            Q("σ_min(W⁽²⁾) at s = 0", "0.006", ("arrays.npz", "flow/min_singular", 0, 1),
              docs=SGD_VS_FLOW),
            Q("cost, s = 0", "0.45", ("arrays.npz", "flow/loss", 0), docs=SGD_VS_FLOW),
            Q("cost, s = 10", "0.012", ("arrays.npz", "flow/loss", 10), docs=SGD_VS_FLOW),
            Q("cost, s = 100", "0.0053", ("summary.json", "flow", "loss"), docs=SGD_VS_FLOW),
            Q("Papyan NC1, s = 0", "0.73", ("arrays.npz", "flow/nc1", 0), docs=SGD_VS_FLOW),
            Q("Papyan NC1, s = 10", "0.055", ("arrays.npz", "flow/nc1", 10), docs=SGD_VS_FLOW),
            Q("equiangularity defect, s = 100", "0.35",
              ("summary.json", "flow", "nc2_maxangle"), docs=SGD_VS_FLOW),
            Q("NC3, s = 100", "0.81", ("summary.json", "flow", "nc3"), docs=SGD_VS_FLOW),
            Q("max ‖θ_GD − θ_flow‖, η = 0.2", "0.208",
              ("summary.json", "gd/eta=0.2", "max_gap_to_flow"), docs=SGD_VS_FLOW),
            Q("max ‖θ_GD − θ_flow‖, η = 0.1", "0.024",
              ("summary.json", "gd/eta=0.1", "max_gap_to_flow"), docs=SGD_VS_FLOW),
            Q("max ‖θ_GD − θ_flow‖, η = 0.05", "0.011",
              ("summary.json", "gd/eta=0.05", "max_gap_to_flow"), docs=SGD_VS_FLOW),
            Q("max ‖θ_GD − θ_flow‖, η = 0.025", "0.0053",
              ("summary.json", "gd/eta=0.025", "max_gap_to_flow"), docs=SGD_VS_FLOW),
            Q("local order of the GD discrepancy, η = 0.2 → 0.1", "3.1",
              ("summary.json", "gd_discrepancy_local_orders", 0), docs=SGD_VS_FLOW),
            Q("local order, η = 0.1 → 0.05", "1.17",
              ("summary.json", "gd_discrepancy_local_orders", 1), docs=SGD_VS_FLOW),
            Q("local order, η = 0.05 → 0.025", "1.04",
              ("summary.json", "gd_discrepancy_local_orders", 2), docs=SGD_VS_FLOW),
            Q("max ‖θ_SGD − θ_flow‖, η = 0.05, B = 20", "0.064",
              ("summary.json", "sgd/eta=0.05,B=20", "max_gap_to_flow"), docs=SGD_VS_FLOW),
            Q("max ‖θ_SGD − θ_flow‖, η = 0.2, B = 6", "0.57",
              ("summary.json", _SVF, "max_gap_to_flow"), docs=SGD_VS_FLOW),
            Q("NC3 of SGD η = 0.2, B = 6", "0.47", ("summary.json", _SVF, "nc3"),
              docs=SGD_VS_FLOW),
            Q("off-diagonality of SGD η = 0.2, B = 6, layer 1", "0.36",
              ("summary.json", _SVF, "offdiag", 0), docs=SGD_VS_FLOW),
            Q("off-diagonality of SGD η = 0.2, B = 6, layer 2", "0.21",
              ("summary.json", _SVF, "offdiag", 1), docs=SGD_VS_FLOW),
            Q("truncated share of SGD η = 0.2, B = 6", "0.39",
              ("summary.json", _SVF, "truncated_fraction"), docs=SGD_VS_FLOW),
            Q("balance drift of the flow", "1.3e-6",
              ("summary.json", "flow", "max_balance_drift"), docs=SGD_VS_FLOW),
            Q("balance drift of GD, η = 0.025", "0.0021",
              ("summary.json", "gd/eta=0.025", "max_balance_drift"), docs=SGD_VS_FLOW),
            Q("balance drift of GD, η = 0.05", "0.0047",
              ("summary.json", "gd/eta=0.05", "max_balance_drift"), docs=SGD_VS_FLOW),
            Q("balance drift of GD, η = 0.1", "0.012",
              ("summary.json", "gd/eta=0.1", "max_balance_drift"), docs=SGD_VS_FLOW),
            Q("balance drift of GD, η = 0.2", "0.14",
              ("summary.json", "gd/eta=0.2", "max_balance_drift"), docs=SGD_VS_FLOW),
            Q("balance drift of SGD, smallest (η = 0.05, B = 20)", "0.014",
              ("summary.json", "sgd/eta=0.05,B=20", "max_balance_drift"), docs=SGD_VS_FLOW),
            Q("balance drift of SGD, largest (η = 0.2, B = 6)", "0.42",
              ("summary.json", _SVF, "max_balance_drift"), docs=SGD_VS_FLOW),
            Q("solver steps of the flow", "13 858", ("summary.json", "flow", "num_steps"),
              docs=SGD_VS_FLOW),
            Q("rejected steps of the flow", "5 856",
              ("summary.json", "flow", "num_rejected_steps"), docs=SGD_VS_FLOW),
            Q("max error of the identity x⁽ℓ⁾ = W⁽ℓ⁾z⁽ℓ⁾ + b⁽ℓ⁾", "1.4e-14",
              ("summary.json", "flow", "max_identity_error"), at_most=1e-13, docs=SGD_VS_FLOW),
        ),
    )
)  # fmt: skip

GENERALIZATION = "docs/magnitude_generalization.md"
_REPR = "repr_L1_mag_dim_max"


def _gap_numbers(gap: str, words: str, low: str, high: str, distinct: str, share: str):
    """The range, distinct values and between-cell variance share (%) the docs quote per gap."""
    where = ("summary.json", "gaps", gap)
    return (
        Q(f"smallest {words}", low, (*where, "min"), docs=GENERALIZATION),
        Q(f"largest {words}", high, (*where, "max"), docs=GENERALIZATION),
        Q(f"distinct values of the {words}", distinct, (*where, "n_distinct"),
          docs=GENERALIZATION),
        Q(f"share of the {words} variance between (lr, bs) cells (%)", share,
          (*where, "between_cell_variance_share"), scale=100, docs=GENERALIZATION),
    )  # fmt: skip


register_reproduction(
    Reproduction(
        name="generalization_grid_cpu",
        config="experiments/generalization_grid_cpu.toml",
        figures={
            "magnitude_curves.png": "magnitude_generalization_magnitude_curves.png",
            "measure_vs_acc_gap.png": "magnitude_generalization_measure_vs_acc_gap.png",
            "measure_vs_loss_gap.png": "magnitude_generalization_measure_vs_loss_gap.png",
            "monitoring.png": "magnitude_generalization_monitoring.png",
            "statistics.png": "magnitude_generalization_statistics.png",
        },
        description="trajectory magnitude and PH dimension against the generalisation gap on "
        "noisy digits (6 × 6 grid, CPU variant)",
        numbers=(
            Q("networks that reached 100 % training accuracy", "108", ("summary.json", "n_ok"),
              docs=GENERALIZATION),
            Q("lowest test accuracy (%)", "72.5", ("summary.json", "test_acc", "min"),
              scale=100, docs=GENERALIZATION),
            Q("highest test accuracy (%)", "78.1", ("summary.json", "test_acc", "max"),
              scale=100, docs=GENERALIZATION),
            *_gap_numbers("acc_gap", "accuracy gap", "0.219", "0.275", "59", "35"),
            *_gap_numbers("loss_gap", "loss gap", "0.92", "2.26", "108", "89"),
            Q("mean accuracy gap at batch size 32", "0.234",
              ("summary.json", "gaps", "acc_gap", "mean_by_batch_size", "32"), docs=GENERALIZATION),
            Q("mean accuracy gap at batch size 256", "0.252",
              ("summary.json", "gaps", "acc_gap", "mean_by_batch_size", "256"),
              docs=GENERALIZATION),
            Q("mean loss gap at lr = 0.005", "0.97",
              ("summary.json", "gaps", "loss_gap", "mean_by_lr", "0.005"), docs=GENERALIZATION),
            Q("mean loss gap at lr = 0.1", "1.43",
              ("summary.json", "gaps", "loss_gap", "mean_by_lr", "0.1"), docs=GENERALIZATION),
            Q("first step at 100 % training accuracy, fastest network", "300",
              ("summary.json", "onset_step", "min"), docs=GENERALIZATION),
            Q("first step at 100 % training accuracy, slowest network", "5000",
              ("summary.json", "onset_step", "max"), docs=GENERALIZATION),
            Q("last kept iterate of the fastest network", "699",
              ("summary.json", "end_step", "min"), docs=GENERALIZATION),
            Q("worst R² of a Euclidean PH-dimension fit", "0.63",
              ("summary.json", "ph_fit_r2_min", "euclidean"), docs=GENERALIZATION),
            Q("cells where τ(repr_L1_mag_dim_max, accuracy gap) > 0", "36",
              ("summary.json", "cell_tau_counts", _REPR, "acc_gap", "positive"),
              docs=GENERALIZATION),
            Q("cells where τ(repr_L1_mag_dim_max, accuracy gap) = +1", "21",
              ("summary.json", "cell_tau_counts", _REPR, "acc_gap", "one"), docs=GENERALIZATION),
            Q("cells where τ(repr_L1_mag_dim_max, loss gap) = +1", "19",
              ("summary.json", "cell_tau_counts", _REPR, "loss_gap", "one"), docs=GENERALIZATION),
            Q("cells where τ(repr_L1_mag_dim_max, loss gap) < 0", "2",
              ("summary.json", "cell_tau_counts", _REPR, "loss_gap", "negative"),
              docs=GENERALIZATION),
        ),
        tables=(
            QuotedTable("τ, ψ_lr, ψ_bs, Ψ, τ given (lr, bs) against the accuracy gap",
                        GENERALIZATION, "### Accuracy gap", "table.md", "### acc_gap"),
            QuotedTable("τ, ψ_lr, ψ_bs, Ψ, τ given (lr, bs) against the loss gap",
                        GENERALIZATION, "### Loss gap", "table.md", "### loss_gap"),
        ),
        minutes=7.0,
    )
)  # fmt: skip
