"""Synthetic clustered training data in R^M: points x_{j,i} of class j
(docs/theory.md#notation).

Clusters are Gaussian (standard deviation ``radius`` per coordinate) or uniform in a ball of
radius ``radius``. Centres are laid out

* ``"diagonal"``: centre_j = j · separation · (1, …, 1). Consecutive clusters are ``separation``
  apart *in every coordinate*, so for ball clusters with separation > 2·radius every coordinate
  threshold can touch one cluster at a time (the cluster-separated case of
  docs/theory.md#closed-forms).
* ``"random"``: centres drawn N(0, separation² I) — a generic, possibly overlapping layout.

Points are ordered by class: rows ``j·n_per_class … (j+1)·n_per_class − 1`` belong to class j.
"""

from __future__ import annotations

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ._shapes import Shapes, axis_size


class ClusteredData(eqx.Module):
    """A labelled point cloud.

    Attributes:
        x: ``(N, M)`` points.
        labels: ``(N,)`` class index j ∈ {0, …, Q−1} of each point.
        centers: ``(Q, M)`` cluster centres.
    """

    x: Float[Array, "N M"]
    labels: Int[Array, " N"]
    centers: Float[Array, "Q M"]

    n_points = axis_size("x", 0, "Number of points N.")
    n_classes = axis_size("centers", 0, "Number of classes Q.")
    dim = axis_size("x", 1, "Dimension M of the points.")


def _cluster_centers(
    key: PRNGKeyArray, n_classes: int, dim: int, separation: float, layout: str
) -> Float[Array, "Q M"]:
    if layout == "diagonal":
        return separation * jnp.arange(n_classes, dtype=float)[:, None] * jnp.ones((1, dim))
    if layout == "random":
        return separation * jax.random.normal(key, (n_classes, dim))
    raise ValueError(f"unknown cluster layout {layout!r}; expected 'diagonal' or 'random'")


def make_clusters(
    key: PRNGKeyArray,
    *,
    n_classes: int,
    n_per_class: int,
    dim: int,
    radius: float,
    separation: float,
    distribution: Literal["gaussian", "ball"] = "ball",
    layout: Literal["diagonal", "random"] = "diagonal",
) -> ClusteredData:
    """Draw ``n_classes`` clusters of ``n_per_class`` points each in R^``dim``.

    Args:
        key: one PRNG key; the same key gives the same data.
        radius: ball radius, or per-coordinate standard deviation for ``"gaussian"``.
        separation: distance between consecutive centres per coordinate (``"diagonal"``) or the
            scale of random centres (``"random"``).

    Example:
        >>> import jax
        >>> data = make_clusters(jax.random.PRNGKey(0), n_classes=2, n_per_class=5, dim=3,
        ...                      radius=0.5, separation=3.0)
        >>> data.x.shape, data.labels.tolist()
        ((10, 3), [0, 0, 0, 0, 0, 1, 1, 1, 1, 1])

    Batch axis: refused (one key; vmap over keys for several draws).
    """
    Shapes("make_clusters").key("key", key)
    for name, value in (("n_classes", n_classes), ("n_per_class", n_per_class), ("dim", dim)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not radius > 0:
        raise ValueError(f"radius must be positive, got {radius!r}")
    if not separation >= 0:
        raise ValueError(f"separation must be non-negative, got {separation!r}")
    k_centers, k_dir, k_rad = jax.random.split(key, 3)
    centers = _cluster_centers(k_centers, n_classes, dim, separation, layout)
    shape = (n_classes, n_per_class, dim)
    if distribution == "gaussian":
        offsets = radius * jax.random.normal(k_dir, shape)
    elif distribution == "ball":
        direction = jax.random.normal(k_dir, shape)
        direction = direction / jnp.linalg.norm(direction, axis=-1, keepdims=True)
        r = radius * jax.random.uniform(k_rad, shape[:-1] + (1,)) ** (1.0 / dim)
        offsets = r * direction
    else:
        raise ValueError(f"unknown distribution {distribution!r}; expected 'gaussian' or 'ball'")
    x = (centers[:, None, :] + offsets).reshape(n_classes * n_per_class, dim)
    labels = jnp.repeat(jnp.arange(n_classes), n_per_class)
    return ClusteredData(x=x, labels=labels, centers=centers)
