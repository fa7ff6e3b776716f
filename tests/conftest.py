"""Shared fixtures: one set of real Kafka clusters per test session (2 cores: start them once)."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from hypothesis import settings

from fedkafka.kafka.cluster import LocalKafkaCluster, free_port, pid_alive, start_clusters, stop_clusters

# No per-example deadline: CI and developers share 2 cores with Kafka JVMs, and a slow example is not a bug.
# `fedkafka` (make test, CI) draws each property test's full count; `fedkafka-unit` (make test-unit passes
# --hypothesis-profile=fedkafka-unit) a quarter of it, scaled by tests/example_counts.py.
settings.register_profile("fedkafka", deadline=None, max_examples=100)
settings.register_profile("fedkafka-unit", deadline=None, max_examples=25)
settings.load_profile("fedkafka")


@pytest.fixture(scope="module", params=["python", "compiled"])
def records_implementation(request):
    """Runs a module's tests against records.py's pure-Python code and against its compiled twin
    (fedkafka_speedups, rust/fedkafka_speedups); the compiled run is skipped where it was not built (no cargo)."""
    from fedkafka.protocol import records

    if request.param == "compiled" and not records.compiled_available():
        pytest.skip("fedkafka_speedups is not built (rust/fedkafka_speedups needs cargo)")
    before = records.implementation()
    records.use(request.param)
    yield request.param
    records.use(before)


@pytest.fixture(scope="session")
def kafka_base_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kafka")


@pytest.fixture(scope="session")
def kafka_clusters(kafka_base_dir) -> list[LocalKafkaCluster]:
    """Three independent single-node KRaft clusters c1, c2, c3 shared by the whole session.

    Tests must not stop or kill them; a test that needs to kill a broker starts its own
    (see `make_clusters`). Use unique topic names (`unique_name`) so tests do not interfere.
    """
    clusters = start_clusters(["c1", "c2", "c3"], kafka_base_dir / "shared")
    yield clusters
    for c in clusters:
        c.stop()


@pytest.fixture(scope="session")
def replicated_clusters(kafka_base_dir) -> list[LocalKafkaCluster]:
    """Two clusters r1, r2 of 3 brokers each (3 replicas, min.insync.replicas 2), started by the first test
    that asks for them. A test may kill one broker (`cluster.brokers[i].kill()`, `cluster.leader_of(...)`)
    but must start it again (`broker.start()`, `cluster.wait_ready()`) before it ends."""
    clusters = start_clusters(["r1", "r2"], kafka_base_dir / "replicated", brokers=3)
    yield clusters
    stop_clusters(clusters)  # all six at once, under one deadline


@pytest.fixture
def make_clusters(tmp_path):
    """Factory for private clusters a test may kill; all are stopped at the test's end.

    `make_clusters("f1", "f2", brokers=3)` gives clusters of 3 brokers each."""
    started: list[LocalKafkaCluster] = []

    def _make(*names: str, **kwargs) -> list[LocalKafkaCluster]:
        clusters = start_clusters(names, tmp_path / f"k-{uuid.uuid4().hex[:6]}", **kwargs)
        started.extend(clusters)
        return clusters

    yield _make
    for c in started:
        c.stop(timeout=10)


@pytest.fixture
def unique_name(request) -> str:
    base = "".join(ch if ch.isalnum() else "-" for ch in request.node.name)[:40].strip("-")
    return f"{base}-{uuid.uuid4().hex[:6]}"


def run_fedkafka(state_dir, *args: str) -> str:
    """Run the `fedkafka` command as a user would, against the local federation in `state_dir`."""
    env = {**os.environ, "FEDKAFKA_STATE_DIR": str(state_dir)}
    proc = subprocess.run([sys.executable, "-m", "fedkafka.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture
def fedkafka_cli():
    """`fedkafka_cli(state_dir, *args)`: the `fedkafka` command, asserting it succeeds; returns stdout."""
    return run_fedkafka


@pytest.fixture
def refused_cli(monkeypatch):
    """`refused_cli(*args)`: the `fedkafka` command run in this process (typer's CliRunner, no interpreter to
    start) with arguments it must refuse before serving; returns (exit code, stdout and stderr). A proxy or a
    controller that would start serving fails the test instead."""
    from typer.testing import CliRunner

    from fedkafka.cli import app

    def serve(*args, **kwargs):
        raise AssertionError("the command started serving instead of refusing its arguments")

    monkeypatch.setattr("fedkafka.proxy.core.server.run", serve)
    monkeypatch.setattr("fedkafka.cli.admin._serve", serve)

    def invoke(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, list(args))
        if isinstance(result.exception, AssertionError):
            raise result.exception
        return result.exit_code, result.output

    return invoke


@pytest.fixture(scope="session")
def local_federation(tmp_path_factory):
    """One `fedkafka local up --clusters 2 --proxies 2` for the session: (state dir, `local status --json`).

    Tests use their own topic names; `local down` at the end must leave no process behind.
    """
    state_dir = tmp_path_factory.mktemp("local-federation")
    run_fedkafka(state_dir, "local", "up", "--clusters", "2", "--proxies", "2")
    status = json.loads(run_fedkafka(state_dir, "local", "status", "--json"))
    yield state_dir, status
    run_fedkafka(state_dir, "local", "down")
    pids = [c["pid"] for c in status["clusters"]] + [p["pid"] for p in status["proxies"]]
    pids += [status["controller"]["pid"], status["nameservice"]["pid"]]
    assert not [p for p in pids if pid_alive(p)], "local down left processes behind"


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found and os.geteuid() == 0 and shutil.which("apt-get"):
        # Debian's server package, installed the way `make test` documents (root only)
        subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql"], check=False, capture_output=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


class PostgresServer:
    """A throwaway PostgreSQL on a free loopback port (Debian's server binaries), which a test may stop and
    start again to take the database away from a controller."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="fedkafka-pg-"))  # not under pytest's 0700 tmp: postgres reads it
        self.data = self.root / "data"
        self.port = free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            shutil.chown(self.root, "postgres")
            self._as_user = ["runuser", "-u", "postgres", "--"]
        subprocess.run([*self._as_user, str(bindir / "initdb"), "-D", str(self.data), "-U", "fedkafka",
                        "--auth=trust", "-E", "UTF8"], check=True, capture_output=True)
        self.start()

    @property
    def url(self) -> str:
        """URL prefix without a database name."""
        return f"postgresql+psycopg://fedkafka@127.0.0.1:{self.port}"

    def _pg_ctl(self, *args: str, check: bool = True) -> None:
        subprocess.run([*self._as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), *args], check=check,
                       capture_output=True)

    def start(self) -> None:
        self._pg_ctl("-l", str(self.root / "log"), "-w", "-o",
                     f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self) -> None:
        """An abrupt stop (a crash, as far as clients can tell): open connections break at once."""
        self._pg_ctl("-m", "immediate", "stop", check=False)

    def create_database(self) -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url.replace("postgresql+psycopg", "postgresql") + "/postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"{self.url}/{name}"

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _postgres_or_skip() -> PostgresServer:
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL tests skipped: no /usr/lib/postgresql/*/bin/initdb and cannot apt-get install "
                    "postgresql (not root or no apt-get)")
    return PostgresServer(bindir)


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL for the session; yields a URL prefix without database name. Tests must not stop it."""
    server = _postgres_or_skip()
    yield server.url
    server.remove()


@pytest.fixture
def private_postgres():
    """A PostgreSQL of this test's own (`PostgresServer`): it may stop and start it."""
    server = _postgres_or_skip()
    yield server
    server.remove()


def pytest_report_header(config):
    return f"fedkafka tests; FEDKAFKA_CACHE_DIR={os.environ.get('FEDKAFKA_CACHE_DIR', '~/.cache/fedkafka')}"


FAILOVER_SCENARIOS = "FEDKAFKA_FAILOVER_SCENARIOS"

# Whole files that `make test` leaves to a target of their own, to keep CI within its 90 minutes on 2 cores
# (measured there: each takes 1-5.5 minutes). The target sets the variable (Makefile, README's Development).
FILES_OF_THEIR_OWN_TARGET = {
    ("FEDKAFKA_ANSIBLE_HEAVY", "test-ansible-heavy"): (
        "tests/ansible/test_role_service_token.py", "tests/ansible/test_role_broker_security.py",
        "tests/ansible/test_review_rvans_service_check_mode.py", "tests/ansible/test_role_upstream_reload.py",
        "tests/ansible/test_review_rvans_client_rules.py", "tests/ansible/test_site_broker_wait.py",
        "tests/ansible/test_failover_modules_integration.py"),
    ("FEDKAFKA_SCENARIOS", "test-scenarios"): (
        "tests/workflows/test_static_stability.py", "tests/workflows/test_faults.py",
        "tests/workflows/test_postgres_restart.py", "tests/fuzz/test_fuzz_integration.py",
        "tests/workflows/test_proxy_workers_integration.py", "tests/launcher/test_resume_added_cluster.py"),
    ("FEDKAFKA_SECURITY_E2E", "test-security"): ("tests/security/test_upstream_sasl_integration.py",),
}


def _skip_files_of_their_own_target(items) -> None:
    for (variable, target), files in FILES_OF_THEIR_OWN_TARGET.items():
        if os.environ.get(variable) == "1":
            continue
        skip = pytest.mark.skip(reason=f"heavy: runs with {variable}=1 (make {target})")
        for item in items:
            if item.nodeid.split("::")[0] in files:
                item.add_marker(skip)


# Fixtures that start Kafka JVMs, a `fedkafka local` federation or PostgreSQL: a test asking for one is `integration`.
SERVICE_FIXTURES = frozenset({"kafka_clusters", "replicated_clusters", "make_clusters", "local_federation",
                              "postgres_server", "private_postgres"})


def _declared_integration(item) -> bool:
    """Marked integration by its module, class or function, not only by a parameter (the PostgreSQL one)."""
    holders = (item.module, item.cls, getattr(item, "function", None))
    marks = [mark for holder in holders for mark in _as_list(getattr(holder, "pytestmark", []))]
    return any(mark.name == "integration" for mark in marks)


def _as_list(marks) -> list:
    return marks if isinstance(marks, list) else [marks]


def runs_on_every_core(item) -> bool:
    """Beside the unit tests in `make test`'s first, parallel run (scripts/test_suite.sh): an Ansible test that
    starts no service (a play rendering or refusing on localhost into `tmp_path`, free ports only), or a controller
    test that is integration only for its PostgreSQL parameter (an in-process API against the worker's own
    PostgreSQL). Kafka, Java and service processes stay in the second run, one test at a time."""
    if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
        return False
    if not item.get_closest_marker("integration"):
        return item.get_closest_marker("ansible") is not None
    callspec = getattr(item, "callspec", None)
    on_postgresql = callspec is not None and callspec.params.get("empty_db_url") == "postgresql"
    return on_postgresql and not item.get_closest_marker("ansible") and not _declared_integration(item)


def is_unit(item) -> bool:
    """In `make test-unit` (-m "not integration and not ansible"): it must run on a machine without Java."""
    return not item.get_closest_marker("integration") and not item.get_closest_marker("ansible")


def _refuse_unmarked_services(items) -> None:
    wrong = [f"{item.nodeid} ({', '.join(sorted(SERVICE_FIXTURES & set(item.fixturenames)))})"
             for item in items if is_unit(item) and SERVICE_FIXTURES & set(getattr(item, "fixturenames", ()))]
    if wrong:
        raise pytest.UsageError("tests that start Kafka or PostgreSQL must be marked integration:\n  "
                                + "\n  ".join(wrong))


@pytest.fixture(autouse=True)
def _unit_tests_need_no_java(request, monkeypatch):
    """A unit test that reaches for Java (a broker, a Kafka tool) fails here, not only on a machine without it."""
    if not is_unit(request.node):
        return

    def refuse(*args, **kwargs):
        raise AssertionError(f"{request.node.nodeid} needs Java: mark it integration")

    monkeypatch.setattr("fedkafka.kafka.dist.find_java", refuse)
    monkeypatch.setattr("fedkafka.kafka.apps.find_java", refuse)


def pytest_collection_modifyitems(config, items):
    """Tests that start services must be marked integration (`_refuse_unmarked_services`); those that can share
    the cores are marked every_core (`runs_on_every_core`); files of a target of their own are skipped
    (`FILES_OF_THEIR_OWN_TARGET`). Failover and
    coordination scenarios take minutes each (`failover_scenario`): `make test-failover` runs them
    (FEDKAFKA_FAILOVER_SCENARIOS=1); `make test` skips them and keeps their fast cover (tests/controller)."""
    _refuse_unmarked_services(items)
    for item in items:
        if runs_on_every_core(item):
            item.add_marker(pytest.mark.every_core)
    _skip_files_of_their_own_target(items)
    if os.environ.get(FAILOVER_SCENARIOS) == "1":
        return
    skip = pytest.mark.skip(reason=f"slow scenario: runs with {FAILOVER_SCENARIOS}=1 (make test-failover)")
    for item in items:
        if item.get_closest_marker("failover_scenario"):
            item.add_marker(skip)
