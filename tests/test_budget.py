"""The time and memory budget of ``make test`` is kept by marking long tests ``slow`` in one place
(``SLOW`` in tests/conftest.py): every name there is a test that exists."""

import ast
import re
from pathlib import Path

import pytest

from .conftest import SLOW

ROOT = Path(__file__).resolve().parents[1]


def _test_names(path: str) -> set[str]:
    """The module-level functions of a test file."""
    tree = ast.parse((ROOT / path).read_text())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}


def test_slow_list_names_existing_tests():
    assert SLOW
    for nodeid, covered_by in SLOW.items():
        path, name = nodeid.split("::")
        assert name in _test_names(path), f"conftest.SLOW: {nodeid} does not exist"
        assert covered_by, nodeid


def test_files_stay_together_under_pytest_xdist(request):
    """``make test`` relies on ``--dist loadgroup`` keeping each file (and the heavy files
    together) on one worker; with pytest 9.2 pytest-xdist silently stopped doing so (the group
    never reaches the scheduler) and the suite took 17 min 35 s instead of 13 min 55 s. Under a
    worker with ``--dist loadgroup`` the group must be on the node id the scheduler reads."""
    if not getattr(request.config, "workerinput", None) or not request.config.getvalue("loadgroup"):
        pytest.skip("not a pytest-xdist worker with --dist loadgroup")
    assert request.node.nodeid.endswith("@tests/test_budget.py"), (
        f"pytest-xdist did not group this file's tests ({request.node.nodeid}): "
        "check the pytest pin in pyproject.toml"
    )


def test_what_covers_a_slow_test_is_a_fast_test_that_exists():
    """Every test named in ``SLOW`` as covering a slow one (``file.py::test_name``, or a bare
    ``test_name`` of the slow test's own file) exists and is not slow itself."""
    checked = 0
    for nodeid, covered_by in SLOW.items():
        own = nodeid.split("::")[0]
        named = re.findall(r"(?<![\w.:])(?:(test_\w+\.py)::)?(test_\w+)(?![\w.])", covered_by)
        for file, name in named:
            path = f"tests/{file}" if file else own
            assert name in _test_names(path), f"SLOW[{nodeid}] names {path}::{name}: no such test"
            assert f"{path}::{name}" not in SLOW, f"SLOW[{nodeid}] names the slow {path}::{name}"
            checked += 1
    assert checked >= len(SLOW)
