"""Neural-collapse measures (docs/theory.md#neural-collapse).

* :func:`nc1_input` — NC1 in input space, the within-class spread of the truncated data.
* :func:`papyan_collapse` — the measures of Papyan, Han and Donoho (2020) on last-layer features
  ``h`` (``(N, M)``) with the linear classifier ``W h + b`` (``W`` of shape ``(Q, M)``).

Papyan measures, with class means μ_c, global mean μ_G (the mean of the class means; it equals the
mean of all features for balanced classes), centred means M̄_c = μ_c − μ_G,
Σ_W = (1/N) Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ and Σ_B = (1/Q) Σ_c M̄_c M̄_cᵀ:

=====================  ===================================================  ===========
measure                definition                                           collapsed
=====================  ===================================================  ===========
``nc1``                tr(Σ_W Σ_B⁺)/Q                                       0
``nc2_equinorm``       std_c ‖M̄_c‖ / mean_c ‖M̄_c‖ (coefficient of variation)  0
``nc2_equinorm_w``     the same for the classifier rows ‖W_c‖                0
``nc2_equiangle``      std over c ≠ c' of cos∠(M̄_c, M̄_c')                     0
``nc2_maxangle``       mean over c ≠ c' of |cos∠(M̄_c, M̄_c') + 1/(Q−1)|        0
``nc3``                ‖W/‖W‖_F − M̄/‖M̄‖_F‖_F (self-duality)                  0
``nc4``                fraction of points whose nearest class mean is the    1
                       network's argmax class (agreement, not mismatch)
=====================  ===================================================  ===========

"Collapsed" means: features equal to their class means, the centred means a simplex
equiangular tight frame (equal norms, pairwise cosine −1/(Q−1)), and W ∝ M̄.

When all class means coincide (Σ_B = 0, e.g. a dead network mapping every input to one point)
the measures are undefined and come out NaN — never a misleading 0 from Σ_B⁺ = 0.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int


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


class CollapseMeasures(eqx.Module):
    """Papyan NC1–NC4 (see the module docstring); every leaf has the same (batch) shape."""

    nc1: Float[Array, "*batch"]
    nc2_equinorm: Float[Array, "*batch"]
    nc2_equinorm_w: Float[Array, "*batch"]
    nc2_equiangle: Float[Array, "*batch"]
    nc2_maxangle: Float[Array, "*batch"]
    nc3: Float[Array, "*batch"]
    nc4: Float[Array, "*batch"]


def _coefficient_of_variation(v: Float[Array, " Q"]) -> Float[Array, ""]:
    return jnp.std(v) / jnp.mean(v)


@eqx.filter_jit
def papyan_collapse(
    features: Float[Array, "N M"],
    labels: Int[Array, " N"],
    n_classes: int,
    weight: Float[Array, "Q M"],
    bias: Float[Array, " Q"],
) -> CollapseMeasures:
    """Papyan–Han–Donoho neural-collapse measures of last-layer ``features``
    (docs/theory.md#neural-collapse).

    Args:
        features: ``(N, M)`` last-layer features h_i = x⁽ᴸ⁾_i.
        labels: ``(N,)`` classes in ``{0, …, n_classes − 1}``; every class must occur.
        n_classes: Q ≥ 2.
        weight: ``(Q, M)`` classifier W_{L+1}.
        bias: ``(Q,)`` classifier bias b_{L+1} (used by NC4 only).

    Returns:
        :class:`CollapseMeasures` of scalars. Σ_B has rank ≤ Q − 1; its Moore–Penrose
        pseudo-inverse (``jnp.linalg.pinv`` default cut-off) is used.
    """
    if n_classes < 2:
        raise ValueError(f"neural-collapse measures need at least 2 classes, got {n_classes}")
    Q = n_classes
    means = class_means(features, labels, Q)  # (Q, M)
    centred = means - jnp.mean(means, axis=0, keepdims=True)  # M̄, (Q, M)
    within = features - means[labels]
    sigma_w = within.T @ within / features.shape[0]
    sigma_b = centred.T @ centred / Q
    nc1 = jnp.trace(sigma_w @ jnp.linalg.pinv(sigma_b, hermitian=True)) / Q
    nc1 = jnp.where(jnp.trace(sigma_b) > 0, nc1, jnp.nan)  # Σ_B = 0: undefined, not 0

    norms = jnp.linalg.norm(centred, axis=-1)
    unit = centred / norms[:, None]
    cos = unit @ unit.T
    off = ~jnp.eye(Q, dtype=bool)
    n_off = Q * (Q - 1)
    cos_mean = jnp.sum(jnp.where(off, cos, 0.0)) / n_off
    equiangle = jnp.sqrt(jnp.sum(jnp.where(off, (cos - cos_mean) ** 2, 0.0)) / n_off)
    maxangle = jnp.sum(jnp.where(off, jnp.abs(cos + 1.0 / (Q - 1)), 0.0)) / n_off

    nc3 = jnp.linalg.norm(weight / jnp.linalg.norm(weight) - centred / jnp.linalg.norm(centred))

    nearest = jnp.argmin(jnp.sum((features[:, None, :] - means[None]) ** 2, axis=-1), axis=-1)
    predicted = jnp.argmax(features @ weight.T + bias[None, :], axis=-1)
    nc4 = jnp.mean((nearest == predicted).astype(features.dtype))
    return CollapseMeasures(
        nc1=nc1,
        nc2_equinorm=_coefficient_of_variation(norms),
        nc2_equinorm_w=_coefficient_of_variation(jnp.linalg.norm(weight, axis=-1)),
        nc2_equiangle=equiangle,
        nc2_maxangle=maxangle,
        nc3=nc3,
        nc4=nc4,
    )
