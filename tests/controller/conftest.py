"""Controller fixtures: an in-process controller app on a SQLite file and on a real throwaway PostgreSQL."""

from __future__ import annotations

import itertools
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from controller.member_secrets import heartbeating_like_a_proxy
from fedkafka.controller.app import create_app
from fedkafka.controller.db import make_engine, migrate
from fedkafka.controller.kafka_admin import KafkaAdmin, Scan
from fedkafka.controller.leadership import NotLeader
from fedkafka.controller.service import Controller, Settings
from fedkafka.controller.workflows import WorkflowEngine

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class RecordingKafka(KafkaAdmin):
    """For API unit tests only (no cluster involved): records the topics the controller would create.
    Integration tests use the real KafkaAdmin against real brokers."""

    def __init__(self):
        super().__init__()
        self.created: dict[tuple[str, str], int] = {}
        self.down: set[str] = set()
        self.refuse_config = False
        self.configs: dict[tuple[str, str], dict[str, str]] = {}
        # (cluster, physical topic, partition) -> log end: records produced there (0 unless a test says so)
        self.ends: dict[tuple[str, str, int], int] = {}
        # (cluster, physical topic) -> its Kafka topic id, new each time the topic is created (a test that puts a
        # topic in `created` itself gets one at the first look)
        self.ids: dict[tuple[str, str], str] = {}
        self.deleted_ids: list[tuple[str, str, str]] = []  # (cluster, name, topic id) of each deletion by id

    def scan(self, cluster, bootstrap):
        if cluster in self.down:
            return Scan(cluster, False, "connection refused")
        return Scan(cluster, True, None, {t: n for (c, t), n in self.created.items() if c == cluster})

    def ensure_topic(self, cluster, bootstrap, name, partitions, config=None):
        from fedkafka.controller.kafka_admin import KafkaRefused, KafkaUnavailable

        if cluster in self.down:
            raise KafkaUnavailable(f"cluster {cluster} unavailable: connection refused")
        if self.refuse_config and config:
            raise KafkaRefused(f"cluster {cluster} refused: Unknown topic config name: {next(iter(config))}",
                               "INVALID_CONFIG")
        changed = self.created.get((cluster, name), 0) < partitions
        if (cluster, name) not in self.created:
            self.ids[(cluster, name)] = uuid.uuid4().hex
        self.created[(cluster, name)] = max(partitions, self.created.get((cluster, name), 0))
        return changed

    def alter_topic_config(self, cluster, bootstrap, name, set_, delete, validate_only=False):
        from fedkafka.controller.kafka_admin import KafkaRefused

        if self.refuse_config and set_:
            raise KafkaRefused(f"cluster {cluster} refused: Unknown topic config name: {next(iter(set_))}",
                               "INVALID_CONFIG")
        if not validate_only:
            self.configs[(cluster, name)] = {**{k: v for k, v in self.configs.get((cluster, name), {}).items()
                                                if k not in delete}, **set_}

    def validate_new_topic(self, cluster, bootstrap, partitions, config):
        from fedkafka.controller.kafka_admin import KafkaRefused

        if self.refuse_config and config:
            raise KafkaRefused(f"cluster {cluster} refused: Unknown topic config name: {next(iter(config))}",
                               "INVALID_CONFIG")

    def log_offsets(self, cluster, bootstrap, partitions):
        # every partition asked for, empty unless `ends` says otherwise (a move's freeze reads its target's end),
        # unless its cluster is down
        return {} if cluster in self.down else {(t, p): (0, self.ends.get((cluster, t, p), 0)) for t, p in partitions}

    def log_end_offsets(self, cluster, bootstrap, partitions):
        # settled: every write replicated (the log end is the high watermark)
        return {tp: end for tp, (_start, end) in self.log_offsets(cluster, bootstrap, partitions).items()}

    def topic_ids(self, cluster, bootstrap, names):
        from fedkafka.controller.kafka_admin import KafkaUnavailable

        if cluster in self.down:
            raise KafkaUnavailable(f"cluster {cluster} unavailable: connection refused")
        return {name: self._id_of(cluster, name) for name in names if (cluster, name) in self.created}

    def _id_of(self, cluster, name):
        return self.ids.setdefault((cluster, name), uuid.uuid4().hex)

    def delete_topic_by_id(self, cluster, bootstrap, name, topic_id):
        """Deletes the topic of that id, whatever its name; False if none (Kafka's UNKNOWN_TOPIC_ID)."""
        from fedkafka.controller.kafka_admin import KafkaUnavailable

        if cluster in self.down:
            raise KafkaUnavailable(f"cluster {cluster} unavailable: connection refused")
        self.deleted_ids.append((cluster, name, topic_id))
        named = [t for (c, t) in self.created if c == cluster and self._id_of(c, t) == topic_id]
        for topic in named:
            self.delete_topic(cluster, bootstrap, topic)
        return bool(named)

    def delete_topic(self, cluster, bootstrap, name):
        """An operator's deletion by name (the controller deletes by id only)."""
        from fedkafka.controller.kafka_admin import KafkaUnavailable

        if cluster in self.down:
            raise KafkaUnavailable(f"cluster {cluster} unavailable: connection refused")
        self.created.pop((cluster, name), None)
        self.ids.pop((cluster, name), None)
        for key in [k for k in self.ends if k[:2] == (cluster, name)]:
            del self.ends[key]


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory) -> Path:
    """A SQLite database that `migrate` brought to head once per session (per xdist worker). Running every
    revision's DDL was a quarter of the controller tests' time; tests/controller/test_migrations.py migrates
    empty and old databases itself."""
    path = tmp_path_factory.mktemp("migrated") / "controller.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()  # the last connection checkpoints the WAL into the file: the file alone is the database
    assert not path.with_name(path.name + "-wal").exists()
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def empty_db_url(request, tmp_path) -> str:
    """An empty database of each kind, a fresh one each time: what `migrate` meets on a first start."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'controller.db'}"
    server = request.getfixturevalue("postgres_server")
    name = f"t_{uuid.uuid4().hex[:12]}"
    import psycopg

    with psycopg.connect(server.replace("postgresql+psycopg", "postgresql") + "/postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return f"{server}/{name}"


@pytest.fixture
def db_url(request, empty_db_url) -> str:
    """Every controller test runs against both databases, a fresh one each time. The SQLite one starts as a copy
    of `migrated_sqlite` (the controller's own migrate finds it at head); PostgreSQL's the controller migrates."""
    if empty_db_url.startswith("sqlite:///"):
        shutil.copyfile(request.getfixturevalue("migrated_sqlite"), empty_db_url.removeprefix("sqlite:///"))
    return empty_db_url


class FakeClock:
    """The wall clock the controller's leases and fences read, moved by the test: a lease runs out because the
    test says so, not because the machine happened to be slow or fast enough."""

    def __init__(self, start: float) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    """Every controller in the test (all share `fedkafka.controller.service`) reads this clock."""
    fake = FakeClock(time.time())
    durations = {name: getattr(time, name) for name in ("perf_counter", "monotonic", "sleep")}  # still real
    monkeypatch.setattr("fedkafka.controller.service.time", SimpleNamespace(time=fake.time, **durations))
    return fake


@pytest.fixture
def move_clock(clock, monkeypatch) -> FakeClock:
    """`clock`, read by a move's ack wait too (`fedkafka.controller.moves`): the wall clock of the controller's
    fences and of the moves that wait them out, moved by the test."""
    monkeypatch.setattr("fedkafka.controller.moves.time", SimpleNamespace(
        time=clock.time, monotonic=time.monotonic, sleep=time.sleep, perf_counter=time.perf_counter))
    return clock


@pytest.fixture
def acking_first(monkeypatch) -> Callable[[Callable[[], None]], threading.Thread]:
    """`acking_first(ack)` starts `ack` (proxies applying the frozen view) on a thread, and a move's ack wait counts
    its timeouts only once that thread has ended: the members it acks are never taken for silent ones because a
    slow machine ran the thread late. Composes with `move_clock`."""
    import fedkafka.controller.moves as moves

    def start(ack: Callable[[], None]) -> threading.Thread:
        helper = threading.Thread(target=ack)
        clock = moves.time
        held = clock.monotonic()
        monkeypatch.setattr(moves, "time", SimpleNamespace(
            time=clock.time, sleep=clock.sleep, perf_counter=clock.perf_counter,
            monotonic=lambda: held if helper.is_alive() else clock.monotonic()))
        helper.start()
        return helper

    return start


# The member-takeover tests' lease and fence: the lease runs out long before the fence, so a new process may take a
# member over while its previous process may still produce (test_member_takeover_fence.py, test_rv2_review_takeover.py)
TAKEOVER_LEASE_S, TAKEOVER_FENCE_S = 10.0, 60.0


@pytest.fixture
def takeover_api(make_api, move_clock) -> TestClient:
    """Clusters c1 and c2, topic t (2 partitions), TAKEOVER_LEASE_S leases and TAKEOVER_FENCE_S fences; leases and
    fences, the controller's and the move's, on `move_clock`."""
    api = make_api(lease_ms=int(TAKEOVER_LEASE_S * 1000), fence_ms=int(TAKEOVER_FENCE_S * 1000))
    for cid in ("c1", "c2"):
        api.put(f"/v1/clusters/{cid}", json={"bootstrap": f"{cid}:9092"}).raise_for_status()
    api.put("/v1/topics/t", json={"partitions": 2, "placement": "blocks"}).raise_for_status()
    return api


@pytest.fixture(scope="session")
def recording_kafka_class():
    return RecordingKafka


class LogEndsKafka(RecordingKafka):
    """The recording stand-in whose partitions' log ends a test sets (`ends[(cluster, topic, partition)]`, 0 else)."""

    def __init__(self):
        super().__init__()
        self.ends: dict[tuple[str, str, int], int] = {}

    def log_offsets(self, cluster, bootstrap, partitions):
        return {(t, p): (0, self.ends.get((cluster, t, p), 0)) for t, p in partitions}


@pytest.fixture
def held_clock(monkeypatch) -> list[float]:
    """The clock a held move's publish or roll-back reads its deadline on (`held.monotonic`; seconds, a test moves
    it)."""
    now = [1000.0]
    monkeypatch.setattr("fedkafka.controller.held.monotonic", lambda: now[0])
    return now


@pytest.fixture
def t_on_c1_c2(make_api):
    """(api, kafka): clusters c1 and c2, topic t of 2 partitions placed in blocks, log ends set by the test."""
    kafka = LogEndsKafka()
    api = make_api(kafka=kafka)
    for cid in ("c1", "c2"):
        api.put(f"/v1/clusters/{cid}", json={"bootstrap": f"{cid}:9092"}).raise_for_status()
    api.put("/v1/topics/t", json={"partitions": 2, "placement": "blocks"}).raise_for_status()
    return api, kafka


@pytest.fixture
def make_api(db_url):
    """Factory: (kafka, lease_ms, fence_ms) -> TestClient of a controller on `db_url` (lifespan runs, no background
    loops). The fence defaults to the service's (minutes)."""
    def _build(kafka=None, lease_ms=10_000, url=None, background=False, fence_ms=None) -> TestClient:
        kafka = kafka if kafka is not None else RecordingKafka()
        times = {"lease_ms": lease_ms} if fence_ms is None else {"lease_ms": lease_ms, "fence_ms": fence_ms}
        ctl = Controller(Settings(db_url=url or db_url, scan_interval=0.5, kafka_timeout=2.0, **times), kafka=kafka)
        client = heartbeating_like_a_proxy(TestClient(create_app(ctl, TOKEN, background=background), headers=AUTH))
        client.controller, client.kafka = ctl, kafka
        return client

    yield from entered_clients(_build)


def entered_clients(build: Callable[..., TestClient]) -> Iterator[Callable[..., TestClient]]:
    """The body of a factory fixture (`yield from` it): each call's TestClient, made by `build` with the call's
    arguments, is entered (the app's lifespan runs) and, once the test is over, closed."""
    clients: list[TestClient] = []

    def _make(*args, **kwargs) -> TestClient:
        client = build(*args, **kwargs)
        client.__enter__()
        clients.append(client)
        return client

    yield _make
    for c in clients:
        c.__exit__(None, None, None)


def clients_on_migrated_copies(tmp_path: Path, migrated_sqlite: Path, tokens, headers: dict
                               ) -> Iterator[Callable[..., TestClient]]:
    """The body of a factory fixture: (database=None) -> a TestClient of a controller (RecordingKafka, no background
    loops) on a fresh copy of the migrated database, or on `database` (a restart, a failover); `tokens` as create_app
    takes them, `headers` on every request. The client's `controller` and `database` are set."""
    made = itertools.count()

    def _build(database=None) -> TestClient:
        copy = next(made)
        if database is None:
            database = tmp_path / f"c{copy}.db"
            shutil.copyfile(migrated_sqlite, database)
        ctl = Controller(Settings(db_url=f"sqlite:///{database}"), kafka=RecordingKafka())
        client = TestClient(create_app(ctl, tokens, background=False), headers=headers)
        client.controller, client.database = ctl, database  # type: ignore[attr-defined]
        return client

    return entered_clients(_build)


def first_end_lost(monkeypatch) -> list[int]:
    """The first run's `failed` (or `done`) is not recorded: its controller lost the leader row in `_end` (the ids
    of the runs whose end was lost)."""
    real, lost = WorkflowEngine._record_end, []

    def lost_row_once(self, run_id):
        if not lost:
            lost.append(run_id)
            raise NotLeader("another controller took over")
        return real(self, run_id)

    monkeypatch.setattr(WorkflowEngine, "_record_end", lost_row_once)
    return lost
