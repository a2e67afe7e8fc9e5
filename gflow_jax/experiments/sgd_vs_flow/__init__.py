"""The ``sgd_vs_flow`` kind: does real training of the full network truncate?

Gradient flow (diffrax), GD and SGD (optax) of every parameter of the ReLU network on one clock,
followed in input space (truncation, adaptedness, rates) and feature space (Papyan NC1–NC4,
magnitude of the hidden representations).
"""

from .._registry import ExperimentKind
from ._config import (
    SgdVsFlowConfig as SgdVsFlowConfig,
    SvfDataConfig as SvfDataConfig,
    SvfNetworkConfig as SvfNetworkConfig,
    SvfSGDConfig as SvfSGDConfig,
    SvfTargetConfig as SvfTargetConfig,
    initial_network as initial_network,
)
from ._figures import plot_sgd_vs_flow_run as plot_sgd_vs_flow_run
from ._magnitude import (
    plot_network_magnitude as plot_network_magnitude,
    write_network_magnitude as write_network_magnitude,
)
from ._run import run_into, run_sgd_vs_flow as run_sgd_vs_flow


def _figures(run_dir) -> list:
    # magnitude of x̃(s) (input space) and of each hidden layer x⁽ℓ⁾(s) (feature space)
    return plot_sgd_vs_flow_run(run_dir) + plot_network_magnitude(run_dir)


KIND = ExperimentKind(
    "sgd_vs_flow", "gradient flow (diffrax) vs GD/SGD (optax) of every parameter of the network",
    SgdVsFlowConfig, run_into, _figures, main_figure="truncation.png",
)  # fmt: skip

__all__ = [
    "KIND",
    "SgdVsFlowConfig",
    "SvfDataConfig",
    "SvfNetworkConfig",
    "SvfSGDConfig",
    "SvfTargetConfig",
    "initial_network",
    "plot_network_magnitude",
    "plot_sgd_vs_flow_run",
    "run_sgd_vs_flow",
    "write_network_magnitude",
]
