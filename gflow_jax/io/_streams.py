"""Append-only array streams on disk: trajectories written chunk by chunk as training runs.

A stream is a directory::

    chunk_00000.npz  chunk_00001.npz  ...   ``rows`` (r, ...) of the stream, in order, and the
                                            training ``steps`` (r,) they were taken at
    index.json                              {"chunks": [{"file", "rows", "first_step",
                                              "last_step"}...], "rows", "row_shape", "dtype",
                                              "complete", "meta"}

Every chunk is written to a temporary file and renamed into place, and the index is rewritten
atomically *after* its chunk exists, so a crash or Ctrl-C at any moment leaves a readable prefix:
the index never names a missing or half-written chunk. ``complete`` turns true only on
:meth:`ChunkedArrayWriter.close`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ._files import read_json, save_npz, write_json

_INDEX = "index.json"


class ChunkedArrayWriter:
    """Write a stream of rows (e.g. flattened weight vectors) to ``directory`` in chunks.

    Args:
        directory: the stream's directory; created if needed. An existing stream there is
            removed first (``gflow run --resume`` re-runs unfinished work from its start).
        meta: JSON-ready description stored in the index (e.g. the point's hyperparameters).

    Each :meth:`append` writes one chunk file ``chunk_#####.npz`` holding ``rows`` ``(r, ...)``
    and ``steps`` ``(r,)``.
    """

    def __init__(self, directory: str | Path, *, meta: dict | None = None):
        self.directory = Path(directory)
        if self.directory.exists():
            shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True)
        self.index: dict = {
            "chunks": [],
            "rows": 0,
            "row_shape": None,
            "dtype": None,
            "complete": False,
            "meta": meta or {},
        }
        write_json(self.directory / _INDEX, self.index, indent=1)

    @property
    def rows(self) -> int:
        return self.index["rows"]

    def append(self, rows: np.ndarray, steps: np.ndarray) -> None:
        """Append ``rows`` ``(r, ...)`` taken at training ``steps`` ``(r,)`` as one chunk."""
        if self.index["complete"]:
            raise RuntimeError(f"stream {self.directory} is closed")
        rows = np.asarray(rows)
        steps = np.asarray(steps, dtype=np.int64).reshape(-1)
        if rows.shape[0] != steps.shape[0]:
            raise ValueError(f"{rows.shape[0]} rows but {steps.shape[0]} steps")
        if rows.shape[0] == 0:
            return
        shape = list(rows.shape[1:])
        if self.index["row_shape"] is None:
            self.index["row_shape"], self.index["dtype"] = shape, str(rows.dtype)
        elif shape != self.index["row_shape"] or str(rows.dtype) != self.index["dtype"]:
            raise ValueError(
                f"row shape/dtype {shape}/{rows.dtype} differs from the stream's "
                f"{self.index['row_shape']}/{self.index['dtype']}"
            )
        name = f"chunk_{len(self.index['chunks']):05d}.npz"
        save_npz(self.directory / name, compressed=False, rows=rows, steps=steps)
        self.index["chunks"].append(
            {
                "file": name,
                "rows": int(rows.shape[0]),
                "first_step": int(steps[0]),
                "last_step": int(steps[-1]),
            }
        )
        self.index["rows"] += int(rows.shape[0])
        write_json(self.directory / _INDEX, self.index, indent=1)

    def close(self, **meta) -> None:
        """Mark the stream complete (adding ``meta`` to its index)."""
        self.index["meta"].update(meta)
        self.index["complete"] = True
        write_json(self.directory / _INDEX, self.index, indent=1)


def stream_is_complete(directory: str | Path) -> bool:
    """Whether ``directory`` holds a stream closed by :meth:`ChunkedArrayWriter.close`."""
    index = read_json(Path(directory) / _INDEX, missing=None)
    return bool(index and index.get("complete"))


def read_stream(
    directory: str | Path, *, require_complete: bool = True
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Read a stream back: ``(rows (R, ...), steps (R,), index)``.

    Raises ``FileNotFoundError`` if there is no stream, ``RuntimeError`` if it was never closed
    (unless ``require_complete=False``: then the written prefix is returned).
    """
    directory = Path(directory)
    path = directory / _INDEX
    if not path.is_file():
        raise FileNotFoundError(f"no trajectory stream (no {_INDEX}) in {directory}")
    index = read_json(path)
    if require_complete and not index.get("complete"):
        raise RuntimeError(f"trajectory stream {directory} is incomplete (interrupted run?)")
    rows, steps = [], []
    for chunk in index["chunks"]:
        with np.load(directory / chunk["file"]) as z:
            rows.append(z["rows"])
            steps.append(z["steps"])
    if not rows:
        shape = tuple(index["row_shape"] or (0,))
        return np.zeros((0, *shape)), np.zeros(0, dtype=np.int64), index
    return np.concatenate(rows), np.concatenate(steps), index
