"""Test configuration: float64 and strict rank promotion, as in diffrax/equinox."""

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
# start the backend now: in-process `gflow sweep` calls then keep one CPU device
# (gflow_jax.core.use_cpu_cores only splits the CPU before the backend starts)
jax.devices()
