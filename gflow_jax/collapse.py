"""Neural-collapse measures (MATH.md, Neural collapse measures)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

__all__ = ["class_means", "nc1_input"]


def class_means(
    x: Float[Array, "N M"], labels: Int[Array, " N"], n_classes: int
) -> Float[Array, "Q M"]:
    """Mean of the points of each class, ``(Q, M)`` (an empty class gives zeros)."""
    one_hot = jax.nn.one_hot(labels, n_classes, dtype=x.dtype)  # (N, Q)
    counts = jnp.sum(one_hot, axis=0)
    return (one_hot.T @ x) / jnp.maximum(counts, 1)[:, None]


def nc1_input(x_tilde: Float[Array, "N M"], labels: Int[Array, " N"], n_classes: int):
    """NC1_in = (1/N) Σ_{j,i} |x̃_{j,i} − mean_i x̃_{j,i}|²: within-class spread of the truncated
    data in input space (0 exactly when every cluster is mapped to one point)."""
    means = class_means(x_tilde, labels, n_classes)
    return jnp.mean(jnp.sum((x_tilde - means[labels]) ** 2, axis=-1))
