"""Small builders shared by the tests."""

import jax
import jax.numpy as jnp

from gflow_jax.core import AdaptedParameters, ReLUNetwork
from gflow_jax.dynamics import FlowProblem


def random_network(key, L=3, M=4, Q=2, scale=1.0) -> ReLUNetwork:
    kw, kb, ko, kob = jax.random.split(key, 4)
    weights = jnp.eye(M)[None] + 0.5 * jax.random.normal(kw, (L, M, M)) / jnp.sqrt(M)
    return ReLUNetwork(
        weights=scale * weights,
        biases=0.5 * jax.random.normal(kb, (L, M)),
        out_weight=jax.random.normal(ko, (Q, M)),
        out_bias=jax.random.normal(kob, (Q,)),
    )


def random_orthogonal(key, M):
    q, r = jnp.linalg.qr(jax.random.normal(key, (M, M)))
    return q * jnp.sign(jnp.diag(r))[None, :]


def input_problem(u, targets, mode="bias") -> FlowProblem:
    N, M = u.shape
    return FlowProblem(
        u=u,
        targets=targets,
        y=jnp.zeros((N, 1)),
        out_weight=jnp.zeros((1, M)),
        out_bias=jnp.zeros(1),
        mode=mode,
    )


def sweep_problem(mode="bias", d=1.0, target=1.5):
    """Oracle (docs/theory.md#oracles): N_j = 10 of N = 25 points (M = 1, L = 1), d = 1,
    ỹ = 1.5, a sweep from below. The other 15 points sit far above the threshold and are never
    touched."""
    cluster = jnp.linspace(0.0, 1.0, 10)
    others = jnp.linspace(5.0, 6.0, 15)
    u = jnp.concatenate([cluster, others])[:, None]
    targets = jnp.concatenate([jnp.full(10, target), jnp.full(15, 5.5)])[:, None]
    params0 = AdaptedParameters.from_thresholds(jnp.array([[d]]), jnp.array([[0.35]]))
    return input_problem(u, targets, mode), params0


#: overrides that shrink a truncation config to a few seconds (N = 12 points, T = 9 saves)
SMALL_TRUNCATION = [
    "data.points_per_class=6",
    "flow.t_final=4.0",
    "flow.n_save=9",
    "gd.etas=[0.1]",
    "sgd.eta=0.1",
    "sgd.batch_size=4",
    "output.progress=false",
]
