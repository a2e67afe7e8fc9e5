"""Glued groups of faces: how strongly each holds together, and when it stops attracting
(docs/theory.md#meeting-faces). Shared by the exact and the event-located solvers."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._filippov import Coordinate, motion


def _splits(c, rank, group, stuck, co: Coordinate):
    """For every glued group (by label) and every split of it into a lower part P and an upper
    part Q: h = v_P − v_Q now and its slope dh/dc′ = λ_Q − λ_P in the group's value (each part
    moves as v(c′) = −λ(c′ − ȳ) while ownership is fixed). ``(L, 2^L)`` each; invalid splits
    have h = +inf."""
    L = c.shape[0]
    masks = (jnp.arange(2**L)[:, None] >> jnp.arange(L)[None, :]) & 1 == 1  # (2^L, L)

    def split(label, mask):
        members = (group == label) & ~stuck
        lower, upper = mask & members, members & ~mask
        valid = jnp.any(lower) & jnp.any(upper) & jnp.all(mask <= members)
        parts = motion(
            c, jnp.where(lower, -1, jnp.where(upper, 1, rank)), jnp.where(upper, L + label, group),
            stuck, co,
        )  # fmt: skip
        i_low, i_up = jnp.argmax(lower), jnp.argmax(upper)
        h = parts.velocity[i_low] - parts.velocity[i_up]
        slope = parts.rate[i_up] - parts.rate[i_low]
        return jnp.where(valid, h, jnp.inf), jnp.where(valid, slope, 0.0)

    return jax.vmap(lambda lab: jax.vmap(lambda m: split(lab, m))(masks))(jnp.arange(L))


def split_margin(c, rank, group, stuck, co: Coordinate):
    """The least attraction v_P − v_Q over the splits of each glued group, by label ``(L,)``
    (``inf``: not a glued group)."""
    return jnp.min(_splits(c, rank, group, stuck, co)[0], axis=1)


def release_times(c, rank, group, stuck, mo, co: Coordinate):
    """Time at which each glued group stops attracting (``inf``: not before it settles).

    The group holds while v_P ≥ v_Q for every split (:func:`_splits`); each difference is affine
    in the group's value, so its root c* is exact, and the time to reach c* at the group's
    exponential rate is the release (docs/theory.md#meeting-faces). Stuck groups never release
    on their own: their ownership does not change until another face meets them."""
    h, slope = _splits(c, rank, group, stuck, co)  # (L labels, 2^L)
    L = c.shape[0]
    cg, ybar, rate = c[:, None], mo.ybar[:, None], mo.rate[:, None]
    cstar = cg - h / jnp.where(slope != 0, slope, 1.0)
    between = jnp.isfinite(h) & (slope != 0) & (rate > 0) & ((cstar - cg) * (ybar - cstar) > 0)
    dt = jnp.log(jnp.where(between, (ybar - cg) / jnp.where(between, ybar - cstar, 1.0), 1.0))
    dt = jnp.maximum(dt / jnp.where(between, rate, 1.0), 0.0)
    t = jnp.where(h < 0, 0.0, jnp.where(between, dt, jnp.inf))
    del L
    return jnp.min(t, axis=1)[group]
