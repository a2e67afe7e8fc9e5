"""The bias field at its discontinuities: Filippov solutions (docs/theory.md#sliding,
docs/theory.md#meeting-faces).

In the common frame every coordinate k is independent and the field of its L faces jumps where a
face crosses a data value or another face of the same coordinate. At such a value the solution
continues in one of finitely many *modes*: the faces (and the data value) that meet there are
ordered again, each block of the order moving on as one face — a block holding the data value is
*stuck* there (velocity 0), a block of several faces is *glued* (one face with the union of their
points and the summed metric Σ d²). A mode is consistent when the order it assumes persists (the
blocks' velocities increase strictly along the order) and every block it glues is attracting (for
every split of the block into a lower and an upper part, the one-sided velocities close the gap).
:func:`resolve` picks the consistent mode, preferring the most separated one and, among those,
the order of the classical field (a point exactly on a face is not truncated).

Ownership on either side of a discontinuity is evaluated exactly with integer tie-break *ranks*
(:func:`~gflow_jax.core.threshold_gradient`): a face of rank r at the value of a data point sits
r·ε above it. Everything here works on one coordinate (arrays ``(L,)``) and is vmapped over the
coordinates by the solvers.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from ..core import SortedData, threshold_gradient

#: the most items (faces and a data value) that may meet at one value
MAX_CLUSTER = 4


class Mode(eqx.Module):
    """How the faces continue after their last discontinuity, ``(L, M)`` each.

    Attributes:
        rank: tie-break ranks (docs/theory.md#sliding) that fix ownership where faces sit exactly
            on a data value or on each other.
        group: glued groups: faces with the same label move as one (label = the group's lowest
            layer index).
        stuck: face held at a data value (Filippov sliding: velocity 0).
    """

    rank: Int[Array, "L M"]
    group: Int[Array, "L M"]
    stuck: Bool[Array, "L M"]

    @classmethod
    def free(cls, shape: tuple[int, int]) -> Mode:
        """No glue, nothing stuck, no tie-breaks."""
        L, M = shape
        group = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32)[:, None], (L, M))
        return cls(jnp.zeros((L, M), jnp.int32), group, jnp.zeros((L, M), bool))


class Coordinate(NamedTuple):
    """One coordinate's data: sorted values ``(N,)``, prefix sums of weights and weighted targets
    ``(N+1,)``, tie runs ``(N,)``; face sides and metric ``(L,)``; the normalisation N."""

    values: Float[Array, " N"]
    weight_prefix: Float[Array, " N1"]
    target_prefix: Float[Array, " N1"]
    run_end: Int[Array, " N"]
    positive: Bool[Array, " L"]
    d2: Float[Array, " L"]
    n_rows: Float[Array, ""]

    def sorted_data(self) -> SortedData:
        """This coordinate as :class:`~gflow_jax.core.SortedData` of one coordinate (M = 1), for
        the (L, M) field functions of :mod:`gflow_jax.core._sorted_field`."""
        return SortedData(
            self.values[None], self.target_prefix[None], self.weight_prefix[None],
            self.run_end[None],
        )  # fmt: skip


def coordinates(data: SortedData, d: Float[Array, "L M"]) -> Coordinate:
    """The per-coordinate view of sorted data and weights: every field has a leading M axis."""
    n_rows = jnp.full(d.shape[1], data.values.shape[1], d.dtype)
    return Coordinate(
        data.values, data.weight_prefix, data.target_prefix, data.run_end, (d > 0).T, (d**2).T,
        n_rows,
    )  # fmt: skip


def gradient(c: Float[Array, " L"], rank: Int[Array, " L"], co: Coordinate):
    """g_ℓ = ∂C_in/∂c_ℓ = (n_ℓ c_ℓ − Σ_owned ω ỹ)/N and the owned (weighted) counts n_ℓ, ``(L,)``,
    with ties broken by ``rank``."""
    sign = jnp.where(co.positive, 1.0, -1.0)[:, None]
    g, n = threshold_gradient(c[:, None], sign, co.sorted_data(), rank[:, None])
    return g[:, 0], n[:, 0]


def _group_sum(x, group):
    return jnp.sum(jnp.where(group[None, :] == group[:, None], x[None, :], 0.0), axis=1)


class Motion(NamedTuple):
    """Each face's motion until the next discontinuity: c(t) = ȳ + (c − ȳ)e^{−λt}, ``(L,)``.

    ``velocity`` = −λ(c − ȳ) now; ``g`` the Filippov-corrected gradient (what the flow of the
    parameters uses: glued faces share their group's Σg in proportion to d², stuck faces 0)."""

    velocity: Float[Array, " L"]
    ybar: Float[Array, " L"]
    rate: Float[Array, " L"]
    g: Float[Array, " L"]


def motion(c, rank, group, stuck, co: Coordinate) -> Motion:
    """The Filippov velocity of every face in a mode (docs/theory.md#meeting-faces): a group
    moves with −Σ_G g / Σ_G d², a stuck face not at all."""
    g, n = gradient(c, rank, co)
    G, D, nG = _group_sum(g, group), _group_sum(co.d2, group), _group_sum(n, group)
    moving = (~stuck) & (nG > 0)
    rate = jnp.where(moving, nG / (co.n_rows * D), 0.0)
    ybar = jnp.where(moving, c - co.n_rows * G / jnp.where(nG > 0, nG, 1.0), c)
    velocity = jnp.where(stuck, 0.0, -G / D)
    return Motion(velocity, ybar, rate, jnp.where(stuck, 0.0, co.d2 * G / D))


# --------------------------------------------------------------------------------------------
# modes at a meeting value: ordered partitions of the items, and the splits of their blocks


def _weak_orders(k: int) -> list[tuple[int, ...]]:
    """Every ordered partition of k items, as the block index of each item (blocks 0..B−1)."""
    out = set()
    for blocks in itertools.product(range(k), repeat=k):
        used = sorted(set(blocks))
        if used == list(range(len(used))):
            out.add(blocks)
    return sorted(out, key=lambda b: (-len(set(b)), b))  # most separated first


def _tables(max_items: int, width: int = MAX_CLUSTER):
    """Candidate modes for 1..max_items items: block of each slot (−1 unused), item count, block
    count; and for each candidate every split of a glued block into a lower and an upper part."""
    orders, splits = [], []
    for k in range(1, max_items + 1):
        for order in _weak_orders(k):
            row = list(order) + [-1] * (width - k)
            orders.append((row, k, len(set(order))))
            cand = []
            for b in sorted(set(order)):
                members = [i for i in range(k) if order[i] == b]
                for size in range(1, len(members)):
                    for lower in itertools.combinations(members, size):
                        cand.append(([i in lower for i in range(width)], b))
            splits.append(cand)
    n_splits = max(1, max(len(c) for c in splits))
    lower = np.zeros((len(orders), n_splits, width), bool)
    block = np.full((len(orders), n_splits), -1, np.int32)
    for o, cand in enumerate(splits):
        for j, (mask, b) in enumerate(cand):
            lower[o, j], block[o, j] = mask, b
    return (
        np.array([o[0] for o in orders], np.int32),
        np.array([o[1] for o in orders], np.int32),
        np.array([o[2] for o in orders], np.int32),
        lower,
        block,
    )


_ALL = _tables(MAX_CLUSTER)
_PAIRS = _tables(2)  # the common case: one face meets a data value or one other face


class Resolution(NamedTuple):
    rank: Int[Array, " L"]
    group: Int[Array, " L"]
    stuck: Bool[Array, " L"]
    ok: Bool[Array, ""]


def _slots(cluster, has_data):
    """Items of a cluster: its faces in layer order (slots 0..f−1), then the data value."""
    L = cluster.shape[0]
    order = jnp.argsort(~cluster, stable=True)  # cluster faces first, by layer
    n_faces = jnp.sum(cluster)
    slot_face = jnp.concatenate([order, jnp.full(MAX_CLUSTER, -1)])[:MAX_CLUSTER]
    slot_face = jnp.where(jnp.arange(MAX_CLUSTER) < n_faces, slot_face, -1)
    data_slot = jnp.where(has_data, n_faces, -1)
    face_slot = (
        jnp.full(L, -1)
        .at[jnp.where(slot_face >= 0, slot_face, L)]
        .set(jnp.arange(MAX_CLUSTER), mode="drop")
    )
    return slot_face, face_slot, data_slot, n_faces + has_data.astype(n_faces.dtype)


def _assign(slot_rank, slot_block, face_slot, data_slot, c, rank, group, stuck, cluster):
    """Ranks, groups and stuck flags of the faces for a mode of the cluster's items."""
    data_rank = jnp.where(data_slot >= 0, slot_rank[jnp.maximum(data_slot, 0)], 0)
    data_block = jnp.where(data_slot >= 0, slot_block[jnp.maximum(data_slot, 0)], -2)
    s = jnp.maximum(face_slot, 0)
    new_rank = jnp.where(cluster, slot_rank[s] - data_rank, rank)
    blk = jnp.where(cluster, slot_block[s], -3)
    L = c.shape[0]
    idx = jnp.arange(L)
    same = (blk[:, None] == blk[None, :]) & cluster[:, None] & cluster[None, :]
    label = jnp.min(jnp.where(same, idx[None, :], L), axis=1)
    new_group = jnp.where(cluster, label, group)
    new_stuck = jnp.where(cluster, blk == data_block, stuck)
    return new_rank, new_group.astype(group.dtype), new_stuck


def _evaluate(tables, c, rank, group, stuck, cluster, has_data, co):
    """The preferred consistent mode of the cluster among the candidates of ``tables``.

    Every candidate mode, every split of its glued blocks and the classical field are assigned
    first; their velocities then come from one vmapped evaluation of :func:`motion`."""
    blocks, sizes, n_blocks, lower, split_block = (jnp.asarray(t) for t in tables)
    slot_face, face_slot, data_slot, k = _slots(cluster, has_data)
    width = 2 * MAX_CLUSTER

    def assign(order):
        return _assign(order, order, face_slot, data_slot, c, rank, group, stuck, cluster)

    def split_order(order, mask, b):  # block b split: `mask` items just below the rest
        part = jnp.where(order < b, 2 * order, 2 * order + 1)
        return jnp.where(order == b, jnp.where(mask, 2 * b, 2 * b + 1), part)

    parts = jax.vmap(jax.vmap(split_order, (None, 0, 0)))(blocks, lower, split_block)
    orders = jnp.concatenate([blocks[:, None, :], parts], axis=1)  # (C, 1 + S, slots)
    C, S1 = orders.shape[:2]
    r, g, st = jax.vmap(assign)(orders.reshape(C * S1, -1))
    free = (jnp.zeros_like(rank), jnp.arange(c.shape[0], dtype=group.dtype), jnp.zeros_like(stuck))
    r = jnp.concatenate([r, free[0][None]])
    g = jnp.concatenate([g, free[1][None]])
    st = jnp.concatenate([st, free[2][None]])
    velocity = jax.vmap(lambda r1, g1, s1: motion(c, r1, g1, s1, co).velocity)(r, g, st)
    v_free, velocity = velocity[-1], velocity[:-1].reshape(C, S1, -1)

    def face_block(order):
        return jnp.where(cluster, order[jnp.maximum(face_slot, 0)], -1)

    def block_v(v, order):
        hit = face_block(order)[None, :] == jnp.arange(width)[:, None]  # (B, L)
        count = jnp.sum(hit, axis=1)
        mean = jnp.sum(jnp.where(hit, v[None, :], 0.0), axis=1) / jnp.maximum(count, 1)
        return jnp.where(count > 0, mean, 0.0)  # a block of the data value alone stays at 0

    def consistent(order, size, nb, sblk, vels, split_orders):
        v = block_v(vels[0], order)
        used = jnp.arange(width) < nb
        increasing = jnp.all(jnp.where(used[1:], v[1:] > v[:-1], True))
        vs = jax.vmap(block_v)(vels[1:], split_orders)  # (S, B)
        b = jnp.maximum(sblk, 0)
        closing = vs[jnp.arange(vs.shape[0]), 2 * b] >= vs[jnp.arange(vs.shape[0]), 2 * b + 1]
        attracting = jnp.all(jnp.where(sblk >= 0, closing, True))
        return (size == k) & increasing & attracting

    ok = jax.vmap(consistent)(blocks, sizes, n_blocks, split_block, velocity, parts)
    # the order of the classical field (each face alone, ranks 0) is preferred among equals
    v_item = jnp.where(slot_face >= 0, v_free[jnp.maximum(slot_face, 0)], 0.0)
    slots = jnp.arange(MAX_CLUSTER)
    valid = slots < k
    ahead = (v_item[None, :] < v_item[:, None]) | (
        (v_item[None, :] == v_item[:, None]) & (slots[None, :] < slots[:, None])
    )
    classical = jnp.sum(ahead & valid[None, :], axis=1)
    agree = jnp.all(jnp.where(valid[None, :], blocks == classical[None, :], True), axis=1)
    best = jnp.argmax(jnp.where(ok, 1 + 100 * n_blocks + 10 * agree, 0))
    r, gr, st = assign(blocks[best])
    return Resolution(r, gr, st, ok[best] & (k <= MAX_CLUSTER))


def resolve(c, rank, group, stuck, cluster, has_data, co: Coordinate, *, full: bool) -> Resolution:
    """The consistent mode of the faces ``cluster`` (``(L,)`` mask, all at one value) and, if
    ``has_data``, the data value they sit on. ``full=False`` considers clusters of two items only
    (a face meeting a data value or one other face: the common case, 3 candidate modes);
    ``full=True`` up to :data:`MAX_CLUSTER` items (75 candidates). ``ok`` is False when no mode
    is consistent or the cluster is larger."""
    items = jnp.sum(cluster) + has_data.astype(jnp.int32)
    res = _evaluate(_ALL if full else _PAIRS, c, rank, group, stuck, cluster, has_data, co)
    return res._replace(ok=res.ok & (items <= (MAX_CLUSTER if full else 2)))


def resolve_crossing(
    c, rank, group, stuck, face, up, approach, co: Coordinate
) -> tuple[Resolution, Array, Motion]:
    """The mode after one free face (alone at its value) reaches a data value moving ``up``
    (or down) with velocity ``approach`` just behind it; whether that case is decided here; and
    the motion beyond the value.

    Of the three candidate modes of :func:`resolve` for these two items, the face behind the
    value is inconsistent when its velocity there points at the value (it arrived): the face
    then crosses if its velocity beyond the value points onwards, else it sticks
    (docs/theory.md#sliding). ``decided`` is False when ``approach`` does not point at the value
    (pass 0 where its sign is in doubt): :func:`resolve` must choose. One evaluation of
    :func:`motion` instead of the nine of ``resolve(..., full=False)``, with the same arithmetic
    for the velocity beyond, so the same answer; where the face crosses, the motion beyond is
    the motion of the new mode."""
    side = jnp.where(up, 1, -1).astype(rank.dtype)
    beyond = motion(c, rank.at[face].set(side), group, stuck, co)
    v = beyond.velocity[face]
    cross = jnp.where(up, v > 0, v < 0)
    decided = jnp.where(up, approach > 0, approach < 0)
    new_rank = rank.at[face].set(jnp.where(cross, side, 0))
    new_group = group.at[face].set(jnp.asarray(face, group.dtype))
    new_stuck = stuck.at[face].set(~cross)
    return Resolution(new_rank, new_group, new_stuck, jnp.asarray(True)), decided, beyond
