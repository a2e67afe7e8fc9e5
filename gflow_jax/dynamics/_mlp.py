"""ReLU multilayer perceptrons for classification: model, losses, evaluation, optimisers."""

from __future__ import annotations

import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ..core._shapes import Shapes


class MLP(eqx.Module):
    """ReLU multilayer perceptron x⁽ℓ⁾ = σ(W_ℓ x⁽ℓ⁻¹⁾ + b_ℓ), logits W_{L+1} x⁽ᴸ⁾ + b_{L+1}.

    Attributes:
        weights: ``(L+1,)`` tuple; ``weights[ℓ]`` has shape ``(width_{ℓ+1}, width_ℓ)``.
        biases: ``(L+1,)`` tuple; ``biases[ℓ]`` has shape ``(width_{ℓ+1},)``.
    """

    weights: tuple[Float[Array, "out in"], ...]
    biases: tuple[Float[Array, " out"], ...]

    @property
    def depth(self) -> int:
        """Number of hidden layers L."""
        return len(self.weights) - 1

    def hidden(self, x: Float[Array, "*b d"]) -> list[Float[Array, "*b h"]]:
        """Post-ReLU activations x⁽¹⁾..x⁽ᴸ⁾ of inputs ``x`` ``(..., d)``."""
        out = []
        for w, b in zip(self.weights[:-1], self.biases[:-1], strict=True):
            x = jax.nn.relu(_affine(x, w, b))
            out.append(x)
        return out

    def __call__(self, x: Float[Array, "*b d"]) -> Float[Array, "*b Q"]:
        h = self.hidden(x)
        last = h[-1] if h else x
        return _affine(last, self.weights[-1], self.biases[-1])


def check_mlp(check: Shapes, argument: str, model: MLP, lead: str = "") -> Shapes:
    """``model.weights[ℓ]`` ``(width_{ℓ+1}, width_ℓ)`` and ``model.biases[ℓ]``
    ``(width_{ℓ+1},)``, chained: input width ``d``, hidden widths ``h1 … hL``, output ``Q``,
    each after the leading axes ``lead`` (e.g. ``"P"``: a stack of P members)."""
    if len(model.weights) != len(model.biases) or not model.weights:
        check.fail(argument, "needs as many weight matrices as bias vectors, at least one")
    lead = f"{lead} " if lead else ""
    n = len(model.weights)
    widths = ["d", *(f"h{i}" for i in range(1, n)), "Q"]
    for i, (w, b) in enumerate(zip(model.weights, model.biases, strict=True)):
        check(f"{argument}.weights[{i}]", w, f"{lead}{widths[i + 1]} {widths[i]}")
        check(f"{argument}.biases[{i}]", b, f"{lead}{widths[i + 1]}")
    return check


def _data(function: str, model: MLP, x, y) -> Shapes:
    check = check_mlp(Shapes(function), "model", model)
    check("x", x, "n d")
    check("y", y, "n")
    return check


def _affine(x, w, b):
    """x Wᵀ + b for inputs with any leading batch shape (explicit broadcast of b)."""
    y = x @ w.T
    return y + b.reshape((1,) * (y.ndim - 1) + b.shape)


def init_mlp(
    key: PRNGKeyArray, in_dim: int, hidden: Sequence[int], n_classes: int, dtype=None
) -> MLP:
    """He-normal weights (std √(2/fan_in)), zero biases; ``hidden`` lists the L widths.
    ``key``: one PRNG key. Batch axis: refused (vmap over keys for a stack of members)."""
    Shapes("init_mlp").key("key", key)
    widths = [int(in_dim), *map(int, hidden), int(n_classes)]
    if any(w < 1 for w in widths):
        raise ValueError(f"layer widths must be positive, got {widths}")
    dtype = dtype or jnp.result_type(float)
    keys = jax.random.split(key, len(widths) - 1)
    weights = tuple(
        (math.sqrt(2.0 / fan_in) * jax.random.normal(k, (fan_out, fan_in))).astype(dtype)
        for k, fan_in, fan_out in zip(keys, widths[:-1], widths[1:], strict=True)
    )
    biases = tuple(jnp.zeros(w, dtype) for w in widths[1:])
    return MLP(weights=weights, biases=biases)


def flatten_params(model: MLP) -> Float[Array, " D"]:
    """The weight vector w ∈ R^D (order W_1, W_2, …, b_1, b_2, … as in ``ravel_pytree``).
    Batch axis: refused (a stack of members would be flattened into one vector: vmap)."""
    check_mlp(Shapes("flatten_params"), "model", model)
    return ravel_pytree(model)[0]


