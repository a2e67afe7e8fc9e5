"""Arrays of a truncation experiment at s = 0: data, frame, initial adapted parameters, targets
and the flow problem."""

from __future__ import annotations

from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ...core import AdaptedParameters, ClusteredData, pulled_back_targets, random_orthogonal
from ...dynamics import FlowProblem, SolverSettings
from .._config import clusters_from_config
from ._config import TruncationConfig


@dataclass(frozen=True)
class ExperimentSetup:
    """Arrays of one experiment at s = 0.

    ``frame`` is the orthogonal O of W⁽ℓ⁾ = D_ℓ O; ``problem.u = x Oᵀ`` is the data in the common
    frame and ``targets_input`` the targets ỹ_j in input space, ``(Q, M)``. ``problem``,
    ``params0``, ``save_ts`` and ``settings`` are in the precision ``flow.dtype`` (everything is
    computed in float64 first, then rounded once).
    """

    config: TruncationConfig
    data: ClusteredData
    frame: Float[Array, "M M"]
    params0: AdaptedParameters
    problem: FlowProblem
    targets_input: Float[Array, "Q M"]
    save_ts: Float[Array, " T"]
    settings: SolverSettings


def _initial_weights(cfg: TruncationConfig) -> Float[Array, "L M"]:
    net, dim = cfg.network, cfg.data.dim
    if net.d:
        return jnp.asarray(net.d, dtype=float)
    signs = jnp.asarray(net.signs, dtype=float)[:, None]
    return net.weight_scale * signs * jnp.ones((1, dim))


def _initial_thresholds(u: Float[Array, "N M"], d: Float[Array, "L M"], q: float):
    """c_{ℓ,k} at the q-quantile of u_k counted from the truncating side of d_{ℓ,k}."""
    lower = jnp.quantile(u, q, axis=0)
    upper = jnp.quantile(u, 1.0 - q, axis=0)
    return jnp.where(d > 0, lower[None, :], upper[None, :])


def in_precision(tree, dtype):
    """``tree`` with its floating-point array leaves cast to ``dtype`` (``"float32"`` or
    ``"float64"``); other leaves unchanged."""
    dtype = jnp.dtype(dtype)

    def cast(a):
        if eqx.is_array(a) and jnp.issubdtype(a.dtype, jnp.floating):
            return a.astype(dtype)
        return a

    return jax.tree.map(cast, tree)


def setup_experiment(cfg: TruncationConfig) -> ExperimentSetup:
    """Data, frame, initial adapted parameters, targets and the flow problem of ``cfg``."""
    k_data, k_frame, k_out = jax.random.split(jax.random.PRNGKey(cfg.seed), 3)
    dc = cfg.data
    data = clusters_from_config(k_data, dc)
    M, Q = dc.dim, dc.n_classes
    frame = jnp.eye(M) if cfg.network.frame == "identity" else random_orthogonal(k_frame, M)
    u = data.x @ frame.T
    d = _initial_weights(cfg)
    params0 = AdaptedParameters.from_thresholds(
        d, _initial_thresholds(u, d, cfg.network.init_quantile)
    )

    if cfg.targets.kind == "prescribed":
        targets_input = jnp.asarray(cfg.targets.points, dtype=float)
        out_weight, out_bias = jnp.zeros((1, M)), jnp.zeros(1)
        y = jnp.zeros((data.n_points, 1))
    else:
        out_weight = cfg.targets.output_scale / np.sqrt(M) * jax.random.normal(k_out, (Q, M))
        out_bias = jnp.zeros(Q)
        y_classes = jnp.eye(Q)
        W_out_cum = out_weight @ params0.cumulative_weights(frame)[-1]
        b_out_cum = out_weight @ params0.b[-1] + out_bias
        targets_input = pulled_back_targets(W_out_cum, b_out_cum, y_classes)
        y = y_classes[data.labels]
    if not bool(jnp.all(jnp.isfinite(targets_input))):
        raise ValueError("pulled-back targets are not finite (singular output layer?)")
    fc = cfg.flow
    low = in_precision(
        (u, (targets_input @ frame.T)[data.labels], y, out_weight, out_bias), fc.dtype
    )
    problem = FlowProblem(*low, mode=fc.mode, cost=fc.cost)  # sorted in its own precision
    return ExperimentSetup(
        config=cfg,
        data=data,
        frame=frame,
        params0=in_precision(params0, fc.dtype),
        problem=problem,
        targets_input=targets_input,
        save_ts=in_precision(jnp.linspace(0.0, fc.t_final, fc.n_save), fc.dtype),
        settings=in_precision(SolverSettings.from_config(fc), fc.dtype),
    )
