"""Test configuration: float64 and strict rank promotion, as in diffrax/equinox; the time and
memory budget of ``make test``.

Budget: ``make test`` (``-m "not slow and not gpu" -n 2 --dist loadgroup``) must finish within
8 minutes and 2 GB on the 2-core CI machine. What keeps it there:

* two pytest-xdist workers, each taking whole test files (module fixtures are built once); the
  files of :data:`HEAVY` go to one worker together, so their ~1 GB peaks never coincide; the
  controller process never imports JAX;
* XLA's classic CPU fusion emitters (a third less compile time; below), and one BLAS thread per
  worker (below);
* one persistent JAX compilation cache per run, shared by the workers and the ``gflow``
  subprocesses, which every compiled program enters (no minimum compile time): a program
  compiled once is loaded, not compiled again, after the caches are dropped;
* JAX's in-memory caches are dropped after any test that leaves the process above
  ``RSS_LIMIT_MB`` (1.4 GB alone, 650 MB per worker; ``GFLOW_TEST_RSS_LIMIT_MB`` sets another),
  and the freed heap is handed back to the system (the compiled programs of the session
  otherwise reach 4.8 GB);
* the long tests listed in :data:`SLOW` are marked ``slow`` here, in one place, with what
  covers their subsystem in the fast suite; ``make test-all`` runs them.

``GFLOW_TEST_PROFILE=FILE`` writes the CPU time and memory of every test (:func:`_profile`).
"""

import ctypes
import gc
import os
import shutil
import tempfile
import time

# One persistent compilation cache per test run, set before JAX starts: programs compiled once
# are loaded from it again after _release() drops them, by the second pytest-xdist worker
# (workers inherit this process's environment) and by the `gflow` subprocesses of the CLI and
# README tests. A cache the caller set up is used and kept; ours is removed at the end.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="gflow-jax-test-cache-")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

# XLA's classic CPU fusion emitters: the suite's cost is compilation (a new program for nearly
# every test), and with the classic emitters a program compiles in about two thirds of the CPU
# time (the exact solver 12.0 → 8.0 s, a Tsit5 flow 4.9 → 3.3 s; same answers). Users' runs keep
# XLA's default. A caller's own choice of the flag is kept.
if "xla_cpu_use_fusion_emitters" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_cpu_use_fusion_emitters=false"
    ).strip()

# One BLAS thread per process when pytest-xdist runs several: with two workers on two cores,
# OpenBLAS's second thread only spins against the other worker (a test of many small CG
# products: 7.4 s alone with one thread, 18.8 s beside a busy process with two). The workers
# (numpy is loaded by then: pytest_configure) and the `gflow` subprocesses they start (the
# environment); a caller's own OPENBLAS_NUM_THREADS is kept.
_ONE_BLAS_THREAD = "PYTEST_XDIST_WORKER" in os.environ and "OPENBLAS_NUM_THREADS" not in os.environ
if _ONE_BLAS_THREAD:
    os.environ["OPENBLAS_NUM_THREADS"] = "1"

import pytest  # noqa: E402


def pytest_configure(config):
    """Float64 and strict rank promotion, and the backend started, in every process that runs
    tests. The pytest-xdist controller (``-n N``) only hands tests out: it never imports JAX."""
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return
    if _ONE_BLAS_THREAD:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1, user_api="blas")
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_numpy_rank_promotion", "raise")
    # start the backend now: in-process `gflow sweep` calls then keep one CPU device
    # (gflow_jax.core.use_cpu_cores only splits the CPU before the backend starts)
    jax.devices()


