"""Random small instances of the bias-only flow on C_in with shared faces, mixed signs and (often)
sliding: every instance padded to one shape (N rows, L faces, M coordinates) so a batch of them
is one vmapped solve. Padding: zero-weight rows (a copy of the last point), dead faces far from
the data (a face from below at −1e3 owns nothing and is never reached), empty coordinates."""

import jax.numpy as jnp
import numpy as np

from gflow_jax.core import AdaptedParameters
from gflow_jax.dynamics import FlowProblem

FAR = 1e3


def instance(rng: np.random.Generator, N: int = 30, L: int = 3, M: int = 3):
    """Points, targets, weights ``(N, M)``/``(N,)`` and faces d, c ``(L, M)`` of one instance."""
    n = int(rng.integers(4, N + 1))
    n_layers = int(rng.integers(1, L + 1))
    n_coords = int(rng.integers(1, M + 1))
    n_clusters = int(rng.integers(1, 4))
    centres = rng.normal(0.0, 1.5, (n_clusters, M))
    labels = rng.integers(0, n_clusters, n)
    x = centres[labels] + 0.5 * rng.normal(size=(n, M))
    targets = rng.normal(0.0, 2.0, (n_clusters, M))[labels]
    if rng.random() < 0.5:  # every point its own target: shared faces slide more often
        targets = targets + rng.normal(0.0, 1.5, (n, M))
    x[:, n_coords:], targets[:, n_coords:] = 0.0, 0.0
    u = np.concatenate([x, np.repeat(x[-1:], N - n, axis=0)])
    y = np.concatenate([targets, np.repeat(targets[-1:], N - n, axis=0)])
    w = np.concatenate([np.ones(n), np.zeros(N - n)])
    signs = np.where(rng.random((L, M)) < 0.5, 1.0, -1.0)
    d = signs * rng.uniform(0.5, 2.0, (L, M))
    q = rng.uniform(0.0, 1.0, (L, M))
    c = np.stack([np.quantile(x[:, k], q[:, k]) for k in range(M)], axis=1)
    c += 0.05 * rng.normal(size=(L, M))  # off the data values, mostly
    dead = np.zeros((L, M), bool)
    dead[n_layers:, :] = True
    dead[:, n_coords:] = True
    d = np.where(dead, 1.0, d)
    c = np.where(dead, -FAR, c)
    return u, y, w, d, c


def batch(seed: int, count: int, **shape):
    """``count`` instances stacked: a vmappable FlowProblem and AdaptedParameters."""
    rng = np.random.default_rng(seed)
    parts = [instance(rng, **shape) for _ in range(count)]
    u, y, w, d, c = (jnp.asarray(np.stack(p)) for p in zip(*parts, strict=True))
    import equinox as eqx

    problems = eqx.filter_vmap(lambda a, b, ww: FlowProblem(a, b, weights=ww))(u, y, w)
    return problems, AdaptedParameters.from_thresholds(d, c)
