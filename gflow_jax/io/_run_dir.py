"""Run directories: never overwritten, self-describing, written as results arrive.

Layout of ``<root>/<name>-<UTC timestamp>[-k]/``:

* ``config.json`` — the validated config (every default filled in);
* ``env.json`` — versions, devices (with memory), float64 flag, command line;
* ``status.json`` — ``running`` → ``complete``, ``failed`` or ``interrupted`` (with the error);
* ``metrics.jsonl`` — one JSON object per saved time;
* ``arrays.npz`` — every array (keys like ``flow/thresholds``);
* ``summary.json`` — solver statistics, timings, discrepancies;
* ``figures/*.png``.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

from ._compilation_cache import cache_usage, compilation_cache_dir


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


def _device_info(device) -> dict:
    """One device: platform, kind, id and, where the runtime reports it (GPU, TPU), its memory."""
    info = {
        "id": device.id,
        "platform": device.platform,
        "kind": device.device_kind,
        "process_index": device.process_index,
    }
    try:
        stats = device.memory_stats()
    except Exception:  # some runtimes raise instead of returning None
        stats = None
    if stats:
        info["memory_bytes"] = stats.get("bytes_limit")
        info["memory_in_use_bytes"] = stats.get("bytes_in_use")
    return info


def _host_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX
        return None


def _cpu_affinity() -> list[int] | None:
    """The cores this process may run on (``None`` where the platform does not tell; io is a
    leaf, so this is not :func:`gflow_jax.core._devices.cpu_affinity`)."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def environment_info() -> dict:
    """Versions (JAX's accelerator plugins included), platform, JAX backend, every local device
    with its memory, the float64 flag (and ``GFLOW_JAX_X64``), the compilation cache directory
    (``None``: off), the cores this process may run on (``None``: not known), command line."""
    import jax

    plugins = ("jax-cuda12-plugin", "jax-cuda12-pjrt", "jax-cuda13-plugin", "jax-cuda13-pjrt")
    return {
        "python": sys.version,
        "platform": platform.platform(),
        "packages": {
            p: _version(p)
            for p in ("gflow_jax", "jax", "jaxlib", "diffrax", "equinox", "optax", "numpy")
        },
        "accelerator_plugins": {p: v for p in plugins if (v := _version(p)) is not None},
        "backend": jax.default_backend(),
        "devices": [_device_info(d) for d in jax.local_devices()],
        "host_memory_bytes": _host_memory(),
        "float64": bool(jax.config.read("jax_enable_x64")),
        "GFLOW_JAX_X64": os.environ.get("GFLOW_JAX_X64"),
        "compilation_cache": compilation_cache_dir(),
        "cpu_affinity": _cpu_affinity(),
        "argv": sys.argv,
    }


def describe_environment(env: dict) -> str:
    """The lines ``gflow info`` prints: versions, backend, each device with its memory, the
    float64 state and the compilation cache."""
    lines = [
        "gflow_jax "
        + str(env["packages"].get("gflow_jax"))
        + ", "
        + ", ".join(f"{k} {v}" for k, v in env["packages"].items() if k != "gflow_jax"),
        f"python {env['python'].split()[0]} on {env['platform']}",
    ]
    plugins = env.get("accelerator_plugins") or {}
    lines.append(
        "accelerator plugins: "
        + (", ".join(f"{k} {v}" for k, v in plugins.items()) or "none (CPU-only install)")
    )
    lines.append(f"backend: {env['backend']} ({len(env['devices'])} local device(s))")
    for d in env["devices"]:
        memory = d.get("memory_bytes")
        host = env.get("host_memory_bytes")
        size = (
            f"{memory / 2**30:.1f} GiB"
            if memory
            else f"host RAM{f' {host / 2**30:.1f} GiB' if host else ''}, shared"
        )
        lines.append(f"  device {d['id']}: {d['platform']} {d['kind']}, {size}")
    x64 = "on" if env["float64"] else "off (GFLOW_JAX_X64=0: float32 by default)"
    lines.append(f"float64: {x64}")
    cache = env.get("compilation_cache")
    if cache:
        count, size = cache_usage(cache)
        usage = f"{count} program(s), {size / 2**20:.1f} MiB"
        lines.append(f"compilation cache: {cache} ({usage}; GFLOW_JAX_CACHE=0 turns it off)")
    else:
        lines.append("compilation cache: off")
    return "\n".join(lines)
