"""Config validation, run directories and the `gflow run` command end to end."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gflow_jax.cli import main
from gflow_jax.core import make_clusters
from gflow_jax.experiments import ConfigError, config_to_dict
from gflow_jax.experiments.truncation import TruncationConfig, load_config

from .helpers import SMALL_TRUNCATION

SMALL = SMALL_TRUNCATION


@pytest.mark.parametrize(
    ("override", "key", "message"),
    [
        ("flow.tfinal=3", "flow.tfinal", "unknown key"),
        ("bogus=1", "bogus", "unknown key"),
        ("flow.t_final='long'", "flow.t_final", "expected a number"),
        ("data.n_classes=2.5", "data.n_classes", "expected an integer"),
        ("flow.t_final=0", "flow.t_final", "positive"),
        ("gd.etas=[-0.1]", "gd.etas[0]", "positive"),
        ("sgd.eta=0", "sgd.eta", "positive"),
        ("flow.rtol=nan", "flow.rtol", "finite"),
        ("network.d=[[1.0, 0.0], [-1.0, -1.0]]", "network.d[0][1]", "singular"),
        ("network.signs=[1, 0]", "network.signs", "±1"),
        ("flow.mode='everything'", "flow.mode", "one of"),
        ("gd.etas=[0.03]", "gd.etas[0]", "whole number"),
        ("data.dim=3", "targets.points", "coordinates"),
    ],
)
def test_bad_config_names_the_key(override, key, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config("experiments/truncation.toml", [override])
    assert info.value.key == key


def test_config_round_trip_and_defaults():
    cfg = load_config("experiments/truncation.toml", ["flow.mode=joint"])
    assert cfg.flow.mode == "joint"
    assert TruncationConfig.from_table(config_to_dict(cfg)) == cfg


def test_bad_config_stops_before_any_run(tmp_path, capsys):
    rc = main(["run", "experiments/truncation.toml", "flow.t_final=-1", "--out", str(tmp_path)])
    assert rc == 2
    assert "flow.t_final" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no run directory was created


def test_missing_config_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.toml"), "--out", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err


def test_run_writes_a_new_directory_each_time(tmp_path):
    args = ["run", "experiments/truncation.toml", *SMALL, "--out", str(tmp_path), "--quiet"]
    assert main(args) == 0
    assert main(args) == 0
    runs = sorted(tmp_path.iterdir())
    assert len(runs) == 2
    run = runs[0]
    for name in (
        "config.json",
        "env.json",
        "status.json",
        "metrics.jsonl",
        "arrays.npz",
        "summary.json",
    ):
        assert (run / name).is_file(), name
    for fig in ("truncation_snapshots.png", "cost.png", "truncated_counts.png", "nc1.png"):
        assert (run / "figures" / fig).stat().st_size > 10_000
    assert json.loads((run / "status.json").read_text())["state"] == "complete"
    env = json.loads((run / "env.json").read_text())
    assert env["float64"] is True and env["packages"]["diffrax"] == "0.7.2"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["s"] for r in rows] == pytest.approx(np.linspace(0, 4, 9).tolist())
    assert rows[-1]["flow/loss"] < rows[0]["flow/loss"]
    with np.load(run / "arrays.npz") as z:
        assert z["flow/x_tilde"].shape == (9, 12, 2)
        assert z["gd/eta=0.1/thresholds"].shape == (9, 2, 2)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["flow"]["num_rejected_steps"] >= 0
    assert json.loads((run / "config.json").read_text())["kind"] == "truncation"
    (run / "figures" / "cost.png").unlink()
    assert main(["figures", str(run)]) == 0  # redrawn from the run directory alone
    assert (run / "figures" / "cost.png").is_file()


def test_pulled_back_targets_run(tmp_path):
    args = [
        "run",
        "experiments/truncation.toml",
        *SMALL,
        "targets.kind='pulled_back'",
        "flow.cost='standard'",
        "flow.mode='joint'",
        "--out",
        str(tmp_path),
        "--quiet",
    ]
    assert main(args) == 0
    (run,) = tmp_path.iterdir()
    with np.load(run / "arrays.npz") as z:
        loss = z["flow/loss"]
    assert loss[-1] <= loss[0]


def test_clusters_reproducible_and_in_ball():
    kw = dict(n_classes=3, n_per_class=50, dim=4, radius=0.7, separation=2.0)
    a = make_clusters(jax.random.PRNGKey(0), **kw)
    b = make_clusters(jax.random.PRNGKey(0), **kw)
    np.testing.assert_array_equal(a.x, b.x)
    assert a.x.shape == (150, 4) and a.labels.shape == (150,)
    dist = jnp.linalg.norm(a.x - a.centers[a.labels], axis=-1)
    assert float(dist.max()) <= 0.7 + 1e-12
    np.testing.assert_allclose(a.centers[2], 4.0 * jnp.ones(4))
    with pytest.raises(ValueError, match="radius"):
        make_clusters(jax.random.PRNGKey(0), **{**kw, "radius": 0.0})


def test_unknown_kind_and_sweep_table_are_named(tmp_path, capsys):
    from gflow_jax.experiments import load_experiment

    with pytest.raises(ConfigError, match="unknown experiment kind") as info:
        load_experiment("experiments/truncation.toml", ["kind='nonsense'"])
    assert info.value.key == "kind"
    with pytest.raises(ConfigError, match="gflow sweep") as info:
        load_experiment("experiments/truncation.toml", ["sweep.seed=[0, 1]"])
    assert info.value.key == "sweep"
    rc = main(["run", "experiments/truncation.toml", "kind='nonsense'", "--out", str(tmp_path)])
    assert rc == 2 and "kind" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_resume_reruns_a_kind_that_cannot_skip_finished_work(tmp_path, capsys):
    args = ["run", "experiments/truncation.toml", *SMALL, "--out", str(tmp_path), "--quiet"]
    assert main(args) == 0
    (run,) = tmp_path.iterdir()
    assert main(["run", "--resume", str(run)]) == 0
    assert "nothing to resume" in capsys.readouterr().out
    (run / "status.json").write_text(json.dumps({"state": "interrupted"}))
    (run / "arrays.npz").unlink()
    assert main(["run", "--resume", str(run), "--quiet"]) == 0
    assert "from the start" in capsys.readouterr().out
    assert json.loads((run / "status.json").read_text())["state"] == "complete"
    assert (run / "arrays.npz").is_file() and (run / "figures" / "cost.png").is_file()
