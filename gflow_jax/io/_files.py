"""Atomic files: every write goes to a temporary file in the same folder and is renamed into
place, so a crash or Ctrl-C never leaves a half-written file behind, only the old one or none.

One writer per format (JSON, JSON lines, ``.npz``) and one JSON reader, shared by run
directories, sweep directories and trajectory streams.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np


def _default(obj: Any):
    if isinstance(obj, np.generic | np.ndarray) or hasattr(obj, "__array__"):
        return np.asarray(obj).tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _replace(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def write_json(path: str | Path, obj: Any, *, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON (NumPy and JAX arrays become lists; NaN allowed), atomically."""
    text = json.dumps(obj, indent=indent, default=_default, allow_nan=True) + "\n"
    _replace(Path(path), lambda tmp: tmp.write_text(text))


def read_json(path: str | Path, *, missing: Any = ...) -> Any:
    """The JSON in ``path``. With ``missing`` given, return it when the file does not exist or
    is not valid JSON (an interrupted writer never leaves one: see :func:`write_json`)."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        if missing is ...:
            raise
        return missing


def write_metrics(path: str | Path, rows: Iterable[dict]) -> None:
    """Write one JSON object per line (``metrics.jsonl``), atomically."""
    text = "".join(json.dumps(row, default=_default) + "\n" for row in rows)
    _replace(Path(path), lambda tmp: tmp.write_text(text))


def write_csv(path: str | Path, rows: list[dict], columns: list[str] | None = None) -> None:
    """Write ``rows`` as CSV (a header, then one line per row; lists and dicts as JSON; missing
    cells empty), atomically. ``columns``: default every key, in order of first appearance."""
    import csv
    import io

    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in row.items()}
        )
    _replace(Path(path), lambda tmp: tmp.write_text(buffer.getvalue()))


def save_npz(path: str | Path, *, compressed: bool = True, **arrays) -> None:
    """Save ``arrays`` to an ``.npz`` file atomically (compressed unless told otherwise)."""
    save = np.savez_compressed if compressed else np.savez

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            save(fh, **arrays)

    _replace(Path(path), write)


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, or of ``arrays.npz`` when ``path`` is a run directory.

    Raises ``FileNotFoundError`` naming the file when it does not exist (an incomplete run)."""
    path = Path(path)
    if path.is_dir():
        path = path / "arrays.npz"
    if not path.is_file():
        raise FileNotFoundError(f"no {path.name} in {path.parent} (an incomplete run?)")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}
