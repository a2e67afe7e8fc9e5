"""Test configuration: float64 and strict rank promotion, as in diffrax/equinox; the time and
memory budget of ``make test``.

Budget: ``make test`` (``-m "not slow and not gpu"``) must finish within 8 minutes and 2 GB on
the 2-core CI machine. Two things keep it there:

* JAX's compilation caches are cleared after every test module (they otherwise hold every
  compiled program of the session: 4.8 GB at the end of the suite);
* the long tests listed in :data:`SLOW` are marked ``slow`` here, in one place, with what
  covers their subsystem in the fast suite; ``make test-all`` runs them.
"""

import gc

import jax
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
# start the backend now: in-process `gflow sweep` calls then keep one CPU device
# (gflow_jax.core.use_cpu_cores only splits the CPU before the backend starts)
jax.devices()

# test id → what keeps its subsystem covered in the fast suite
SLOW = {}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid.split("[", 1)[0] in SLOW:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop every compiled program when a test module ends (they are not shared across
    modules in any way that matters for speed, and they dominate the memory)."""
    yield
    jax.clear_caches()
    gc.collect()
