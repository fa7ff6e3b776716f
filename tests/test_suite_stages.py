"""`make test`'s two pytest runs (scripts/test_suite.sh): every test is in exactly one, and only tests that start
no broker, Java or service process share the cores (`runs_on_every_core`, tests/conftest.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import FILES_OF_THEIR_OWN_TARGET, runs_on_every_core

ROOT = Path(__file__).resolve().parents[1]


def _item(markers: set[str], fixtures: tuple[str, ...] = (), db: str | None = None, declared: tuple[str, ...] = ()):
    """A collected test as runs_on_every_core reads it: its markers, fixtures, database parameter and the marks its
    function declares (a parameter's marks are the item's own, not its function's)."""
    marks = [pytest.Mark(name, (), {}) for name in declared]
    return SimpleNamespace(
        fixturenames=fixtures, callspec=SimpleNamespace(params={"empty_db_url": db}) if db else None,
        module=SimpleNamespace(), cls=None, function=SimpleNamespace(pytestmark=marks),
        get_closest_marker=lambda name: pytest.Mark(name, (), {}) if name in markers else None)


@pytest.mark.parametrize(("item", "shares"), [
    (_item({"ansible"}), True),  # a play rendering into tmp_path
    (_item({"integration"}, ("empty_db_url",), db="postgresql"), True),  # an API test on the worker's PostgreSQL
    (_item({"integration"}, ("empty_db_url",), db="postgresql", declared=("integration",)), False),  # and more
    (_item({"integration"}, ("empty_db_url", "kafka_clusters"), db="postgresql"), False),
    (_item({"integration", "ansible"}), False),  # a play that starts Kafka or a service
    (_item({"ansible"}, ("kafka_clusters",)), False),
    (_item({"integration"}), False),  # a controller or proxy process
    (_item(set(), ("empty_db_url",), db="sqlite"), False),  # a unit test: in the parallel run by its markers
], ids=["ansible-render", "postgresql-param", "declared-integration", "kafka-fixture", "ansible-integration",
        "ansible-kafka", "process", "unit"])
def test_only_tests_that_start_nothing_of_their_own_share_the_cores(item, shares):
    assert runs_on_every_core(item) is shares


def _stage_expressions() -> list[str]:
    return re.findall(r'pytest" -m "([^"]+)"', (ROOT / "scripts/test_suite.sh").read_text())


def _collected(*args: str) -> set[str]:
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {line for line in proc.stdout.splitlines() if "::" in line}


def test_the_two_runs_split_the_suite_and_keep_brokers_and_processes_in_the_serial_one():
    files = ["tests/controller/test_proxy_workers.py", "tests/ansible/test_role_tls_served.py",
             "tests/proxy/test_produce_integration.py", "tests/controller/test_tls_tokens_integration.py"]
    parallel_run, serial_run = _stage_expressions()
    everything = _collected(*files)
    parallel, serial = _collected("-m", parallel_run, *files), _collected("-m", serial_run, *files)
    assert parallel | serial == everything and not parallel & serial
    assert {t for t in parallel if "test_proxy_workers" in t} == {t for t in everything if "test_proxy_workers" in t}
    assert {t for t in parallel if "test_role_tls_served" in t}
    assert not {t for t in parallel if "test_produce_integration" in t or "test_tls_tokens_integration" in t}


def test_each_file_left_to_a_target_exists_and_that_target_runs_it():
    makefile = (ROOT / "Makefile").read_text()
    for (variable, target), files in FILES_OF_THEIR_OWN_TARGET.items():
        recipe = makefile.split(f"\n{target}:", 1)[1].split("\n\n", 1)[0]
        assert f"{variable}=1" in recipe, target
        for path in files:
            assert (ROOT / path).is_file() and path in recipe, (target, path)
