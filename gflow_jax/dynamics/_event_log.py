"""The record of an event-driven solve: the segments and events of every coordinate, row by row,
then the thresholds at the save times and every event in time order
(:mod:`gflow_jax.dynamics._exact`)."""

from __future__ import annotations

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ._meetings import path
from ._solution import FlowEvents


class EventLog(eqx.Module):
    """The segments and events of every coordinate, in time order: row ``i`` of coordinate k is
    its i-th segment and the event that ends it (the initial ties, the events, the final
    segment: at most E = max_events + L + 1 rows). A zero-time check of initial ties writes its
    row at the coordinate's count without advancing it, so the next row, at the same ``s``,
    supersedes it. Only the first ``count`` rows of each coordinate are read, over the smallest
    of :func:`_buckets` that holds them, so what the log costs after the loop follows the events
    taken, not E.

    ``seg`` ``(E, M, 1 + 3L)``: each segment's start s, then c, ȳ and λ of its faces at the
    start (c(t) = ȳ + (c − ȳ)e^{−λ(t − s)}); ``ev`` ``(E, M, 2)``: each event's time and value
    (``inf`` time: the segment is the last one); ``ev_id`` ``(E, M, 2)``: its face and kind
    (``-1`` if none)."""

    seg: Float[Array, "E M F"]
    ev: Float[Array, "E M 2"]
    ev_id: Int[Array, "E M 2"]

    @classmethod
    def empty(cls, M: int, E: int, L: int, dtype) -> EventLog:
        """A log of ``E`` rows; the rows past a coordinate's count are never read, so they are
        left at zero."""
        return cls(
            jnp.zeros((E, M, 1 + 3 * L), dtype),
            jnp.zeros((E, M, 2), dtype),
            jnp.zeros((E, M, 2), jnp.int32),
        )

    def write(self, row, seg, ev, ev_id) -> EventLog:
        """Row ``row[k]`` of every coordinate k (``(M,)``) set to ``seg`` ``(M, 1 + 3L)``,
        ``ev`` and ``ev_id`` ``(M, 2)``, in place; rows past the end are dropped."""
        M = row.shape[0]
        at = (row, jnp.arange(M))
        return EventLog(
            self.seg.at[at].set(seg, mode="drop"),
            self.ev.at[at].set(ev, mode="drop"),
            self.ev_id.at[at].set(ev_id, mode="drop"),
        )

    def write_runs(self, first, n, seg, ev, ev_id) -> EventLog:
        """Rows ``first[k] … first[k] + n[k] − 1`` of every coordinate k set to the first
        ``n[k]`` of its ``seg`` ``(M, K, 1 + 3L)``, ``ev`` and ``ev_id`` ``(M, K, 2)``."""
        E, M = self.ev.shape[:2]
        K = ev.shape[1]
        j = jnp.arange(K)[None, :]
        rows = jnp.where(j < n[:, None], first[:, None] + j, E)  # E: dropped
        at = (rows, jnp.arange(M)[:, None])
        return EventLog(
            self.seg.at[at].set(seg, mode="drop"),
            self.ev.at[at].set(ev, mode="drop"),
            self.ev_id.at[at].set(ev_id, mode="drop"),
        )


def _buckets(E: int) -> list[int]:
    """Static sizes 64, 256, … up to E: the log is read over the first of them that holds every
    step taken."""
    sizes, k = [], 64
    while k < E:
        sizes.append(k)
        k *= 4
    return [*sizes, E]


def _over_rows(log: EventLog, count, read):
    """``read(seg, ev, ev_id)`` of the log's first K rows (``(K, M, ·)``), K the smallest bucket
    that holds the ``count`` ``(M,)`` rows of every coordinate (of every member of a vmapped
    batch), the rows from a coordinate's count on holding no segment (start ``inf``) and no
    event (``time = inf``, ids ``-1``). What ``read`` does not use is never computed."""
    E = log.ev.shape[0]
    sizes = _buckets(E)

    def first(K):
        def branch():
            unused = jnp.arange(K)[:, None] >= count[None, :]  # (K, M)
            seg = log.seg[:K].at[:, :, 0].set(jnp.where(unused, jnp.inf, log.seg[:K, :, 0]))
            time = jnp.where(unused, jnp.inf, log.ev[:K, :, 0])
            value = jnp.where(unused, jnp.nan, log.ev[:K, :, 1])
            ev_id = jnp.where(unused[..., None], -1, log.ev_id[:K])
            return read(seg, jnp.stack([time, value], -1), ev_id)

        return branch

    # the bucket of the most rows of a vmapped batch (unvmap_max: never batched), so that the
    # switch stays a switch under vmap instead of running every bucket for every member
    most = eqxi.unvmap_max(jnp.max(count))
    bucket = jnp.searchsorted(jnp.asarray(sizes), most, side="left")
    return jax.lax.switch(bucket, [first(K) for K in sizes])


