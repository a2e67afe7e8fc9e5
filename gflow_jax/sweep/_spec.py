"""The ``[sweep]`` table: its schema, validation, and the expansion into points (nothing runs)."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..experiments import ConfigError, ExperimentKind, apply_overrides, get_kind, load_table

_SWEEP_KEYS = ("mode", "n_samples", "seed", "axes", "max_batch", "point_figures", "jobs", "slurm")
_GRID_GENERATORS = ("linspace", "logspace")
_RANDOM_DISTRIBUTIONS = ("uniform", "log_uniform", "int_uniform", "choice")
_SPEC_NAMES = _GRID_GENERATORS + _RANDOM_DISTRIBUTIONS
_FORBIDDEN_AXES = ("kind", "sweep")


@dataclass(frozen=True)
class SweepSpec:
    """A validated ``[sweep]`` table.

    Attributes:
        mode: ``"grid"`` or ``"random"``.
        axes: dotted config key → a list of values (grid, or a random choice) or a one-key
            table ``{generator_or_distribution: arguments}``; in file order.
        n_samples: points of a random sweep.
        seed: seed of a random sweep's generator.
        max_batch: most points per compiled call of a batched kind, or ``"auto"``: on
            accelerators as many as fit in the devices' free memory, on CPUs 128 per device
            (:func:`~gflow_jax.core.memory_batch_size`).
        point_figures: draw every point's figures.
        jobs: number of array jobs for the submitit executors.
        slurm: parameters for submitit's ``update_parameters``.
    """

    mode: str
    axes: dict[str, Any]
    n_samples: int = 0
    seed: int = 0
    max_batch: int | str = "auto"
    point_figures: bool = False
    jobs: int = 4
    slurm: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The table :func:`parse_sweep` reads back (as stored in ``sweep.json``)."""
        table = {"mode": self.mode, "axes": self.axes}
        if self.mode == "random":
            table.update(n_samples=self.n_samples, seed=self.seed)
        table.update(
            max_batch=self.max_batch,
            point_figures=self.point_figures,
            jobs=self.jobs,
            slurm=self.slurm,
        )
        return table


