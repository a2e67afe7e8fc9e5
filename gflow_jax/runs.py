"""Run directories: never overwritten, self-describing, written as results arrive.

Layout of ``<root>/<name>-<UTC timestamp>[-k]/``:

* ``config.json`` — the validated config (every default filled in);
* ``env.json`` — versions, devices, float64 flag, command line;
* ``status.json`` — ``running`` → ``complete`` or ``failed`` (with the error), so an interrupted
  run is recognisable;
* ``metrics.jsonl`` — one JSON object per saved time;
* ``arrays.npz`` — every array (keys like ``flow/thresholds``);
* ``summary.json`` — solver statistics, timings, discrepancies;
* ``figures/*.png``.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

import jax
import numpy as np

__all__ = ["create_run_dir", "environment_info", "load_arrays", "write_json", "write_metrics"]


def create_run_dir(root: str | Path, name: str) -> Path:
    """Create a fresh directory ``root/name-YYYYmmdd-HHMMSS[-k]``; never reuses one."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    for k in range(1000):
        path = root / (f"{name}-{stamp}" if k == 0 else f"{name}-{stamp}-{k}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        (path / "figures").mkdir()
        return path
    raise RuntimeError(f"could not create a new run directory under {root}")


def _default(obj):
    if isinstance(obj, np.generic | np.ndarray | jax.Array):
        return np.asarray(obj).tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: Path, obj) -> None:
    """Write JSON atomically (temp file + rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_default, allow_nan=True) + "\n")
    tmp.replace(path)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment_info() -> dict:
    """Versions, platform, JAX backend and devices, float64 flag, command line."""
    return {
        "python": sys.version,
        "platform": platform.platform(),
        "packages": {
            p: _version(p)
            for p in ("gflow_jax", "jax", "jaxlib", "diffrax", "equinox", "optax", "numpy")
        },
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "float64": bool(jax.config.read("jax_enable_x64")),
        "argv": sys.argv,
    }


def write_metrics(path: Path, rows: list[dict]) -> None:
    """Write one JSON object per line."""
    with path.open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row, default=_default) + "\n")


def load_arrays(run_dir: str | Path) -> dict[str, np.ndarray]:
    """All arrays of a run directory."""
    with np.load(Path(run_dir) / "arrays.npz") as z:
        return {k: z[k] for k in z.files}
