"""The ``truncation`` kind: the effective flow (diffrax) beside GD and SGD (optax) of the
adapted network on one clock, with the truncation analysis and figures."""

from .._registry import ExperimentKind
from ._analysis import (
    analyse_trajectory as analyse_trajectory,
    analyse_truncation_arrays as analyse_truncation_arrays,
    write_analysis as write_analysis,
)
from ._batch import run_truncation_batch as run_truncation_batch
from ._config import (
    MagnitudeConfig as MagnitudeConfig,
    NetworkConfig as NetworkConfig,
    SGDConfig as SGDConfig,
    TargetConfig as TargetConfig,
    TruncationConfig as TruncationConfig,
    TruncationFlowConfig as TruncationFlowConfig,
    load_config as load_config,
)
from ._figures import plot_truncation_run as plot_truncation_run
from ._magnitude import write_truncated_magnitude as write_truncated_magnitude
from ._run import run_into, run_truncation as run_truncation
from ._setup import ExperimentSetup as ExperimentSetup, setup_experiment as setup_experiment

KIND = ExperimentKind(
    "truncation", "effective flow (diffrax) beside GD/SGD (optax) of the adapted network",
    TruncationConfig, run_into, plot_truncation_run, run_batch=run_truncation_batch,
    main_figure="truncation_snapshots.png",
)  # fmt: skip

__all__ = [
    "KIND",
    "ExperimentSetup",
    "MagnitudeConfig",
    "NetworkConfig",
    "SGDConfig",
    "TargetConfig",
    "TruncationConfig",
    "TruncationFlowConfig",
    "analyse_trajectory",
    "analyse_truncation_arrays",
    "load_config",
    "plot_truncation_run",
    "run_truncation",
    "run_truncation_batch",
    "setup_experiment",
    "write_analysis",
    "write_truncated_magnitude",
]
