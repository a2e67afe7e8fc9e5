"""Neural-collapse measures (docs/theory.md#neural-collapse).

* :func:`nc1_input` — NC1 in input space, the within-class spread of the truncated data.
* :func:`papyan_collapse` — the measures of Papyan, Han and Donoho (2020) on last-layer features
  ``h`` (``(N, M)``) with the linear classifier ``W h + b`` (``W`` of shape ``(Q, M)``).

Papyan measures, with class means μ_c, a global mean μ_G, centred means M̄_c = μ_c − μ_G,
Σ_W = (1/N) Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ and Σ_B = (1/Q) Σ_c M̄_c M̄_cᵀ:

=====================  ===================================================  ===========
measure                definition                                           collapsed
=====================  ===================================================  ===========
``nc1``                tr(Σ_W Σ_B⁺)/Q                                       0
``nc2_equinorm``       std_c ‖M̄_c‖ / mean_c ‖M̄_c‖ (coefficient of variation)  0
``nc2_equinorm_w``     the same for the classifier rows ‖W_c‖                0
``nc2_equiangle``      std over the pairs c < c' of cos∠(M̄_c, M̄_c')          0
``nc2_maxangle``       mean over c ≠ c' of |cos∠(M̄_c, M̄_c') + 1/(Q−1)|        0
``nc3``                ‖W/‖W‖_F − M̄/‖M̄‖_F‖_F, or its square (self-duality)    0
``nc4``                nearest class mean vs the network's argmax class:     1 or 0
                       fraction of points where they agree, or disagree
=====================  ===================================================  ===========

"Collapsed" means: features equal to their class means, the centred means a simplex
equiangular tight frame (equal norms, pairwise cosine −1/(Q−1)), and W ∝ M̄.

Four details differ between implementations; each is an option of :func:`papyan_collapse`
(:class:`CollapseConvention`), and the two named conventions fix all four:

==============  ============================  ==========================================
option          ``"toolkit"`` (the default)   ``"papyan"`` (Papyan, Han and Donoho 2020)
==============  ============================  ==========================================
``global_mean`` ``"class_means"``: mean_c μ_c  ``"features"``: mean_i h_i
``ddof``        0 (population std in NC2)     1 (sample std, as ``torch.std``)
``nc3``         ``"norm"``                     ``"squared"``
``nc4``         ``"agreement"`` (→ 1)          ``"mismatch"`` (→ 0)
==============  ============================  ==========================================

With balanced classes the two global means coincide; agreement = 1 − mismatch always.
The default stays the toolkit's, so results recorded before the options existed keep their
meaning (docs/theory.md#neural-collapse says why).

When all class means coincide (Σ_B = 0, e.g. a dead network mapping every input to one point)
the measures are undefined and come out NaN — never a misleading 0 from Σ_B⁺ = 0. With
``ddof = 1`` and Q = 2 the equiangularity (a std over one pair) is NaN as well.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ..core._shapes import Shapes

GLOBAL_MEANS = ("class_means", "features")
NC3_FORMS = ("norm", "squared")
NC4_FORMS = ("agreement", "mismatch")


@dataclass(frozen=True)
class CollapseConvention:
    """How :func:`papyan_collapse` computes the four details that differ between
    implementations (module docstring).

    Attributes:
        global_mean: ``"class_means"`` (μ_G = mean of the class means) or ``"features"``
            (μ_G = mean of all features, Papyan et al.).
        ddof: 0 (population) or 1 (sample) standard deviations in NC2.
        nc3: ``"norm"`` (‖W/‖W‖_F − M̄/‖M̄‖_F‖_F) or ``"squared"`` (its square, Papyan et al.).
        nc4: ``"agreement"`` (fraction of points where the nearest class mean and the
            network's argmax agree, → 1 at collapse) or ``"mismatch"`` (where they disagree,
            → 0; Papyan et al.).
    """

    global_mean: str = "class_means"
    ddof: int = 0
    nc3: str = "norm"
    nc4: str = "agreement"

    def __post_init__(self):
        for name, value, choices in (
            ("global_mean", self.global_mean, GLOBAL_MEANS),
            ("nc3", self.nc3, NC3_FORMS),
            ("nc4", self.nc4, NC4_FORMS),
        ):
            if value not in choices:
                raise ValueError(
                    f"papyan_collapse: {name} must be one of {', '.join(map(repr, choices))}, "
                    f"got {value!r}"
                )
        if isinstance(self.ddof, bool) or self.ddof not in (0, 1):
            raise ValueError(f"papyan_collapse: ddof must be 0 or 1, got {self.ddof!r}")

    def as_dict(self) -> dict:
        """The four options, JSON-ready (what a run records)."""
        return dataclasses.asdict(self)


#: the named conventions: the toolkit's default and that of Papyan, Han and Donoho (2020)
CONVENTIONS = {
    "toolkit": CollapseConvention(),
    "papyan": CollapseConvention(global_mean="features", ddof=1, nc3="squared", nc4="mismatch"),
}


def collapse_convention(
    convention: str | CollapseConvention = "toolkit",
    *,
    global_mean: str | None = None,
    ddof: int | None = None,
    nc3: str | None = None,
    nc4: str | None = None,
) -> CollapseConvention:
    """A named convention (``"toolkit"`` or ``"papyan"``, or a :class:`CollapseConvention`)
    with any of the four options overridden (``None``: the convention's own).

    Example:
        >>> collapse_convention("papyan", nc4="agreement")
        CollapseConvention(global_mean='features', ddof=1, nc3='squared', nc4='agreement')
    """
    if isinstance(convention, str):
        if convention not in CONVENTIONS:
            raise ValueError(
                f"papyan_collapse: convention must be one of "
                f"{', '.join(map(repr, CONVENTIONS))} or a CollapseConvention, got {convention!r}"
            )
        convention = CONVENTIONS[convention]
    if not isinstance(convention, CollapseConvention):
        raise ValueError(
            f"papyan_collapse: convention must be a name or a CollapseConvention, got "
            f"{type(convention).__name__}"
        )
    changes = dict(global_mean=global_mean, ddof=ddof, nc3=nc3, nc4=nc4)
    return dataclasses.replace(convention, **{k: v for k, v in changes.items() if v is not None})


def _check_labelled(function: str, name: str, x, labels, n_classes: int) -> Shapes:
    if isinstance(n_classes, bool) or int(n_classes) != n_classes or n_classes < 1:
        raise ValueError(f"{function}: n_classes must be a positive integer, got {n_classes!r}")
    s = Shapes(function)
    s(name, x, "N M")
    s("labels", labels, "N")
    return s


def class_means(
    x: Float[Array, "N M"], labels: Int[Array, " N"], n_classes: int
) -> Float[Array, "Q M"]:
    """Mean of the points of each class, ``(Q, M)`` (an empty class gives zeros); ``x``
    ``(N, M)``, ``labels`` ``(N,)``. Batch axis: refused (vmap over it)."""
    _check_labelled("class_means", "x", x, labels, n_classes)
    return _class_means(x, labels, n_classes)


def _class_means(x, labels, n_classes):
    one_hot = jax.nn.one_hot(labels, n_classes, dtype=x.dtype)  # (N, Q)
    counts = jnp.sum(one_hot, axis=0)
    return (one_hot.T @ x) / jnp.maximum(counts, 1)[:, None]


def nc1_input(x_tilde: Float[Array, "N M"], labels: Int[Array, " N"], n_classes: int):
    """NC1_in = (1/N) Σ_{j,i} |x̃_{j,i} − mean_i x̃_{j,i}|²: within-class spread of the truncated
    data ``x_tilde`` ``(N, M)`` in input space (0 exactly when every cluster is mapped to one
    point); ``labels`` ``(N,)``. Batch axis: refused (vmap over it)."""
    _check_labelled("nc1_input", "x_tilde", x_tilde, labels, n_classes)
    means = _class_means(x_tilde, labels, n_classes)
    return jnp.mean(jnp.sum((x_tilde - means[labels]) ** 2, axis=-1))


class CollapseMeasures(eqx.Module):
    """Papyan NC1–NC4 (see the module docstring); every leaf has the same (batch) shape.
    ``convention`` records how they were computed (:class:`CollapseConvention`)."""

    nc1: Float[Array, "*batch"]
    nc2_equinorm: Float[Array, "*batch"]
    nc2_equinorm_w: Float[Array, "*batch"]
    nc2_equiangle: Float[Array, "*batch"]
    nc2_maxangle: Float[Array, "*batch"]
    nc3: Float[Array, "*batch"]
    nc4: Float[Array, "*batch"]
    convention: CollapseConvention = eqx.field(static=True, default=CollapseConvention())


def _std(v: Float[Array, " K"], ddof: Float[Array, ""]) -> Float[Array, ""]:
    """Standard deviation with a traced ``ddof`` (NaN when K − ddof ≤ 0)."""
    dof = v.shape[0] - ddof
    mean_square = jnp.sum((v - jnp.mean(v)) ** 2) / jnp.where(dof > 0, dof, jnp.nan)
    return jnp.sqrt(mean_square)


def papyan_collapse(
    features: Float[Array, "N M"],
    labels: Int[Array, " N"],
    n_classes: int,
    weight: Float[Array, "Q M"],
    bias: Float[Array, " Q"],
    *,
    convention: str | CollapseConvention = "toolkit",
    global_mean: str | None = None,
    ddof: int | None = None,
    nc3: str | None = None,
    nc4: str | None = None,
) -> CollapseMeasures:
    """Papyan–Han–Donoho neural-collapse measures of last-layer ``features``
    (docs/theory.md#neural-collapse).

    Args:
        features: ``(N, M)`` last-layer features h_i = x⁽ᴸ⁾_i.
        labels: ``(N,)`` classes in ``{0, …, n_classes − 1}``; every class must occur.
        n_classes: Q ≥ 2.
        weight: ``(Q, M)`` classifier W_{L+1}.
        bias: ``(Q,)`` classifier bias b_{L+1} (used by NC4 only).
        convention: ``"toolkit"`` (default), ``"papyan"`` or a :class:`CollapseConvention`;
            each of the next four overrides one of its options (``None``: the convention's).
        global_mean: ``"class_means"`` (μ_G = mean of the class means) or ``"features"``
            (μ_G = mean of all features).
        ddof: 0 or 1, the delta degrees of freedom of the standard deviations in NC2.
        nc3: ``"norm"`` or ``"squared"``.
        nc4: ``"agreement"`` (→ 1 at collapse) or ``"mismatch"`` (→ 0).

    Returns:
        :class:`CollapseMeasures` of scalars, its ``convention`` the options used. Σ_B has
        rank ≤ Q − 1; its Moore–Penrose pseudo-inverse (``jnp.linalg.pinv`` default cut-off)
        is used.

    Batch axis: refused on every argument (vmap over a batch, as
    :func:`~gflow_jax.diagnostics.network_diagnostics` does over saved times).
    """
    if isinstance(n_classes, bool) or int(n_classes) != n_classes or n_classes < 2:
        raise ValueError(
            f"papyan_collapse: neural-collapse measures need at least 2 classes, got {n_classes}"
        )
    conv = collapse_convention(convention, global_mean=global_mean, ddof=ddof, nc3=nc3, nc4=nc4)
    s = Shapes("papyan_collapse", Q=n_classes)
    s("features", features, "N M")
    s("labels", labels, "N")
    s("weight", weight, "Q M")
    s("bias", bias, "Q")
    # the options enter as numbers, so every convention shares one compiled program
    flags = jnp.array(
        [conv.global_mean == "features", conv.ddof, conv.nc3 == "squared", conv.nc4 == "mismatch"],
        dtype=jnp.result_type(float),
    )
    values = _papyan(features, labels, weight, bias, flags, int(n_classes))
    return CollapseMeasures(**values, convention=conv)


@eqx.filter_jit
def _papyan(features, labels, weight, bias, flags, Q: int) -> dict:
    features_mean, ddof, squared, mismatch = flags
    means = _class_means(features, labels, Q)  # (Q, M)
    mu_g = jnp.where(features_mean > 0, jnp.mean(features, axis=0), jnp.mean(means, axis=0))
    centred = means - mu_g[None, :]  # M̄, (Q, M)
    within = features - means[labels]
    sigma_w = within.T @ within / features.shape[0]
    sigma_b = centred.T @ centred / Q
    nc1 = jnp.trace(sigma_w @ jnp.linalg.pinv(sigma_b, hermitian=True)) / Q
    nc1 = jnp.where(jnp.trace(sigma_b) > 0, nc1, jnp.nan)  # Σ_B = 0: undefined, not 0

    norms = jnp.linalg.norm(centred, axis=-1)
    unit = centred / norms[:, None]
    upper = jnp.triu_indices(Q, 1)
    cos = (unit @ unit.T)[upper]  # the Q(Q−1)/2 distinct pairs
    w_norms = jnp.linalg.norm(weight, axis=-1)

    gap = weight / jnp.linalg.norm(weight) - centred / jnp.linalg.norm(centred)
    gap2 = jnp.sum(gap**2)

    nearest = jnp.argmin(jnp.sum((features[:, None, :] - means[None]) ** 2, axis=-1), axis=-1)
    predicted = jnp.argmax(features @ weight.T + bias[None, :], axis=-1)
    agree = jnp.mean((nearest == predicted).astype(features.dtype))
    return dict(
        nc1=nc1,
        nc2_equinorm=_std(norms, ddof) / jnp.mean(norms),
        nc2_equinorm_w=_std(w_norms, ddof) / jnp.mean(w_norms),
        nc2_equiangle=_std(cos, ddof),
        nc2_maxangle=jnp.mean(jnp.abs(cos + 1.0 / (Q - 1))),
        nc3=jnp.where(squared > 0, gap2, jnp.sqrt(gap2)),
        nc4=jnp.where(mismatch > 0, 1.0 - agree, agree),
    )
