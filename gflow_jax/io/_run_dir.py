"""Run directories: never overwritten, self-describing, written as results arrive.

Layout of ``<root>/<name>-<UTC timestamp>[-k]/``:

* ``config.json`` — the validated config (every default filled in);
* ``env.json`` — versions, devices, float64 flag, command line;
* ``status.json`` — ``running`` → ``complete``, ``failed`` or ``interrupted`` (with the error);
* ``metrics.jsonl`` — one JSON object per saved time;
* ``arrays.npz`` — every array (keys like ``flow/thresholds``);
* ``summary.json`` — solver statistics, timings, discrepancies;
* ``figures/*.png``.
"""

from __future__ import annotations

import platform
import sys
import time
from importlib import metadata
from pathlib import Path


def utc_now() -> str:
    """The current UTC time as ``YYYY-mm-ddTHH:MM:SSZ``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def create_run_dir(root: str | Path, name: str) -> Path:
    """Create a fresh directory ``root/name-YYYYmmdd-HHMMSS[-k]`` with a ``figures/`` folder;
    never reuses one."""
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


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment_info() -> dict:
    """Versions, platform, JAX backend and devices, float64 flag, command line."""
    import jax

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
