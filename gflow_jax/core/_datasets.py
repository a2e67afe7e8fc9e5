"""Classification data sets with a train/test split and optional label noise: scikit-learn's
digits (bundled with the package, no download) and Gaussian clusters.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from ._data import make_clusters
from ._shapes import Shapes, axis_size


class Dataset(eqx.Module):
    """A train/test split for classification.

    Attributes:
        x_train: ``(n, d)`` training inputs; ``y_train`` ``(n,)`` their (possibly noisy) labels.
        x_test: ``(m, d)`` test inputs; ``y_test`` ``(m,)`` their clean labels.
        noisy: ``(n,)`` True where a training label was corrupted.
        n_classes: Q.
    """

    x_train: Float[Array, "n d"]
    y_train: Int[Array, " n"]
    x_test: Float[Array, "m d"]
    y_test: Int[Array, " m"]
    noisy: Bool[Array, " n"]
    n_classes: int = eqx.field(static=True)

    n_train = axis_size("x_train", 0, "Number of training points n.")
    dim = axis_size("x_train", 1, "Input dimension d.")


def split_dataset(
    x: Float[Array, "N d"],
    y: Int[Array, " N"],
    n_classes: int,
    *,
    test_fraction: float,
    label_noise: float,
    key: PRNGKeyArray,
) -> Dataset:
    """Shuffle, split off ``round(test_fraction·N)`` test points, corrupt training labels.

    A fraction ``label_noise`` of the training labels (each independently with that
    probability) is replaced by a uniformly chosen *different* class; test labels stay clean.
    ``x`` ``(N, d)``, ``y`` ``(N,)``, ``key`` one PRNG key. Batch axis: refused.
    """
    check = Shapes("split_dataset")
    check("x", x, "N d")
    check("y", y, "N")
    check.key("key", key)
    n = x.shape[0]
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    if not 0.0 <= label_noise <= 1.0:
        raise ValueError(f"label_noise must lie in [0, 1], got {label_noise!r}")
    n_test = int(round(test_fraction * n))
    if not 1 <= n_test <= n - 1:
        raise ValueError(f"test_fraction {test_fraction} leaves an empty train or test set")
    k_perm, k_flip, k_new = jax.random.split(key, 3)
    perm = jax.random.permutation(k_perm, n)
    x, y = jnp.asarray(x)[perm], jnp.asarray(y, dtype=jnp.int32)[perm]
    y_train = y[n_test:]
    noisy = jax.random.uniform(k_flip, y_train.shape) < label_noise
    shift = jax.random.randint(k_new, y_train.shape, 1, max(n_classes, 2), dtype=jnp.int32)
    y_train = jnp.where(noisy, (y_train + shift) % n_classes, y_train)
    return Dataset(
        x_train=x[n_test:],
        y_train=y_train,
        x_test=x[:n_test],
        y_test=y[:n_test],
        noisy=noisy,
        n_classes=n_classes,
    )


def digits_dataset(*, test_fraction: float = 0.2, label_noise: float = 0.0, seed: int = 0):
    """scikit-learn's 8×8 digits (1797 images, 10 classes, bundled with the package: no download).

    Pixels are scaled from [0, 16] to [0, 1]. Needs scikit-learn (imported here only).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the digits dataset needs scikit-learn, which is not installed: "
            "`pip install scikit-learn` (or `pip install -e '.[test]'`), or use "
            "data.source = 'clusters'"
        ) from err
    bunch = load_digits()
    x = jnp.asarray(bunch.data, dtype=float) / 16.0
    y = jnp.asarray(bunch.target)
    return split_dataset(
        x,
        y,
        10,
        test_fraction=test_fraction,
        label_noise=label_noise,
        key=jax.random.PRNGKey(seed),
    )


def clusters_dataset(
    *,
    n_classes: int,
    points_per_class: int,
    dim: int,
    radius: float,
    separation: float,
    distribution: str = "gaussian",
    layout: str = "random",
    test_fraction: float = 0.3,
    label_noise: float = 0.0,
    seed: int = 0,
) -> Dataset:
    """Clusters (:func:`~gflow_jax.make_clusters`; by default Gaussian at random centres),
    split into train and test, training labels noised."""
    k_data, k_split = jax.random.split(jax.random.PRNGKey(seed))
    data = make_clusters(
        k_data,
        n_classes=n_classes,
        n_per_class=points_per_class,
        dim=dim,
        radius=radius,
        separation=separation,
        distribution=distribution,
        layout=layout,
    )
    return split_dataset(
        data.x,
        data.labels,
        n_classes,
        test_fraction=test_fraction,
        label_noise=label_noise,
        key=k_split,
    )
