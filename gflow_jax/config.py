"""Experiment configuration: frozen dataclasses, TOML loading, ``key=value`` overrides, validation.

Every check runs before any computation and raises :class:`ConfigError` naming the offending key
(``flow.t_final``) and the problem. Unknown keys are errors, not silently ignored.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ConfigError",
    "DataConfig",
    "ExperimentConfig",
    "FlowConfig",
    "GDConfig",
    "MagnitudeConfig",
    "NetworkConfig",
    "OutputConfig",
    "SGDConfig",
    "TargetConfig",
    "apply_overrides",
    "build_dataclass",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "load_table",
    "require_choice",
    "require_positive",
]


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type, or out of range."""

    def __init__(self, key: str, message: str):
        super().__init__(f"config key '{key}': {message}")
        self.key = key


@dataclass(frozen=True)
class DataConfig:
    """Synthetic clusters (:func:`gflow_jax.data.make_clusters`)."""

    n_classes: int = 2
    points_per_class: int = 20
    dim: int = 2
    radius: float = 0.5
    separation: float = 3.0
    distribution: str = "ball"
    layout: str = "diagonal"


@dataclass(frozen=True)
class NetworkConfig:
    """Adapted network W⁽ℓ⁾ = D_ℓ O, b⁽ℓ⁾ at s = 0.

    ``signs[ℓ]`` is the sign of every d_{ℓ,k} (+1 truncates from below, −1 from above) and
    ``weight_scale`` its modulus, unless ``d`` gives the full ``(layers, dim)`` diagonal.
    Thresholds start at the ``init_quantile`` of the data on each coordinate, counted from the
    truncating side (so a fraction ``init_quantile`` of the points starts truncated).
    """

    layers: int = 2
    signs: tuple[int, ...] = (1, -1)
    weight_scale: float = 0.5
    d: tuple[tuple[float, ...], ...] = ()
    init_quantile: float = 0.15
    frame: str = "identity"


@dataclass(frozen=True)
class TargetConfig:
    """Targets ỹ_j.

    ``kind="prescribed"``: ``points`` gives ỹ_j in input space, one row per class.
    ``kind="pulled_back"``: reference outputs y_j = e_j (one-hot, Q = n_classes) through a random
    Gaussian output layer W_{L+1} (std ``output_scale``/√M, zero bias), pulled back once at s = 0
    with the pseudo-inverse and then held fixed.
    """

    kind: str = "prescribed"
    points: tuple[tuple[float, ...], ...] = ((1.0, 1.0), (2.0, 2.0))
    output_scale: float = 1.0


@dataclass(frozen=True)
class FlowConfig:
    """Effective flow and its diffrax solve (MATH.md effective flows 1 and 2)."""

    mode: str = "bias"
    cost: str = "input"
    t_final: float = 20.0
    n_save: int = 81
    solver: str = "tsit5"
    rtol: float = 1e-8
    atol: float = 1e-10
    pcoeff: float = 0.3
    icoeff: float = 0.3
    dtmin: float = 0.0
    dt0: float = 1e-3
    max_steps: int = 200_000


@dataclass(frozen=True)
class GDConfig:
    """Full-batch gradient descent at each step size η (clock s = η·k)."""

    etas: tuple[float, ...] = (0.05, 0.025)


@dataclass(frozen=True)
class SGDConfig:
    """Minibatch SGD (set ``enabled = false`` to skip)."""

    enabled: bool = True
    eta: float = 0.025
    batch_size: int = 10


@dataclass(frozen=True)
class MagnitudeConfig:
    """Magnitude of the truncated data |tX̃(s)| (:mod:`gflow_jax.truncated_magnitude`).

    Scales: the explicit list ``scales`` if given, else ``n_scales`` log-spaced values in
    [``t_min``, ``t_max``] (inverse units of the input coordinates).
    """

    enabled: bool = False
    t_min: float = 0.1
    t_max: float = 100.0
    n_scales: int = 32
    scales: tuple[float, ...] = ()
    per_cluster: bool = True


