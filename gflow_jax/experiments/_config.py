"""Experiment configuration: frozen dataclasses, TOML loading, ``key=value`` overrides,
validation, and the sections every kind shares.

Every check runs before any computation and raises :class:`ConfigError` naming the offending key
(``flow.t_final``) and the problem. Unknown keys are errors, not silently ignored. Sections that
several kinds use — the solver (:class:`SolverConfig`, whose defaults are those of
:class:`~gflow_jax.dynamics.SolverSettings`, declared once), the flow's time grid
(:class:`FlowConfig`), clustered data (:class:`ClusterConfig`), gradient descent
(:class:`GDConfig`) and the output (:class:`OutputConfig`) — are declared here once, each with
its own ``check(prefix)``; the save grid of the common clock is chosen by :func:`check_clock`.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax.numpy as jnp

from ..core import ClusteredData, make_clusters
from ..diagnostics import CollapseConvention, collapse_convention
from ..diagnostics._collapse import CONVENTIONS, GLOBAL_MEANS, NC3_FORMS, NC4_FORMS
from ..dynamics import DEFAULTS, SOLVERS


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type, or out of range.

    The message names what is wrong: ``config key 'flow.t_final': …`` by default, ``option
    '--jobs': …`` for a command-line option (a key starting with ``-``), or the ``subject`` given
    (``file``, ``argument``).
    """

    def __init__(self, key: str, message: str, *, subject: str | None = None):
        if subject is None:
            subject = "option" if key.startswith("-") else "config key"
        super().__init__(f"{subject} '{key}': {message}")
        self.key = key


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
            raise ConfigError(
                item, "an override must look like section.key=value", subject="argument"
            )
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
            raise ConfigError(str(path), f"not valid TOML: {err}", subject="file") from err
    return apply_overrides(table, list(overrides))


# --------------------------------------------------------------------------------------------
# semantic checks


