"""Files, run directories, trajectory streams, figures, progress bars and the compilation cache.

A leaf of the package: every other layer may use it, and it imports nothing else of gflow_jax.
Every file is written atomically (:mod:`gflow_jax.io._files`).
"""

from ._compilation_cache import (
    compilation_cache_dir as compilation_cache_dir,
    enable_compilation_cache as enable_compilation_cache,
)
from ._figures import pyplot as pyplot, save_figure as save_figure, time_axis as time_axis
from ._files import (
    load_arrays as load_arrays,
    read_json as read_json,
    save_npz as save_npz,
    write_csv as write_csv,
    write_json as write_json,
    write_metrics as write_metrics,
)
from ._progress import (
    flow_progress_meter as flow_progress_meter,
    progress_bar as progress_bar,
    progress_enabled as progress_enabled,
    scan_progress as scan_progress,
)
from ._run_dir import (
    create_run_dir as create_run_dir,
    describe_environment as describe_environment,
    environment_info as environment_info,
    utc_now as utc_now,
)
from ._streams import (
    ChunkedArrayWriter as ChunkedArrayWriter,
    read_stream as read_stream,
    stream_is_complete as stream_is_complete,
)

__all__ = [
    "ChunkedArrayWriter",
    "compilation_cache_dir",
    "create_run_dir",
    "describe_environment",
    "enable_compilation_cache",
    "environment_info",
    "flow_progress_meter",
    "load_arrays",
    "progress_bar",
    "progress_enabled",
    "pyplot",
    "read_json",
    "read_stream",
    "save_figure",
    "save_npz",
    "scan_progress",
    "stream_is_complete",
    "time_axis",
    "utc_now",
    "write_csv",
    "write_json",
    "write_metrics",
]
