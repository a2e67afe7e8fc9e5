"""Local devices: which to use, splitting a CPU into one device per core, and how much memory
a batch may take on each.

On a CPU the process has one device unless asked otherwise; :func:`use_cpu_cores` (what
``gflow sweep`` does before the backend starts) splits it into one device per core, so a batch
sharded with :func:`gflow_jax.core.call_batched` runs on every core. On GPUs and TPUs every local
accelerator is a device. :func:`device_memory` and :func:`members_per_device` size batches from
the memory free on each device (very large sweeps stream through in chunks that fit).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax


def cpu_affinity() -> list[int] | None:
    """The cores this process may run on, sorted (``None`` where the platform does not tell)."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def use_cpu_cores(n: int | None = None) -> int | None:
    """Give the CPU backend ``n`` devices (default: one per core available to this process).

    Does nothing, and returns ``None``, when the device count was already chosen
    (``JAX_NUM_CPU_DEVICES``, ``jax_num_cpu_devices``, ``--xla_force_host_platform_device_count``
    in ``XLA_FLAGS``), when ``n ≤ 1``, or when JAX's backends have started (the count is fixed
    then). Returns the number of CPU devices set otherwise. GPU devices are not affected; single
    solves run on CPU device 0 as fast as before (measured).
    """
    if n is None:
        cores = cpu_affinity()
        n = len(cores) if cores is not None else os.cpu_count()
    chosen = jax.config.jax_num_cpu_devices >= 0 or "xla_force_host_platform_device_count" in (
        os.environ.get("XLA_FLAGS", "")
    )
    if chosen or not n or n <= 1:
        return None
    try:
        jax.config.update("jax_num_cpu_devices", int(n))
    except RuntimeError:  # backends already initialised: the device count is fixed
        return None
    return int(n)


def resolve_devices(devices: int | Sequence[jax.Device] | None) -> list[jax.Device]:
    """``None``: every local device; an int ``n``: the first ``n``; a list: itself."""
    local = jax.local_devices()
    if devices is None:
        return list(local)
    if isinstance(devices, int):
        if not 1 <= devices <= len(local):
            raise ValueError(
                f"--devices {devices}: this process sees {len(local)} local device(s) "
                f"({local[0].platform}); on CPU start with JAX_NUM_CPU_DEVICES=N for more"
            )
        return list(local[:devices])
    return list(devices)


def default_device() -> jax.Device:
    """The device new arrays and computations go to: the one a ``jax.default_device(...)``
    context names, else the first device of the default backend."""
    chosen = jax.config.jax_default_device
    if isinstance(chosen, str):  # a platform name
        return jax.devices(chosen)[0]
    return chosen if chosen is not None else jax.devices()[0]


def on_accelerator() -> bool:
    """Whether computations go to an accelerator (GPU or TPU) by default: the default backend,
    unless a ``jax.default_device`` context chose a CPU device (or vice versa)."""
    return default_device().platform != "cpu"


def _host_available() -> int | None:
    """Bytes of host memory available (``MemAvailable`` of /proc/meminfo, else free pages)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def device_memory(device: jax.Device) -> int | None:
    """Bytes free on ``device``: ``bytes_limit − bytes_in_use`` of its allocator (GPU, TPU); for
    a CPU device, the host's available memory shared among the process's CPU devices; ``None``
    when unknown."""
    try:
        stats = device.memory_stats()
    except Exception:  # some runtimes raise instead of returning None
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    if device.platform == "cpu":
        host = _host_available()
        n_cpu = sum(d.platform == "cpu" for d in jax.local_devices(backend="cpu")) or 1
        return None if host is None else host // n_cpu
    return None


#: fraction of a device's free memory one batched call may plan to use
MEMORY_FRACTION = 0.5
#: planning figure when a device does not report its memory (bytes)
_UNKNOWN_MEMORY = 1 << 31


def members_per_device(
    member_bytes: int,
    devices: Sequence[jax.Device],
    *,
    fraction: float = MEMORY_FRACTION,
    memory: int | None = None,
) -> int:
    """How many batch members of ``member_bytes`` each fit on every one of ``devices`` within
    ``fraction`` of its free memory (``memory``: bytes free per device, instead of asking the
    devices); at least 1."""
    if member_bytes < 1 or not 0 < fraction <= 1:
        raise ValueError(
            f"need member_bytes ≥ 1 and 0 < fraction ≤ 1, got {member_bytes}, {fraction}"
        )
    if memory is None:
        free = [device_memory(d) for d in devices]
        memory = min((m for m in free if m is not None), default=_UNKNOWN_MEMORY)
    return max(1, int(fraction * memory) // int(member_bytes))
