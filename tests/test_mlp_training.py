"""MLP training with trajectory recording: re-runs, a plain reference loop, recompilation,
failure handling, datasets, batched evaluation, chunked streams."""

import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gflow_jax.core as core
import gflow_jax.dynamics as mt
from gflow_jax.diagnostics import loss_pseudometric
from gflow_jax.dynamics import _mlp_training
from gflow_jax.io import ChunkedArrayWriter, read_stream, stream_is_complete

SPEC = mt.TrainingSpec(optimizer="sgd", batch_size=8)
PLAN = mt.RecordingPlan(
    n_iterates=25, every=5, chunk_steps=10, max_steps=3000, monitor_every=20, probe_layers=(1, 2)
)
LRS = jnp.array([0.05, 0.2])


@pytest.fixture(scope="module")
def data():
    return core.clusters_dataset(
        n_classes=3, points_per_class=20, dim=4, radius=0.5, separation=2.0, label_noise=0.0
    )


def _models(data, n, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), n)
    return jax.vmap(lambda k: mt.init_mlp(k, data.dim, [12, 12], data.n_classes))(keys), keys


def _train(data, root, lrs=LRS, plan=PLAN, spec=SPEC, seed=0):
    models, keys = _models(data, lrs.shape[0], seed)
    recorders = [
        mt.MemberRecorder(
            ChunkedArrayWriter(root / f"m{m}/traj"), ChunkedArrayWriter(root / f"m{m}/ck")
        )
        for m in range(lrs.shape[0])
    ]
    outs = mt.train_and_record(models, lrs, keys, data, data.x_test[:7], spec, plan, recorders)
    return outs, models, keys


