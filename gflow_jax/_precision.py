"""float64 policy.

gflow_jax is a toolkit for *verifying* theory numerically (rates to 1e-6, magnitudes of
ill-conditioned similarity matrices), so it enables JAX's float64 mode when imported. Set the
environment variable ``GFLOW_JAX_X64=0`` before importing to keep JAX's float32 default; every
run records which mode was in force (``env.json``).
"""

import os

import jax


def _x64_requested() -> bool:
    return os.environ.get("GFLOW_JAX_X64", "1").strip().lower() not in {"0", "false", "no", "off"}


def enable_x64() -> None:
    """Turn on JAX float64 (idempotent). Must run before arrays are created."""
    jax.config.update("jax_enable_x64", True)


def x64_enabled() -> bool:
    """Whether JAX currently creates float64 arrays by default."""
    return bool(jax.config.read("jax_enable_x64"))


if _x64_requested():
    enable_x64()
