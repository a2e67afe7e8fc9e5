"""gflow_jax: effective gradient flow, dynamical truncation and magnitude, in JAX.

Importing the package enables JAX float64 (see :mod:`gflow_jax._precision`).
"""

from ._precision import enable_x64 as enable_x64, x64_enabled as x64_enabled
from .analysis import (
    analyse_trajectory as analyse_trajectory,
    analyse_truncation_arrays as analyse_truncation_arrays,
)
from .collapse import (
    CollapseMeasures as CollapseMeasures,
    class_means as class_means,
    nc1_input as nc1_input,
    papyan_collapse as papyan_collapse,
)
from .config import (
    ConfigError as ConfigError,
    ExperimentConfig as ExperimentConfig,
    load_config as load_config,
)
from .costs import (
    adapted_input_cost as adapted_input_cost,
    adapted_input_cost_gradient as adapted_input_cost_gradient,
    adapted_output_cost as adapted_output_cost,
    adapted_standard_cost as adapted_standard_cost,
    general_input_cost_gradient as general_input_cost_gradient,
    network_input_cost as network_input_cost,
    network_standard_cost as network_standard_cost,
    pulled_back_targets as pulled_back_targets,
)
from .data import ClusteredData as ClusteredData, make_clusters as make_clusters
from .events import (
    FaceSolution as FaceSolution,
    solve_face as solve_face,
    two_sided_width as two_sided_width,
)
from .experiment import (
    ExperimentSetup as ExperimentSetup,
    run_truncation as run_truncation,
    setup_experiment as setup_experiment,
)
from .flow import (
    FlowProblem as FlowProblem,
    FlowSolution as FlowSolution,
    SolverSettings as SolverSettings,
    check_solution as check_solution,
    closed_form_vector_field as closed_form_vector_field,
    solve_flow as solve_flow,
    vector_field as vector_field,
)
from .full_network import (
    NetworkDiagnostics as NetworkDiagnostics,
    NetworkFlowSolution as NetworkFlowSolution,
    NetworkProblem as NetworkProblem,
    NetworkTrajectory as NetworkTrajectory,
    balance_quantities as balance_quantities,
    check_network_solution as check_network_solution,
    network_descent as network_descent,
    network_diagnostics as network_diagnostics,
    network_gradient as network_gradient,
    network_loss as network_loss,
    offdiagonality as offdiagonality,
    parameter_distance as parameter_distance,
    solve_network_flow as solve_network_flow,
)
from .generalization import (
    GranulatedKendall as GranulatedKendall,
    TrajectoryMeasures as TrajectoryMeasures,
    granulated_kendall as granulated_kendall,
    kendall_tau as kendall_tau,
    loss_pseudometric as loss_pseudometric,
    trajectory_measures as trajectory_measures,
)
from .magnitude import (
    MagnitudeDimension as MagnitudeDimension,
    MagnitudeFunction as MagnitudeFunction,
    MagnitudeResult as MagnitudeResult,
    convergence_scale as convergence_scale,
    e_alpha as e_alpha,
    magnitude as magnitude,
    magnitude_dimension as magnitude_dimension,
    magnitude_dimension_profile as magnitude_dimension_profile,
    magnitude_from_distances as magnitude_from_distances,
    magnitude_function as magnitude_function,
    magnitude_weights as magnitude_weights,
    pairwise_distances as pairwise_distances,
    positive_magnitude as positive_magnitude,
    spread as spread,
)
from .network import (
    AdaptedParameters as AdaptedParameters,
    ReLUNetwork as ReLUNetwork,
    adapted_truncate as adapted_truncate,
    cumulative_parameters as cumulative_parameters,
    input_space_forward as input_space_forward,
    last_truncations as last_truncations,
    relu_forward as relu_forward,
    truncation_map as truncation_map,
    truncation_projector as truncation_projector,
)
from .rates_experiment import RatesConfig as RatesConfig, run_rates as run_rates
from .sorted_field import (
    SortedData as SortedData,
    sort_data as sort_data,
    threshold_gradient as threshold_gradient,
)
from .spectral import (
    SpectralGapConfig as SpectralGapConfig,
    cluster_error as cluster_error,
    gap_matrix as gap_matrix,
    run_spectral_gap as run_spectral_gap,
)
from .sweep import (
    SweepPlan as SweepPlan,
    SweepSpec as SweepSpec,
    create_sweep as create_sweep,
    plan_sweep as plan_sweep,
    run_sweep as run_sweep,
)
from .training import DescentTrajectory as DescentTrajectory, gradient_descent as gradient_descent
from .truncated_magnitude import (
    CloudMagnitudes as CloudMagnitudes,
    TruncatedMagnitude as TruncatedMagnitude,
    cloud_magnitudes as cloud_magnitudes,
    magnitude_increases as magnitude_increases,
    representation_magnitude as representation_magnitude,
    truncated_magnitude as truncated_magnitude,
    write_truncated_magnitude as write_truncated_magnitude,
)
from .truncation import (
    RateDiagnostics as RateDiagnostics,
    TruncationDiagnostics as TruncationDiagnostics,
    cluster_counts as cluster_counts,
    cluster_spread as cluster_spread,
    event_times as event_times,
    interval_rates as interval_rates,
    rate_diagnostics as rate_diagnostics,
    truncation_diagnostics as truncation_diagnostics,
)

__version__ = "0.1.0"