@pytest.fixture(scope="module")
def first_run(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("first")
    outs, models, keys = _train(data, root)
    return root, outs, models, keys


def test_recorded_trajectory_equals_rerun_with_same_seed(data, first_run, tmp_path):
    root, outs, _, _ = first_run
    outs2, _, _ = _train(data, tmp_path)
    for m, (o1, o2) in enumerate(zip(outs, outs2, strict=True)):
        assert o1.status == o2.status == "ok", (o1.error, o2.error)
        assert o1.onset_step == o2.onset_step
        a, sa, _ = read_stream(root / f"m{m}/traj")
        b, sb, _ = read_stream(tmp_path / f"m{m}/traj")
        assert a.shape == (PLAN.n_iterates, a.shape[1])
        assert np.array_equal(a, b) and np.array_equal(sa, sb)
        np.testing.assert_array_equal(sa, o1.onset_step + np.arange(PLAN.n_iterates))
        for k in o1.monitor:
            assert o1.monitor[k] == o2.monitor[k]


def test_recorded_trajectory_equals_plain_reference_loop(data, first_run):
    """An independent, un-vmapped, un-scanned optax loop reproduces the recorded iterates, the
    checkpoints, and the onset of 100 % training accuracy."""
    root, outs, models, keys = first_run
    m = 1
    model = jax.tree.map(lambda a: a[m], models)
    opt = optax.sgd(float(LRS[m]))
    state = opt.init(model)
    n = data.n_train
    everyone, rows = jnp.ones(n), jnp.arange(n, dtype=jnp.int32)

    @jax.jit
    def step(model, state, k):
        key_k = jax.random.fold_in(keys[m], k)
        idx = mt.minibatch_indices(key_k, everyone, SPEC.batch_size, rows)
        g = jax.grad(
            lambda p: jnp.mean(mt.per_example_loss(p, data.x_train[idx], data.y_train[idx]))
        )(model)
        u, state = opt.update(g, state)
        return optax.apply_updates(model, u), state

    traj, steps, _ = read_stream(root / f"m{m}/traj")
    ck, ck_steps, _ = read_stream(root / f"m{m}/ck")
    onset = outs[m].onset_step
    accuracy = jax.jit(lambda p: mt.evaluate(p, data.x_train, data.y_train)[1])
    ref_traj, ref_ck = [], []
    for k in range(onset + PLAN.n_iterates):
        if k % PLAN.every == 0:
            ref_ck.append(mt.flatten_params(model))
        if k >= onset:
            ref_traj.append(mt.flatten_params(model))
        if k == onset - PLAN.chunk_steps:  # the previous check was not yet at 100 %
            assert accuracy(model) < 1.0
        if k == onset:
            assert accuracy(model) == 1.0
        model, state = step(model, state, k)
    np.testing.assert_allclose(traj, np.stack(ref_traj), rtol=1e-11, atol=1e-12)
    assert ck_steps[-1] == steps[-1] - steps[-1] % PLAN.every
    np.testing.assert_allclose(ck, np.stack(ref_ck)[: len(ck)], rtol=1e-11, atol=1e-12)


def test_new_learning_rates_do_not_recompile(data, tmp_path):
    # compiled here, not by an earlier test: the suite may drop compiled programs between tests
    _train(data, tmp_path / "warm")
    wrapped = _mlp_training._train_chunk.__wrapped__
    before = eqx.debug.get_num_traces(wrapped)
    _train(data, tmp_path / "new", lrs=jnp.array([0.11, 0.17]))
    assert eqx.debug.get_num_traces(wrapped) == before


def test_monitor_series_and_representations(first_run):
    _, outs, _, _ = first_run
    o = outs[0]
    assert o.monitor_steps[0] == 0
    assert all(s % PLAN.monitor_every == 0 for s in o.monitor_steps)
    assert len(o.representations) == 2 and len(o.representations[0]) == len(o.monitor_steps)
    assert o.representations[1][0].shape == (7, 12)
    assert min(np.min(r) for r in o.representations[0]) >= 0.0  # post-ReLU


def test_every_mode_records_every_kth_iterate(data, tmp_path):
    plan = mt.RecordingPlan(
        mode="every", every=5, chunk_steps=10, max_steps=40, monitor_every=20, probe_layers=(1, 2)
    )
    models, keys = _models(data, 2)
    recs = [mt.MemberRecorder(ChunkedArrayWriter(tmp_path / f"t{m}")) for m in range(2)]
    outs = mt.train_and_record(models, LRS, keys, data, data.x_test[:7], SPEC, plan, recs)
    X, steps, index = read_stream(tmp_path / "t0")
    np.testing.assert_array_equal(steps, np.arange(0, 41, 5))
    assert outs[0].end_step == 40 and index["complete"]
    np.testing.assert_array_equal(X[0], mt.flatten_params(jax.tree.map(lambda a: a[0], models)))


def test_failed_members_are_reported_and_do_not_stop_the_others(data, tmp_path):
    # same shapes and plan structure as the other tests: no new compilation
    plan = mt.RecordingPlan(
        n_iterates=5, every=5, chunk_steps=10, max_steps=30, monitor_every=10, probe_layers=(1, 2)
    )
    lrs = jnp.array([1e200, 1e-9])
    models, keys = _models(data, 2)
    recs = [mt.MemberRecorder(ChunkedArrayWriter(tmp_path / f"{m}")) for m in range(2)]
    outs = mt.train_and_record(models, lrs, keys, data, data.x_test[:7], SPEC, plan, recs)
    assert outs[0].status == "diverged" and "non-finite" in outs[0].error
    assert outs[1].status == "not_interpolated" and "max_steps = 30" in outs[1].error
    assert not stream_is_complete(tmp_path / "0") and not stream_is_complete(tmp_path / "1")


def test_loss_pseudometric_vanishes_for_loss_identical_weights(data):
    """Permuting hidden units gives distinct weights with identical per-example losses."""
    model = mt.init_mlp(jax.random.PRNGKey(3), data.dim, [12, 12], data.n_classes)
    perm = jax.random.permutation(jax.random.PRNGKey(4), 12)
    w, b = list(model.weights), list(model.biases)
    w[0], b[0], w[1] = w[0][perm], b[0][perm], w[1][:, perm]
    permuted = mt.MLP(weights=tuple(w), biases=tuple(b))
    other = mt.init_mlp(jax.random.PRNGKey(5), data.dim, [12, 12], data.n_classes)
    V = jnp.stack([mt.flatten_params(x) for x in (model, permuted, other)])
    L = mt.loss_matrix(V, model, data.x_train, data.y_train, block=2)
    np.testing.assert_allclose(L[2], mt.per_example_loss(other, data.x_train, data.y_train))
    rho = np.asarray(loss_pseudometric(L))
    assert float(jnp.linalg.norm(V[0] - V[1])) > 1.0  # distinct weights ...
    assert rho[0, 1] < 1e-14  # ... at pseudo-distance 0 (up to summation-order rounding)
    assert rho[0, 2] > 1e-3


def test_evaluate_in_blocks_matches_direct(data):
    model = mt.init_mlp(jax.random.PRNGKey(0), data.dim, [12], data.n_classes)
    logits = model(data.x_train)
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, data.y_train))
    acc = jnp.mean((jnp.argmax(logits, -1) == data.y_train).astype(float))
    for block in (1, 7, 1000):
        got = mt.evaluate(model, data.x_train, data.y_train, block=block)
        np.testing.assert_allclose(got, (loss, acc), rtol=1e-13)


