"""Review of s37-fetchcpu (issue #20): the bench tools around the Fetch cut (produce_count.py's output,
fetch_count.py's copy of its counting window)."""

from __future__ import annotations

import ast
import contextlib
import io
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
COUNTS = {"calls": {"produce.py:handle": 2, "records.py:varint_bytes": 4, "connection.py:C.read": 2},
          "ops": {"produce.py:handle": 100, "records.py:varint_bytes": 40, "connection.py:C.read": 60},
          "c_calls": {"len": 6}}


def report_lines(functions_of: tuple[str, ...] | None) -> list[str]:
    sys.path.insert(0, str(BENCH))
    try:
        import produce_count
    finally:
        sys.path.remove(str(BENCH))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        produce_count.report(COUNTS, None, 10, functions_of or produce_count.HANDLER_FILES)
    return out.getvalue().splitlines()


def test_produce_count_s_last_line_is_main_s():
    assert report_lines(None)[-1] == "      70  handler, records.py, plan.py, dataclasses"


def test_produce_count_with_functions_of_still_totals_the_handler():
    assert report_lines(("connection.py",))[-1].split()[0] == "70"


def test_one_bench_function_runs_the_traced_window():
    copies = []
    for path in sorted(BENCH.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                source = ast.get_source_segment(path.read_text(), node) or ""
                if "SIGUSR2" in source and "the proxy wrote no counts" in source:
                    copies.append(f"{path.name}:{node.name}")
    assert len(copies) <= 1, copies
