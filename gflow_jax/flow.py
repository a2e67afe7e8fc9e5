"""Effective gradient flow of the adapted parameters, integrated with diffrax (MATH.md Part A).

The state is :class:`~gflow_jax.network.AdaptedParameters` ``(d, b)`` in the common frame; the
frame O is frozen. A :class:`FlowProblem` fixes the data, the targets, the cost and which
parameters flow:

* ``mode="bias"`` — bias-only cumulative flow ∂_s b⁽ℓ⁾ = −∇_{b⁽ℓ⁾} C, weights frozen. For C_in
  this is ∂_s c_{ℓ,k} = −(n_{ℓ,k}/(N d²_{ℓ,k}))(c_{ℓ,k} − ȳ_{ℓ,k}).
* ``mode="joint"`` — joint (D, b) flow ∂_s b_k = g_k/d_k, ∂_s d_k = c_k g_k/d_k, which conserves
  b_k² + d_k².

The vector field is −mask ⊙ ∇C; ∇C_in comes from sorted data in O(L·M·log N)
(:mod:`gflow_jax.sorted_field`), any other cost from ``jax.grad``. Gradient descent in
:mod:`gflow_jax.training` uses the very same masked gradient, so GD is this flow's explicit Euler
discretisation on the clock s = η·k.
"""

from __future__ import annotations

from typing import Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from .costs import (
    adapted_input_cost,
    adapted_input_cost_gradient,
    adapted_output_cost,
    adapted_standard_cost,
)
from .network import AdaptedParameters
from .sorted_field import SortedData, sort_data, threshold_gradient

__all__ = [
    "FlowProblem",
    "FlowSolution",
    "SolverSettings",
    "closed_form_vector_field",
    "integrate_gradient_flow",
    "solve_flow",
    "vector_field",
]

FlowMode = Literal["bias", "joint"]
CostKind = Literal["input", "standard", "output"]
GradientKind = Literal["sorted", "autodiff"]