def test_minibatches_are_distinct_uniform_rows_for_small_and_large_batches():
    """The one sampler, unrolled (B ≤ 32) and looped (B > 32): B distinct rows, each row drawn
    with probability B/n."""
    n, draws = 80, 3000
    keys = jax.random.split(jax.random.PRNGKey(0), draws)
    for B in (5, 40):
        idx = np.asarray(
            jax.vmap(lambda k, B=B: mt.minibatch_indices(k, jnp.ones(n), B, jnp.arange(n)))(keys)
        )
        assert all(len(set(row.tolist())) == B for row in idx) and idx.max() < n
        freq = np.bincount(idx.ravel(), minlength=n) / draws
        assert np.max(np.abs(freq - B / n)) < 5 * np.sqrt(B / n * (1 - B / n) / draws)


def test_digits_dataset_split_and_noise():
    d = core.digits_dataset(test_fraction=0.2, label_noise=0.25, seed=1)
    assert d.x_train.shape == (1438, 64) and d.x_test.shape == (359, 64)
    assert d.n_classes == 10 and float(d.x_train.max()) == 1.0
    assert 0.2 < float(d.noisy.mean()) < 0.3
    assert d.y_train.dtype == np.int32 and d.y_test.dtype == np.int32


def test_digits_without_sklearn_names_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        core.digits_dataset()


def test_bad_inputs_raise_clear_errors(data):
    with pytest.raises(ValueError, match="chunk_steps 7 is not a multiple of every"):
        mt.RecordingPlan(every=5, chunk_steps=7, monitor_every=7)
    with pytest.raises(ValueError, match="mode must be"):
        mt.RecordingPlan(mode="sometimes")
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        mt.make_optimizer("rmsprop", 0.1)
    with pytest.raises(ValueError, match="test_fraction"):
        core.split_dataset(
            data.x_train, data.y_train, 3, test_fraction=1.0, label_noise=0.0, key=None
        )
    models, keys = _models(data, 1)
    with pytest.raises(ValueError, match="probe layer 3 is not a hidden layer"):
        plan = mt.RecordingPlan(probe_layers=(3,), chunk_steps=10, every=5, monitor_every=10)
        mt.train_and_record(models, LRS[:1], keys, data, data.x_test[:2], SPEC, plan, [None])


def test_stream_interrupted_keeps_a_readable_prefix(tmp_path):
    w = ChunkedArrayWriter(tmp_path / "s", meta={"lr": 0.1})
    w.append(np.ones((3, 2)), np.arange(3))
    w.append(2 * np.ones((2, 2)), np.arange(3, 5))
    with pytest.raises(RuntimeError, match="incomplete"):
        read_stream(tmp_path / "s")
    X, steps, index = read_stream(tmp_path / "s", require_complete=False)
    assert X.shape == (5, 2) and steps.tolist() == [0, 1, 2, 3, 4] and index["meta"] == {"lr": 0.1}
    with pytest.raises(ValueError, match="differs"):
        w.append(np.ones((1, 3)), np.arange(1))
    w.close(done=True)
    assert stream_is_complete(tmp_path / "s")
    assert read_stream(tmp_path / "s")[2]["meta"] == {"lr": 0.1, "done": True}
    assert not list((tmp_path / "s").glob("*.tmp"))
    ChunkedArrayWriter(tmp_path / "s")  # restarting a stream clears it
    assert read_stream(tmp_path / "s", require_complete=False)[0].shape[0] == 0