# test id → what keeps its subsystem covered in the fast suite
SLOW = {
    "tests/test_sweep.py::test_sharded_results_equal_unsharded":
        "test_batched_sweep_equals_single_runs (the batched path on one device), "
        "test_use_cpu_cores_splits_the_cpu_only_when_nobody_chose",
    "tests/test_sweep.py::test_points_differing_in_n_share_a_padded_group":
        "test_truncation_theory.py::test_rates_experiment_twenty_configurations_in_one_"
        "compiled_solve (zero-weight padding rows)",
    "tests/test_sweep.py::test_real_failure_point_by_point":
        "test_failed_points_are_recorded_and_the_sweep_goes_on, "
        "test_cli_errors.py::test_a_real_solver_failure_is_one_line",
    "tests/test_sweep.py::test_minibatches_are_uniform_and_ignore_padding":
        "test_full_network.py::test_sgd_noisy_reproducible_and_full_batch_is_gd, "
        "test_mlp_training.py::test_minibatches_are_distinct_uniform_rows_for_small_and_large_"
        "batches",
    "tests/test_flow.py::test_weighted_padding_equals_the_unpadded_problem":
        "test_truncation_theory.py::test_rates_experiment_twenty_configurations_in_one_"
        "compiled_solve (zero-weight padding rows), "
        "test_truncation_theory.py::test_weighted_padding_gives_each_problem_its_own_rate",
    "tests/test_magnitude.py::test_dimension_1001_points":
        "test_dimension_profile_exact_derivative, test_evenly_spaced_points",
    "tests/test_truncated_magnitude.py::test_complete_collapse_equals_the_targets_and_clusters_"
    "reach_one":
        "test_line_sweep_magnitude_is_non_increasing_and_matches_closed_form, "
        "test_compaction_equals_the_full_solve_and_the_library",
    "tests/test_truncation_theory.py::test_collapse_experiment_reaches_neural_collapse_and_gd_"
    "tracks_events":
        "test_complete_truncation_pins_the_cluster_exactly, "
        "test_gd_reproduces_event_times_to_first_order",
    "tests/test_truncation_theory.py::test_spectral_gap_bound_holds_and_kernel_component_"
    "persists":
        "test_reproduce.py::test_cheap_entries_reproduce (the spectral_gap experiment: μ, the "
        "bound, the exact solution)",
    "tests/test_generalization.py::test_sweep_writes_every_point_table_and_figures":
        "test_failed_point_is_recorded_and_the_sweep_goes_on (the study's sweep end to end), "
        "test_batched_cloud_measures_match_the_library_path (its measures)",
    "tests/test_generalization.py::test_interrupted_sweep_resumes_to_the_uninterrupted_result":
        "test_sweep.py::test_resume_after_an_interrupted_sweep (a sweep resumed to the "
        "uninterrupted result), test_cli_errors.py::test_resume_works_for_every_kind",
    "tests/test_sliding_experiment.py::test_sliding_experiment_diffrax_with_events_follows_the_"
    "exact_solution":
        "test_sliding_experiment_sticks_at_the_closed_form_value (the run, its analysis and "
        "figure with the exact solver as the flow; the located solver's own tests)",
    "tests/test_sliding_experiment.py::test_a_sweep_batch_keeps_the_exact_trajectory":
        "test_sweep.py::test_batched_sweep_equals_single_runs (the batched path), "
        "test_sliding_experiment_sticks_at_the_closed_form_value (the exact trajectory)",
    "tests/test_work_precision.py::test_quick_mode_has_every_method_and_finite_errors":
        "test_numpy_field_and_jacobian_are_the_library_field (the scipy side's field), "
        "test_sliding_experiment.py::test_sliding_experiment_sticks_at_the_closed_form_value (the "
        "exact solver)",
    "tests/test_config_cli.py::test_resume_reruns_a_kind_that_cannot_skip_finished_work":
        "test_cli_errors.py::test_resume_works_for_every_kind",
    "tests/test_config_cli.py::test_run_writes_a_new_directory_each_time":
        "test_cli_errors.py::test_a_run_ends_naming_its_directory_and_main_figure, "
        "test_config_cli.py::test_pulled_back_targets_run (a full run writes its directory)",
    "tests/test_exact.py::test_located_glued_group_regression_instance":
        "test_a_glued_group_one_ulp_apart_keeps_its_attraction (the one-ulp margin jump and the "
        "held margin), test_fuzz_located_diffrax_equals_the_exact_solver (located = exact)",
    "tests/test_network_sliding.py::test_transversal_crossing_equals_the_plain_solve":
        "test_sliding_example_sticks_follows_the_reduced_system_and_is_released (the event "
        "loop and the release crossing to the inactive side, against scipy)",
    "tests/test_network_sliding.py::test_fuzz_every_event_solve_terminates_and_reports":
        "test_alpha_of_pairs_held_in_two_layers_solves_the_polynomial_system (the two-layer α "
        "system), test_sliding_example_sticks_follows_the_reduced_system_and_is_released (the "
        "event loop and its release); the fuzz compiles a second, two-layer event program (22 s, "
        "mostly compilation, at load average 3)",
    "tests/test_device.py::test_device_suite_smoke_runs_every_part":
        "test_device_engine_equals_the_cpu_engines, test_hot_loops_run_without_host_transfers "
        "(the parts of the device suite, one by one, on the CPU); the GPU machine runs the suite "
        "itself",
    "tests/test_device.py::test_a_sweep_group_streams_in_memory_sized_chunks":
        "test_members_per_device_divides_the_free_memory, test_member_bytes_counts_arguments_and_"
        "results (the chunk size), test_sweep.py::test_batched_sweep_equals_single_runs (a "
        "batched group)",
    "tests/test_device.py::test_float32_flow_and_sgd_within_the_stated_error":
        "test_float32_needs_a_tolerance_it_can_meet (float32 settings are checked); the error "
        "bar is an accelerator's (test_gpu_float64_flow_equals_cpu_to_solver_tolerance on a GPU)",
    "tests/test_full_network.py::test_minibatch_is_a_uniform_subset_and_its_mean_gradient":
        "test_sgd_noisy_reproducible_and_full_batch_is_gd, test_mlp_training.py::test_minibatches_"
        "are_distinct_uniform_rows_for_small_and_large_batches",
    "tests/test_full_network.py::test_balance_conserved_by_flow_not_by_large_step_gd":
        "test_one_gd_step_changes_balance_by_eta_squared, test_network_sliding.py::test_balance_"
        "quantities_are_conserved_while_sliding (the flow conserves them)",
    "tests/test_full_network.py::test_new_tolerances_do_not_recompile_the_flow":
        "test_flow.py::test_new_solver_tolerance_does_not_recompile (tolerances are arrays in "
        "the SolverSettings both flows share), test_new_step_size_does_not_recompile_and_batch_"
        "size_compiles_once",
    "tests/test_network_sliding.py::test_event_bound_is_a_reported_failure_naming_the_unit_and_"
    "point":
        "test_exact.py::test_event_bound_is_an_error_naming_the_face (the bound of the effective "
        "flow's event loop), test_sliding_example_sticks_follows_the_reduced_system_and_is_"
        "released (the full network's event loop)",
    "tests/test_full_network.py::test_gflow_run_writes_arrays_metrics_and_figures":
        "test_euler_flow_equals_optax_gd_to_rounding, test_gd_converges_to_flow_first_order, "
        "test_adapted_network_diagnostics, test_default_config_loads_and_adapted_init_is_adapted "
        "(the parts of an sgd_vs_flow run), test_config_cli.py::test_pulled_back_targets_run (a "
        "run writing its directory and figures)",
    "tests/test_flow.py::test_euler_flow_equals_optax_gd_to_rounding":
        "test_full_network.py::test_euler_flow_equals_optax_gd_to_rounding (the same identity "
        "through the shared integrator)",
    "tests/test_flow.py::test_sgd_is_noisy_but_converges":
        "test_full_network.py::test_sgd_noisy_reproducible_and_full_batch_is_gd, "
        "test_mlp_training.py::test_minibatches_are_distinct_uniform_rows_for_small_and_large_"
        "batches",
    "tests/test_flow.py::test_gd_converges_to_flow_first_order":
        "test_exact.py::test_fuzz_gradient_descent_converges_to_the_exact_flow_at_first_order, "
        "test_truncation_theory.py::test_gd_reproduces_event_times_to_first_order",
    "tests/test_flow.py::test_failed_solve_is_reported":
        "test_cli_errors.py::test_a_real_solver_failure_is_one_line, "
        "test_full_network.py::test_failed_solve_is_reported",
    "tests/test_device.py::test_device_engine_solves_an_indefinite_scale_by_lu":
        "test_device_engine_equals_the_cpu_engines, test_device_engine_refines_towards_rtol_and_"
        "reports_it (the device engine on the CPU), test_magnitude.py::test_non_negative_type_"
        "falls_back_to_lu (the CPU engine's LU fallback)",
    "tests/test_device.py::test_device_cloud_engine_equals_the_cholesky_chunks":
        "test_device_engine_equals_the_cpu_engines (the engine it batches), "
        "test_generalization.py::test_batched_cloud_measures_match_the_library_path (many clouds)",
}  # fmt: skip


