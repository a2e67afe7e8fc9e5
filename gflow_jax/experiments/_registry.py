"""Experiment kinds: the registry behind ``gflow run``, ``gflow figures`` and ``gflow sweep``.

A config file names its kind with a top-level ``kind = "..."`` (default ``"truncation"``). Each
kind is an :class:`ExperimentKind`: how to build its validated config from a TOML table, how to
run it into a run directory, and how to draw its figures from that directory alone. Kinds are
registered by import path and imported lazily, so ``gflow info`` does not import every module.

Contract for a kind's config: a frozen dataclass deriving from
:class:`~gflow_jax.experiments.ConfigBase` (built by its ``from_table``, so errors name the key),
with a ``name: str`` and an ``output`` field of type :class:`~gflow_jax.experiments.OutputConfig`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._config import ConfigError, config_to_dict, load_table


@dataclass(frozen=True)
class ExperimentKind:
    """One kind of experiment.

    ``config`` is the config class; ``config.from_table(table)`` validates (raising
    :class:`~gflow_jax.experiments.ConfigError`) before anything is computed. ``run(config, run_dir,
    progress) -> summary`` writes ``arrays.npz`` and ``metrics.jsonl`` into ``run_dir`` and returns
    a JSON-ready summary; the caller writes ``config.json``, ``env.json``, ``summary.json`` and
    ``status.json``. ``figures(run_dir) -> paths`` draws from the run directory only (never
    re-simulates); ``main_figure`` names the file in ``figures/`` that shows what the kind is
    about (``gflow run`` ends by naming it; empty: the first figure drawn). A ``resumable``
    kind's ``run`` skips work already finished in ``run_dir`` (``gflow run --resume RUN_DIR``):
    it must write each finished piece atomically; other kinds are resumed by running again, from
    the start, into the same directory.

    ``run_batch`` (optional) runs many configs of this kind at once for ``gflow sweep``
    (:mod:`gflow_jax.sweep`): ``run_batch(configs, run_dirs, *, devices, max_batch, log)``
    yields ``(i, summary_or_exception)`` as soon as ``run_dirs[i]`` holds the arrays and metrics
    that ``run`` would have written for ``configs[i]``; ``devices`` is the list of local JAX
    devices to shard the batch over, ``max_batch`` the most points per compiled call
    (``None``: as many as fit in the devices' memory) and
    ``log(message)`` reports padding, grouping and chunking. Kinds without it run point by
    point.
    """

    name: str
    description: str
    config: type
    run: Callable[[Any, Path, bool], dict]
    figures: Callable[[Path], list[Path]]
    resumable: bool = False
    run_batch: Callable | None = None
    main_figure: str = ""

    def from_table(self, table: dict) -> Any:
        """The validated config of this kind from a TOML table."""
        return self.config.from_table(table)


_REGISTRY: dict[str, str] = {
    "truncation": "gflow_jax.experiments.truncation:KIND",
    "rates": "gflow_jax.experiments.rates:KIND",
    "spectral_gap": "gflow_jax.experiments.spectral_gap:KIND",
    "sgd_vs_flow": "gflow_jax.experiments.sgd_vs_flow:KIND",
    "magnitude_generalization": "gflow_jax.experiments.magnitude_generalization:KIND",
}


def register_kind(name: str, target: str) -> None:
    """Register a kind by ``"module:attribute"`` path (imported on first use)."""
    _REGISTRY[name] = target


def kind_target(name: str) -> str:
    """The ``"module:attribute"`` path a kind is registered under."""
    get_kind(name)  # a clear error for an unknown kind
    return _REGISTRY[name]


def available_kinds() -> list[str]:
    return sorted(_REGISTRY)


def get_kind(name: str) -> ExperimentKind:
    """The registered kind called ``name``; ``ConfigError('kind', ...)`` if there is none."""
    if name not in _REGISTRY:
        raise ConfigError("kind", f"unknown experiment kind {name!r} (known: {available_kinds()})")
    module, attr = _REGISTRY[name].split(":")
    kind = getattr(importlib.import_module(module), attr)
    if not isinstance(kind, ExperimentKind) or kind.name != name:
        raise TypeError(f"{_REGISTRY[name]} is not the ExperimentKind {name!r}")
    return kind


def load_experiment(
    path: str | Path | None = None, overrides: list[str] = (), *, table: dict | None = None
) -> tuple[ExperimentKind, Any]:
    """Read a config file (or a ready ``table``), apply overrides and validate it for its kind.

    A ``[sweep]`` table is not part of a single run's config: :mod:`gflow_jax.sweep` removes it
    before calling this; here it is an error naming the command to use.
    """
    if table is None:
        table = load_table(path, overrides)
    else:
        table = dict(table)
    if "sweep" in table:
        raise ConfigError("sweep", "this config defines a sweep: run it with `gflow sweep`")
    name = table.pop("kind", "truncation")
    if not isinstance(name, str):
        raise ConfigError("kind", f"expected a string, got {name!r}")
    kind = get_kind(name)
    return kind, kind.from_table(table)


def config_snapshot(kind: ExperimentKind, config: Any) -> dict:
    """The config as written to ``config.json``: its kind first, then every field."""
    return {"kind": kind.name, **config_to_dict(config)}
