"""The public API, walked: every function in an ``__all__`` is called three times, with correctly
shaped inputs, with one input given an extra leading (batch) axis, and with one input
transposed. Each call gives the right answer or a one-line ``ValueError`` that names the
function and the argument, never a silently wrong number.

The walk is a table (:data:`CASES`); a public name without an entry there or in :data:`EXEMPT`
(names that take no arrays, with the reason) fails :func:`test_every_public_name_is_walked_or_
exempt`, so a new function cannot join an ``__all__`` unchecked. Functions that accept a batch
axis by design are compared with the same function applied to each member. Every walked
function's docstring must say which it does (``Batch axis: accepted`` or ``Batch axis:
refused``).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gflow_jax import core, diagnostics, dynamics, magnitude

MODULES = (
    "gflow_jax",
    "gflow_jax.core",
    "gflow_jax.dynamics",
    "gflow_jax.magnitude",
    "gflow_jax.diagnostics",
    "gflow_jax.io",
    "gflow_jax.experiments",
    "gflow_jax.sweep",
    "gflow_jax.cli",
)

# sizes of the fixtures: all different where a transposed input could otherwise still fit,
# except Q = L, the case where stacked networks used to give wrong balance quantities silently
N, M, L, Q = 6, 3, 2, 2


# --------------------------------------------------------------------------------------------
# fixtures (built once, lazily)


# Everything is built in NumPy and handed over with jnp.asarray: an eager JAX operation
# compiles a small program the first time it meets a shape, and the walk meets many shapes.
RNG = np.random.default_rng(0)


def _array(*shape, low=0.0, high=1.0):
    return jnp.asarray(RNG.uniform(low, high, size=shape))


def _network():
    weights = np.eye(M)[None] + 0.3 * RNG.normal(size=(L, M, M))
    return core.ReLUNetwork(
        jnp.asarray(weights),
        _array(L, M, low=-0.5, high=0.5),
        _array(Q, M, low=-1.0),
        _array(Q, low=-1.0),
    )


@functools.cache
def net():
    return _network()


@functools.cache
def net2():
    return _network()


@functools.cache
def params():
    d = jnp.array([[1.0, -1.0, 1.0], [-1.0, 1.0, 0.5]])
    c = np.array([[0.1, 0.9, 0.2], [0.8, 0.3, 0.5]])
    return core.AdaptedParameters(d=d, b=jnp.asarray(-c * np.asarray(d)))


@functools.cache
def data():
    return _array(N, M), jnp.array([0, 0, 0, 1, 1, 1])


@functools.cache
def targets():
    return jnp.asarray(np.array([[0.2, 0.8, 0.3], [0.9, 0.1, 0.7]])[[0, 0, 0, 1, 1, 1]])


@functools.cache
def flow_problem():
    """The input-cost problem with the autodiff gradient (no sorting to compile)."""
    return dynamics.FlowProblem(data()[0], targets(), gradient="autodiff")


@functools.cache
def sorted_data():
    """:class:`~gflow_jax.core.SortedData` of the data, sorted in NumPy."""
    x, t = np.asarray(data()[0]), np.asarray(targets())
    order = np.argsort(x, axis=0)
    values = np.take_along_axis(x, order, 0).T
    prefix = np.concatenate([np.zeros((M, 1)), np.cumsum(np.take_along_axis(t, order, 0).T, 1)], 1)
    weights = np.concatenate([np.zeros((M, 1)), np.cumsum(np.ones((M, N)), 1)], 1)
    run_end = np.tile(np.arange(1, N + 1, dtype=np.int32), (M, 1))
    return core.SortedData(*map(jnp.asarray, (values, prefix, weights, run_end)))


@functools.cache
def network_problem():
    return dynamics.NetworkProblem(data()[0], jnp.asarray(np.eye(Q)[[0, 0, 0, 1, 1, 1]]))


@functools.cache
def stacked_nets():
    a, b = net(), net2()
    return jax.tree.map(lambda u, v: jnp.asarray(np.stack([u, v, u])), a, b)


@functools.cache
def stacked_params():
    d, b = np.asarray(params().d), np.asarray(params().b)
    return core.AdaptedParameters(
        d=jnp.asarray(np.stack([d, d])), b=jnp.asarray(np.stack([b, 1.1 * b]))
    )


@functools.cache
def truncated():
    return jnp.asarray(RNG.uniform(size=(N, L, M)) < 0.4)


@functools.cache
def mlp():
    return dynamics.MLP(
        weights=(_array(4, M, low=-1.0), _array(Q, 4, low=-1.0)), biases=(_array(4), _array(Q))
    )


@functools.cache
def settings():
    return dynamics.SolverSettings(solver="euler", dt0=0.5, max_steps=8)


@functools.cache
def solution():
    """A successful solution, as a solve returns it (built, not solved: nothing compiles)."""
    one = jnp.asarray(1, jnp.int32)
    return dynamics.FlowSolution(
        ts=TS,
        params=stacked_params(),
        loss=jnp.zeros(2),
        num_steps=one,
        num_accepted_steps=one,
        num_rejected_steps=0 * one,
        success=jnp.asarray(True),
    )


@functools.cache
def dataset():
    x, labels = np.asarray(data()[0]), np.asarray(data()[1])
    return core.Dataset(
        x_train=jnp.asarray(np.concatenate([x, x + 0.1])[:9]),
        y_train=jnp.asarray(np.concatenate([labels, labels])[:9]),
        x_test=jnp.asarray(x[:3] + 0.2),
        y_test=jnp.asarray(labels[:3]),
        noisy=jnp.zeros(9, bool),
        n_classes=Q,
    )


KEY = jnp.array([0, 5], dtype=jnp.uint32)  # a raw PRNG key, built without compiling
TS = jnp.array([0.0, 1.0])
POINTS = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 1.0], [1.0, 1.0]])
SCALES = np.array([0.5, 1.0, 2.0])
MEASURE = [0.1, 0.4, 0.2, 0.2, 0.9, 0.5]
GAP = [1.0, 2.0, 2.0, 3.0, 5.0, 4.0]
FACTORS = {"lr": [1, 1, 2, 2, 3, 3], "bs": [8, 16, 8, 16, 8, 16], "seed": [0] * 6}


def distances():
    return np.asarray(magnitude.pairwise_distances(POINTS))


# --------------------------------------------------------------------------------------------
# the three calls


@dataclass
class Case:
    """One walked function.

    ``args``: the correctly shaped positional arguments. ``batch``: positions given a leading
    axis of two members in the second call (several when the leaves must agree);
    ``batched``: ``"refuse"`` or ``"accept"`` (then compared with the call on each member).
    ``transpose``: the position whose last two axes are swapped in the third call (or a
    function ``args -> args`` for an input inside a pytree), ``transposed``: ``"refuse"`` or
    ``"valid"`` (a transposed input is then simply another valid input). ``names``: the
    argument names the errors must mention, by position (``"net"`` for a network's leaves).
    ``fast``: the calls that compute run in the fast suite too. They compile (from a fraction
    of a second to seconds each, on a 2-core machine), so by default the fast suite makes the
    refusing calls only, which fail before anything compiles, and :func:`test_walk_computing`
    (slow) makes the others; the functions that accept a batch axis run everything.
    """

    args: Callable[[], tuple]
    names: tuple[str, ...]
    batch: tuple[int, ...] = (0,)
    batched: str = "refuse"
    transpose: int | Callable | None = 0
    transposed: str = "refuse"
    transposed_name: str | None = None
    kwargs: dict = field(default_factory=dict)
    call: Callable | None = None
    fast: bool = False


def _perturb(x):
    if isinstance(x, jax.Array | np.ndarray) and np.issubdtype(x.dtype, np.floating):
        y = np.asarray(x)
        y = 1.1 * y + 0.05 * (y != 0)
        return jnp.asarray(y) if isinstance(x, jax.Array) else y
    return x


def _second(x):
    """A second, different valid member (floats rescaled; keys changed; the rest repeated)."""
    if isinstance(x, jax.Array) and x.dtype == jnp.uint32 and x.shape == (2,):
        return jnp.asarray(np.asarray(x) + np.uint32(1))
    if isinstance(x, list | tuple) and not isinstance(x, eqx.Module):
        return _second(np.asarray(x))
    if isinstance(x, dict):
        return x
    return jax.tree.map(_perturb, x)


def _stack(members):
    first = members[0]
    if isinstance(first, list | tuple) and not isinstance(first, eqx.Module):
        members = [np.asarray(m) for m in members]
    if isinstance(first, dict):  # factors: every value gets the axis
        return {k: np.stack([np.asarray(m[k]) for m in members]) for k in first}
    return jax.tree.map(
        lambda *xs: jnp.asarray(np.stack(xs)) if isinstance(xs[0], jax.Array) else np.stack(xs),
        *members,
    )


def _swap(x):
    x = np.asarray(x) if isinstance(x, list) else x
    return jnp.swapaxes(x, -1, -2) if isinstance(x, jax.Array) else np.swapaxes(x, -1, -2)


def _leaves_close(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for u, v in zip(la, lb, strict=True):
        np.testing.assert_allclose(np.asarray(u, float), np.asarray(v, float), rtol=1e-10)


def _result_of(value):
    """The numbers of a result: arrays and pytrees as they are, dataclasses field by field."""
    if hasattr(value, "__dataclass_fields__") and not isinstance(value, eqx.Module):
        return {k: _result_of(getattr(value, k)) for k in value.__dataclass_fields__}
    if isinstance(value, dict):
        return {k: _result_of(v) for k, v in value.items() if not isinstance(v, str | tuple)}
    return value


def _refused(info, function: str, *arguments: str):
    """One line, starting with the function, naming (one of) the arguments."""
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(f"{function}: "), message
    named = [a for a in arguments if a and re.search(rf"(^|[ .]){re.escape(a)}(?!\w)", message)]
    assert named, (arguments, message)


# --------------------------------------------------------------------------------------------
# the table

X, LAB = "x", "labels"


def _trajectory_case():
    return (np.stack([POINTS, POINTS[::-1] * 1.5, POINTS + 1.0]), SCALES)


CASES: dict[str, Case] = {
    # core: networks and truncation maps
    "ReLUNetwork": Case(
        lambda: (net().weights, net().biases, net().out_weight, net().out_bias),
        ("net.weights", "net.biases", "net.out_weight", "net.out_bias"),
        transpose=2,
        fast=True,
    ),
    "AdaptedParameters": Case(
        lambda: (params().d, params().b),
        ("d", "b"),
        batch=(0, 1),
        batched="accept",
        transpose=1,
        fast=True,
    ),
    "relu_forward": Case(
        lambda: (net(), data()[0][0]),
        ("net", X),
        batch=(1,),
        transpose=lambda a: (eqx.tree_at(lambda n: n.out_weight, a[0], a[0].out_weight.T), a[1]),
        transposed_name="net.out_weight",
        fast=True,
    ),
    "input_space_forward": Case(lambda: (net(), data()[0][0]), ("net", X), transpose=None),
    "cumulative_parameters": Case(
        lambda: (net().weights, net().biases), ("weights", "biases"), transpose=1
    ),
    "truncation_map": Case(
        lambda: (net().weights[0], net().biases[0], data()[0][0]),
        ("W", "b", "z"),
        batch=(2,),
        transposed="valid",
    ),
    "truncation_projector": Case(
        lambda: (net().weights[0], net().biases[0], data()[0][0]),
        ("W", "b", "z"),
        batch=(1,),
        transposed="valid",
    ),
    "random_orthogonal": Case(lambda: (KEY, M), ("key",), transpose=None),
    # core: the adapted parametrisation and costs
    "adapted_truncate": Case(
        lambda: (params(), data()[0]),
        ("params", "u"),
        batch=(1,),
        batched="accept",
        transpose=1,
        fast=True,
    ),
    "last_truncations": Case(
        lambda: (truncated(),),
        ("truncated",),
        batched="accept",
        transposed="valid",
        fast=True,
    ),
    "adapted_input_cost": Case(
        lambda: (params(), data()[0], targets()),
        ("params", "u", "targets"),
        batch=(0,),
        transpose=2,
    ),
    "adapted_input_cost_gradient": Case(
        lambda: (params(), data()[0], targets()),
        ("params", "u", "targets"),
        batch=(1,),
        transpose=1,
    ),
    "adapted_output_cost": Case(
        lambda: (params(), data()[0], targets(), net().out_weight),
        ("params", "u", "targets", "out_weight_cum"),
        batch=(3,),
        transpose=3,
    ),
    "adapted_standard_cost": Case(
        lambda: (params(), data()[0], network_problem().y, net().out_weight, net().out_bias),
        ("params", "u", "y", "out_weight", "out_bias"),
        batch=(4,),
        transpose=2,
    ),
    "pulled_back_targets": Case(
        lambda: (net().out_weight, net().out_bias, jnp.asarray(np.eye(Q))),
        ("out_weight_cum", "out_bias_cum", "y"),
        batch=(1,),
        transpose=0,
    ),
    "network_input_cost": Case(
        lambda: (net(), data()[0], targets()),
        ("net", X, "targets"),
        batch=(1,),
        transpose=2,
    ),
    "network_standard_cost": Case(
        lambda: (net(), data()[0], network_problem().y), ("net", X, "y"), batch=(2,), transpose=1
    ),
    "general_input_cost_gradient": Case(
        lambda: (
            *core.cumulative_parameters(net().weights, net().biases),
            data()[0],
            targets(),
        ),
        ("W_cum", "b_cum", X, "targets"),
        batch=(2,),
        transpose=3,
    ),
    "sort_data": Case(lambda: (data()[0], targets()), ("u", "targets"), transpose=1),
    "threshold_gradient": Case(
        lambda: (params().thresholds, params().d, sorted_data()),
        ("thresholds", "d", "data.values"),
        batch=(0,),
        transpose=1,
    ),
    # core: data
    "make_clusters": Case(
        lambda: (KEY,),
        ("key",),
        transpose=None,
        kwargs=dict(n_classes=2, n_per_class=3, dim=2, radius=0.5, separation=3.0),
    ),
    "split_dataset": Case(
        lambda: (data()[0], data()[1], Q),
        (X, "y"),
        batch=(1,),
        transpose=0,
        kwargs=dict(test_fraction=0.5, label_noise=0.0, key=KEY),
    ),
    # dynamics: full network
    "NetworkProblem": Case(
        lambda: (data()[0], network_problem().y), (X, "y"), transpose=1, fast=True
    ),
    "balance_quantities": Case(
        lambda: (net(),),
        ("net",),
        batched="accept",
        transpose=lambda a: (eqx.tree_at(lambda n: n.out_weight, a[0], a[0].out_weight.T),),
        transposed_name="net.out_weight",
        fast=True,
    ),
    "network_loss": Case(
        lambda: (net(), network_problem()), ("net", "problem"), batch=(1,), transpose=None
    ),
    "network_gradient": Case(
        lambda: (net(), network_problem()), ("net", "problem"), transpose=None
    ),
    "solve_network_flow": Case(
        lambda: (network_problem(), net(), TS, settings()),
        ("problem", "net0", "save_ts"),
        batch=(1,),
        transpose=None,
    ),
    "network_descent": Case(
        lambda: (network_problem(), net(), TS, 0.5), ("problem", "net0"), batch=(0,), transpose=None
    ),
    # dynamics: effective flow
    "FlowProblem": Case(lambda: (data()[0], targets()), ("u", "targets"), batch=(1,), transpose=0),
    "vector_field": Case(
        lambda: (0.0, params(), flow_problem()),
        ("s", "params", "problem"),
        batch=(1,),
        transpose=None,
    ),
    "closed_form_vector_field": Case(
        lambda: (0.0, params(), flow_problem()),
        ("s", "params", "problem"),
        batch=(2,),
        transpose=None,
    ),
    "solve_flow": Case(
        lambda: (flow_problem(), params(), TS, settings()),
        ("problem", "params0", "save_ts"),
        batch=(1,),
        transpose=None,
    ),
    "gradient_descent": Case(
        lambda: (flow_problem(), params(), TS, 0.5),
        ("problem", "params0", "save_ts"),
        batch=(1,),
        transpose=None,
    ),
    "descend": Case(
        lambda: (flow_problem(), params(), jnp.asarray(0.5), jnp.array([2]), KEY, N, False),
        ("problem", "params0", "eta", "n_steps", "key"),
        batch=(3,),
        transpose=None,
    ),
    "descent_loop": Case(
        lambda: (
            lambda p, k: jax.tree.map(jnp.negative, p),
            params(),
            jnp.asarray(0.1),
            jnp.array([1, 2]),
            KEY,
        ),
        ("direction", "params0", "eta", "n_steps", "key"),
        batch=(2,),
        transpose=None,
    ),
    "integrate_gradient_flow": Case(
        lambda: (dynamics.vector_field, params(), flow_problem(), TS, settings(), False),
        ("field", "y0", "args", "save_ts"),
        batch=(3,),
        transpose=None,
    ),
    "check_solution": Case(
        lambda: (solution(), settings()),
        ("solution.success",),
        batch=(0,),
        transpose=None,
        fast=True,
    ),
    "steps_per_interval": Case(
        lambda: (np.array([0.0, 1.0, 2.0]), 0.5),
        ("save_ts",),
        transpose=None,
        fast=True,
    ),
    "minibatch_indices": Case(
        lambda: (KEY, jnp.ones(N), 2), ("key", "weights"), batch=(1,), transpose=None
    ),
    "floyd_ranks": Case(lambda: (KEY, jnp.asarray(N), 2), ("key", "n"), batch=(0,), transpose=None),
    "positive_rows": Case(lambda: (jnp.ones(N),), ("weights",), transpose=None),
    # dynamics: MLPs
    "init_mlp": Case(lambda: (KEY, M, [4], Q), ("key",), transpose=None),
    "flatten_params": Case(
        lambda: (mlp(),),
        ("model",),
        transpose=lambda a: (eqx.tree_at(lambda m: m.weights[0], a[0], a[0].weights[0].T),),
    ),
    "unflatten_params": Case(
        lambda: (dynamics.flatten_params(mlp()), mlp()), ("vector",), transpose=None
    ),
    "per_example_loss": Case(
        lambda: (mlp(), data()[0], data()[1]), ("model", X, "y"), batch=(1,), transpose=1
    ),
    "evaluate": Case(
        lambda: (mlp(), data()[0], data()[1]), ("model", X, "y"), batch=(2,), transpose=1
    ),
    "loss_matrix": Case(
        lambda: (_array(2, 4 * M + 4 + Q * 4 + Q), mlp(), data()[0], data()[1]),
        ("vectors", "like", X, "y"),
        batch=(0,),
        transpose=0,
    ),
    "train_and_record": Case(
        lambda: (
            jax.tree.map(lambda a: jnp.asarray(np.stack([a, a])), mlp()),
            jnp.array([0.1, 0.2]),
            jnp.asarray(np.stack([np.asarray(KEY), np.asarray(KEY) + 1])),
            dataset(),
            dataset().x_test[:2],
            dynamics.TrainingSpec(batch_size=2),
            dynamics.RecordingPlan(
                mode="every",
                every=1,
                chunk_steps=2,
                max_steps=2,
                monitor_every=2,
                probe_layers=(1,),
            ),
            [None, None],
        ),
        ("models", "learning_rates", "keys", "data", "probe_x"),
        batch=(1,),
        transpose=4,
    ),
    # magnitude
    "magnitude_function": Case(lambda: (POINTS, SCALES), ("X", "scales"), transposed="valid"),
    "magnitude": Case(lambda: (POINTS, SCALES), ("X", "scales"), batch=(1,), transposed="valid"),
    "magnitude_weights": Case(lambda: (POINTS, SCALES), ("X",), transposed="valid"),
    "magnitude_dimension_profile": Case(lambda: (POINTS, SCALES), ("X",), transposed="valid"),
    "positive_magnitude": Case(lambda: (POINTS, SCALES), ("X",), transposed="valid"),
    "spread": Case(lambda: (POINTS, SCALES), ("X",), transposed="valid"),
    "magnitude_dimension": Case(lambda: (POINTS, SCALES), ("X", "scales"), transposed="valid"),
    "convergence_scale": Case(lambda: (POINTS,), ("X",), transposed="valid"),
    "e_alpha": Case(lambda: (POINTS,), ("X",), transposed="valid"),
    "pairwise_distances": Case(lambda: (POINTS, POINTS[:3]), ("X", "Y"), transpose=1),
    "distance_matrix": Case(lambda: (POINTS, "euclidean"), ("X",), transposed="valid"),
    "check_distance_matrix": Case(lambda: (distances(),), ("D",), transposed="valid"),
    "euclidean_distances": Case(lambda: (jnp.asarray(POINTS),), ("x",), transposed="valid"),
    "magnitude_from_distances": Case(
        lambda: (jnp.asarray(distances()), jnp.asarray(SCALES)), ("D", "scales"), transposed="valid"
    ),
    "duplicate_groups": Case(lambda: (jnp.asarray(distances()),), ("D",), transposed="valid"),
    "solve_adaptive": Case(
        lambda: (distances(), SCALES), ("D", "scales"), transposed="valid", fast=True
    ),
    "magnitude_scales": Case(
        lambda: (0.1, 100.0, 32, SCALES), (None, None, None, "scales"), batch=(3,), transpose=None
    ),
    "cloud_magnitudes": Case(_trajectory_case, ("clouds", "scales"), transposed="valid"),
    # diagnostics: collapse and truncation
    "class_means": Case(lambda: (*data(), Q), (X, LAB), transpose=0),
    "nc1_input": Case(lambda: (*data(), Q), ("x_tilde", LAB), batch=(1,), transpose=0),
    "papyan_collapse": Case(
        lambda: (*data(), Q, net().out_weight, net().out_bias),
        ("features", LAB, None, "weight", "bias"),
        batch=(0,),
        transpose=3,
        fast=True,
    ),
    "network_diagnostics": Case(
        lambda: (stacked_nets(), *data(), Q), ("nets", X, LAB), transpose=1
    ),
    "hidden_representations": Case(
        lambda: (stacked_nets().weights, stacked_nets().biases, data()[0]),
        ("weights", "biases", X),
        batch=(2,),
        transpose=2,
    ),
    "offdiagonality": Case(
        lambda: (net().weights,), ("W",), batched="accept", transposed="valid", fast=True
    ),
    "parameter_distance": Case(
        lambda: (net(), net2()),
        ("a", "b"),
        batch=(0, 1),
        batched="accept",
        transpose=lambda a: (a[0], eqx.tree_at(lambda n: n.out_weight, a[1], a[1].out_weight.T)),
        transposed_name="b.out_weight",
        fast=True,
    ),
    "truncation_diagnostics": Case(
        lambda: (stacked_params(), *data(), Q), ("params", "u", LAB), batch=(1,), transpose=1
    ),
    "cluster_spread": Case(
        lambda: (
            _array(2, N, M),
            data()[1],
            Q,
        ),
        ("x_tilde", LAB),
        transpose=0,
    ),
    "cluster_counts": Case(
        lambda: (
            jnp.asarray(np.stack([np.asarray(truncated())] * 2)),
            data()[1],
            Q,
        ),
        ("truncated", LAB),
        batch=(1,),
        transposed="valid",
    ),
    "gap_matrix": Case(
        lambda: (params().d[0], net().out_weight), ("d_layer", "out_weight_cum"), transpose=1
    ),
    "cluster_error": Case(
        lambda: (
            stacked_params().thresholds[:, 0],
            stacked_params().d[:, 0],
            jnp.array([0.5, 0.5, 0.5]),
        ),
        ("thresholds", "d_layer", "target"),
        batch=(2,),
        transpose=0,
    ),
    # diagnostics: statistics
    "kendall_tau": Case(lambda: (MEASURE, GAP), ("x", "y"), batch=(0,), transpose=None, fast=True),
    "granulated_kendall": Case(
        lambda: (MEASURE, GAP, FACTORS),
        ("measure", "gap", "factors"),
        batch=(1,),
        transpose=None,
        fast=True,
    ),
    "conditional_kendall": Case(
        lambda: (MEASURE, GAP, FACTORS),
        ("measure", "gap", "factors"),
        batch=(2,),
        transpose=None,
        fast=True,
    ),
    "kendall_statistics": Case(
        lambda: (MEASURE, GAP, FACTORS),
        ("measure", "gap", "factors"),
        transpose=None,
        kwargs=dict(n_bootstrap=5),
        fast=True,
    ),
    # diagnostics: magnitude of trajectories and clouds
    "loss_pseudometric": Case(
        lambda: (jnp.asarray(distances()[:, :3]),), ("losses",), transposed="valid"
    ),
    "relative_scales": Case(
        lambda: (distances(), 4, (-1.0, 1.0)),
        ("distances",),
        transposed="valid",
        fast=True,
    ),
    "trajectory_measures": Case(
        lambda: (distances(),),
        ("distances",),
        transposed="valid",
        kwargs=dict(n_scales=4, ph_sizes=None, slope_window=(-1.0, 4.0)),
    ),
    "cloud_measures": Case(
        lambda: ([POINTS, POINTS * 2.0],),
        ("clouds[0]",),
        transpose=lambda a: ([a[0][0].T, a[0][1]],),
        transposed_name="clouds[1]",
        kwargs=dict(n_scales=3),
    ),
    "truncated_magnitude": Case(
        lambda: (_trajectory_case()[0], SCALES),
        ("x_tilde", "scales", LAB),
        transpose=0,
        kwargs=dict(labels=np.array([0, 0, 1, 1, 1])),
    ),
    "representation_magnitude": Case(
        lambda: (_trajectory_case()[0], SCALES),
        ("representations", "scales", LAB),
        kwargs=dict(labels=np.array([0, 0, 1, 1, 1])),
        transpose=0,
    ),
    "magnitude_increases": Case(
        lambda: (np.arange(4.0), np.ones((4, 3))),
        ("ts", "magnitude"),
        batch=(1,),
        transpose=1,
        fast=True,
    ),
    "mst_lengths": Case(lambda: (distances(),), ("D",), transposed="valid", fast=True),
    "ph_dimension": Case(
        lambda: (np.random.default_rng(0).uniform(size=(12, 12)),),
        ("X",),
        transposed="valid",
        kwargs=dict(min_points=4, max_points=12, step=4),
        fast=True,
    ),
}

# the solvers and rate diagnostics of the event-driven flow (they compute: slow)
CASES |= {
    "solve_exact": Case(
        lambda: (dynamics.FlowProblem(data()[0], targets()), params(), TS),
        ("problem", "params0"),
        batch=(1,),
        transpose=None,
    ),
    "solve_located": Case(
        lambda: (
            dynamics.FlowProblem(data()[0], targets()),
            params(),
            TS,
            dynamics.SolverSettings(events=True),
        ),
        ("problem", "params0", "save_ts"),
        batch=(1,),
        transpose=None,
    ),
    "solve_face": Case(
        lambda: (np.linspace(0, 1, 5), 1.5, 0.35, 1.0, 10), ("values",), transpose=None
    ),
    "two_sided_width": Case(
        lambda: (
            dynamics.solve_face(np.linspace(0, 1, 5), 1.5, 0.35, 1.0, 10),
            dynamics.solve_face(np.linspace(0, 1, 5), 0.5, 0.9, -1.0, 10),
            TS,
        ),
        ("s",),
        batch=(2,),
        batched="accept",
        transpose=None,
    ),
    "rate_diagnostics": Case(
        lambda: (flow_problem(), stacked_params()),
        ("problem", "params"),
        batch=(1,),
        transpose=None,
    ),
    "interval_rates": Case(
        lambda: (
            np.array([0.0, 1.0]),
            np.asarray(stacked_params().thresholds),
            diagnostics.rate_diagnostics(flow_problem(), stacked_params()),
        ),
        ("ts", "thresholds", "rates"),
        batch=(1,),
        transpose=1,
    ),
    "event_times": Case(
        lambda: (
            np.array([0.0, 1.0]),
            np.asarray(stacked_params().thresholds),
            np.asarray(stacked_params().d),
            np.stack([np.asarray(truncated())] * 2),
            np.asarray(data()[0]),
            np.asarray(targets()),
        ),
        ("ts", "thresholds", "d", "truncated", "u", "targets"),
        batch=(4,),
        transpose=4,
    ),
}

_NO_ARRAYS = "takes no arrays (sizes, names, seeds or options)"
_TYPE = "a result or settings type; the functions that build or take it check the arrays"
_IO = "files and run directories: paths and JSON values (arrays are stored in any shape)"
_CONFIG = "configs and run directories, not arrays: checked by ConfigError, naming the key"
_BATCHING = "the batching machinery: maps any pytree over its leading axis by definition"
_DEVICES = "devices and memory sizes, no arrays"

EXEMPT: dict[str, str] = {
    **dict.fromkeys(
        [
            "enable_x64",
            "x64_enabled",
            "enable_compilation_cache",
            "compilation_cache_dir",
            "MEMORY_FRACTION",
            "DEFAULTS",
            "SOLVERS",
            "SOLVER_NAMES",
            "SCALE_CONVENTION",
        ],
        "a constant or a global switch",
    ),
    **dict.fromkeys(
        [
            "ClusteredData",
            "Dataset",
            "SortedData",
            "MLP",
            "DescentTrajectory",
            "FaceSolution",
            "FlowEvents",
            "FlowSolution",
            "MemberOutcome",
            "MemberRecorder",
            "RecordingPlan",
            "SlidingStatus",
            "SolverSettings",
            "TrainingSpec",
            "AdaptiveSettings",
            "CloudMagnitudes",
            "MagnitudeDimension",
            "MagnitudeFunction",
            "MagnitudeResult",
            "CollapseConvention",
            "CollapseMeasures",
            "ConditionalKendall",
            "Estimate",
            "GranulatedKendall",
            "KendallStatistics",
            "NetworkDiagnostics",
            "PHDimension",
            "RateDiagnostics",
            "TrajectoryMeasures",
            "TruncatedMagnitude",
            "TruncationDiagnostics",
        ],
        _TYPE,
    ),
    **dict.fromkeys(
        [
            "clusters_dataset",
            "digits_dataset",
            "make_optimizer",
            "bucket_size",
            "canonical_metric",
            "bootstrap_weights",
            "collapse_convention",
        ],
        _NO_ARRAYS,
    ),
    **dict.fromkeys(
        [
            "batch_mesh",
            "batched",
            "call_batched",
            "member_bytes",
            "memory_batch_size",
            "pad_batch",
            "padded_batch_size",
            "stack",
        ],
        _BATCHING,
    ),
    **dict.fromkeys(
        [
            "default_device",
            "device_memory",
            "members_per_device",
            "on_accelerator",
            "resolve_devices",
            "use_cpu_cores",
        ],
        _DEVICES,
    ),
    **dict.fromkeys(
        [
            "ChunkedArrayWriter",
            "create_run_dir",
            "describe_environment",
            "environment_info",
            "flow_progress_meter",
            "load_arrays",
            "progress_bar",
            "progress_enabled",
            "pyplot",
            "read_json",
            "read_stream",
            "save_figure",
            "save_npz",
            "scan_progress",
            "stream_is_complete",
            "time_axis",
            "utc_now",
            "write_csv",
            "write_json",
            "write_metrics",
        ],
        _IO,
    ),
    **dict.fromkeys(
        [
            "ClusterConfig",
            "CollapseConfig",
            "ConfigBase",
            "ConfigError",
            "ExperimentKind",
            "ExperimentSetup",
            "FlowConfig",
            "GDConfig",
            "OutputConfig",
            "SolverConfig",
            "MagnitudeGeneralizationConfig",
            "RatesConfig",
            "SgdVsFlowConfig",
            "SpectralGapConfig",
            "TruncationConfig",
            "analyse_trajectory",
            "analyse_truncation_arrays",
            "apply_overrides",
            "available_kinds",
            "build_dataclass",
            "config_snapshot",
            "config_to_dict",
            "get_kind",
            "kind_target",
            "load_config",
            "load_experiment",
            "load_table",
            "register_kind",
            "run_rates",
            "run_sgd_vs_flow",
            "run_spectral_gap",
            "run_truncation",
            "setup_experiment",
            "SweepPlan",
            "SweepSpec",
            "create_sweep",
            "expand_points",
            "load_sweep",
            "merge_sweep",
            "parse_sweep",
            "plan_sweep",
            "plot_sweep",
            "point_states",
            "run_chunk",
            "run_points",
            "run_sweep",
            "submit_sweep",
            "sweep_rows",
            "build_parser",
            "main",
        ],
        _CONFIG,
    ),
}


def _public() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if name in found and found[name] is not obj:
                raise AssertionError(f"{name} names two different objects in the public API")
            found[name] = obj
    return found


PUBLIC = _public()


def test_every_public_name_is_walked_or_exempt():
    tables = set(CASES) | set(EXEMPT)
    missing = sorted(set(PUBLIC) - tables)
    assert not missing, f"public names with no entry in the API walk: {missing}"
    stale = sorted(tables - set(PUBLIC))
    assert not stale, f"entries of the API walk that are not public: {stale}"
    assert not set(CASES) & set(EXEMPT)


@pytest.mark.parametrize("name", sorted(CASES))
def test_docstring_states_the_batch_axis(name):
    doc = inspect.getdoc(PUBLIC[name]) or ""
    doc = " ".join(doc.split())
    policy = CASES[name].batched
    word = "accepted" if policy == "accept" else "refused"
    ok = f"Batch axis: {word}" in doc or (
        policy == "refuse" and re.search(r"Batch axis: (exactly )?(the|one) .*(axis|batch)", doc)
    )
    assert ok, f"{name}: the docstring must state 'Batch axis: {word}'"


def _run(name: str, case: Case, *, refusals_only: bool = False):
    """The three calls; ``refusals_only`` skips the calls that compute (the refusals happen
    before anything compiles)."""
    function = case.call or PUBLIC[name]
    args = case.args()

    # 1. correctly shaped
    if not refusals_only:
        function(*args, **case.kwargs)

    # 2. an extra leading axis
    if case.batch:
        batched = list(args)
        for i in case.batch:
            batched[i] = _stack([args[i], _second(args[i])])
        if case.batched == "refuse":
            with pytest.raises(ValueError) as info:
                function(*batched, **case.kwargs)
            _refused(info, name, case.names[case.batch[0]])
        elif not refusals_only:
            result = _result_of(function(*batched, **case.kwargs))
            members = []
            for k in range(2):
                member = list(args)
                for i in case.batch:
                    member[i] = args[i] if k == 0 else _second(args[i])
                members.append(_result_of(function(*member, **case.kwargs)))
            _leaves_close(result, jax.tree.map(lambda *xs: np.stack(xs), *members))

    # 3. a transposed input
    if case.transpose is not None:
        if callable(case.transpose):
            swapped = case.transpose(args)
        else:
            swapped = list(args)
            swapped[case.transpose] = _swap(args[case.transpose])
        if case.transposed == "refuse":
            with pytest.raises(ValueError) as info:
                function(*swapped, **case.kwargs)
            # a transposed input may fit its own spec and clash with the next argument: the
            # error then names that one (both are named in the table)
            _refused(info, name, case.transposed_name or "", *case.names)
        elif not refusals_only:
            function(*swapped, **case.kwargs)


@pytest.mark.parametrize("name", sorted(CASES))
def test_walk(name):
    """Every refusal; all three calls for the ``fast`` cases."""
    _run(name, CASES[name], refusals_only=not CASES[name].fast)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if not c.fast))
def test_walk_computing(name):
    """The calls that compute, of the cases the fast suite only refuses: the correctly shaped
    call and a transposed input that is another valid input."""
    _run(name, CASES[name])


# --------------------------------------------------------------------------------------------
# the case of the issue: stacked networks with Q = L


def test_balance_quantities_of_stacked_networks_with_q_equal_l():
    """``solve_network_flow`` returns networks stacked along the saves; with Q = L their leaves
    used to line up with a single network's and give wrong numbers silently. Now every save
    gets its own balance quantities, equal to the per-network call and to a loop by hand
    (:func:`test_balance_quantities_of_a_solve` does it on a real solve)."""
    assert L == Q
    nets = stacked_nets()  # the pytree a solve returns: every leaf with a leading save axis
    got = np.asarray(dynamics.balance_quantities(nets))
    assert got.shape == (3, L, M)
    for t in range(3):
        one = jax.tree.map(lambda a, t=t: a[t], nets)
        np.testing.assert_allclose(got[t], np.asarray(dynamics.balance_quantities(one)))
        W, b, W_out = (np.asarray(a) for a in (one.weights, one.biases, one.out_weight))
        following = [*W[1:], W_out]
        for ell in range(L):
            for k in range(M):
                by_hand = W[ell, k] @ W[ell, k] + b[ell, k] ** 2
                by_hand -= following[ell][:, k] @ following[ell][:, k]
                assert got[t, ell, k] == pytest.approx(by_hand, rel=1e-12, abs=1e-14)
    # a stack whose leaves disagree on the leading axes is refused, naming the leaf
    broken = eqx.tree_at(lambda n: n.out_weight, nets, nets.out_weight[0])
    with pytest.raises(ValueError, match=r"balance_quantities: net.out_weight must have shape"):
        dynamics.balance_quantities(broken)


@pytest.mark.slow
def test_balance_quantities_of_a_solve():
    """The same on the networks ``solve_network_flow`` returns (compiles a solve)."""
    sol = dynamics.solve_network_flow(
        network_problem(), net(), jnp.linspace(0.0, 1.0, 3), settings()
    )
    got = dynamics.balance_quantities(sol.params)
    each = [
        dynamics.balance_quantities(jax.tree.map(lambda a, t=t: a[t], sol.params)) for t in range(3)
    ]
    np.testing.assert_allclose(got, np.stack(each), rtol=1e-12)


def test_messages_name_the_function_the_argument_and_the_shape():
    x, labels = data()
    with pytest.raises(ValueError) as info:
        diagnostics.papyan_collapse(
            x, jnp.asarray(np.stack([labels, labels])), Q, net().out_weight, net().out_bias
        )
    assert str(info.value) == (
        "papyan_collapse: labels must have shape (N,) = (6,), got (2, 6) (a leading batch axis "
        "is not accepted here: vmap the function over it)"
    )


def test_checks_hold_under_jit_and_vmap():
    """Shapes are static: a jitted caller still gets the error at trace time, and a vmapped
    call sees one member, so a function that refuses a batch axis can be vmapped over it."""
    x, labels = data()
    per_point = jax.vmap(lambda xi: core.relu_forward(net(), xi)[1])(x)
    assert per_point.shape == (N, Q)
    with pytest.raises(ValueError, match="relu_forward: x"):
        jax.jit(lambda xs: core.relu_forward(net(), xs))(x)
    stacked = jax.vmap(lambda n: dynamics.balance_quantities(n))(stacked_nets())
    np.testing.assert_allclose(stacked, dynamics.balance_quantities(stacked_nets()))
