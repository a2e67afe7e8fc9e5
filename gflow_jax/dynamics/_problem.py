"""The effective-flow problem: data, targets, cost and which parameters flow
(docs/theory.md#effective-flows).

The state is :class:`~gflow_jax.core.AdaptedParameters` ``(d, b)`` in the common frame; the
frame O is frozen.

* ``mode="bias"`` — bias-only cumulative flow ∂_s b⁽ℓ⁾ = −∇_{b⁽ℓ⁾} C, weights frozen. For C_in
  this is ∂_s c_{ℓ,k} = −(n_{ℓ,k}/(N d²_{ℓ,k}))(c_{ℓ,k} − ȳ_{ℓ,k}).
* ``mode="joint"`` — joint (D, b) flow ∂_s b_k = g_k/d_k, ∂_s d_k = c_k g_k/d_k, which conserves
  b_k² + d_k².

The descent direction is −mask ⊙ ∇C; ∇C_in comes from sorted data in O(L·M·log N)
(:mod:`gflow_jax.core._sorted_field`), any other cost from ``jax.grad``. Gradient descent uses
the very same direction, so GD is the flow's explicit Euler discretisation on the clock s = η·k.
"""

from __future__ import annotations

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ..core import (
    AdaptedParameters,
    SortedData,
    adapted_input_cost,
    adapted_output_cost,
    adapted_standard_cost,
    sort_data,
    threshold_gradient,
)
from ..core._shapes import Shapes, axis_size

FlowMode = Literal["bias", "joint"]
CostKind = Literal["input", "standard", "output"]
GradientKind = Literal["sorted", "autodiff"]


def check_problem(s: Shapes, problem: FlowProblem, name: str = "problem.") -> Shapes:
    """The arrays of a :class:`FlowProblem` (``name`` prefixes the names in the messages):
    u, targets ``(N, M)``, y ``(N, Q)``, out_weight ``(Q, M)``, out_bias ``(Q,)``, weights
    ``(N,)``; sizes bound in ``s`` before (e.g. M of the parameters) must agree."""
    s(f"{name}u", problem.u, "N M")
    s(f"{name}targets", problem.targets, "N M")
    s(f"{name}y", problem.y, "N Q")
    s(f"{name}out_weight", problem.out_weight, "Q M")
    s(f"{name}out_bias", problem.out_bias, "Q")
    s(f"{name}weights", problem.weights, "N")
    return s


