"""Configuration of the ``magnitude_generalization`` kind."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...dynamics import RecordingPlan
from .._config import (
    ClusterConfig,
    ConfigBase,
    ConfigError,
    OutputConfig,
    require_choice,
    require_positive,
)

_DIGITS_SIZE = 1797


@dataclass(frozen=True)
class MGDataConfig(ClusterConfig):
    """``source = "digits"`` (scikit-learn, 1797 8×8 images) or ``"clusters"`` (the cluster keys
    of :class:`~gflow_jax.experiments.ClusterConfig` apply only to it). ``label_noise``: fraction
    of training labels replaced by another class; ``seed``: data split and noise."""

    source: str = "digits"
    test_fraction: float = 0.2
    label_noise: float = 0.0
    seed: int = 0

    @property
    def n_total(self) -> int:
        return _DIGITS_SIZE if self.source == "digits" else self.n_points

    @property
    def n_test(self) -> int:
        return int(round(self.test_fraction * self.n_total))

    @property
    def n_train(self) -> int:
        return self.n_total - self.n_test

    def check(self, prefix: str, root=None) -> None:
        super().check(prefix, root)
        require_choice(f"{prefix}.source", self.source, ("digits", "clusters"))
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(
                f"{prefix}.test_fraction", f"must lie in (0, 1), got {self.test_fraction}"
            )
        if not 0.0 <= self.label_noise <= 1.0:
            raise ConfigError(
                f"{prefix}.label_noise", f"must lie in [0, 1], got {self.label_noise}"
            )
        if self.points:
            raise ConfigError(
                f"{prefix}.points", "explicit points are not read by this kind (it draws its data)"
            )
        if self.source == "clusters" and self.n_classes < 2:
            raise ConfigError(f"{prefix}.n_classes", "needs at least 2 classes")
        if self.n_test < 1 or self.n_train < 1:
            raise ConfigError(f"{prefix}.test_fraction", "leaves an empty train or test set")


@dataclass(frozen=True)
class ModelConfig:
    """ReLU MLP with hidden widths ``hidden`` (depth = its length), He-normal initialisation."""

    hidden: tuple[int, ...] = (32, 32)

    def check(self, prefix: str, root=None) -> None:
        if not self.hidden:
            raise ConfigError(f"{prefix}.hidden", "needs at least one hidden layer width")
        for i, w in enumerate(self.hidden):
            require_positive(f"{prefix}.hidden[{i}]", w)


@dataclass(frozen=True)
class MGTrainingConfig:
    """Optimiser (``"sgd"`` with optional ``momentum``, or ``"adam"``) and precision.

    ``dtype = "float32"`` trains in single precision (faster on some CPUs/GPUs); measures are
    always computed in float64 from the stored iterates. Its error, measured on the 4-network
    clusters config of tests/test_generalization.py against float64: every network reaches 100 %
    training accuracy at the same step, the accuracy gaps are equal, the loss gaps agree to 6e-7
    relative and every trajectory measure to 3.4e-6 relative (median 6e-7)."""

    optimizer: str = "sgd"
    momentum: float = 0.0
    dtype: str = "float64"
    eval_block: int = 512

    def check(self, prefix: str, root=None) -> None:
        require_choice(f"{prefix}.optimizer", self.optimizer, ("sgd", "adam"))
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"{prefix}.momentum", f"must lie in [0, 1), got {self.momentum}")
        require_choice(f"{prefix}.dtype", self.dtype, ("float64", "float32"))
        require_positive(f"{prefix}.eval_block", self.eval_block)


@dataclass(frozen=True)
class GridConfig:
    """The sweep: every (learning rate, batch size, seed)."""

    learning_rates: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2)
    batch_sizes: tuple[int, ...] = (32, 64, 128)
    seeds: tuple[int, ...] = (0, 1, 2)

    def check(self, prefix: str, root) -> None:
        n_train = root.n_train
        for key in ("learning_rates", "batch_sizes", "seeds"):
            values = getattr(self, key)
            if not values:
                raise ConfigError(f"{prefix}.{key}", "must not be empty")
            if len(set(values)) != len(values):
                raise ConfigError(f"{prefix}.{key}", f"has repeated values {list(values)}")
        for i, lr in enumerate(self.learning_rates):
            require_positive(f"{prefix}.learning_rates[{i}]", lr)
        for i, bs in enumerate(self.batch_sizes):
            if not 1 <= bs <= n_train:
                raise ConfigError(
                    f"{prefix}.batch_sizes[{i}]", f"must lie in [1, {n_train}] (training points)"
                )
        for i, s in enumerate(self.seeds):
            if s < 0:
                raise ConfigError(f"{prefix}.seeds[{i}]", f"must be non-negative, got {s}")


@dataclass(frozen=True)
class TrajectoryConfig(RecordingPlan):
    """What is recorded while training (the fields of :class:`~gflow_jax.dynamics.RecordingPlan`,
    which this section is) and the probe batch: the first ``probe_size`` test points, whose
    representations at ``probe_layers`` are kept."""

    probe_layers: tuple[int, ...] = (1, 2)
    probe_size: int = 200

    def __post_init__(self):  # checked by ``check`` instead: errors name the config key
        pass

    def check(self, prefix: str, root) -> None:
        for name, message in self.problems():
            raise ConfigError(f"{prefix}.{name}", message)
        require_positive(f"{prefix}.probe_size", self.probe_size)
        if self.mode == "after_interpolation" and self.n_iterates < 3:
            raise ConfigError(f"{prefix}.n_iterates", "needs at least 3 iterates for a dimension")
        if self.probe_size > root.n_test:
            raise ConfigError(
                f"{prefix}.probe_size", f"must be at most {root.n_test} (test points)"
            )
        depth = len(root.model.hidden)
        for i, layer in enumerate(self.probe_layers):
            if not 1 <= layer <= depth:
                raise ConfigError(
                    f"{prefix}.probe_layers[{i}]",
                    f"must be a hidden layer in 1..{depth} (model.hidden)",
                )


@dataclass(frozen=True)
class MeasuresConfig:
    """Measures of each trajectory.

    ``metrics``: ``"euclidean"`` (weight space) and/or ``"loss"`` (ρ_S over ``loss_examples``
    training examples, 0 = all). The magnitude function/dimension grid is t = 10^u/diam for
    ``n_scales`` values of u in ``log10_scale_range``; the dimension slope uses u in
    ``slope_window``. PMag is taken at t = √n and 0.01 on raw distances (n = number of
    iterates). ``alpha``: the exponent of E_α and of the PH dimension, whose subsample sizes are
    ``ph_sizes = [min, max, step]`` (Birdal et al.: 200 to 1000 in steps of 50; at least two
    sizes must fit in the trajectory) with ``ph_repeats`` subsamples per size
    (docs/theory.md#ph-dimension). ``monitor_window``: checkpoints per window of the monitoring
    curve; ``representation_scales``: grid size for probe-representation clouds.
    """

    metrics: tuple[str, ...] = ("euclidean", "loss")
    n_scales: int = 16
    log10_scale_range: tuple[float, ...] = (-1.0, 4.0)
    slope_window: tuple[float, ...] = (0.0, 2.0)
    alpha: float = 1.0
    ph_sizes: tuple[int, ...] = (200, 1000, 50)
    ph_repeats: int = 1
    loss_examples: int = 0
    monitor_window: int = 30
    representation_scales: int = 12

    def check(self, prefix: str, root) -> None:
        n_train = root.n_train
        if not self.metrics:
            raise ConfigError(f"{prefix}.metrics", "must not be empty")
        for i, metric in enumerate(self.metrics):
            require_choice(f"{prefix}.metrics[{i}]", metric, ("euclidean", "loss"))
        for key in ("n_scales", "monitor_window", "representation_scales"):
            if getattr(self, key) < 3:
                raise ConfigError(
                    f"{prefix}.{key}", f"must be at least 3, got {getattr(self, key)}"
                )
        for key in ("log10_scale_range", "slope_window"):
            lo_hi = getattr(self, key)
            if len(lo_hi) != 2 or not lo_hi[0] < lo_hi[1]:
                raise ConfigError(
                    f"{prefix}.{key}", f"must be [low, high] with low < high: {lo_hi}"
                )
        grid = np.linspace(*self.log10_scale_range, self.n_scales)
        window = self.slope_window
        if (((grid >= window[0] - 1e-12) & (grid <= window[1] + 1e-12)).sum()) < 2:
            raise ConfigError(f"{prefix}.slope_window", "holds fewer than two grid scales")
        require_positive(f"{prefix}.alpha", self.alpha)
        self._check_ph(prefix, root)
        if not 0 <= self.loss_examples <= n_train:
            raise ConfigError(
                f"{prefix}.loss_examples", f"must lie in [0, {n_train}] (0 = all training points)"
            )

    def _check_ph(self, prefix: str, root) -> None:
        key = f"{prefix}.ph_sizes"
        if len(self.ph_sizes) != 3:
            raise ConfigError(key, f"must be [min, max, step], got {list(self.ph_sizes)}")
        lo, hi, step = self.ph_sizes
        if lo < 2 or step < 1 or hi < lo:
            raise ConfigError(key, f"needs 2 <= min <= max and step >= 1, got {[lo, hi, step]}")
        tj = root.trajectory
        k = tj.n_iterates if tj.mode == "after_interpolation" else tj.max_steps // tj.every + 1
        if len(range(lo, min(hi, k) + 1, step)) < 2:
            raise ConfigError(key, f"fewer than two sizes fit in the {k} recorded iterates")
        require_positive(f"{prefix}.ph_repeats", self.ph_repeats)


@dataclass(frozen=True)
class StatisticsConfig:
    """How measures are related to the gaps (docs/theory.md#generalisation-statistics).

    ``kendall_variant``: ``"b"`` (tie-corrected, the default) or ``"a"`` (the literature's
    granulated coefficients); ``n_bootstrap`` resamples of the networks give percentile
    intervals at ``level``; ``seed`` draws the resamples (the same for every measure).
    """

    kendall_variant: str = "b"
    n_bootstrap: int = 1000
    level: float = 0.95
    seed: int = 0

    def check(self, prefix: str, root=None) -> None:
        require_choice(f"{prefix}.kendall_variant", self.kendall_variant, ("a", "b"))
        if self.n_bootstrap < 0:
            raise ConfigError(f"{prefix}.n_bootstrap", f"must be >= 0, got {self.n_bootstrap}")
        if not 0.0 < self.level < 1.0:
            raise ConfigError(f"{prefix}.level", f"must lie in (0, 1), got {self.level}")
        if self.seed < 0:
            raise ConfigError(f"{prefix}.seed", f"must be non-negative, got {self.seed}")


@dataclass(frozen=True)
class MagnitudeGeneralizationConfig(ConfigBase):
    """The ``magnitude_generalization`` kind (docs/theory.md#trajectory-protocol)."""

    name: str = "magnitude_generalization"
    data: MGDataConfig = field(default_factory=MGDataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: MGTrainingConfig = field(default_factory=MGTrainingConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    trajectory: TrajectoryConfig = field(default_factory=TrajectoryConfig)
    measures: MeasuresConfig = field(default_factory=MeasuresConfig)
    statistics: StatisticsConfig = field(default_factory=StatisticsConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    @property
    def n_train(self) -> int:
        return self.data.n_train

    @property
    def n_test(self) -> int:
        return self.data.n_test
