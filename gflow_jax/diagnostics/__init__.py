"""Diagnostics of solutions and trajectories: truncation, rates and events, neural collapse,
full-network state, the spectral gap, magnitude of truncated data, and the statistics that relate
trajectory measures to generalisation (Kendall τ, granulated and conditional, with bootstrap
intervals) and the persistent-homology dimension.
"""

from ._collapse import (
    CollapseConvention as CollapseConvention,
    CollapseMeasures as CollapseMeasures,
    class_means as class_means,
    collapse_convention as collapse_convention,
    nc1_input as nc1_input,
    papyan_collapse as papyan_collapse,
)
from ._kendall import (
    ConditionalKendall as ConditionalKendall,
    GranulatedKendall as GranulatedKendall,
    conditional_kendall as conditional_kendall,
    granulated_kendall as granulated_kendall,
    kendall_tau as kendall_tau,
)
from ._network import (
    NetworkDiagnostics as NetworkDiagnostics,
    hidden_representations as hidden_representations,
    network_diagnostics as network_diagnostics,
    offdiagonality as offdiagonality,
    parameter_distance as parameter_distance,
)
from ._ph import (
    PHDimension as PHDimension,
    mst_lengths as mst_lengths,
    ph_dimension as ph_dimension,
)
from ._rates import (
    RateDiagnostics as RateDiagnostics,
    event_times as event_times,
    interval_rates as interval_rates,
    rate_diagnostics as rate_diagnostics,
)
from ._spectral import cluster_error as cluster_error, gap_matrix as gap_matrix
from ._statistics import (
    Estimate as Estimate,
    KendallStatistics as KendallStatistics,
    bootstrap_weights as bootstrap_weights,
    kendall_statistics as kendall_statistics,
)
from ._trajectory import (
    TrajectoryMeasures as TrajectoryMeasures,
    cloud_measures as cloud_measures,
    loss_pseudometric as loss_pseudometric,
    relative_scales as relative_scales,
    trajectory_measures as trajectory_measures,
)
from ._truncated_magnitude import (
    TruncatedMagnitude as TruncatedMagnitude,
    magnitude_increases as magnitude_increases,
    representation_magnitude as representation_magnitude,
    truncated_magnitude as truncated_magnitude,
)
from ._truncation import (
    TruncationDiagnostics as TruncationDiagnostics,
    cluster_counts as cluster_counts,
    cluster_spread as cluster_spread,
    truncation_diagnostics as truncation_diagnostics,
)

__all__ = [
    "CollapseConvention",
    "CollapseMeasures",
    "ConditionalKendall",
    "Estimate",
    "GranulatedKendall",
    "KendallStatistics",
    "NetworkDiagnostics",
    "PHDimension",
    "RateDiagnostics",
    "TrajectoryMeasures",
    "TruncatedMagnitude",
    "TruncationDiagnostics",
    "bootstrap_weights",
    "class_means",
    "cloud_measures",
    "cluster_counts",
    "cluster_error",
    "cluster_spread",
    "collapse_convention",
    "conditional_kendall",
    "event_times",
    "gap_matrix",
    "granulated_kendall",
    "hidden_representations",
    "interval_rates",
    "kendall_statistics",
    "kendall_tau",
    "loss_pseudometric",
    "magnitude_increases",
    "mst_lengths",
    "nc1_input",
    "network_diagnostics",
    "offdiagonality",
    "papyan_collapse",
    "parameter_distance",
    "ph_dimension",
    "rate_diagnostics",
    "relative_scales",
    "representation_magnitude",
    "trajectory_measures",
    "truncated_magnitude",
    "truncation_diagnostics",
]