def require_positive(key: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(key, f"must be positive, got {value!r}")


def require_non_negative(key: str, value: float) -> None:
    if not value >= 0:
        raise ConfigError(key, f"must be non-negative, got {value!r}")


def require_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(key, f"must be one of {', '.join(map(repr, choices))}, got {value!r}")


def require_name(name: str) -> None:
    if not name or "/" in name:
        raise ConfigError("name", f"must be a non-empty name without '/', got {name!r}")


def _whole_steps(t: float, eta: float) -> int | None:
    """``t/eta`` if it is a whole number (to rounding), else ``None``."""
    k = t / eta
    return round(k) if abs(k - round(k)) <= 1e-9 * max(k, 1.0) and round(k) >= 1 else None


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def check_clock(
    t_final: float,
    n_save: int,
    etas: list[tuple[str, float]],
    batch_sizes: list[tuple[str, int]] = (),
    n_points: int = 0,
) -> int:
    """The common clock s = η·k, and the save grid chosen from the step sizes.

    GD at step η reaches flow time s after s/η steps, so ``t_final`` must be a whole number of
    steps of every η (``etas``: ``(key, η)`` pairs; the key is named on error) and so must every
    save interval t_final/(n_save − 1). Returns the number of saves closest to ``n_save`` (more
    saves on a tie) whose interval is a whole number of steps of every η — ``n_save`` itself when
    it is one. Every minibatch size must lie in [1, n_points].
    """
    for key, batch in batch_sizes:
        if not 1 <= batch <= n_points:
            raise ConfigError(key, f"must lie in [1, {n_points}] (number of points)")
    steps = []
    for key, eta in etas:
        require_positive(key, eta)
        k = _whole_steps(t_final, eta)
        if k is None:
            raise ConfigError(
                key,
                f"flow.t_final = {t_final:g} is not a whole number of steps {eta:g}: on the "
                "common clock s = eta*k every step size must divide flow.t_final",
            )
        steps.append(k)
    if not steps:
        return n_save
    common = math.gcd(*steps)  # the intervals allowed: t_final / divisor of the gcd
    best = min(_divisors(common), key=lambda m: (abs(m - (n_save - 1)), -m))
    return best + 1


def clock_note(n_save: int, chosen: int, t_final: float, etas: list[tuple[str, float]]) -> str:
    """Why the save count ``n_save`` was replaced by ``chosen`` (:func:`check_clock`)."""
    interval = t_final / (n_save - 1)
    off = [f"{key} = {eta:g}" for key, eta in etas if _whole_steps(interval, eta) is None]
    return (
        f"flow.n_save = {n_save} saves every {t_final / (n_save - 1):g}, not a whole number of "
        f"steps of {', '.join(off)}; using flow.n_save = {chosen} (every "
        f"{t_final / (chosen - 1):g}) so that every (S)GD iterate saved sits on the flow's grid "
        "s = eta*k"
    )


# --------------------------------------------------------------------------------------------
# shared sections


@dataclass(frozen=True)
class ConfigBase:
    """A kind's top-level config: built from a TOML table by :meth:`from_table` (the one entry
    point of every kind) and validated before anything runs: its ``name``, then every section
    (a field whose value has ``check(prefix, root)``, called with the field's name and this
    config), then :meth:`validate` for the rules that join sections."""

    def __post_init__(self):
        if hasattr(self, "name"):
            require_name(self.name)
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            if hasattr(section, "check"):
                section.check(f.name, self)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values that are invalid together (kinds override)."""

    @property
    def notes(self) -> tuple[str, ...]:
        """What validation chose for the user (e.g. the save grid of the common clock), one
        sentence each; ``gflow run`` prints them."""
        return tuple(self.__dict__.get("_notes", ()))

    def adjust(self, section: str, key: str, value: Any, note: str) -> None:
        """Set ``section.key`` to ``value`` during validation (the config is frozen afterwards)
        and record ``note`` in :attr:`notes`; nothing happens when the value is unchanged."""
        part = getattr(self, section)
        if getattr(part, key) == value:
            return
        object.__setattr__(self, section, dataclasses.replace(part, **{key: value}))
        self.__dict__.setdefault("_notes", []).append(note)

    def adjust_save_grid(self, etas: list[tuple[str, float]], batch_sizes=(), n_points=0) -> None:
        """The common clock (:func:`check_clock`) on the ``flow`` section: refuse a ``t_final``
        that is not a whole number of steps, and choose ``flow.n_save`` from the step sizes."""
        f = self.flow
        chosen = check_clock(f.t_final, f.n_save, etas, batch_sizes, n_points)
        self.adjust("flow", "n_save", chosen, clock_note(f.n_save, chosen, f.t_final, etas))

    @classmethod
    def from_table(cls, table: dict):
        """Build and validate the config from a TOML table (errors name the key)."""
        return build_dataclass(cls, table)


@dataclass(frozen=True)
class SolverConfig:
    """How the flow is integrated (:class:`~gflow_jax.dynamics.SolverSettings`)."""

    solver: str = DEFAULTS["solver"]
    rtol: float = DEFAULTS["rtol"]
    atol: float = DEFAULTS["atol"]
    pcoeff: float = DEFAULTS["pcoeff"]
    icoeff: float = DEFAULTS["icoeff"]
    dtmin: float = DEFAULTS["dtmin"]
    dt0: float = DEFAULTS["dt0"]
    max_steps: int = DEFAULTS["max_steps"]
    events: bool = DEFAULTS["events"]
    max_events: int = DEFAULTS["max_events"]

    def check(self, prefix: str, root=None) -> None:
        require_choice(f"{prefix}.solver", self.solver, SOLVERS)
        for k in ("rtol", "atol", "dt0", "max_steps", "max_events"):
            require_positive(f"{prefix}.{k}", getattr(self, k))
        for k in ("dtmin", "pcoeff", "icoeff"):
            require_non_negative(f"{prefix}.{k}", getattr(self, k))


@dataclass(frozen=True)
class FlowConfig(SolverConfig):
    """The solver and the save grid s = linspace(0, t_final, n_save) of a flow."""

    t_final: float = 20.0
    n_save: int = 81

    def check(self, prefix: str, root=None) -> None:
        super().check(prefix, root)
        require_positive(f"{prefix}.t_final", self.t_final)
        if self.n_save < 2:
            raise ConfigError(f"{prefix}.n_save", f"must be at least 2, got {self.n_save}")


@dataclass(frozen=True)
class ClusterConfig:
    """Synthetic clusters (:func:`~gflow_jax.make_clusters`), or explicit ones.

    ``points``: the data written out instead of drawn — ``n_classes × points_per_class`` rows of
    ``dim`` coordinates, class by class (rows j·points_per_class … (j+1)·points_per_class − 1
    are class j); each centre is its class's mean, and ``radius``, ``separation``,
    ``distribution`` and ``layout`` are not used. For hand-made instances whose events are
    known in closed form (experiments/sliding.toml).
    """

    n_classes: int = 2
    points_per_class: int = 20
    dim: int = 2
    radius: float = 0.5
    separation: float = 3.0
    distribution: str = "ball"
    layout: str = "diagonal"
    points: tuple[tuple[float, ...], ...] = ()

    @property
    def n_points(self) -> int:
        return self.n_classes * self.points_per_class

    def check(self, prefix: str, root=None) -> None:
        for k in ("n_classes", "points_per_class", "dim", "radius"):
            require_positive(f"{prefix}.{k}", getattr(self, k))
        require_non_negative(f"{prefix}.separation", self.separation)
        require_choice(f"{prefix}.distribution", self.distribution, ("ball", "gaussian"))
        require_choice(f"{prefix}.layout", self.layout, ("diagonal", "random"))
        if self.points and (
            len(self.points) != self.n_points or any(len(p) != self.dim for p in self.points)
        ):
            raise ConfigError(
                f"{prefix}.points",
                f"needs {self.n_points} rows ({prefix}.n_classes × {prefix}.points_per_class) "
                f"of {self.dim} coordinates ({prefix}.dim)",
            )


def clusters_from_config(key, section: ClusterConfig) -> ClusteredData:
    """:func:`~gflow_jax.make_clusters` from a :class:`ClusterConfig` section (or its explicit
    ``points``) — the one place configs become data."""
    if section.points:
        x = jnp.asarray(section.points, dtype=float)
        labels = jnp.repeat(jnp.arange(section.n_classes), section.points_per_class)
        centers = x.reshape(section.n_classes, section.points_per_class, section.dim).mean(1)
        return ClusteredData(x=x, labels=labels, centers=centers)
    return make_clusters(
        key,
        n_classes=section.n_classes,
        n_per_class=section.points_per_class,
        dim=section.dim,
        radius=section.radius,
        separation=section.separation,
        distribution=section.distribution,
        layout=section.layout,
    )


@dataclass(frozen=True)
class CollapseConfig:
    """How the Papyan neural-collapse measures are computed (docs/theory.md#neural-collapse,
    :func:`~gflow_jax.diagnostics.papyan_collapse`).

    ``convention``: ``"toolkit"`` (the default: global mean = mean of the class means,
    ddof = 0, NC3 not squared, NC4 as agreement) or ``"papyan"`` (Papyan, Han and Donoho 2020:
    global mean = mean of all features, ddof = 1, NC3 squared, NC4 as mismatch). Each of
    ``global_mean`` (``"class_means"``, ``"features"``), ``ddof`` (0, 1), ``nc3`` (``"norm"``,
    ``"squared"``) and ``nc4`` (``"agreement"``, ``"mismatch"``) overrides the convention; left
    out (``""``, ``ddof = -1``) it follows it. Validation fills in every option, so the run's
    recorded config states all four.
    """

    convention: str = "toolkit"
    global_mean: str = ""
    ddof: int = -1
    nc3: str = ""
    nc4: str = ""

    def check(self, prefix: str, root=None) -> None:
        require_choice(f"{prefix}.convention", self.convention, tuple(CONVENTIONS))
        for key, choices in (("global_mean", GLOBAL_MEANS), ("nc3", NC3_FORMS), ("nc4", NC4_FORMS)):
            if getattr(self, key):
                require_choice(f"{prefix}.{key}", getattr(self, key), choices)
        if self.ddof not in (-1, 0, 1):
            raise ConfigError(f"{prefix}.ddof", f"must be 0 or 1, got {self.ddof!r}")

    def resolved(self) -> CollapseConfig:
        """The same section with every option filled in from the convention."""
        return dataclasses.replace(self, **self.options().as_dict())

    def options(self) -> CollapseConvention:
        """The :class:`~gflow_jax.diagnostics.CollapseConvention` this section asks for."""
        return collapse_convention(
            self.convention,
            global_mean=self.global_mean or None,
            ddof=None if self.ddof < 0 else self.ddof,
            nc3=self.nc3 or None,
            nc4=self.nc4 or None,
        )


@dataclass(frozen=True)
class GDConfig:
    """Full-batch gradient descent at each step size η (clock s = η·k)."""

    etas: tuple[float, ...] = (0.05, 0.025)


@dataclass(frozen=True)
class OutputConfig:
    """Where and how a run is written."""

    root: str = "runs"
    figures: bool = True
    progress: bool = True
    snapshots: int = 4

    def check(self, prefix: str = "output", root=None) -> None:
        require_positive(f"{prefix}.snapshots", self.snapshots)