def _check_vector(function: str, argument: str, vector, spec: str, like: MLP) -> None:
    check = check_mlp(Shapes(function), "like", like)
    size = sum(int(w.size) + int(b.size) for w, b in zip(like.weights, like.biases, strict=True))
    check.sizes["D"] = size
    check(argument, vector, spec)


def unflatten_params(vector: Float[Array, " D"], like: MLP) -> MLP:
    """Inverse of :func:`flatten_params` for the architecture of ``like``; ``vector`` ``(D,)``
    with D the parameter count of ``like``. Batch axis: refused (vmap over vectors)."""
    _check_vector("unflatten_params", "vector", vector, "D", like)
    return ravel_pytree(like)[1](vector)


def per_example_loss(model: MLP, x: Float[Array, "n d"], y: Int[Array, " n"]) -> Float[Array, " n"]:
    """Softmax cross-entropy ℓ(w, z_i) of every example (nats); ``x`` ``(n, d)``, ``y``
    ``(n,)``. Batch axis: refused on ``model``, ``x`` and ``y`` (vmap over members)."""
    _data("per_example_loss", model, x, y)
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y)


def _blocks(x, block: int):
    """Pad the leading axis to a multiple of ``block`` and reshape to ``(nb, block, ...)``."""
    n = x.shape[0]
    nb = -(-n // block)
    pad = jnp.zeros((nb * block - n, *x.shape[1:]), x.dtype)
    return jnp.concatenate([x, pad]).reshape(nb, block, *x.shape[1:])


def evaluate(
    model: MLP, x: Float[Array, "n d"], y: Int[Array, " n"], *, block: int = 512
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Mean cross-entropy and accuracy over ``(x, y)`` (``(n, d)``, ``(n,)``), in blocks of
    ``block`` examples. Batch axis: refused (vmap over members)."""
    _data("evaluate", model, x, y)
    n = x.shape[0]
    block = max(1, min(block, n))
    xb, yb = _blocks(x, block), _blocks(y, block)
    mask = _blocks(jnp.ones(n, bool), block)

    def one(args):
        xi, yi, mi = args
        logits = model(xi)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, yi)
        correct = jnp.argmax(logits, axis=-1) == yi
        return jnp.sum(jnp.where(mi, loss, 0.0)), jnp.sum(mi & correct)

    loss, correct = jax.lax.map(one, (xb, yb, mask))
    return jnp.sum(loss) / n, jnp.sum(correct) / n


@eqx.filter_jit
def loss_matrix(
    vectors: Float[Array, "K D"],
    like: MLP,
    x: Float[Array, "n d"],
    y: Int[Array, " n"],
    *,
    block: int = 32,
) -> Float[Array, "K n"]:
    """ℓ(w_a, z_i) for every iterate w_a (rows of ``vectors``) and example, ``block`` iterates
    at a time (the input of :func:`gflow_jax.diagnostics.loss_pseudometric`). ``vectors``
    ``(K, D)`` flattened parameters of ``like``'s architecture, ``x`` ``(n, d)``, ``y`` ``(n,)``.
    Batch axis: refused beyond the K iterates."""
    _check_vector("loss_matrix", "vectors", vectors, "K D", like)
    check = check_mlp(Shapes("loss_matrix"), "like", like)
    check("x", x, "n d")
    check("y", y, "n")
    k = vectors.shape[0]
    block = max(1, min(block, k))
    unravel = ravel_pytree(like)[1]

    def rows(vs):
        return jax.vmap(lambda v: per_example_loss(unravel(v), x, y))(vs)

    out = jax.lax.map(rows, _blocks(vectors, block))
    return out.reshape(-1, x.shape[0])[:k]


def make_optimizer(name: str, learning_rate, momentum: float = 0.0):
    """``optax.sgd`` (optionally with heavy-ball ``momentum``) or ``optax.adam``.

    ``learning_rate`` may be a traced scalar; the optimizer *state* does not depend on it, so the
    state of ``make_optimizer(name, 0.0).init(params)`` serves every learning rate.
    """
    if name == "sgd":
        return optax.sgd(learning_rate, momentum=momentum if momentum > 0 else None)
    if name == "adam":
        return optax.adam(learning_rate)
    raise ValueError(f"unknown optimizer {name!r}; expected 'sgd' or 'adam'")
