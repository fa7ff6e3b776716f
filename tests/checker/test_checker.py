"""The checker must see loss, duplicates and reordering when they happen, and report none on a healthy cluster."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError

from fedkafka import checker as checker_module
from fedkafka.checker import Checker, CheckerConfig, _Ack, run_check
from fedkafka.demo import ensure_topic


def _checker_with(acked: dict, consumed: dict, idempotent: set[str] = frozenset()) -> dict:
    checker = Checker(CheckerConfig(bootstrap="unused:1", topic="t"))
    checker.acked = {k: _Ack(partition=p, offset=o, latency=0.001, at=0.0) for k, (p, o) in acked.items()}
    for k, places in consumed.items():
        checker.consumed[k] = set(places)
    checker.idempotent_keys = set(idempotent)
    return checker.report()


def test_report_counts_lost_records():
    report = _checker_with({("a", 0): (0, 0), ("a", 1): (0, 1)}, {("a", 0): [(0, 0)]})
    assert report["lost"] == 1 and report["lost_sample"] == ["a#1"] and report["lost_acks"] == ["a#1 p0@1"]


def test_rereading_one_offset_is_not_a_duplicate_but_a_second_copy_is():
    reread = _checker_with({("a", 0): (0, 0)}, {("a", 0): [(0, 0)]})
    assert reread["duplicates"] == 0
    copied = _checker_with({("a", 0): (0, 0)}, {("a", 0): [(0, 0), (0, 7)]}, idempotent={"a"})
    assert copied["duplicates"] == 1 and copied["duplicates_idempotent"] == 1


def test_report_counts_order_violations_and_split_keys():
    swapped = _checker_with({("a", 0): (0, 1), ("a", 1): (0, 0)}, {("a", 0): [(0, 1)], ("a", 1): [(0, 0)]})
    assert swapped["order_violations"] == 1 and swapped["order_sample"] == ["a#0 p0@1 after #1"]
    split = _checker_with({("a", 0): (0, 0), ("a", 1): (1, 0)}, {("a", 0): [(0, 0)], ("a", 1): [(1, 0)]})
    assert split["order_violations"] == 1
    ordered = _checker_with({("a", 0): (0, 0), ("a", 1): (0, 5)}, {("a", 0): [(0, 0)], ("a", 1): [(0, 5)]})
    assert ordered["order_violations"] == 0 and ordered["lost"] == 0
    assert swapped["order_violations_unacked"] == 0


def test_order_violations_are_counted_per_producer_and_the_idempotent_ones_apart():
    # run "r": p0 idempotent (two swapped records), p1 plain (one swapped record), as CheckerConfig's defaults cycle
    swapped = {("r-p0-k0", 0): (0, 1), ("r-p0-k0", 1): (0, 0), ("r-p0-k1", 0): (0, 3), ("r-p0-k1", 1): (0, 2),
               ("r-p1-k0", 0): (1, 1), ("r-p1-k0", 1): (1, 0)}
    report = _checker_with(swapped, {k: [v] for k, v in swapped.items()}, idempotent={"r-p0-k0", "r-p0-k1"})
    assert report["order_violations"] == 3 and report["order_violations_idempotent"] == 2
    assert report["producers"]["p0"]["order_violations"] == 2 and report["producers"]["p1"]["order_violations"] == 1
    plain = _checker_with(swapped, {k: [v] for k, v in swapped.items() if "-p1-" in k[0]})
    assert plain["order_violations"] == 1 and plain["order_violations_idempotent"] == 0


def test_an_out_of_order_record_the_producer_was_told_failed_is_counted_apart():
    # a#0 timed out at the client (not acked) but was written after a#1: still a violation, told apart
    late = _checker_with({("a", 1): (0, 0)}, {("a", 0): [(0, 1)], ("a", 1): [(0, 0)]})
    assert late["order_violations"] == 1 and late["order_violations_unacked"] == 1


@pytest.mark.integration
def test_healthy_cluster_reports_nothing_lost(kafka_clusters, unique_name):
    cluster = kafka_clusters[0]
    ensure_topic(cluster.bootstrap, unique_name, partitions=4)
    report = run_check(CheckerConfig(bootstrap=cluster.bootstrap, topic=unique_name, producers=2, consumers=2,
                                     rate=100), duration=4)
    assert report["acked"] > 300
    assert report["consumed"] == report["acked"]
    assert (report["lost"], report["duplicates"], report["order_violations"]) == (0, 0, 0)
    assert sum(row["acked"] for row in report["timeline"]) == report["acked"]


def test_a_producer_that_dies_is_reported_not_silently_stopped(monkeypatch):
    from confluent_kafka import KafkaError, KafkaException

    checker = Checker(CheckerConfig(bootstrap="127.0.0.1:1", topic="t", producers=1, consumers=0))

    def fatal(index):
        raise KafkaException(KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, "sequence desynchronization",
                                        fatal=True))

    monkeypatch.setattr(checker, "_produce_until_stopped", fatal)
    report = checker.start().stop(drain_timeout=0)
    assert len(report["client_failures"]) == 1 and "desynchronization" in report["client_failures"][0]


class _ScriptedReader:
    """A consumer whose n-th assignment reads the n-th script: [(key, seq, offset) or "eof"] on partition 0."""

    def __init__(self, scripts: list[list]):
        self.scripts = scripts
        self.passes = 0
        self.pending: list = []

    def list_topics(self, topic, timeout):
        return SimpleNamespace(topics={topic: SimpleNamespace(partitions={0: None})})

    def assign(self, _partitions) -> None:
        self.pending = list(self.scripts[min(self.passes, len(self.scripts) - 1)])
        self.passes += 1

    def poll(self, _timeout):
        if not self.pending:
            return None
        step = self.pending.pop(0)
        if step == "eof":
            return SimpleNamespace(error=lambda: KafkaError(KafkaError._PARTITION_EOF), partition=lambda: 0)
        key, seq, offset = step
        return SimpleNamespace(error=lambda: None, partition=lambda: 0, offset=lambda: offset,
                               value=lambda: json.dumps({"k": key, "s": seq}).encode())

    def close(self) -> None:
        pass


def test_the_reread_starts_over_when_it_was_moved_past_a_gap_before_the_tail_was_readable(monkeypatch):
    # docs/DESIGN.md §9.3: c1 is back, but the proxy the reader asks has not seen it yet and moves it past the
    # gap [0, 100) holding a#0; the next pass from the beginning reads a#0 at its offset
    checker = Checker(CheckerConfig(bootstrap="unused:1", topic="t"))
    key = f"{checker.run_id}-p0-k0"
    checker.acked = {(key, 0): _Ack(0, 0, 0.001, 0.0), (key, 1): _Ack(0, 100, 0.001, 0.0)}
    reader = _ScriptedReader([[(key, 1, 100), "eof"], [(key, 0, 0), (key, 1, 100), "eof"]])
    monkeypatch.setattr(checker_module, "Consumer", lambda conf: reader)
    monkeypatch.setattr(checker_module, "REREAD_QUIET_S", 0.0)
    checker._reread(deadline=time.monotonic() + 5)
    assert checker._missing() == 0 and reader.passes == 2
    report = checker.report()
    assert report["lost"] == 0 and report["reread_passes"] == 2


def test_acks_cycle_over_the_plain_producers_and_idempotent_ones_keep_acks_all():
    checker = Checker(CheckerConfig(bootstrap="unused:1", topic="t", producers=4, idempotent=(True, False),
                                    acks=("all", "1")))
    profiles = [(c["enable.idempotence"], c["acks"]) for c in map(checker.producer_config, range(4))]
    assert profiles == [(True, "all"), (False, "all"), (True, "all"), (False, "1")]
    report = _checker_with({}, {})
    assert report["producers"] == {"p0": {"idempotent": True, "acks": "all", "lost": 0, "order_violations": 0},
                                   "p1": {"idempotent": False, "acks": "all", "lost": 0, "order_violations": 0}}


def test_the_report_names_the_producer_that_lost_records():
    run = "r"
    report = _checker_with({(f"{run}-p1-k0", 0): (0, 0), (f"{run}-p0-k0", 0): (0, 1)}, {(f"{run}-p0-k0", 0): [(0, 1)]})
    assert report["producers"]["p1"]["lost"] == 1 and report["producers"]["p0"]["lost"] == 0
