"""The persistent compilation cache: compiled XLA programs kept on disk between processes.

A compiled program depends only on its computation, shapes and dtypes, the JAX/XLA version and
the device, so a second run of the same configuration (a re-run, a resumed run, a sweep's next
job, another experiment with the same sizes) can load it instead of compiling it again. JAX's
own cache does the work (``jax_compilation_cache_dir``); :func:`enable_compilation_cache` has it
store every program, not only those that compile in over a second (JAX's default): a run
compiles a hundred programs of a tenth of a second each as well as a few large ones.

The command line turns it on for every command, in ``$GFLOW_JAX_CACHE`` if set (a directory),
else in a cache already set up for JAX (``JAX_COMPILATION_CACHE_DIR``; its settings, such as
which programs it stores, are kept too), else in
``$XDG_CACHE_HOME/gflow_jax/xla`` (``~/.cache/gflow_jax/xla``); ``GFLOW_JAX_CACHE=0`` turns it
off. The library never turns it on by itself: call :func:`enable_compilation_cache`.
The cache holds at most :data:`MAX_BYTES`, the least recently used programs evicted first, and
is locked while written (``filelock``), so parallel jobs of a sweep can share it.
"""

from __future__ import annotations

import os
from pathlib import Path

#: environment variable naming the cache directory (``0``, ``off``, ``no``, ``false``: no cache)
CACHE_ENV = "GFLOW_JAX_CACHE"
#: the largest size of the cache directory, in bytes
MAX_BYTES = 2 * 2**30
_OFF = {"0", "false", "no", "off"}


def default_cache_dir() -> Path | None:
    """Where :func:`enable_compilation_cache` keeps programs when not told: ``$GFLOW_JAX_CACHE``;
    else a cache already set up for JAX in this process (``JAX_COMPILATION_CACHE_DIR``,
    ``jax.config``), which is kept; else ``$XDG_CACHE_HOME/gflow_jax/xla`` (``~/.cache/…``).
    ``None`` when ``GFLOW_JAX_CACHE`` turns the cache off."""
    value = os.environ.get(CACHE_ENV, "").strip()
    if value.lower() in _OFF:
        return None
    if value:
        return Path(value).expanduser()
    configured = compilation_cache_dir()
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or Path.home() / ".cache"
    return Path(base) / "gflow_jax" / "xla"


def enable_compilation_cache(
    path: str | Path | None = None, *, min_compile_seconds: float | None = None
) -> Path | None:
    """Keep this process's compiled programs in the directory ``path`` (created if needed;
    ``None``: :func:`default_cache_dir`) and load them from there; programs that compile in
    less than ``min_compile_seconds`` are not stored (``None``: every program, except in a
    cache already set up for JAX and kept, whose threshold,
    ``jax_persistent_cache_min_compile_time_secs``, and size limit stay the caller's). Returns
    the directory, or ``None`` when no ``path`` is given and ``GFLOW_JAX_CACHE`` turns the cache
    off (a cache set up for JAX by other means is then left alone).

    Raises:
        OSError: the directory cannot be created or written (the cache is then left as it was).
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    directory = Path(path).expanduser() if path is not None else default_cache_dir()
    if directory is None:
        return None
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(f"compilation cache directory is not writable: {directory}")
    current = compilation_cache_dir()
    kept = current is not None and Path(current).resolve() == directory
    if not kept:
        jax.config.update("jax_compilation_cache_dir", str(directory))
        jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
        compilation_cache.reset_cache()  # a cache opened earlier in this process is dropped
    if min_compile_seconds is None and kept:
        return directory  # the cache in force, with the threshold it has
    threshold = 0.0 if min_compile_seconds is None else float(min_compile_seconds)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", threshold)
    return directory


def compilation_cache_dir() -> str | None:
    """The directory of the compilation cache in force in this process, or ``None``."""
    import jax

    return jax.config.jax_compilation_cache_dir


def cache_usage(directory: str | Path) -> tuple[int, int]:
    """Number of stored programs and their total size in bytes."""
    files = [p for p in Path(directory).glob("*-cache") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)
