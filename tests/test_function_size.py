"""No function in fedkafka/ is longer than 60 lines (from its `def` to its last line): a longer one is split
into named steps. Reads the source only."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fedkafka"
MAX_LINES = 60


def function_lengths(root: Path) -> list[tuple[int, str]]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                found.append((node.end_lineno - node.lineno + 1, f"{path.relative_to(root.parent)}:{node.lineno} "
                                                                  f"{node.name}"))
    return found


def test_no_function_in_the_package_is_longer_than_60_lines():
    too_long = sorted((n, where) for n, where in function_lengths(PACKAGE) if n > MAX_LINES)
    assert not too_long, f"functions over {MAX_LINES} lines: {too_long}"


def test_the_count_sees_nested_and_async_functions(tmp_path):
    pkg = tmp_path / "fedkafka"
    pkg.mkdir()
    (pkg / "m.py").write_text("def outer():\n    async def inner():\n        pass\n    return inner\n")
    assert sorted(function_lengths(pkg)) == [(2, "fedkafka/m.py:2 inner"), (4, "fedkafka/m.py:1 outer")]
