"""Shape checks of the public functions: one helper, one message.

Every public function that takes arrays checks the rank and the shape of each array argument
against a spec of named sizes before it computes anything. Sizes named alike must agree across
the arguments of one call, so ``labels`` of shape ``(N,)`` must match the rows of ``features``
``(N, M)``. A wrong shape raises

    ValueError: papyan_collapse: labels must have shape (N,) = (6,), got (2, 6)

and, when the argument carries one axis too many, says that a batch axis is not accepted
there (vmap the function over it instead).

A spec is a string of names and integers, e.g. ``"N M"``, ``"L M M"``, ``"Q"`` or ``""`` (a
scalar). A spec that starts with ``*name`` accepts any number of leading axes; they must be the
same for every argument that uses ``*name`` in one call (the functions that broadcast over
leading axes by design, e.g. :func:`~gflow_jax.dynamics.balance_quantities` on stacked
networks).

The checks read ``.shape`` only, which is static under ``jit`` and ``vmap``: they run at trace
time and never wait for the device. Under ``vmap`` a function sees one member, so a function
that refuses a batch axis can still be vmapped.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Shapes", "axis_size", "shape_of"]


def shape_of(x: Any) -> tuple[int, ...]:
    """The shape of an array, a tracer, a ``jax.ShapeDtypeStruct`` or anything NumPy reads."""
    shape = getattr(x, "shape", None)
    return tuple(shape) if shape is not None else np.shape(x)


def axis_size(field: str, axis: int, doc: str) -> property:
    """A read-only property of an ``eqx.Module``: the length of axis ``axis`` of its array
    ``field`` (an ``int``, static under ``jit`` and ``vmap``), documented by ``doc``."""
    return property(lambda self: getattr(self, field).shape[axis], doc=doc)


def _render(names: list[str], batch: str | None) -> str:
    parts = ([f"*{batch}"] if batch else []) + names
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def _tuple(values: list) -> str:
    return "(" + ", ".join(map(str, values)) + ("," if len(values) == 1 else "") + ")"


class Shapes:
    """The shape checks of one call of ``function``: sizes bound by earlier arguments (or given
    as keywords, e.g. ``Shapes("class_means", Q=n_classes)``) constrain later ones.

    Example:
        >>> import numpy as np
        >>> s = Shapes("nc1_input", Q=2)
        >>> x = s("x_tilde", np.zeros((5, 3)), "N M")
        >>> s["N"], s["M"]
        (5, 3)
        >>> s("labels", np.zeros((2, 5)), "N")
        Traceback (most recent call last):
        ...
        ValueError: nc1_input: labels must have shape (N,) = (5,), got (2, 5) (a leading batch
        axis is not accepted here: vmap the function over it)
    """

    def __init__(self, function: str, **sizes: int):
        self.function = function
        self.sizes: dict[str, int] = {k: int(v) for k, v in sizes.items()}
        self.batches: dict[str, tuple[int, ...]] = {}

    def __getitem__(self, name: str) -> int:
        return self.sizes[name]

    def batch(self, name: str = "batch") -> tuple[int, ...]:
        """The leading axes bound to ``*name`` (empty when none were seen)."""
        return self.batches.get(name, ())

    def fail(self, argument: str, message: str) -> None:
        """Raise the one-line ``ValueError`` of this function naming ``argument``."""
        raise ValueError(f"{self.function}: {argument} {message}")

    def __call__(self, argument: str, x: Any, spec: str) -> Any:
        """Check ``x`` (named ``argument`` in the message) against ``spec``; returns ``x``.

        ``x = None`` passes (an optional argument left out).
        """
        if x is None:
            return x
        tokens = spec.split()
        batch = tokens[0][1:] if tokens and tokens[0].startswith("*") else None
        names = tokens[1:] if batch else tokens
        shape = shape_of(x)
        rank = len(names)
        lead = shape[: len(shape) - rank] if batch else ()
        ok = len(shape) >= rank if batch else len(shape) == rank
        if ok and batch and batch in self.batches and self.batches[batch] != lead:
            ok = False
        bound: dict[str, int] = {}
        if ok:
            for name, size in zip(names, shape[len(lead) :], strict=True):
                want = int(name) if name.isdigit() else self.sizes.get(name, bound.get(name))
                if want is not None and want != size:
                    ok = False
                    break
                if not name.isdigit():
                    bound[name] = size
        if not ok:
            self._refuse(argument, names, batch, shape)
        self.sizes.update(bound)
        if batch:
            self.batches.setdefault(batch, lead)
        return x

    def _refuse(self, argument, names, batch, shape) -> None:
        expected = _render(names, batch)
        known = [n if n.isdigit() else self.sizes.get(n, "?") for n in names]
        if batch and batch in self.batches:
            known = list(self.batches[batch]) + known
        elif batch:
            known = ["…"] + known
        if any(k != "?" for k in known) and not all(n.isdigit() for n in names):
            expected += f" = {_tuple(known)}"
        note = ""
        if not batch and len(shape) == len(names) + 1:
            trailing = shape[1:]
            if all(
                (n.isdigit() and int(n) == s) or (not n.isdigit() and self.sizes.get(n, s) == s)
                for n, s in zip(names, trailing, strict=True)
            ):
                note = " (a leading batch axis is not accepted here: vmap the function over it)"
        self.fail(argument, f"must have shape {expected}, got {_tuple(list(shape))}{note}")

    def key(self, argument: str, key: Any) -> Any:
        """Check one PRNG key: a typed key of shape ``()`` or a raw ``uint32`` key ``(2,)``."""
        if key is None:
            return key
        shape = shape_of(key)
        dtype = getattr(key, "dtype", None)
        typed = dtype is not None and "key" in str(dtype)
        if (typed and shape != ()) or (not typed and shape != (2,)):
            self.fail(
                argument,
                f"must be one PRNG key (a typed key of shape () or a raw key of shape (2,)), "
                f"got shape {_tuple(list(shape))}",
            )
        return key

    def network(self, argument: str, net: Any, lead: str = "") -> Shapes:
        """Check a :class:`~gflow_jax.core.ReLUNetwork`: weights ``(L, M, M)``, biases
        ``(L, M)``, out_weight ``(Q, M)``, out_bias ``(Q,)``, each after the leading axes
        ``lead`` (``"T"``: one stacking axis; ``"*batch"``: any). Returns this checker."""
        lead = f"{lead} " if lead else ""
        self(f"{argument}.weights", net.weights, lead + "L M M")
        self(f"{argument}.biases", net.biases, lead + "L M")
        self(f"{argument}.out_weight", net.out_weight, lead + "Q M")
        self(f"{argument}.out_bias", net.out_bias, lead + "Q")
        return self

    def adapted(self, argument: str, params: Any, lead: str = "") -> Shapes:
        """Check :class:`~gflow_jax.core.AdaptedParameters`: d and b ``(L, M)`` after the leading
        axes ``lead`` (e.g. ``"T"`` for a trajectory ``(T, L, M)``). Returns this checker."""
        lead = f"{lead} " if lead else ""
        self(f"{argument}.d", params.d, lead + "L M")
        self(f"{argument}.b", params.b, lead + "L M")
        return self
