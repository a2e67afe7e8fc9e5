"""Experiments: one subpackage or module per kind (config, run, figures), the shared config
sections and the registry behind ``gflow run``, ``gflow figures`` and ``gflow sweep``.

Kinds are imported on first use (:func:`get_kind`), so importing this package loads none of them.
"""

from ._config import (
    ClusterConfig as ClusterConfig,
    CollapseConfig as CollapseConfig,
    ConfigBase as ConfigBase,
    ConfigError as ConfigError,
    FlowConfig as FlowConfig,
    GDConfig as GDConfig,
    OutputConfig as OutputConfig,
    SolverConfig as SolverConfig,
    apply_overrides as apply_overrides,
    build_dataclass as build_dataclass,
    config_to_dict as config_to_dict,
    load_table as load_table,
)
from ._registry import (
    ExperimentKind as ExperimentKind,
    available_kinds as available_kinds,
    config_snapshot as config_snapshot,
    get_kind as get_kind,
    kind_target as kind_target,
    load_experiment as load_experiment,
    register_kind as register_kind,
)

__all__ = [
    "ClusterConfig",
    "CollapseConfig",
    "ConfigBase",
    "ConfigError",
    "ExperimentKind",
    "FlowConfig",
    "GDConfig",
    "OutputConfig",
    "SolverConfig",
    "apply_overrides",
    "available_kinds",
    "build_dataclass",
    "config_snapshot",
    "config_to_dict",
    "get_kind",
    "kind_target",
    "load_experiment",
    "load_table",
    "register_kind",
]
