"""Configuration of the ``sgd_vs_flow`` kind, and its initial network."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp

from ...core import AdaptedParameters, ReLUNetwork, random_orthogonal
from .._config import (
    ClusterConfig,
    CollapseConfig,
    ConfigBase,
    ConfigError,
    FlowConfig,
    GDConfig,
    OutputConfig,
    require_choice,
    require_non_negative,
    require_positive,
)


@dataclass(frozen=True)
class SvfDataConfig(ClusterConfig):
    """Clusters (:class:`~gflow_jax.experiments.ClusterConfig`) in R^M, M = ``dim`` (= the hidden
    width); ``center`` subtracts the mean of all points."""

    center: bool = True


@dataclass(frozen=True)
class SvfNetworkConfig:
    """Initial network with ``layers`` square hidden layers of width M.

    ``init = "he"``: W_ℓ ~ N(0, weight_scale²·2/M) entrywise, b_ℓ ~ N(0, bias_scale²).
    ``init = "adapted"``: W⁽ℓ⁾ = D_ℓO with a random orthogonal O, d_{ℓ,k} = ±weight_scale (signs
    alternating +, −, + … over layers) and thresholds at the ``init_quantile`` of the data from
    the truncating side (the starting point of the effective theory).
    Output layer: W_{L+1} ~ N(0, output_scale²/M), b_{L+1} = 0.
    """

    layers: int = 2
    init: str = "he"
    weight_scale: float = 1.0
    bias_scale: float = 0.1
    output_scale: float = 0.5
    init_quantile: float = 0.15

    def check(self, prefix: str, root=None) -> None:
        require_positive(f"{prefix}.layers", self.layers)
        require_choice(f"{prefix}.init", self.init, ("he", "adapted"))
        require_positive(f"{prefix}.weight_scale", self.weight_scale)
        require_positive(f"{prefix}.output_scale", self.output_scale)
        require_non_negative(f"{prefix}.bias_scale", self.bias_scale)
        if not 0.0 <= self.init_quantile <= 1.0:
            raise ConfigError(
                f"{prefix}.init_quantile", f"must lie in [0, 1], got {self.init_quantile}"
            )


@dataclass(frozen=True)
class SvfTargetConfig:
    """Reference outputs y_j = scale·e_j (one-hot, Q = n_classes)."""

    scale: float = 1.0

    def check(self, prefix: str, root=None) -> None:
        require_positive(f"{prefix}.scale", self.scale)


@dataclass(frozen=True)
class SvfSGDConfig:
    """Minibatch SGD at every (η, B) of ``etas`` × ``batch_sizes``; ``enabled = false`` skips."""

    enabled: bool = True
    etas: tuple[float, ...] = (0.2, 0.05)
    batch_sizes: tuple[int, ...] = (6, 20)


@dataclass(frozen=True)
class SgdVsFlowConfig(ConfigBase):
    """The ``sgd_vs_flow`` kind. ``[flow]``: the gradient flow and the common save grid. ReLU
    gradient flow can *slide* along a face (the field points into the face from both sides; see
    docs/theory.md#sliding); ``flow.dtmin`` > 0 forces steps of at least ``dtmin`` there (error
    O(dtmin), as GD with η = dtmin on the sliding stretch), so the solve finishes.
    ``[collapse]``: the convention of the Papyan NC measures (:class:`CollapseConfig`)."""

    name: str = "sgd_vs_flow"
    seed: int = 0
    data: SvfDataConfig = field(default_factory=SvfDataConfig)
    network: SvfNetworkConfig = field(default_factory=SvfNetworkConfig)
    targets: SvfTargetConfig = field(default_factory=SvfTargetConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    gd: GDConfig = field(default_factory=GDConfig)
    sgd: SvfSGDConfig = field(default_factory=SvfSGDConfig)
    collapse: CollapseConfig = field(default_factory=CollapseConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def validate(self) -> None:
        # every option of the Papyan measures written out, so the run records all four
        object.__setattr__(self, "collapse", self.collapse.resolved())
        if self.data.n_classes < 2:
            raise ConfigError(
                "data.n_classes", f"needs at least 2 classes, got {self.data.n_classes}"
            )
        sgd, batches = [], []
        if self.sgd.enabled:
            if not self.sgd.etas or not self.sgd.batch_sizes:
                raise ConfigError("sgd", "needs etas and batch_sizes (or enabled = false)")
            sgd = [(f"sgd.etas[{i}]", e) for i, e in enumerate(self.sgd.etas)]
            batches = [(f"sgd.batch_sizes[{i}]", b) for i, b in enumerate(self.sgd.batch_sizes)]
        etas = [(f"gd.etas[{i}]", e) for i, e in enumerate(self.gd.etas)] + sgd
        self.adjust_save_grid(etas, batches, self.data.n_points)


def initial_network(cfg: SgdVsFlowConfig, x: jax.Array, key) -> ReLUNetwork:
    """The network at s = 0 (see :class:`SvfNetworkConfig`) for data ``x`` ``(N, M)``."""
    n, M, Q = cfg.network, cfg.data.dim, cfg.data.n_classes
    k_w, k_b, k_out, k_frame = jax.random.split(key, 4)
    out_weight = n.output_scale / math.sqrt(M) * jax.random.normal(k_out, (Q, M))
    out_bias = jnp.zeros(Q)
    if n.init == "he":
        weights = n.weight_scale * math.sqrt(2.0 / M) * jax.random.normal(k_w, (n.layers, M, M))
        biases = n.bias_scale * jax.random.normal(k_b, (n.layers, M))
        return ReLUNetwork(weights, biases, out_weight, out_bias)
    frame = random_orthogonal(k_frame, M)
    signs = jnp.where(jnp.arange(n.layers) % 2 == 0, 1.0, -1.0)[:, None]
    d = n.weight_scale * signs * jnp.ones((1, M))
    u = x @ frame.T
    c = jnp.where(
        d > 0,
        jnp.quantile(u, n.init_quantile, axis=0)[None, :],
        jnp.quantile(u, 1.0 - n.init_quantile, axis=0)[None, :],
    )
    return AdaptedParameters.from_thresholds(d, c).to_network(frame, out_weight, out_bias)
