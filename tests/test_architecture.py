"""The package's plan, enforced: imports only go down the layers, numerics never draw or write run
directories, no import circle, no oversized module, and importing the library loads no
experiment, sweep, command line or matplotlib."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gflow_jax"

# io is a leaf every layer may use; higher numbers may import lower ones, never the reverse
LAYERS = {
    "io": 0,
    "_precision": 0,
    "core": 1,
    "dynamics": 2,
    "magnitude": 3,
    "diagnostics": 4,
    "experiments": 5,
    "sweep": 6,
    "cli": 7,
}
NUMERICS = ("core", "dynamics", "magnitude", "diagnostics")
# what numerics may not take from io: figures and run directories
DRAWING_OR_RUN_DIRS = {"pyplot", "save_figure", "time_axis", "create_run_dir", "environment_info"}
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _package_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1])


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """Every ``gflow_jax`` import of a module (module-level or inside functions): the absolute
    module imported from, and the names taken from it."""
    tree = ast.parse(path.read_text())
    package = _package_of(path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
    return [(m, names) for m, names in found if m.split(".")[0] in ("gflow_jax", "matplotlib")]


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "gflow_jax" else None


def _targets(module: str, names: list[str], modules: dict) -> list[str]:
    """The package modules an import statement reaches (``from pkg import submodule``)."""
    out = [module] if module in modules else []
    out += [f"{module}.{n}" for n in names if f"{module}.{n}" in modules]
    return out


MODULES = _modules()


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m != "gflow_jax"))
def test_imports_only_go_down_the_layers(name):
    here = _layer(name)
    for module, names in _imports(MODULES[name]):
        assert not module.startswith("matplotlib") or here not in NUMERICS, (
            f"{name} (numerics) imports matplotlib"
        )
        there = _layer(module)
        if there is None:
            continue
        if there == "_precision" or here == there:
            continue
        assert LAYERS[there] <= LAYERS[here] or there == "io", (
            f"{name} (layer {here}) imports {module} (layer {there}, higher)"
        )
        if here == "io":
            raise AssertionError(f"{name}: io is a leaf but imports {module}")
        if here in NUMERICS and there == "io":
            assert not set(names) & DRAWING_OR_RUN_DIRS and not module.endswith(
                ("_figures", "_run_dir")
            ), f"{name} (numerics) imports {sorted(set(names) & DRAWING_OR_RUN_DIRS)} from io"


def test_no_import_circle():
    graph = {
        name: {t for m, names in _imports(path) for t in _targets(m, names, MODULES) if t != name}
        for name, path in MODULES.items()
    }
    # a package's __init__ re-exports its own modules: that is not a circle
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".") or t == "gflow_jax"}
        graph[name].discard("gflow_jax")
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                raise AssertionError(f"import circle: {' -> '.join(cycle)}")
            if state.get(nxt) is None:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if state.get(node) is None:
            visit(node, [node])


def test_no_module_over_500_lines():
    long = {n: len(p.read_text().splitlines()) for n, p in MODULES.items()}
    assert not {n: k for n, k in long.items() if k > MAX_LINES}


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())


def test_importing_the_library_loads_no_experiment_sweep_cli_or_matplotlib():
    loaded = _loaded_after("import gflow_jax")
    for absent in ("gflow_jax.experiments", "gflow_jax.sweep", "gflow_jax.cli", "matplotlib"):
        assert absent not in loaded, f"`import gflow_jax` loads {absent}"
    for present in ("gflow_jax.core", "gflow_jax.dynamics", "gflow_jax.magnitude"):
        assert present in loaded


def test_the_command_line_loads_kinds_lazily():
    loaded = _loaded_after("import gflow_jax.cli; gflow_jax.cli.build_parser()")
    kinds = [m for m in loaded if m.startswith("gflow_jax.experiments.") and "._" not in m]
    assert not kinds, f"`import gflow_jax.cli` loads the kinds {kinds}"
    assert "matplotlib" not in loaded and "gflow_jax.sweep" not in loaded


def test_public_api_is_curated():
    import gflow_jax

    for name in gflow_jax.__all__:
        assert getattr(gflow_jax, name) is not None, name
    for sub in ("core", "dynamics", "magnitude", "diagnostics", "io", "experiments", "sweep"):
        module = __import__(f"gflow_jax.{sub}", fromlist=["__all__"])
        assert len(set(module.__all__)) == len(module.__all__), f"gflow_jax.{sub}: repeats"
        for name in module.__all__:
            assert hasattr(module, name), f"gflow_jax.{sub}.{name}"
