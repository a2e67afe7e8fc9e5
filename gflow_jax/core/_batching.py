"""Batched execution: one compiled, vmapped program per group of same-shape members, its batch
axis sharded over local devices.

A *member function* computes one batch member (a sweep point, a configuration) from pytrees of
arrays (and static Python values, identical across the batch). :func:`batched` turns it into one
``eqx.filter_jit`` program that ``vmap``s it over the leading axis of every array leaf; with
several devices the batch axis is laid out with a :class:`jax.sharding.NamedSharding` over a
1-D :class:`jax.sharding.Mesh` and the vmapped body runs under ``jax.shard_map``, so each
device loops over its own slice (an adaptive solve on one device does not wait for the slowest
member on another).

Batch sizes are bucketed (:func:`padded_batch_size`): a multiple of the device count and a power
of two (or 1.5 × one) per device, capped by ``max_batch``, so a sweep compiles few programs
whatever its size. Padding repeats the last member; padded results are discarded. The cap comes
from the devices' free memory where the caller asks (:func:`member_bytes` estimates one member's
working set, :func:`~gflow_jax.core.members_per_device` divides the memory by it), so very large
grids stream through in chunks that fit.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ._devices import MEMORY_FRACTION, members_per_device

BATCH_AXIS = "points"


def where_needed(need, expensive: Callable[[], Any], cheap: Callable[[], Any]):
    """``where(need, expensive(), cheap())`` leaf by leaf, calling ``expensive`` only when
    ``need`` (a boolean scalar) holds — for some member of a vmapped batch too.

    A solver loop skips rare, dear work with a ``lax.cond``; but under ``vmap`` a cond whose
    predicate is batched runs both branches for every member (JAX turns it into a select), so
    every step of every member of the batch would do that work. Here the cond's predicate is
    ``unvmap_any(need)`` (equinox; diffrax's loops do the same): it is never batched, the dear
    branch runs only at steps where some member needs it, and each member then takes its own
    result. Without ``vmap`` this is ``lax.cond(need, expensive, cheap)``, result for result.

    ``cheap`` is computed once, before the cond, and both branches use that value: each branch
    would compute it anyway (the dear one to fill the members that do not need ``expensive``),
    and tracing it once keeps the program small where ``cheap`` is itself heavy (a light
    resolution beside the full one, a nested ``where_needed``): the compile time follows.
    """
    fallback = cheap()

    def both():
        return jax.tree.map(lambda a, b: jnp.where(need, a, b), expensive(), fallback)

    return jax.lax.cond(eqxi.unvmap_any(need), both, lambda: fallback)


def batch_mesh(devices: Sequence[jax.Device]) -> Mesh | None:
    """A 1-D mesh over ``devices`` (axis :data:`BATCH_AXIS`); ``None`` for a single device."""
    if len(devices) <= 1:
        return None
    return Mesh(np.asarray(devices), (BATCH_AXIS,))


def padded_batch_size(n: int, n_devices: int, max_batch: int) -> int:
    """Size of the compiled batch for ``n`` points: ``n_devices × b`` with ``b`` the smallest of
    1, 2, 3, 4, 6, 8, 12, 16, 24, … (powers of two and 1.5 × them) with ``n_devices × b ≥ n``,
    capped at ``max_batch`` rounded up to a multiple of ``n_devices``. Few distinct sizes (so a
    resumed or chunked sweep reuses compiled programs) and at most a third of a batch wasted."""
    if n < 1 or n_devices < 1 or max_batch < 1:
        raise ValueError(f"need positive sizes, got n={n}, devices={n_devices}, max={max_batch}")
    cap = -(-max_batch // n_devices) * n_devices
    need = -(-n // n_devices)
    per_device = 1
    while per_device < need:
        if per_device == 1:
            per_device = 2
        elif per_device & (per_device - 1) == 0:  # 2^k → 3·2^(k-1)
            per_device = per_device * 3 // 2
        else:  # 3·2^(k-1) → 2^(k+1)
            per_device = per_device * 4 // 3
    return min(per_device * n_devices, cap)


#: a member's working set, as a multiple of the bytes of its arguments and results (solver
#: stages, gradient temporaries; a planning figure, generous on purpose)
WORKING_SET = 4


def member_bytes(member: Callable, args: tuple) -> int:
    """Planning estimate of the device memory one batch member takes: ``WORKING_SET`` × (bytes
    of the array leaves of ``args``, one member's arguments without a batch axis, plus bytes of
    its results from ``jax.eval_shape``, which traces but does not compile or run)."""
    dynamic, static = eqx.partition(args, eqx.is_array)
    out = jax.eval_shape(lambda d: member(*eqx.combine(d, static)), dynamic)
    leaves = [x for x in jax.tree.leaves((dynamic, out)) if hasattr(x, "dtype")]
    return WORKING_SET * max(1, sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in leaves))


#: members per CPU device and call when no ``max_batch`` is given: on a CPU a vmapped flow's cost
#: per member-step grows once the batch leaves the caches (measured on 2 cores: 5.9 µs at 128
#: members per device, 8.8 µs at 512), so CPU batches keep the size sweeps used before
CPU_MEMBERS_PER_DEVICE = 128


def memory_batch_size(
    member: Callable,
    args: tuple,
    n: int,
    devices: Sequence[jax.Device],
    max_batch: int | None = None,
    *,
    fraction: float = MEMORY_FRACTION / 2,
) -> int:
    """Members per compiled call for ``n`` members of ``member``: :func:`padded_batch_size`
    capped by ``max_batch`` (``None``: on accelerators no cap of its own, on CPUs
    :data:`CPU_MEMBERS_PER_DEVICE` per device) and by what fits in ``fraction`` of the memory
    free on every device, one member's working set estimated by
    :func:`member_bytes` from ``args`` (one member's arguments). The default fraction is half
    of :data:`~gflow_jax.core.MEMORY_FRACTION`: two chunks may be in flight at a time (one
    computing, the last being copied back)."""
    per_device = members_per_device(member_bytes(member, args), devices, fraction=fraction)
    cap = per_device * len(devices)
    if max_batch is None and all(d.platform == "cpu" for d in devices):
        max_batch = CPU_MEMBERS_PER_DEVICE * len(devices)
    return padded_batch_size(n, len(devices), min(cap, max_batch or cap))


def stack(trees: Sequence[Any]) -> Any:
    """Stack same-structure pytrees along a new leading axis (array leaves only; every other
    leaf must be equal across ``trees`` and is kept as is)."""
    dynamic, static = zip(*(eqx.partition(t, eqx.is_array) for t in trees), strict=True)
    for s in static[1:]:
        if jax.tree.structure(s) != jax.tree.structure(static[0]) or jax.tree.leaves(
            s
        ) != jax.tree.leaves(static[0]):
            raise ValueError("cannot stack pytrees whose static parts differ")
    return eqx.combine(jax.tree.map(lambda *xs: jnp.stack(xs), *dynamic), static[0])


def pad_batch(tree: Any, size: int) -> Any:
    """Pad every array leaf's leading axis to ``size`` by repeating its last entry (other leaves
    are left alone)."""

    def pad(a):
        n = a.shape[0]
        if n > size:
            raise ValueError(f"batch of {n} exceeds the padded size {size}")
        if n == size:
            return a
        return jnp.concatenate([a, jnp.repeat(a[-1:], size - n, axis=0)])

    dynamic, static = eqx.partition(tree, eqx.is_array)
    return eqx.combine(jax.tree.map(pad, dynamic), static)


@functools.cache
def batched(member: Callable) -> Callable:
    """The compiled batched version of ``member(*args)``: ``run(args, mesh)``.

    ``args`` is a tuple of pytrees whose array leaves carry a leading batch axis (all of the same
    length, a multiple of the mesh size); non-array leaves are static and shared. ``member`` must
    return a pytree of arrays. The result keeps the batch axis (sharded across ``mesh``).
    Cached per member function; new values of any array (hyperparameters included) reuse the
    compiled program.
    """

    @eqx.filter_jit
    def run(args: tuple, mesh: Mesh | None):
        dynamic, static = eqx.partition(args, eqx.is_array)

        def local(dyn):
            return jax.vmap(lambda d: member(*eqx.combine(d, static)))(dyn)

        if mesh is None:
            return local(dynamic)
        spec = PartitionSpec(BATCH_AXIS)
        return jax.shard_map(local, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)(
            dynamic
        )

    return run


def call_batched(member: Callable, args: tuple, devices: Sequence[jax.Device]) -> Any:
    """Run :func:`batched` ``(member)`` on ``args`` (batch already padded to a multiple of
    ``len(devices)``), placing the inputs with a ``NamedSharding`` over the batch axis."""
    mesh = batch_mesh(devices)
    dynamic, static = eqx.partition(args, eqx.is_array)
    if mesh is None:
        dynamic = jax.device_put(dynamic, devices[0])
    else:
        dynamic = jax.device_put(dynamic, NamedSharding(mesh, PartitionSpec(BATCH_AXIS)))
    return batched(member)(eqx.combine(dynamic, static), mesh)
