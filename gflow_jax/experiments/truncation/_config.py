"""Configuration of the ``truncation`` kind (``gflow run experiments/truncation.toml``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .._config import (
    ClusterConfig,
    ConfigBase,
    ConfigError,
    FlowConfig,
    GDConfig,
    OutputConfig,
    load_table,
    require_choice,
    require_positive,
)


@dataclass(frozen=True)
class NetworkConfig:
    """Adapted network W⁽ℓ⁾ = D_ℓ O, b⁽ℓ⁾ at s = 0 (docs/theory.md#adapted-weights).

    ``signs[ℓ]`` is the sign of every d_{ℓ,k} (+1 truncates from below, −1 from above) and
    ``weight_scale`` its modulus, unless ``d`` gives the full ``(layers, dim)`` diagonal.
    Thresholds start at the ``init_quantile`` of the data on each coordinate, counted from the
    truncating side (so a fraction ``init_quantile`` of the points starts truncated). ``frame``:
    ``"identity"`` or ``"random"`` (a Haar-random O).
    """

    layers: int = 2
    signs: tuple[int, ...] = (1, -1)
    weight_scale: float = 0.5
    d: tuple[tuple[float, ...], ...] = ()
    init_quantile: float = 0.15
    frame: str = "identity"

    def check(self, prefix: str, root) -> None:
        dim = root.data.dim
        require_positive(f"{prefix}.layers", self.layers)
        require_positive(f"{prefix}.weight_scale", self.weight_scale)
        if self.d:
            if len(self.d) != self.layers or any(len(row) != dim for row in self.d):
                raise ConfigError(
                    f"{prefix}.d",
                    f"must have {self.layers} rows (layers) of {dim} entries (data.dim)",
                )
            for i, row in enumerate(self.d):
                for k, v in enumerate(row):
                    if v == 0.0:
                        raise ConfigError(
                            f"{prefix}.d[{i}][{k}]",
                            "is 0: singular weights (W⁽ℓ⁾ = D_ℓ O must be invertible)",
                        )
        elif len(self.signs) != self.layers or any(s not in (1, -1) for s in self.signs):
            raise ConfigError(
                f"{prefix}.signs", f"must be {self.layers} entries (network.layers) of ±1"
            )
        if not 0.0 <= self.init_quantile <= 1.0:
            raise ConfigError(
                f"{prefix}.init_quantile", f"must lie in [0, 1], got {self.init_quantile}"
            )
        require_choice(f"{prefix}.frame", self.frame, ("identity", "random"))


@dataclass(frozen=True)
class TargetConfig:
    """Targets ỹ_j (docs/theory.md#input-layer-cost).

    ``kind="prescribed"``: ``points`` gives ỹ_j in input space, one row per class.
    ``kind="pulled_back"``: reference outputs y_j = e_j (one-hot, Q = n_classes) through a random
    Gaussian output layer W_{L+1} (std ``output_scale``/√M, zero bias), pulled back once at s = 0
    with the pseudo-inverse and then held fixed.
    """

    kind: str = "prescribed"
    points: tuple[tuple[float, ...], ...] = ((1.0, 1.0), (2.0, 2.0))
    output_scale: float = 1.0

    def check(self, prefix: str, root) -> None:
        data = root.data
        require_choice(f"{prefix}.kind", self.kind, ("prescribed", "pulled_back"))
        if self.kind == "prescribed" and (
            len(self.points) != data.n_classes or any(len(p) != data.dim for p in self.points)
        ):
            raise ConfigError(
                f"{prefix}.points",
                f"needs {data.n_classes} rows (data.n_classes) of {data.dim} coordinates "
                "(data.dim)",
            )
        require_positive(f"{prefix}.output_scale", self.output_scale)


#: float32 resolves relative changes of about 1.2e-7: tighter solver tolerances cannot be met
FLOAT32_MIN_RTOL = 1e-8


@dataclass(frozen=True)
class TruncationFlowConfig(FlowConfig):
    """The effective flow (docs/theory.md#effective-flows, flows 1 and 2), its cost and its
    solve.

    ``dtype``: ``"float64"`` (default) or ``"float32"``, the precision of the data, parameters,
    flow, GD and SGD of a run or sweep point (the analysis stays float64). float32 halves the
    memory of a batch and is faster on accelerators with weak float64; it needs ``rtol`` ≥ 1e-8.
    Its error, measured on experiments/truncation.toml (default tolerances rtol 1e-8, atol 1e-10)
    against float64 solved at rtol 1e-12: max |Δb| = 1.2e-5, below float64's own 1.9e-5 at the
    same tolerances (the tolerance, not the precision, dominates), and the cost within 6e-6 of
    its initial value; SGD's iterates stay within 6e-6 of float64's after 1600 steps (the same
    minibatches). tests/test_device.py checks such bounds on a small config.

    ``compare_exact``: also solve the flow with the exact event-driven solver
    (``solver = "exact"``, docs/theory.md#meeting-faces; bias-only flow of C_in) and keep it
    beside the diffrax flow as the trajectory ``exact``, with its events and the faces that
    stick (docs/theory.md#sliding) in the summary.
    """

    mode: str = "bias"
    cost: str = "input"
    dtype: str = "float64"
    compare_exact: bool = False

    def check(self, prefix: str, root=None) -> None:
        super().check(prefix, root)
        require_choice(f"{prefix}.mode", self.mode, ("bias", "joint"))
        require_choice(f"{prefix}.cost", self.cost, ("input", "standard"))
        require_choice(f"{prefix}.dtype", self.dtype, ("float64", "float32"))
        if self.compare_exact and (self.mode != "bias" or self.cost != "input"):
            raise ConfigError(
                f"{prefix}.compare_exact",
                f"the exact solver solves the bias-only flow of C_in: needs {prefix}.mode = "
                f"'bias' and {prefix}.cost = 'input'",
            )
        if self.dtype == "float32" and self.rtol < FLOAT32_MIN_RTOL:
            raise ConfigError(
                f"{prefix}.rtol",
                f"{self.rtol:g} is below what float32 resolves: use rtol ≥ {FLOAT32_MIN_RTOL:g} "
                f"with {prefix}.dtype = 'float32'",
            )


@dataclass(frozen=True)
class SGDConfig:
    """Minibatch SGD (set ``enabled = false`` to skip)."""

    enabled: bool = True
    eta: float = 0.025
    batch_size: int = 10


@dataclass(frozen=True)
class MagnitudeConfig:
    """Magnitude of the truncated data |tX̃(s)| (:func:`~gflow_jax.truncated_magnitude`).

    Scales: the explicit list ``scales`` if given, else ``n_scales`` log-spaced values in
    [``t_min``, ``t_max``] (inverse units of the input coordinates).
    """

    enabled: bool = False
    t_min: float = 0.1
    t_max: float = 100.0
    n_scales: int = 32
    scales: tuple[float, ...] = ()
    per_cluster: bool = True

    def check(self, prefix: str, root=None) -> None:
        require_positive(f"{prefix}.t_min", self.t_min)
        require_positive(f"{prefix}.t_max", self.t_max)
        require_positive(f"{prefix}.n_scales", self.n_scales)
        if not self.t_min < self.t_max:
            raise ConfigError(f"{prefix}.t_max", f"must exceed {prefix}.t_min = {self.t_min}")
        for i, t in enumerate(self.scales):
            require_positive(f"{prefix}.scales[{i}]", t)


@dataclass(frozen=True)
class TruncationConfig(ConfigBase):
    """The ``truncation`` kind: effective flow beside GD and SGD of the adapted network."""

    name: str = "truncation"
    seed: int = 0
    data: ClusterConfig = field(default_factory=ClusterConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    targets: TargetConfig = field(default_factory=TargetConfig)
    flow: TruncationFlowConfig = field(default_factory=TruncationFlowConfig)
    gd: GDConfig = field(default_factory=GDConfig)
    sgd: SGDConfig = field(default_factory=SGDConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    magnitude: MagnitudeConfig = field(default_factory=MagnitudeConfig)

    def validate(self) -> None:
        if self.flow.cost == "standard" and self.targets.kind != "pulled_back":
            raise ConfigError("flow.cost", "the standard cost needs targets.kind = 'pulled_back'")
        etas = [(f"gd.etas[{i}]", e) for i, e in enumerate(self.gd.etas)]
        sgd = [("sgd.eta", self.sgd.eta)] if self.sgd.enabled else []
        batch = [("sgd.batch_size", self.sgd.batch_size)] if self.sgd.enabled else []
        self.adjust_save_grid(etas + sgd, batch, self.data.n_points)


def load_config(path=None, overrides: list[str] = ()) -> TruncationConfig:
    """Load a truncation TOML config, apply ``key=value`` overrides, validate.

    A top-level ``kind`` key, if present, must be ``"truncation"`` (other kinds:
    :func:`gflow_jax.experiments.load_experiment`).
    """
    table = load_table(path, overrides)
    kind = table.pop("kind", "truncation")
    if kind != "truncation":
        raise ConfigError("kind", f"this is a {kind!r} config; load it with load_experiment")
    return TruncationConfig.from_table(table)
