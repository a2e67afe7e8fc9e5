"""Where a face goes between two events, and when two faces meet
(docs/theory.md#meeting-faces).

Between events a face (or glued group) with target ȳ and rate λ follows the closed form
c(t) = ȳ + (c − ȳ)e^{−λt} (:func:`path`). Two faces meet where the difference of two such
exponentials vanishes; it has at most one extremum, so each of its two monotone pieces holds at
most one root, found to rounding level by a safeguarded Newton iteration
(:func:`meeting_times`); :func:`may_meet` rules most pairs out first. Used by the exact solver
(:mod:`gflow_jax.dynamics._exact`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

#: the meeting root finder: Newton steps at most, then bisection; all steps at most
_NEWTON_STEPS, _ROOT_STEPS = 16, 96


def path(c, ybar, rate, t):
    """c(t) = ȳ + (c − ȳ)e^{−λt}, written as c + (c − ȳ)·expm1(−λt): exactly c at t = 0 (two
    faces that meet stay exactly equal) and accurate for small λt."""
    return c + (c - ybar) * jnp.expm1(-rate * t)


def _first_root(f, df, lo, hi):
    """The root of each f that is monotone on (lo, hi] and changes sign there (elementwise over
    the arrays), else ``inf``.

    Safeguarded Newton: a step that would leave the bracket, and every step after
    :data:`_NEWTON_STEPS`, bisects it instead; each element stops when its step or its bracket
    is at rounding level or f vanishes (typically 4–6 steps; at most :data:`_ROOT_STEPS`). One
    ``while_loop`` for every element: it takes no step when no element has a root."""
    flo, fhi = f(lo), f(hi)
    has = (flo != 0) & (flo * fhi <= 0) & (hi > lo)
    sign = jnp.where(flo < 0, 1.0, -1.0)  # sign·f rises through the root
    eps = 4 * jnp.finfo(lo.dtype).eps

    def cond(carry):
        i, _, _, _, done = carry
        return (i < _ROOT_STEPS) & ~jnp.all(done)

    def body(carry):
        i, a, b, x, done = carry
        gx, dgx = sign * f(x), sign * df(x)
        a_new = jnp.where(gx < 0, x, a)
        b_new = jnp.where(gx < 0, b, x)
        newton = x - gx / jnp.where(dgx != 0, dgx, 1.0)
        inside = (dgx != 0) & (newton > a_new) & (newton < b_new) & (i < _NEWTON_STEPS)
        x_new = jnp.where(inside, newton, 0.5 * (a_new + b_new))
        scale = jnp.maximum(jnp.abs(x_new), jnp.finfo(lo.dtype).tiny)
        settled = (gx == 0) | (jnp.abs(x_new - x) <= eps * scale) | (b_new - a_new <= eps * scale)
        x_new = jnp.where(gx == 0, x, x_new)
        keep = done
        return (
            i + 1,
            jnp.where(keep, a, a_new),
            jnp.where(keep, b, b_new),
            jnp.where(keep, x, x_new),
            done | settled,
        )

    start = jnp.where(has, 0.5 * (lo + hi), lo)
    carry = (jnp.asarray(0), lo, hi, start, ~has)
    _, _, _, x, _ = jax.lax.while_loop(cond, body, carry)
    return jnp.where(has, x, jnp.inf)


def meeting_times(c, mo, horizon):
    """First time each pair of faces meets within (0, horizon], ``(L, L)`` (``inf``: never)."""
    ca, cb = c[:, None], c[None, :]
    ya, yb = mo.ybar[:, None], mo.ybar[None, :]
    la, lb = mo.rate[:, None], mo.rate[None, :]
    ba, bb = ca - ya, cb - yb

    def f(t):  # exactly ca − cb at t = 0; t (2, L, L): both monotone pieces at once
        return (
            (ca - cb)[None]
            + ba[None] * jnp.expm1(-la[None] * t)
            - bb[None] * jnp.expm1(-lb[None] * t)
        )

    def df(t):
        return -(la * ba)[None] * jnp.exp(-la[None] * t) + (lb * bb)[None] * jnp.exp(-lb[None] * t)

    # f' = −λa·ba·e^{−λa t} + λb·bb·e^{−λb t} vanishes at most once
    num, den = la * ba, lb * bb
    valid = (num * den > 0) & (la != lb)
    te = jnp.log(jnp.where(valid, num / jnp.where(valid, den, 1.0), 1.0)) / jnp.where(
        valid, la - lb, 1.0
    )
    te = jnp.where(valid, jnp.clip(te, 0.0, horizon), 0.0)
    lo = jnp.stack([jnp.zeros_like(te), te])
    hi = jnp.stack([te, jnp.broadcast_to(horizon, te.shape)])
    t = jnp.min(_first_root(f, df, lo, hi), axis=0)
    return jnp.minimum(t, t.T)  # one time per pair, whichever face is named first


def may_meet(c, mo, horizon, other) -> jax.Array:
    """Whether two faces of one coordinate marked ``other`` ``(L, L)`` could meet within
    (0, horizon]: each face's path is monotone, so over the interval it covers the range between
    c and c(horizon); faces whose ranges (widened by 1e-9 relative, for rounding) are disjoint
    cannot meet. A cheap, conservative test that lets the solver skip :func:`meeting_times`."""
    end = path(c, mo.ybar, mo.rate, horizon)
    lo, hi = jnp.minimum(c, end), jnp.maximum(c, end)
    pad = 1e-9 * (jnp.abs(lo) + jnp.abs(hi)) + jnp.finfo(c.dtype).tiny
    lo, hi = lo - pad, hi + pad
    overlap = (lo[:, None] <= hi[None, :]) & (lo[None, :] <= hi[:, None])
    return jnp.any(overlap & other)