def _flatten_axes(table: dict, prefix: str = "") -> dict[str, Any]:
    """``{"gd": {"etas": [...]}}`` and ``{"gd.etas": [...]}`` both give ``{"gd.etas": [...]}``;
    a one-key table naming a generator or distribution is a value, not a sub-table."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and not (len(value) == 1 and next(iter(value)) in _SPEC_NAMES):
            if not value:
                raise ConfigError(f"sweep.axes.{name}", "empty table: give a list of values")
            for k, v in _flatten_axes(value, name).items():
                if k in flat:
                    raise ConfigError(f"sweep.axes.{k}", "axis given twice")
                flat[k] = v
        else:
            if name in flat:
                raise ConfigError(f"sweep.axes.{name}", "axis given twice")
            flat[name] = value
    return flat


def _require_int(key: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(key, f"expected an integer ≥ {low}, got {value!r}")
    return value


def _check_numbers(key: str, args: Any, count: int) -> list[float]:
    if not isinstance(args, list) or len(args) != count:
        raise ConfigError(key, f"expected a list of {count} numbers, got {args!r}")
    for a in args:
        if isinstance(a, bool) or not isinstance(a, int | float) or not math.isfinite(a):
            raise ConfigError(key, f"expected finite numbers, got {args!r}")
    return list(args)


def _check_axis(mode: str, axis: str, value: Any) -> None:
    key = f"sweep.axes.{axis}"
    if axis.split(".")[0] in _FORBIDDEN_AXES or not all(axis.split(".")):
        raise ConfigError(key, f"'{axis}' cannot be a sweep axis")
    if isinstance(value, list):
        if not value:
            raise ConfigError(key, "empty list of values")
        return
    if not isinstance(value, dict):
        raise ConfigError(
            key,
            f"expected a list of values or a table like {{linspace = [a, b, n]}}, got {value!r}",
        )
    ((name, args),) = value.items()
    allowed = _GRID_GENERATORS if mode == "grid" else _RANDOM_DISTRIBUTIONS
    if name not in allowed:
        other = "random" if mode == "grid" else "grid"
        raise ConfigError(
            key,
            f"{name!r} is not allowed in a {mode} sweep (allowed: {', '.join(allowed)}; "
            f"{name!r} belongs to mode = {other!r})",
        )
    if name in ("linspace", "logspace"):
        a, b, n = _check_numbers(key, args, 3)
        _require_int(f"{key}.{name}[2]", n, 1)
        if name == "logspace" and not (a > 0 and b > 0):
            raise ConfigError(key, f"logspace needs positive ends, got {args!r}")
    elif name in ("uniform", "log_uniform", "int_uniform"):
        lo, hi = _check_numbers(key, args, 2)
        if not lo <= hi:
            raise ConfigError(key, f"{name} needs lo ≤ hi, got {args!r}")
        if name == "log_uniform" and not lo > 0:
            raise ConfigError(key, f"log_uniform needs positive bounds, got {args!r}")
        if name == "int_uniform":
            for i, a in enumerate(args):
                _require_int(f"{key}.int_uniform[{i}]", a, -(2**62))
    elif not isinstance(args, list) or not args:
        raise ConfigError(key, f"choice needs a non-empty list, got {args!r}")


def parse_sweep(table: dict) -> SweepSpec:
    """Validate a ``[sweep]`` table (errors name ``sweep.<key>``)."""
    if not isinstance(table, dict):
        raise ConfigError("sweep", f"expected a table, got {table!r}")
    for key in table:
        if key not in _SWEEP_KEYS:
            raise ConfigError(f"sweep.{key}", f"unknown key (known: {', '.join(_SWEEP_KEYS)})")
    mode = table.get("mode", "grid")
    if mode not in ("grid", "random"):
        raise ConfigError("sweep.mode", f"must be 'grid' or 'random', got {mode!r}")
    axes_table = table.get("axes")
    if not isinstance(axes_table, dict) or not axes_table:
        raise ConfigError("sweep.axes", "a sweep needs a non-empty [sweep.axes] table")
    axes = _flatten_axes(axes_table)
    for axis, value in axes.items():
        _check_axis(mode, axis, value)
    n_samples = table.get("n_samples", 0)
    if mode == "random":
        n_samples = _require_int("sweep.n_samples", n_samples, 1)
    elif "n_samples" in table:
        raise ConfigError("sweep.n_samples", "only a random sweep has n_samples")
    seed = _require_int("sweep.seed", table.get("seed", 0), 0)
    max_batch = table.get("max_batch", "auto")
    if max_batch != "auto":
        max_batch = _require_int("sweep.max_batch", max_batch, 1)
    jobs = _require_int("sweep.jobs", table.get("jobs", 4), 1)
    point_figures = table.get("point_figures", False)
    if not isinstance(point_figures, bool):
        raise ConfigError("sweep.point_figures", f"expected true/false, got {point_figures!r}")
    slurm = table.get("slurm", {})
    if not isinstance(slurm, dict):
        raise ConfigError("sweep.slurm", f"expected a table, got {slurm!r}")
    return SweepSpec(mode, axes, n_samples, seed, max_batch, point_figures, jobs, dict(slurm))


def _grid_values(value: Any) -> list:
    if isinstance(value, list):
        return value
    ((name, (a, b, n)),) = value.items()
    values = np.linspace(a, b, n) if name == "linspace" else np.geomspace(a, b, n)
    return [float(v) for v in values]


def _draw(rng: np.random.Generator, value: Any, n: int) -> list:
    if isinstance(value, list):
        return [value[int(k)] for k in rng.integers(0, len(value), n)]
    ((name, args),) = value.items()
    if name == "choice":
        return [args[int(k)] for k in rng.integers(0, len(args), n)]
    if name == "uniform":
        return [float(v) for v in rng.uniform(args[0], args[1], n)]
    if name == "log_uniform":
        return [float(v) for v in np.exp(rng.uniform(np.log(args[0]), np.log(args[1]), n))]
    return [int(v) for v in rng.integers(args[0], args[1], n, endpoint=True)]


def expand_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every point's overrides ``{axis: value}``: the grid in row-major order (first axis
    slowest), or ``n_samples`` draws (axis by axis from ``numpy.random.default_rng(seed)``)."""
    names = list(spec.axes)
    if spec.mode == "grid":
        grids = [_grid_values(spec.axes[a]) for a in names]
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grids)]
    rng = np.random.default_rng(spec.seed)
    draws = {a: _draw(rng, spec.axes[a], spec.n_samples) for a in names}
    return [{a: draws[a][i] for a in names} for i in range(spec.n_samples)]


