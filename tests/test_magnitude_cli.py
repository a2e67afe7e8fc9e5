"""``gflow magnitude POINTS.npy``: table on stdout, PNG figure, errors."""

import numpy as np

from gflow_jax.cli import main


def test_cli_table_and_figure(tmp_path, capsys):
    points = tmp_path / "line.npy"
    np.save(points, np.linspace(0.0, 1.0, 11)[:, None])
    assert main(["magnitude", str(points), "--scales", "1,10"]) == 0
    out = capsys.readouterr().out
    assert "5.621171573" in out  # 1 + 10 tanh(10/20), docs/theory.md#oracles
    assert "dimension profile max" in out
    assert (tmp_path / "line_magnitude.png").stat().st_size > 0
    figure = tmp_path / "fig.png"
    assert main(["magnitude", str(points), "--scales", "0.5:50:4", "--out", str(figure)]) == 0
    assert figure.stat().st_size > 0


def test_cli_errors(tmp_path, capsys):
    assert main(["magnitude", str(tmp_path / "missing.npy")]) == 2
    bad = tmp_path / "bad.npy"
    np.save(bad, np.array([[0.0, np.nan], [1.0, 2.0]]))
    assert main(["magnitude", str(bad)]) == 2
    assert "NaN" in capsys.readouterr().err
