"""The ``magnitude_generalization`` kind: magnitude (dimension) of SGD trajectories and
representations against the generalisation gap over a learning-rate × batch-size × seed grid
(docs/theory.md#trajectory-protocol).

Run directory (besides the common files written by ``gflow run``)::

    points/<id>/trajectory/     chunked stream of the K measured iterates (index.json + chunks)
    points/<id>/checkpoints/    every k-th iterate from step 0 (monitoring curve)
    points/<id>/monitor.npz     train/test loss and accuracy, probe representations over time
    points/<id>/training.json   training outcome (written last: training of the point is done)
    points/<id>/curves.npz      magnitude curves, representation and monitoring series
    points/<id>/result.json     measures and gaps, or the error (written last: point finished)
    table.csv, table.md         τ, ψ_lr, ψ_bs, Ψ, τ given (lr, bs) with bootstrap intervals
    correlations.json           the table, the statistics used (Kendall variant, resamples,
                                level), the gaps' spread, τ in every seed-only cell
    arrays.npz, metrics.jsonl   one row per point

Resuming (``gflow run --resume RUN_DIR``) skips points with a ``result.json`` and batch sizes
whose points all have a ``training.json``; a batch size with unfinished training is retrained
from step 0 (deterministic: the same iterates), rewriting only the unfinished points.
"""

from .._registry import ExperimentKind
from ._config import (
    GridConfig as GridConfig,
    MagnitudeGeneralizationConfig as MagnitudeGeneralizationConfig,
    MeasuresConfig as MeasuresConfig,
    MGDataConfig as MGDataConfig,
    MGTrainingConfig as MGTrainingConfig,
    ModelConfig as ModelConfig,
    StatisticsConfig as StatisticsConfig,
    TrajectoryConfig as TrajectoryConfig,
)
from ._figures import plot_magnitude_generalization as plot_magnitude_generalization
from ._sweep import run_sweep as run_sweep
from ._table import correlation_table as correlation_table
from ._train import point_id as point_id

KIND = ExperimentKind(
    "magnitude_generalization", "trajectory magnitude vs the generalisation gap over a grid",
    MagnitudeGeneralizationConfig, run_sweep, plot_magnitude_generalization, resumable=True,
)  # fmt: skip

__all__ = [
    "KIND",
    "GridConfig",
    "MGDataConfig",
    "MGTrainingConfig",
    "MagnitudeGeneralizationConfig",
    "MeasuresConfig",
    "ModelConfig",
    "StatisticsConfig",
    "TrajectoryConfig",
    "correlation_table",
    "plot_magnitude_generalization",
    "point_id",
    "run_sweep",
]