def _set_key(table: dict, axis: str, value: Any) -> dict:
    """A copy of ``table`` with the dotted ``axis`` set to ``value`` (sub-tables created)."""
    parts = axis.split(".")
    out = dict(table)
    node = out
    for p in parts[:-1]:
        child = node.get(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"sweep.axes.{axis}", f"'{p}' is not a table in the base config")
        node[p] = dict(child)
        node = node[p]
    node[parts[-1]] = value
    return out


def _point_table(base: dict, overrides: dict[str, Any]) -> dict:
    table = base
    for axis, value in overrides.items():
        table = _set_key(table, axis, value)
    return table


def _blame(err: ConfigError, overrides: dict[str, Any]) -> list[str]:
    """The axes whose keys the config error's key falls under."""
    return [
        a
        for a in overrides
        if err.key == a or err.key.startswith(a + ".") or err.key.startswith(a + "[")
    ]


@dataclass
class SweepPlan:
    """A validated sweep: its kind, base config table, spec, and every point's overrides and
    config (validated by the kind's ``from_table``)."""

    kind: ExperimentKind
    base: dict
    spec: SweepSpec
    points: list[dict[str, Any]]
    configs: list[Any]


def plan_sweep(path: str | Path | None, overrides: Sequence[str] = (), *, table=None) -> SweepPlan:
    """Read a config with a ``[sweep]`` table, expand and validate every point (nothing runs).

    ``overrides`` (``key=value``) apply to the base config and to ``sweep.*`` keys; overriding
    a key that is also a sweep axis is an error (the axis would silently win).
    """
    raw = load_table(path) if table is None else dict(table)
    full = apply_overrides(raw, list(overrides))
    if "sweep" not in full:
        raise ConfigError("sweep", "this config has no [sweep] table: run it with `gflow run`")
    spec = parse_sweep(full.pop("sweep"))
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key in spec.axes or any(key.startswith(a + ".") for a in spec.axes):
            raise ConfigError(key, f"is a sweep axis: change sweep.axes.{key} instead")
    kind_name = full.get("kind", "truncation")
    if not isinstance(kind_name, str):
        raise ConfigError("kind", f"expected a string, got {kind_name!r}")
    kind = get_kind(kind_name)
    points = expand_points(spec)
    configs = []
    for i, point in enumerate(points):
        try:
            table_i = _point_table(full, point)
            table_i.pop("kind", None)
            configs.append(kind.from_table(table_i))
        except ConfigError as err:
            described = ", ".join(f"{a} = {json.dumps(v)}" for a, v in point.items())
            blamed = _blame(err, point)
            if err.key.startswith("sweep.axes."):
                raise
            if blamed:
                key = f"sweep.axes.{blamed[0]}"
            else:  # is the base config alone at fault?
                try:
                    base_only = dict(full)
                    base_only.pop("kind", None)
                    kind.from_table(base_only)
                except ConfigError:
                    raise err from None
                key = "sweep.axes"
            raise ConfigError(key, f"point {i} ({described}) is invalid: {err}") from err
    return SweepPlan(kind, full, spec, points, configs)
