"""The persistent compilation cache of the command line (gflow_jax.io.enable_compilation_cache):
where it lives, that a second process loads what the first compiled, and that a directory it
cannot use costs one line, not the command.

Processes of their own for everything that turns a cache on: this test process keeps the
suite's cache (tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gflow_jax.cli import main
from gflow_jax.io import _compilation_cache as cc, describe_environment, environment_info

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, env: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR",)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**base, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_where_the_cache_lives(monkeypatch, tmp_path):
    monkeypatch.setattr(cc, "compilation_cache_dir", lambda: None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("GFLOW_JAX_CACHE", raising=False)
    assert cc.default_cache_dir() == tmp_path / "xdg" / "gflow_jax" / "xla"
    monkeypatch.setattr(cc, "compilation_cache_dir", lambda: str(tmp_path / "theirs"))
    assert cc.default_cache_dir() == tmp_path / "theirs"  # a cache set up for JAX is kept
    monkeypatch.setenv("GFLOW_JAX_CACHE", str(tmp_path / "ours"))
    assert cc.default_cache_dir() == tmp_path / "ours"
    for off in ("0", "off", "No", "false"):
        monkeypatch.setenv("GFLOW_JAX_CACHE", off)
        assert cc.default_cache_dir() is None
        assert cc.enable_compilation_cache() is None


def test_a_cache_set_up_for_jax_keeps_its_threshold(monkeypatch):
    """The suite's cache (tests/conftest.py) is a cache set up for JAX: enabling the cache
    without a directory keeps it and the caller's threshold; an explicit threshold is applied."""
    import jax

    monkeypatch.delenv("GFLOW_JAX_CACHE", raising=False)
    key = "jax_persistent_cache_min_compile_time_secs"
    before, theirs = getattr(jax.config, key), cc.compilation_cache_dir()
    assert theirs is not None
    try:
        jax.config.update(key, 7.0)
        assert cc.enable_compilation_cache() == Path(theirs).resolve()
        assert getattr(jax.config, key) == 7.0
        assert cc.compilation_cache_dir() == theirs
        cc.enable_compilation_cache(min_compile_seconds=0.5)
        assert getattr(jax.config, key) == 0.5
    finally:
        jax.config.update(key, before)


def test_unusable_directory_is_an_error_and_changes_nothing(tmp_path):
    before = cc.compilation_cache_dir()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError):
        cc.enable_compilation_cache(blocker / "xla")
    assert cc.compilation_cache_dir() == before


def test_a_second_process_loads_what_the_first_compiled(tmp_path):
    """Two processes compile the same program with GFLOW_JAX_CACHE set: the first stores it
    (a cache miss), the second loads it (a hit) and stores nothing new."""
    code = """
        import jax, jax.numpy as jnp
        from jax import monitoring
        from gflow_jax.io import enable_compilation_cache
        hits = []
        monitoring.register_event_listener(
            lambda event, **kw: hits.append(event) if event.endswith("cache_hits") else None
        )
        print("dir", enable_compilation_cache())
        f = jax.jit(lambda x: jnp.cumsum(jnp.sin(x) ** 2) @ x)
        print("value", float(f(jnp.linspace(0.0, 1.0, 37))))
        print("hits", len(hits))
    """
    cache = tmp_path / "cache"
    env = {"GFLOW_JAX_CACHE": str(cache)}
    first = _python(code, env, tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"dir {cache.resolve()}" in first.stdout
    count, size = cc.cache_usage(cache)
    assert count >= 1 and size > 0
    assert "hits 0" in first.stdout
    second = _python(code, env, tmp_path)
    assert second.returncode == 0, second.stderr
    assert "hits 0" not in second.stdout
    value = [line for line in first.stdout.splitlines() if line.startswith("value")]
    assert value and value[0] in second.stdout  # the loaded program computes the same
    assert cc.cache_usage(cache)[0] == count


def test_gflow_info_reports_the_cache(capsys, monkeypatch):
    """``gflow info`` names the cache in force (here the suite's: tests/conftest.py) and its
    size, or says it is off; env.json records the directory."""
    monkeypatch.delenv("GFLOW_JAX_CACHE", raising=False)
    cache = cc.compilation_cache_dir()
    assert cache is not None
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"compilation cache: {Path(cache).resolve()} (" in out
    env = environment_info()
    assert env["compilation_cache"] == cache
    assert "compilation cache: off" in describe_environment({**env, "compilation_cache": None})


def test_unusable_cache_directory_is_one_line_and_the_command_runs(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("GFLOW_JAX_CACHE", str(blocker / "xla"))
    before = cc.compilation_cache_dir()
    assert main(["info"]) == 0
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gflow: note: compilation cache off (")
    assert "GFLOW_JAX_CACHE" in lines[0] and "Traceback" not in err
    assert "backend:" in out
    assert cc.compilation_cache_dir() == before