@dataclass(frozen=True)
class OutputConfig:
    root: str = "runs"
    figures: bool = True
    progress: bool = True
    snapshots: int = 4


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "truncation"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    targets: TargetConfig = field(default_factory=TargetConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    gd: GDConfig = field(default_factory=GDConfig)
    sgd: SGDConfig = field(default_factory=SGDConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    magnitude: MagnitudeConfig = field(default_factory=MagnitudeConfig)

    def __post_init__(self):
        _validate(self)


# --------------------------------------------------------------------------------------------
# typed construction


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a table, got {type(value).__name__}")
        return build_dataclass(tp, value, key)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(key, f"expected a list, got {type(value).__name__} {value!r}")
        return tuple(_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        raise TypeError("union types are not used in configs")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(key, f"must be finite, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {_type_name(tp)} for {key}")


def build_dataclass(cls: type, table: dict, prefix: str = "") -> Any:
    """Construct the (nested, frozen) dataclass ``cls`` from a TOML table with typed checks.

    Unknown keys, wrong types and non-finite numbers raise :class:`ConfigError` naming the key
    (``prefix.key``); the dataclass's own ``__post_init__`` then validates values. Every
    experiment kind builds its config with this one function.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in table:
        if k not in names:
            where = f"{prefix}.{k}" if prefix else k
            raise ConfigError(where, f"unknown key (known: {', '.join(sorted(names))})")
    kwargs = {}
    for k, v in table.items():
        where = f"{prefix}.{k}" if prefix else k
        kwargs[k] = _coerce(where, v, hints[k])
    return cls(**kwargs)


def config_from_dict(table: dict) -> ExperimentConfig:
    """Build and validate a config from a nested dict (TOML tables)."""
    return build_dataclass(ExperimentConfig, table)


def config_to_dict(config: Any) -> dict:
    """Nested plain-dict (JSON/TOML-ready) form of any config dataclass."""

    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v

    return plain(config)


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word is a string


def apply_overrides(table: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` overrides (values in TOML syntax) to a nested dict."""
    table = {k: (dict(v) if isinstance(v, dict) else v) for k, v in table.items()}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(item, "override must look like section.key=value")
        key, text = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        node = table
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(key, f"'{p}' is not a table")
        node[parts[-1]] = _parse_value(text.strip())
    return table


def load_table(path: str | Path | None = None, overrides: list[str] = ()) -> dict:
    """Read a TOML file (empty table if ``path`` is None) and apply ``key=value`` overrides."""
    table: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            table = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(str(path), f"not valid TOML: {err}") from err
    return apply_overrides(table, list(overrides))


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> ExperimentConfig:
    """Load a truncation-experiment TOML config, apply overrides, validate.

    A top-level ``kind`` key, if present, must be ``"truncation"`` (other kinds: see
    :func:`gflow_jax.kinds.load_experiment`).
    """
    table = load_table(path, overrides)
    kind = table.pop("kind", "truncation")
    if kind != "truncation":
        raise ConfigError("kind", f"this is a {kind!r} config; load it with kinds.load_experiment")
    return config_from_dict(table)


# --------------------------------------------------------------------------------------------
# semantic validation


def require_positive(key: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(key, f"must be positive, got {value!r}")


def require_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(key, f"must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _validate(cfg: ExperimentConfig) -> None:
    d, n, t, f = cfg.data, cfg.network, cfg.targets, cfg.flow
    for k in ("n_classes", "points_per_class", "dim"):
        require_positive(f"data.{k}", getattr(d, k))
    require_positive("data.radius", d.radius)
    if d.separation < 0:
        raise ConfigError("data.separation", f"must be non-negative, got {d.separation}")
    require_choice("data.distribution", d.distribution, ("ball", "gaussian"))
    require_choice("data.layout", d.layout, ("diagonal", "random"))

    require_positive("network.layers", n.layers)
    require_positive("network.weight_scale", n.weight_scale)
    if n.d:
        if len(n.d) != n.layers or any(len(row) != d.dim for row in n.d):
            raise ConfigError(
                "network.d", f"must have {n.layers} rows (layers) of {d.dim} entries (data.dim)"
            )
        for i, row in enumerate(n.d):
            for k, v in enumerate(row):
                if v == 0.0:
                    raise ConfigError(
                        f"network.d[{i}][{k}]",
                        "is 0: singular weights (W⁽ℓ⁾ = D_ℓ O must be invertible)",
                    )
    elif len(n.signs) != n.layers or any(s not in (1, -1) for s in n.signs):
        raise ConfigError("network.signs", f"must be {n.layers} entries (network.layers) of ±1")
    if not 0.0 <= n.init_quantile <= 1.0:
        raise ConfigError("network.init_quantile", f"must lie in [0, 1], got {n.init_quantile}")
    require_choice("network.frame", n.frame, ("identity", "random"))

    require_choice("targets.kind", t.kind, ("prescribed", "pulled_back"))
    if t.kind == "prescribed" and (
        len(t.points) != d.n_classes or any(len(p) != d.dim for p in t.points)
    ):
        raise ConfigError(
            "targets.points",
            f"needs {d.n_classes} rows (data.n_classes) of {d.dim} coordinates (data.dim)",
        )
    require_positive("targets.output_scale", t.output_scale)

    require_choice("flow.mode", f.mode, ("bias", "joint"))
    require_choice("flow.cost", f.cost, ("input", "standard"))
    require_choice("flow.solver", f.solver, ("tsit5", "dopri5", "dopri8", "euler"))
    if f.cost == "standard" and t.kind != "pulled_back":
        raise ConfigError("flow.cost", "the standard cost needs targets.kind = 'pulled_back'")
    for k in ("t_final", "rtol", "atol", "dt0", "max_steps"):
        require_positive(f"flow.{k}", getattr(f, k))
    if f.n_save < 2:
        raise ConfigError("flow.n_save", f"must be at least 2, got {f.n_save}")
    if f.dtmin < 0:
        raise ConfigError("flow.dtmin", f"must be non-negative, got {f.dtmin}")
    for k in ("pcoeff", "icoeff"):
        if getattr(f, k) < 0:
            raise ConfigError(f"flow.{k}", f"must be non-negative, got {getattr(f, k)}")

    interval = f.t_final / (f.n_save - 1)
    etas = [(f"gd.etas[{i}]", e) for i, e in enumerate(cfg.gd.etas)]
    if cfg.sgd.enabled:
        etas.append(("sgd.eta", cfg.sgd.eta))
        n_points = d.n_classes * d.points_per_class
        if not 1 <= cfg.sgd.batch_size <= n_points:
            raise ConfigError("sgd.batch_size", f"must lie in [1, {n_points}] (number of points)")
    for key, eta in etas:
        require_positive(key, eta)
        steps = interval / eta
        if abs(steps - round(steps)) > 1e-9 * max(steps, 1.0) or round(steps) < 1:
            raise ConfigError(
                key,
                f"save interval t_final/(n_save-1) = {interval:g} is not a whole number of "
                f"steps {eta:g}; the common clock s = eta*k needs one",
            )
    require_positive("output.snapshots", cfg.output.snapshots)
    mag = cfg.magnitude
    require_positive("magnitude.t_min", mag.t_min)
    require_positive("magnitude.t_max", mag.t_max)
    require_positive("magnitude.n_scales", mag.n_scales)
    if not mag.t_min < mag.t_max:
        raise ConfigError("magnitude.t_max", f"must exceed magnitude.t_min = {mag.t_min}")
    for i, t in enumerate(mag.scales):
        require_positive(f"magnitude.scales[{i}]", t)
    if not cfg.name or "/" in cfg.name:
        raise ConfigError("name", f"must be a non-empty name without '/', got {cfg.name!r}")