def pytest_unconfigure(config):
    # the process that made the cache removes it (with xdist: the controller, after its workers)
    if _OWN_CACHE and not hasattr(config, "workerinput"):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


# Files with tests that need about 1 GB at their peak (compiles of the located solver, the
# device suite, sweeps). Under pytest-xdist (`--dist loadgroup`) they form one group, so one
# worker runs them one after another and two of them never run at once; every other file is a
# group of its own, so its module fixtures are built once.
HEAVY = (
    "tests/test_device.py",
    "tests/test_exact.py",
    "tests/test_full_network.py",
    "tests/test_sweep.py",
)


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid.split("[", 1)[0] in SLOW:
            item.add_marker(pytest.mark.slow)
        file = item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group("heavy" if file in HEAVY else file))


# per process: the 2 GB of the suite are shared by the pytest-xdist workers (`make test` runs
# two) and the `gflow` subprocesses some tests start
RSS_LIMIT_MB = float(
    os.environ.get(
        "GFLOW_TEST_RSS_LIMIT_MB", 1400 if "PYTEST_XDIST_WORKER_COUNT" not in os.environ else 650
    )
)
try:  # glibc: give freed heap pages back to the system
    _trim = ctypes.CDLL("libc.so.6").malloc_trim
except (OSError, AttributeError):  # another C library: nothing to trim

    def _trim(pad):
        return 0


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # no /proc: never release within a module
        return 0.0


