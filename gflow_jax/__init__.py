"""gflow_jax: effective gradient flow, dynamical truncation and magnitude, in JAX.

Importing the package enables JAX float64 (see :mod:`gflow_jax._precision`).
"""

from ._precision import enable_x64 as enable_x64
from ._precision import x64_enabled as x64_enabled

__version__ = "0.1.0"