def segment_saves(log: EventLog, count, save_ts: Float[Array, " T"]) -> Float[Array, "T M L"]:
    """Thresholds at the save times from the first ``count`` ``(M,)`` segments of every
    coordinate (closed form: the last segment starting at or before each save)."""

    def read(seg, ev, ev_id):
        L = (seg.shape[-1] - 1) // 3
        seg = jnp.swapaxes(seg, 0, 1)  # (M, K, 1 + 3L)
        parts = seg[..., 0], seg[..., 1 : 1 + L], seg[..., 1 + L : 1 + 2 * L], seg[..., 1 + 2 * L :]

        def one(seg_s, seg_c, seg_ybar, seg_rate):
            j = jnp.searchsorted(seg_s, save_ts, side="right", method="scan_unrolled")
            j = jnp.clip(j - 1, 0, None)
            t = save_ts - seg_s[j]
            return path(seg_c[j], seg_ybar[j], seg_rate[j], t[:, None])

        return jnp.moveaxis(jax.vmap(one)(*parts), 0, 1)

    return _over_rows(log, count, read)


def _sortable(x: Float[Array, " n"]) -> Int[Array, " n"]:
    """float64 → int64 with the same order (−0 taken as +0; NaN after +inf): the bits of a
    non-negative float already sort as integers, a negative one's are mirrored."""
    bits = jax.lax.bitcast_convert_type(jnp.where(x == 0, 0.0, x), jnp.int64)
    return jnp.where(bits < 0, bits ^ jnp.int64(0x7FFF_FFFF_FFFF_FFFF), bits)


def time_order(time: Float[Array, " n"]) -> Int[Array, " n"]:
    """``jnp.argsort(time, stable=True)`` for float64 ``time`` ``(n,)``, from two sorts of one
    int64 operand each: XLA's CPU sort takes a fast path for those (0.2 ms for n = 4096) where a
    float key or a second operand goes through its generic comparator (1–1.5 ms). The first sort
    gives every time the position of its first equal; the second sorts position·n + index, which
    orders by time and then by index, and carries the index."""
    n = time.shape[0]
    key = _sortable(time)
    first = jnp.searchsorted(jnp.sort(key), key, side="left", method="scan_unrolled")
    packed = first.astype(jnp.int64) * n + jnp.arange(n, dtype=jnp.int64)
    return (jnp.sort(packed) % n).astype(jnp.int32)


def sorted_events(log: EventLog, count) -> FlowEvents:
    """Every event in time order (ties by coordinate, then row), padded with ``time = inf``
    (and ``coord = -1``) to E·M. Only the first ``count`` ``(M,)`` rows of each coordinate are
    sorted (:func:`_over_rows`): the cost follows the events, not the ``max_events`` bound."""
    E, M = log.ev.shape[:2]

    def read(seg, ev, ev_id):
        K = ev.shape[0]
        ev, ev_id = jnp.swapaxes(ev, 0, 1), jnp.swapaxes(ev_id, 0, 1)
        time = ev[..., 0].ravel()
        order = time_order(time)
        coord = jnp.repeat(jnp.arange(M, dtype=jnp.int32), K)
        coord = jnp.where(jnp.isfinite(time), coord, -1)
        cols = (time, ev_id[..., 0].ravel(), coord, ev_id[..., 1].ravel(), ev[..., 1].ravel())
        pads = (jnp.inf, -1, -1, -1, jnp.nan)
        return tuple(
            jnp.concatenate([x[order], jnp.full(M * (E - K), pad, x.dtype)])
            for x, pad in zip(cols, pads, strict=True)
        )

    time, layer, coord, kind, value = _over_rows(log, count, read)
    return FlowEvents(time=time, layer=layer, coord=coord, kind=kind, value=value)