def _release() -> None:
    import jax

    jax.clear_caches()
    gc.collect()
    _trim(0)  # hand the freed heap back (XLA's compiles leave it fragmented)


@pytest.fixture(autouse=True)
def _bound_memory():
    """Drop every compiled program after a test once the process holds more than
    ``RSS_LIMIT_MB``: compiled programs are kept while memory allows (modules share many: the
    small truncation run of the CLI tests, the flow solves), and the session's would otherwise
    reach 4.8 GB."""
    yield
    if _rss_mb() > RSS_LIMIT_MB:
        _release()


@pytest.fixture(autouse=True)
def _profile(request):
    """``GFLOW_TEST_PROFILE=FILE``: one line per test with its CPU seconds, the process's CPU
    seconds so far (every thread: XLA compiles in parallel; differences include fixtures), the
    resident memory (MB) after it and the peak resident memory during it (Linux: the peak is
    reset before each test), the pytest-xdist worker and the test id."""
    path = os.environ.get("GFLOW_TEST_PROFILE")
    if not path:
        yield
        return
    _reset_peak()
    t0 = time.process_time()
    yield
    with open(path, "a") as fh:
        now = time.process_time()
        fh.write(
            f"{now - t0:8.2f} {now:8.1f} {_rss_mb():8.0f} {_peak_mb():8.0f} "
            f"{os.environ.get('PYTEST_XDIST_WORKER', '-')} {request.node.nodeid}\n"
        )


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset the peak resident set size (VmHWM)
    except OSError:
        pass


def _peak_mb() -> float:
    try:
        with open("/proc/self/status") as fh:
            line = next(x for x in fh if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):
        return 0.0
