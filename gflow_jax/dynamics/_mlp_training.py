"""Training of ReLU MLPs with optax, recording the trajectory to disk as it runs.

The trajectory protocol (docs/theory.md#trajectory-protocol): train with SGD (or Adam) until the
network reaches 100 % training accuracy, then keep the next K iterates (one per step, flattened
weight vectors) as a point cloud; or keep every k-th iterate over a fixed number of steps.
Alongside, every ``monitor_every`` steps: train/test loss and accuracy and the hidden
representations of a fixed probe batch at chosen layers.

JAX structure. One compiled program (:func:`_train_chunk`, an ``eqx.filter_jit`` of a ``vmap``
over *members*) advances P networks by ``chunk_steps`` optax steps inside ``lax.scan``. Members
differ in learning rate (a traced ``(P,)`` array — a new learning rate does not recompile) and in
seed (initial weights and minibatch order); the batch size is the one static hyperparameter (it
sets the minibatch shape), so a sweep compiles one program per batch size. Between chunks the
host writes the new iterates to disk (:mod:`gflow_jax.io`), so an interrupted run
keeps everything recorded so far and memory stays O(chunk · P · D).

Minibatches: a uniformly random B-subset of the training set at every step (the one sampler of
the toolkit, :func:`~gflow_jax.dynamics.minibatch_indices`); step k (0-based) of a member with
key κ draws with ``fold_in(κ, k)``. Iterate number k is the weight vector *after* k steps
(iterate 0 = initialisation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ..core import Dataset
from ..core._shapes import Shapes
from ..io import ChunkedArrayWriter, progress_bar
from ._mlp import MLP, check_mlp, evaluate, flatten_params, make_optimizer, per_example_loss
from ._sampling import minibatch_indices


@dataclass(frozen=True)
class TrainingSpec:
    """Static training hyperparameters of a group of members (one compiled program)."""

    optimizer: str = "sgd"
    momentum: float = 0.0
    batch_size: int = 32
    eval_block: int = 512


class _ChunkOut(eqx.Module):
    model: MLP
    opt_state: optax.OptState
    iterates: Float[Array, "P R D"]
    train_loss: Float[Array, " P"]
    train_acc: Float[Array, " P"]
    test_loss: Float[Array, " P"]
    test_acc: Float[Array, " P"]
    representations: tuple[Float[Array, "P probe h"], ...]


def _measure_members(model, data: Dataset, probe_x, probe_layers, eval_block):
    def one(m):
        tr_l, tr_a = evaluate(m, data.x_train, data.y_train, block=eval_block)
        te_l, te_a = evaluate(m, data.x_test, data.y_test, block=eval_block)
        hidden = m.hidden(probe_x)
        reps = tuple(hidden[layer - 1] for layer in probe_layers)
        return tr_l, tr_a, te_l, te_a, reps

    return jax.vmap(one)(model)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)
def _train_chunk(
    model: MLP,
    opt_state,
    lrs: Float[Array, " P"],
    keys: PRNGKeyArray,
    start: Int[Array, ""],
    data: Dataset,
    probe_x: Float[Array, "probe d"],
    n_steps: int,
    record_every: int,
    spec: TrainingSpec,
    probe_layers: tuple[int, ...],
) -> _ChunkOut:
    """Advance every member ``n_steps`` steps from step ``start``; emit every
    ``record_every``-th iterate, then evaluate and take the probe representations."""
    n = data.n_train
    bs = spec.batch_size
    everyone = jnp.ones(n, data.x_train.dtype)
    rows = jnp.arange(n, dtype=jnp.int32)

    def member(m, state, lr, key):
        opt = make_optimizer(spec.optimizer, lr, spec.momentum)

        def loss_fn(mm, idx):
            return jnp.mean(per_example_loss(mm, data.x_train[idx], data.y_train[idx]))

        def one_step(k, carry):
            mm, st = carry
            index = minibatch_indices(jax.random.fold_in(key, start + k), everyone, bs, rows)
            grads = jax.grad(loss_fn)(mm, index)
            updates, st = opt.update(grads, st, mm)
            return optax.apply_updates(mm, updates), st

        def block(carry, b):
            carry = jax.lax.fori_loop(b * record_every, (b + 1) * record_every, one_step, carry)
            return carry, flatten_params(carry[0])

        (m, state), iterates = jax.lax.scan(block, (m, state), jnp.arange(n_steps // record_every))
        return m, state, iterates

    model, opt_state, iterates = jax.vmap(member)(model, opt_state, lrs, keys)
    tr_l, tr_a, te_l, te_a, reps = _measure_members(
        model, data, probe_x, probe_layers, spec.eval_block
    )
    return _ChunkOut(model, opt_state, iterates, tr_l, tr_a, te_l, te_a, reps)


@eqx.filter_jit
def _initial_measures(model, data, probe_x, probe_layers, eval_block):
    return _measure_members(model, data, probe_x, probe_layers, eval_block)


# --------------------------------------------------------------------------------------------
# recording


@dataclass(frozen=True)
class RecordingPlan:
    """What to record while training.

    Attributes:
        mode: ``"after_interpolation"`` — train until 100 % training accuracy (checked at the end
            of every chunk), then record the next ``n_iterates`` iterates, one per step, starting
            with the first 100 % iterate; ``"every"`` — train ``max_steps`` steps and record every
            ``every``-th iterate (iterates 0, k, 2k, …, max_steps).
        n_iterates: K (``after_interpolation``).
        every: k; in ``after_interpolation`` mode every k-th iterate is also kept as a sparse
            *checkpoint* stream for monitoring curves.
        chunk_steps: steps per compiled chunk (a multiple of ``every``); the host writes to disk
            between chunks.
        max_steps: ``after_interpolation``: a member that has not reached 100 % by then fails;
            ``every``: the training length (a multiple of ``chunk_steps``).
        monitor_every: evaluate and take probe representations every this many steps (a
            multiple of ``chunk_steps``), and at step 0.
        probe_layers: hidden layers (1-based) whose probe representations are kept.
    """

    mode: str = "after_interpolation"
    n_iterates: int = 1000
    every: int = 10
    chunk_steps: int = 200
    max_steps: int = 20_000
    monitor_every: int = 200
    probe_layers: tuple[int, ...] = (1,)

    def __post_init__(self):
        for field_name, message in self.problems():
            raise ValueError(f"{field_name} {message}")

    def problems(self) -> list[tuple[str, str]]:
        """Every invalid field with what is wrong with it (empty when the plan is valid)."""
        if self.mode not in ("after_interpolation", "every"):
            return [("mode", f"must be 'after_interpolation' or 'every', got {self.mode!r}")]
        for name in ("n_iterates", "every", "chunk_steps", "max_steps", "monitor_every"):
            if int(getattr(self, name)) < 1:
                return [(name, f"must be a positive integer, got {getattr(self, name)}")]
        if self.chunk_steps % self.every:
            return [
                ("chunk_steps", f"{self.chunk_steps} is not a multiple of every = {self.every}")
            ]
        if self.monitor_every % self.chunk_steps:
            message = f"{self.monitor_every} is not a multiple of chunk_steps = {self.chunk_steps}"
            return [("monitor_every", message)]
        if self.mode == "every" and self.max_steps % self.chunk_steps:
            message = f"{self.max_steps} is not a multiple of chunk_steps = {self.chunk_steps}"
            return [("max_steps", message)]
        return []


@dataclass
class MemberRecorder:
    """Where one member's iterates go: the measured ``trajectory`` and the sparse
    ``checkpoints`` (``None``: not kept; in ``"every"`` mode the trajectory *is* the sparse
    stream)."""

    trajectory: ChunkedArrayWriter
    checkpoints: ChunkedArrayWriter | None = None


@dataclass
class MemberOutcome:
    """How one member's training went.

    Attributes:
        status: ``"ok"``, ``"diverged"`` (non-finite loss) or ``"not_interpolated"`` (no 100 %
            training accuracy within ``max_steps``).
        error: a message for failed members.
        onset_step: first checked step with 100 % training accuracy (``None`` if never).
        end_step: the step of the last recorded iterate.
        monitor_steps: ``(T,)`` steps of the monitor series.
        monitor: ``train_loss``, ``train_acc``, ``test_loss``, ``test_acc`` series ``(T,)``.
        representations: per probe layer ``(T, probe, width)``.
    """

    status: str = "ok"
    error: str | None = None
    onset_step: int | None = None
    end_step: int = 0
    monitor_steps: list[int] = field(default_factory=list)
    monitor: dict[str, list[float]] = field(
        default_factory=lambda: {
            k: [] for k in ("train_loss", "train_acc", "test_loss", "test_acc")
        }
    )
    representations: list[list[np.ndarray]] = field(default_factory=list)


def train_and_record(
    models: MLP,
    learning_rates: Float[Array, " P"],
    keys: PRNGKeyArray,
    data: Dataset,
    probe_x: Float[Array, "probe d"],
    spec: TrainingSpec,
    plan: RecordingPlan,
    recorders: Sequence[MemberRecorder | None],
    *,
    progress: bool = False,
    desc: str = "train",
    on_chunk: Callable[[int], None] | None = None,
) -> list[MemberOutcome]:
    """Train P members together (vmapped) and stream their trajectories to disk.

    Args:
        models: an :class:`MLP` whose leaves carry a leading member axis ``(P, ...)``.
        learning_rates: ``(P,)`` learning rates (traced: no recompilation per value).
        keys: ``(P,)`` minibatch-order keys.
        data: the train/test split; ``probe_x`` ``(probe, d)`` the fixed probe batch.
        recorders: one per member; ``None`` trains the member without writing (its
            trajectory is already on disk).
        on_chunk: called with the step count after each chunk (a hook for tests).

    Returns one :class:`MemberOutcome` per member. Streams of successful members are closed
    (complete); those of failed members are left open (incomplete).

    Batch axis: exactly one member axis P by design (on ``models``, ``learning_rates`` and
    ``keys``); a further axis is refused.
    """
    check = check_mlp(Shapes("train_and_record"), "models", models, lead="P")
    check("learning_rates", learning_rates, "P")
    typed = "key" in str(getattr(keys, "dtype", ""))
    check("keys", keys, "P" if typed else "P 2")
    check("data.x_train", data.x_train, "n d")
    check("probe_x", probe_x, "probe d")
    lrs = jnp.asarray(learning_rates, dtype=jnp.result_type(float))
    n_members = lrs.shape[0]
    if len(recorders) != n_members:
        raise ValueError(f"{len(recorders)} recorders for {n_members} members")
    if not 1 <= spec.batch_size <= data.n_train:
        raise ValueError(f"batch_size must lie in [1, {data.n_train}], got {spec.batch_size}")
    for layer in plan.probe_layers:
        if not 1 <= layer <= len(models.weights) - 1:
            raise ValueError(f"probe layer {layer} is not a hidden layer (1..{models.depth})")
    layers = tuple(plan.probe_layers)
    opt_state = jax.vmap(make_optimizer(spec.optimizer, 0.0, spec.momentum).init)(models)
    outcomes = [MemberOutcome(representations=[[] for _ in layers]) for _ in range(n_members)]
    phase = ["train"] * n_members if plan.mode == "after_interpolation" else ["record"] * n_members
    counts = [0] * n_members

    def monitor(m, step, tr_l, tr_a, te_l, te_a, reps):
        o = outcomes[m]
        o.monitor_steps.append(step)
        for name, v in zip(o.monitor, (tr_l, tr_a, te_l, te_a), strict=True):
            o.monitor[name].append(float(v[m]))
        for i, r in enumerate(reps):
            o.representations[i].append(np.asarray(r[m]))

    def sparse_stream(m):
        rec = recorders[m]
        if rec is None:
            return None
        return rec.trajectory if plan.mode == "every" else rec.checkpoints

    # step 0
    init = jax.tree.map(
        np.asarray, _initial_measures(models, data, probe_x, layers, spec.eval_block)
    )
    flat0 = np.asarray(jax.vmap(flatten_params)(models))
    for m in range(n_members):
        monitor(m, 0, *init[:4], init[4])
        if (s := sparse_stream(m)) is not None:
            s.append(flat0[m : m + 1], np.zeros(1, np.int64))
        if plan.mode == "every":
            counts[m] = 1

    bar = None
    if progress:
        bar = progress_bar(None, desc, unit="step")
    step = 0
    C = plan.chunk_steps
    while any(p in ("train", "record") for p in phase):
        # after_interpolation: every iterate leaves the chunk (one compiled program for both
        # phases; the host keeps what it needs); every: only every k-th iterate
        r = 1 if plan.mode == "after_interpolation" else plan.every
        out = _train_chunk(
            models, opt_state, lrs, keys, jnp.asarray(step), data, probe_x, C, r, spec, layers
        )
        models, opt_state = out.model, out.opt_state
        iterates = np.asarray(out.iterates)  # (P, C/r, D)
        it_steps = step + r * np.arange(1, C // r + 1)
        metrics = [np.asarray(a) for a in (out.train_loss, out.train_acc, out.test_loss)]
        metrics.append(np.asarray(out.test_acc))
        reps = [np.asarray(a) for a in out.representations]
        step += C
        for m in range(n_members):
            if phase[m] not in ("train", "record"):
                continue
            o, rec = outcomes[m], recorders[m]
            if not (np.isfinite(metrics[0][m]) and np.all(np.isfinite(iterates[m, -1]))):
                phase[m], o.status = "failed", "diverged"
                o.error = f"diverged: non-finite loss or weights by step {step}"
                o.end_step = step
                continue
            sparse = it_steps % plan.every == 0
            if plan.mode == "every":
                if rec is not None:
                    rec.trajectory.append(iterates[m, sparse], it_steps[sparse])
                counts[m] += int(sparse.sum())
            else:
                if phase[m] == "record":
                    take = min(plan.n_iterates - counts[m], C)
                    if rec is not None:
                        rec.trajectory.append(iterates[m, :take], it_steps[:take])
                    counts[m] += take
                    if counts[m] == plan.n_iterates:
                        phase[m], o.end_step = "done", int(it_steps[take - 1])
                        sparse &= it_steps <= o.end_step  # checkpoints end with the trajectory
                if (s := sparse_stream(m)) is not None:
                    s.append(iterates[m, sparse], it_steps[sparse])
            if step % plan.monitor_every == 0 and phase[m] in ("train", "record"):
                monitor(m, step, *metrics, reps)
            if phase[m] == "train" and metrics[1][m] == 1.0:
                o.onset_step = step
                if rec is not None:
                    rec.trajectory.append(iterates[m, -1:], np.array([step]))
                counts[m] = 1
                phase[m] = "record"
                if plan.n_iterates == 1:
                    phase[m], o.end_step = "done", step
            if plan.mode == "every" and step >= plan.max_steps:
                phase[m], o.end_step = "done", step
            elif phase[m] == "train" and step >= plan.max_steps:
                phase[m], o.status, o.end_step = "failed", "not_interpolated", step
                o.error = (
                    f"did not reach 100 % training accuracy within max_steps = {plan.max_steps}"
                    f" (final training accuracy {metrics[1][m]:.4f})"
                )
        if bar is not None:
            bar.update(C)
        if on_chunk is not None:
            on_chunk(step)
    if bar is not None:
        bar.close()
    for m in range(n_members):
        rec = recorders[m]
        if outcomes[m].status == "ok" and rec is not None:
            meta = {"onset_step": outcomes[m].onset_step, "end_step": outcomes[m].end_step}
            rec.trajectory.close(**meta)
            if rec.checkpoints is not None:
                rec.checkpoints.close(**meta)
    return outcomes
