"""The small kernels the exact solver's hot loop is made of, against independent computations:
the loop-free search of sorted data against NumPy's binary search, and the two-item resolution
of a face arriving at a data value against the general Filippov resolution over every mode."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gflow_jax.core import sort_data
from gflow_jax.core._sorted_field import search_left, value_counts
from gflow_jax.dynamics._filippov import coordinates, motion, resolve, resolve_crossing


@pytest.mark.parametrize("n", [1, 2, 33, 1000, 4097])
def test_search_left_equals_numpy_binary_search(n):
    rng = np.random.default_rng(n)
    ties = n % 2 == 1  # odd sizes: many repeated values
    v = np.sort(rng.integers(0, max(2, n // 3), n).astype(float) if ties else rng.normal(size=n))
    eps = np.finfo(float).eps
    cuts = np.concatenate(
        [v, v * (1 + eps) + eps, v * (1 - eps) - eps, [-np.inf, np.inf, -1e300, 1e300]]
    )
    cuts = np.concatenate([cuts, rng.normal(0.0, 10.0, 64)])
    got = np.asarray(search_left(jnp.asarray(v), jnp.asarray(cuts)))
    np.testing.assert_array_equal(got, np.searchsorted(v, cuts, side="left"))
    # and the counts built on it: #{u < cut}, #{u <= cut}
    run_end = np.searchsorted(v, v, side="right").astype(np.int32)
    below, upto = value_counts(jnp.asarray(v), jnp.asarray(run_end), jnp.asarray(cuts))
    np.testing.assert_array_equal(np.asarray(below), np.searchsorted(v, cuts, side="left"))
    np.testing.assert_array_equal(np.asarray(upto), np.searchsorted(v, cuts, side="right"))


_motion = jax.jit(motion)
_crossing = jax.jit(resolve_crossing)
_resolve = jax.jit(resolve, static_argnames="full")
_GROUP, _FREE = jnp.arange(3, dtype=jnp.int32), jnp.zeros(3, bool)


@jax.jit
def _coordinate(x, y, d):
    return jax.tree.map(lambda a: a[0], coordinates(sort_data(x, y), d))


def _arrivals(seed: int, count: int):
    """Random coordinates (N points, L faces of mixed sides) with one face placed exactly on a
    data value, arriving there from the side its velocity comes from; yields the face's
    coordinate, the side (``up``) and its velocity just behind the value."""
    rng = np.random.default_rng(seed)
    N, L = 12, 3
    for _ in range(count):
        x = np.round(rng.normal(0.0, 1.0, (N, 1)), 1)  # ties on purpose
        y = rng.normal(0.0, 2.0, (N, 1))
        if rng.random() < 0.3:
            y = np.full((N, 1), rng.normal(0.0, 2.0))
        d = np.where(rng.random((L, 1)) < 0.5, 1.0, -1.0) * rng.uniform(0.5, 2.0, (L, 1))
        c = np.sort(rng.normal(0.0, 1.0, L))
        face = int(rng.integers(0, L))
        c[face] = x[rng.integers(0, N), 0]
        if np.sum(c == c[face]) > 1:
            continue
        if rng.random() < 0.5:  # the value's points pull towards the face's own side: a stick
            y[x[:, 0] == c[face]] = -8.0 * np.sign(d[face, 0])
        co = _coordinate(jnp.asarray(x), jnp.asarray(y), jnp.asarray(d))
        c, face = jnp.asarray(c), jnp.asarray(face)
        rank = jnp.zeros(L, jnp.int32)
        v_below = _motion(c, rank.at[face].set(-1), _GROUP, _FREE, co).velocity[face]
        v_above = _motion(c, rank.at[face].set(1), _GROUP, _FREE, co).velocity[face]
        up = (
            bool(v_below > 0)
            if bool(v_below > 0) != bool(v_above < 0)
            else bool(rng.random() < 0.5)
        )
        yield c, co, face, up, v_below if up else v_above


def test_a_face_arriving_at_a_data_value_resolves_as_the_general_resolution():
    """Wherever the face's velocity just behind the value points at it (it arrived), the one-
    evaluation resolution equals resolve() over the three modes of the two items, and its motion
    beyond the value is that of the new mode when the face crosses."""
    checked = crossed = stuck = 0
    rank = jnp.zeros(3, jnp.int32)
    for c, co, face, up, approach in _arrivals(0, 200):
        res, decided, beyond = _crossing(c, rank, _GROUP, _FREE, face, up, approach, co)
        arriving = bool(approach > 0) if up else bool(approach < 0)
        assert bool(decided) == arriving
        if not arriving:
            continue
        behind = rank.at[face].set(-1 if up else 1)
        cluster = jnp.arange(3) == face
        want = _resolve(c, behind, _GROUP, _FREE, cluster, jnp.asarray(True), co, full=False)
        assert bool(want.ok)
        for got_f, want_f in zip(res, want, strict=True):
            np.testing.assert_array_equal(np.asarray(got_f), np.asarray(want_f))
        checked += 1
        if bool(res.stuck[face]):
            stuck += 1
        else:
            crossed += 1
            again = _motion(c, res.rank, res.group, res.stuck, co)
            for a, b in zip(again, beyond, strict=True):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert checked >= 60 and crossed >= 30 and stuck >= 10, (checked, crossed, stuck)


def test_an_arrival_in_doubt_is_left_to_the_general_resolution():
    c, co, face, up, _ = next(_arrivals(1, 5))
    rank = jnp.zeros(3, jnp.int32)
    _, decided, _ = _crossing(c, rank, _GROUP, _FREE, face, up, jnp.asarray(0.0), co)
    assert not bool(decided)