class FlowProblem(eqx.Module):
    """Everything the effective flow needs besides the parameters, in the rotated frame u = O x.

    Attributes:
        u: ``(N, M)`` training data in the common frame.
        targets: ``(N, M)`` pulled-back target ỹ of each point (common frame), for C_in.
        y: ``(N, Q)`` reference output of each point, for the standard cost.
        out_weight: ``(Q, M)`` output weight W_{L+1} (frozen), for the standard cost.
        out_bias: ``(Q,)`` output bias b_{L+1} (frozen), for the standard cost.
        weights: ``(N,)`` point weights ω, mean 1 (docs/theory.md#notation): all ones by default;
            0 marks padding rows, so problems with different numbers of real points share one
            shape in a vmapped solve and each keeps its own normalisation 1/N.
        sorted: per-coordinate sorted data for the O(L·M·log N) input-cost gradient
            (:mod:`gflow_jax.core._sorted_field`); ``None`` when ``gradient="autodiff"``.
        mode: which parameters flow, ``"bias"`` or ``"joint"``.
        cost: ``"input"`` (C_in), ``"standard"`` (C through the last layer, with W_{L+1} and
            b_{L+1} frozen) or ``"output"`` (C in input-space form with the *cumulative* output
            map frozen: (1/2N) Σ |W⁽ᴸ⁺¹⁾(x̃ − ỹ)|², ``out_weight`` = W⁽ᴸ⁺¹⁾ in the common frame;
            docs/theory.md#effective-flows, flow 4, and #spectral-gap).
        gradient: ``"sorted"`` (exact, from sorted data; input cost only) or ``"autodiff"``
            (``jax.grad`` of the cost). Both give the same field; tests check it.

    Batch axis: refused by the constructor (one problem; a batch of problems is built with
    ``eqx.filter_vmap`` or :func:`~gflow_jax.core.stack`).
    """

    u: Float[Array, "N M"]
    targets: Float[Array, "N M"]
    y: Float[Array, "N Q"]
    out_weight: Float[Array, "Q M"]
    out_bias: Float[Array, " Q"]
    weights: Float[Array, " N"]
    sorted: SortedData | None
    mode: FlowMode = eqx.field(static=True)
    cost: CostKind = eqx.field(static=True)
    gradient: GradientKind = eqx.field(static=True)

    def __init__(
        self,
        u: Float[Array, "N M"],
        targets: Float[Array, "N M"],
        y: Float[Array, "N Q"] | None = None,
        out_weight: Float[Array, "Q M"] | None = None,
        out_bias: Float[Array, " Q"] | None = None,
        *,
        mode: FlowMode = "bias",
        cost: CostKind = "input",
        gradient: GradientKind | None = None,
        weights: Float[Array, " N"] | None = None,
    ):
        Shapes("FlowProblem")("u", u, "N M")
        n_points, dim = u.shape
        self.u = u
        self.targets = targets
        if y is None:  # unused by the cost: zeros of the output dimension, if one is given
            Shapes("FlowProblem")("out_weight", out_weight, "Q M")
            q = 1 if out_weight is None else out_weight.shape[0]
            y = jnp.zeros((n_points, q), u.dtype)
        self.y = y
        self.out_weight = (
            jnp.zeros((self.y.shape[1], dim), u.dtype) if out_weight is None else out_weight
        )
        self.out_bias = jnp.zeros(self.y.shape[1], u.dtype) if out_bias is None else out_bias
        if weights is None:
            self.weights = jnp.ones(n_points, u.dtype)
        else:  # normalised to mean 1: the cost is then Σ ω_i f_i / Σ ω_i
            weights = jnp.asarray(weights, u.dtype)
            if not isinstance(weights, jax.core.Tracer) and not bool(
                jnp.all(jnp.isfinite(weights) & (weights >= 0)) & jnp.any(weights > 0)
            ):
                raise ValueError("point weights must be finite, non-negative and not all zero")
            self.weights = weights * (n_points / jnp.sum(weights))
        self.mode = mode
        self.cost = cost
        if gradient is None:
            gradient = "sorted" if cost == "input" else "autodiff"
        self.gradient = gradient
        self.sorted = None
        check_problem(Shapes("FlowProblem"), self, "")  # before sorting: errors name FlowProblem
        self.sorted = sort_data(u, targets, self.weights) if gradient == "sorted" else None

    def __check_init__(self):
        if self.mode not in ("bias", "joint"):
            raise ValueError(f"flow mode must be 'bias' or 'joint', got {self.mode!r}")
        if self.cost not in ("input", "standard", "output"):
            raise ValueError(f"cost must be 'input', 'standard' or 'output', got {self.cost!r}")
        if self.gradient not in ("sorted", "autodiff"):
            raise ValueError(f"gradient must be 'sorted' or 'autodiff', got {self.gradient!r}")
        if self.gradient == "sorted" and self.cost != "input":
            raise ValueError("the sorted gradient exists for the input-layer cost only")
        check_problem(Shapes("FlowProblem"), self, "")

    n_points = axis_size("u", 0, "Number of points N (padding rows included).")

    def subset(self, index: Int[Array, " B"]) -> FlowProblem:
        """The same problem on the points ``index`` (a minibatch; autodiff gradient, no sort).

        The minibatch keeps the full problem's weights (not renormalised), so its cost
        (1/B) Σ_batch ω_i f_i is an unbiased estimate of the full cost.
        """
        batch = FlowProblem(
            self.u[index],
            self.targets[index],
            self.y[index],
            self.out_weight,
            self.out_bias,
            mode=self.mode,
            cost=self.cost,
            gradient="autodiff",
        )
        return eqx.tree_at(lambda p: p.weights, batch, self.weights[index])

    def loss(self, params: AdaptedParameters) -> Float[Array, ""]:
        """The cost being minimised (C_in or C), a (weighted) mean over the problem's points."""
        if self.cost == "input":
            return adapted_input_cost(params, self.u, self.targets, self.weights)
        if self.cost == "output":
            return adapted_output_cost(params, self.u, self.targets, self.out_weight, self.weights)
        return adapted_standard_cost(
            params, self.u, self.y, self.out_weight, self.out_bias, self.weights
        )

    def mask(self, params: AdaptedParameters) -> AdaptedParameters:
        """1 on the leaves that flow, 0 on the frozen ones."""
        one = jnp.ones_like(params.b)
        return AdaptedParameters(d=one if self.mode == "joint" else jnp.zeros_like(one), b=one)

    def gradient_of_loss(self, params: AdaptedParameters) -> AdaptedParameters:
        """∇loss with respect to (d, b). With ``gradient="sorted"``: from g = ∂C_in/∂c,
        ∇_b = −g/d and ∇_d = −g·c/d (C_in depends on (d, b) only through c = −b/d)."""
        if self.gradient == "autodiff":
            return jax.grad(self.loss)(params)
        c = params.thresholds
        g, _ = threshold_gradient(c, params.d, self.sorted)
        return AdaptedParameters(d=-g * c / params.d, b=-g / params.d)

    def descent_direction(self, params: AdaptedParameters) -> AdaptedParameters:
        """−mask ⊙ ∇loss(params): the shared right-hand side of the flow and of (S)GD."""
        grad = self.gradient_of_loss(params)
        return jax.tree.map(lambda g, m: -g * m, grad, self.mask(params))

    def padded(self, n_rows: int) -> FlowProblem:
        """The same problem with zero-weight rows appended up to ``n_rows`` (copies of its last
        row): the same cost, gradient and minibatches (what lets problems with different numbers
        of points share one shape in a vmapped batch)."""
        extra = n_rows - self.n_points
        if extra < 0:
            raise ValueError(f"cannot pad {self.n_points} rows down to {n_rows}")
        if extra == 0:
            return self

        def pad(a):
            return jnp.concatenate([a, jnp.repeat(a[-1:], extra, axis=0)])

        return FlowProblem(
            pad(self.u),
            pad(self.targets),
            pad(self.y),
            self.out_weight,
            self.out_bias,
            mode=self.mode,
            cost=self.cost,
            gradient=self.gradient,
            weights=jnp.concatenate([self.weights, jnp.zeros(extra, self.weights.dtype)]),
        )
