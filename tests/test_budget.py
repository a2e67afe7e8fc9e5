"""The time and memory budget of ``make test`` is kept by marking long tests ``slow`` in one place
(``SLOW`` in tests/conftest.py): every name there is a test that exists."""

import ast
from pathlib import Path

from .conftest import SLOW

ROOT = Path(__file__).resolve().parents[1]


def test_slow_list_names_existing_tests():
    assert SLOW
    for nodeid, covered_by in SLOW.items():
        path, name = nodeid.split("::")
        tree = ast.parse((ROOT / path).read_text())
        names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert name in names, f"conftest.SLOW: {nodeid} does not exist"
        assert covered_by, nodeid
