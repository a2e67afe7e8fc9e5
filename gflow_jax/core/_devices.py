"""Local devices: which to use, and splitting a CPU into one device per core.

On a CPU the process has one device unless asked otherwise; :func:`use_cpu_cores` (what
``gflow sweep`` does before the backend starts) splits it into one device per core, so a batch
sharded with :func:`gflow_jax.core.call_batched` runs on every core.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax


def use_cpu_cores(n: int | None = None) -> int | None:
    """Give the CPU backend ``n`` devices (default: one per core available to this process).

    Does nothing, and returns ``None``, when the device count was already chosen
    (``JAX_NUM_CPU_DEVICES``, ``jax_num_cpu_devices``, ``--xla_force_host_platform_device_count``
    in ``XLA_FLAGS``), when ``n ≤ 1``, or when JAX's backends have started (the count is fixed
    then). Returns the number of CPU devices set otherwise. GPU devices are not affected; single
    solves run on CPU device 0 as fast as before (measured).
    """
    if n is None:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
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