class FlowProblem(eqx.Module):
    """Everything the effective flow needs besides the parameters, in the rotated frame u = O x.

    Attributes:
        u: ``(N, M)`` training data in the common frame.
        targets: ``(N, M)`` pulled-back target ỹ of each point (common frame), for C_in.
        y: ``(N, Q)`` reference output of each point, for the standard cost.
        out_weight: ``(Q, M)`` output weight W_{L+1} (frozen), for the standard cost.
        out_bias: ``(Q,)`` output bias b_{L+1} (frozen), for the standard cost.
        weights: ``(N,)`` point weights ω, mean 1 (:mod:`gflow_jax.costs`): all ones by default;
            0 marks padding rows, so problems with different numbers of real points share one
            shape in a vmapped solve and each keeps its own normalisation 1/N.
        sorted: per-coordinate sorted data for the O(L·M·log N) input-cost gradient
            (:mod:`gflow_jax.sorted_field`); ``None`` when ``gradient="autodiff"``.
        mode: which parameters flow, ``"bias"`` or ``"joint"``.
        cost: ``"input"`` (C_in), ``"standard"`` (C through the last layer, with W_{L+1} and
            b_{L+1} frozen) or ``"output"`` (C in input-space form with the *cumulative* output
            map frozen: (1/2N) Σ |W⁽ᴸ⁺¹⁾(x̃ − ỹ)|², ``out_weight`` = W⁽ᴸ⁺¹⁾ in the common frame;
            MATH.md effective flow 4 and the spectral gap).
        gradient: ``"sorted"`` (exact, from sorted data; input cost only) or ``"autodiff"``
            (``jax.grad`` of the cost). Both give the same field; tests check it.
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
        n_points, dim = u.shape
        self.u = u
        self.targets = targets
        self.y = jnp.zeros((n_points, 1), u.dtype) if y is None else y
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
        if self.u.shape != self.targets.shape:
            raise ValueError(
                f"targets must have the data's shape {self.u.shape}, got {self.targets.shape}"
            )
        if self.weights.shape != self.u.shape[:1]:
            raise ValueError(
                f"weights must have shape ({self.u.shape[0]},), got {self.weights.shape}"
            )

    @property
    def n_points(self) -> int:
        return self.u.shape[0]

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


def vector_field(s: Float[Array, ""], params: AdaptedParameters, problem: FlowProblem):
    """diffrax vector field ∂_s params = −mask ⊙ ∇C(params) (time-independent)."""
    del s
    return problem.descent_direction(params)


def closed_form_vector_field(
    s: Float[Array, ""], params: AdaptedParameters, problem: FlowProblem
) -> AdaptedParameters:
    """The same vector field from the closed-form gradient of C_in (MATH.md, Gradient)."""
    del s
    if problem.cost != "input":
        raise ValueError("the closed-form field is implemented for the input-layer cost only")
    grad = adapted_input_cost_gradient(params, problem.u, problem.targets, problem.weights)
    return jax.tree.map(lambda g, m: -g * m, grad, problem.mask(params))


class SolverSettings(eqx.Module):
    """Adaptive-step settings for a piecewise-smooth field (DESIGN.md numerical practice).

    ``rtol``/``atol``/``pcoeff``/``icoeff``/``dt0`` are arrays, so changing them does not
    recompile; ``solver``, ``max_steps`` (buffer sizes; counts rejected steps too) and ``dtmin``
    (0 = no lower bound; diffrax's controller behaves differently with any dtmin) are static.
    ``solver="euler"`` takes fixed steps ``dt0`` (explicit Euler = full-batch GD with η = dt0).
    """

    rtol: Float[Array, ""] = eqx.field(default=1e-8, converter=jnp.asarray)
    atol: Float[Array, ""] = eqx.field(default=1e-10, converter=jnp.asarray)
    pcoeff: Float[Array, ""] = eqx.field(default=0.3, converter=jnp.asarray)
    icoeff: Float[Array, ""] = eqx.field(default=0.3, converter=jnp.asarray)
    dtmin: float = eqx.field(static=True, default=0.0)
    dt0: Float[Array, ""] = eqx.field(default=1e-3, converter=jnp.asarray)
    solver: Literal["tsit5", "dopri5", "dopri8", "euler"] = eqx.field(static=True, default="tsit5")
    max_steps: int = eqx.field(static=True, default=100_000)

    @classmethod
    def from_config(cls, section) -> SolverSettings:
        """From a config's ``[flow]`` section: any object with the attributes ``rtol``,
        ``atol``, ``pcoeff``, ``icoeff``, ``dtmin``, ``dt0``, ``solver`` and ``max_steps``."""
        names = ("rtol", "atol", "pcoeff", "icoeff", "dtmin", "dt0", "solver", "max_steps")
        return cls(**{name: getattr(section, name) for name in names})

    def __check_init__(self):
        if self.solver not in ("tsit5", "dopri5", "dopri8", "euler"):
            raise ValueError(f"unknown solver {self.solver!r}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be positive, got {self.max_steps}")


class FlowSolution(eqx.Module):
    """Saved states of an effective-flow solve.

    Attributes:
        ts: ``(T,)`` save times s.
        params: AdaptedParameters with a leading ``(T,)`` axis on every leaf.
        loss: ``(T,)`` cost at each save time.
        num_steps: accepted + rejected steps taken.
        num_accepted_steps: accepted steps.
        num_rejected_steps: rejected steps (the field jumps when a point crosses a face).
        success: whether the solve reached the final time.
    """

    ts: Float[Array, " T"]
    params: AdaptedParameters
    loss: Float[Array, " T"]
    num_steps: Int[Array, ""]
    num_accepted_steps: Int[Array, ""]
    num_rejected_steps: Int[Array, ""]
    success: Bool[Array, ""]


def _solver(name: str) -> diffrax.AbstractSolver:
    return {
        "tsit5": diffrax.Tsit5,
        "dopri5": diffrax.Dopri5,
        "dopri8": diffrax.Dopri8,
        "euler": diffrax.Euler,
    }[name]()


def integrate_gradient_flow(
    field, y0, args, save_ts: Float[Array, " T"], settings: SolverSettings, progress: bool
) -> diffrax.Solution:
    """The toolkit's one diffrax call for a gradient flow ∂_s y = field(s, y, args).

    Adaptive steps (PIDController with the settings' tolerances and coefficients; ``dtmin`` 0
    never binds, > 0 forces steps of at least ``dtmin`` through sliding modes) or, with
    ``solver="euler"``, fixed steps ``dt0``; states saved at ``save_ts``; ``throw=False`` so a
    failed solve is reported in ``result`` instead of raised (batches survive).
    """
    if settings.solver == "euler":
        controller = diffrax.ConstantStepSize()
    else:
        controller = diffrax.PIDController(
            rtol=settings.rtol,
            atol=settings.atol,
            pcoeff=settings.pcoeff,
            icoeff=settings.icoeff,
            # diffrax's controller takes more steps with any dtmin, even 0: pass None for 0
            dtmin=None if settings.dtmin == 0.0 else settings.dtmin,
        )
    return diffrax.diffeqsolve(
        diffrax.ODETerm(field),
        _solver(settings.solver),
        t0=save_ts[0],
        t1=save_ts[-1],
        dt0=settings.dt0,
        y0=y0,
        args=args,
        saveat=diffrax.SaveAt(ts=save_ts),
        stepsize_controller=controller,
        max_steps=settings.max_steps,
        throw=False,
        progress_meter=diffrax.TqdmProgressMeter() if progress else diffrax.NoProgressMeter(),
    )


@eqx.filter_jit
def solve_flow(
    problem: FlowProblem,
    params0: AdaptedParameters,
    save_ts: Float[Array, " T"],
    settings: SolverSettings | None = None,
    *,
    progress: bool = False,
) -> FlowSolution:
    """Integrate the effective flow from ``params0`` over ``[save_ts[0], save_ts[-1]]``.

    Pure and jittable; ``vmap`` over ``problem``/``params0`` batches problems of one shape (a
    vmapped adaptive solve runs until its slowest member finishes). A failed solve (``max_steps``
    reached, non-finite state) is *reported* in ``success`` rather than raised, so batches survive;
    :func:`check_solution` raises for a single solve.
    """
    settings = SolverSettings() if settings is None else settings
    sol = integrate_gradient_flow(vector_field, params0, problem, save_ts, settings, progress)
    loss = jax.vmap(problem.loss)(sol.ys)
    finite = jnp.all(jnp.isfinite(loss))
    return FlowSolution(
        ts=save_ts,
        params=sol.ys,
        loss=loss,
        num_steps=sol.stats["num_steps"],
        num_accepted_steps=sol.stats["num_accepted_steps"],
        num_rejected_steps=sol.stats["num_rejected_steps"],
        success=(sol.result == diffrax.RESULTS.successful) & finite,
    )


def check_solution(solution: FlowSolution, settings: SolverSettings) -> FlowSolution:
    """Raise a clear error if a single (un-batched) solve failed."""
    if not bool(solution.success):
        raise RuntimeError(
            "effective-flow solve failed to reach s = "
            f"{float(solution.ts[-1])} after {int(solution.num_steps)} steps "
            f"({int(solution.num_rejected_steps)} rejected; max_steps = {settings.max_steps}). "
            "Raise flow.max_steps, loosen rtol/atol, or check for d → 0 (singular weights)."
        )
    return solution
