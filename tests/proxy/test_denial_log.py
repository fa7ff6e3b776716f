"""ACL denials are logged once per request: a request of many denied entries (a hostile client's 100 000 topic or
partition entries) writes one INFO line saying how many, the operation and resource type, a few of the names, the
principal and the host; the refusal metric still counts every entry."""

from __future__ import annotations

import logging
import time

import pytest
from kio.schema.errors import ErrorCode

from fedkafka.security.session import Session
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, Segment, View
from proxy.test_produce_lane import ME, Broker, answers_of, ask, batch, frame, proxy, run, view, writers

ENTRIES = 2_000


def denied_produce(caplog, entries: int) -> tuple[dict, list[logging.LogRecord], int]:
    """A Produce of `entries` partitions of topic t by bob, who may not write it: (the answers by partition, the
    INFO records logged meanwhile, the auth refusals counted)."""
    async def scenario():
        broker = await Broker().start()
        d = await proxy(view(acls=writers("User:alice")), broker, authorization=True)
        bob = Session(principal="User:bob", host="10.0.0.9")
        one = batch()
        try:
            with caplog.at_level(logging.INFO):
                answer = await ask(d, frame(dict.fromkeys(range(entries), one)), bob)
            return answers_of(answer), d.observer.refusals.get("auth", 0)
        finally:
            broker.close()
    answers, counted = run(scenario)
    return answers, [r for r in caplog.records if r.levelno == logging.INFO], counted


def test_a_request_of_many_denied_entries_logs_one_line(caplog):
    answers, records, counted = denied_produce(caplog, ENTRIES)
    assert len(answers) == ENTRIES
    assert {a[0] for a in answers.values()} == {ErrorCode.topic_authorization_failed}
    assert counted == ENTRIES  # the metric counts every denied entry
    denials = [r for r in records if "User:bob" in r.getMessage() or "t/" in r.getMessage()]
    assert len(denials) == 1, [r.getMessage() for r in records[:5]]
    line = denials[0].getMessage()
    for part in (str(ENTRIES), "WRITE", "topic", "User:bob", "10.0.0.9", "t/0", "t/1"):
        assert part in line, line
    assert "t/1999" not in line and len(line) < 500, line  # a few examples, not every name


def test_a_request_of_one_denied_entry_logs_one_line(caplog):
    _, records, counted = denied_produce(caplog, 1)
    assert counted == 1
    lines = [r.getMessage() for r in records]
    assert len(lines) == 1 and "User:bob" in lines[0] and "t/0" in lines[0], lines


# -- every other refusal reason: one line per (request, reason) too ------------------------------------------------

def many_partitions(entries: int, *, frozen: bool) -> View:
    """Topic t of `entries` partitions on c1 (each its own physical partition of phys), all frozen or none."""
    chains = tuple(PartitionChain(segments=(Segment("c1", "phys", p, 0, None, 0),), leader_epoch=3, frozen=frozen)
                   for p in range(entries))
    return View(version=4, clusters={"c1": Cluster("c1", "h1:1")},
                topics={"t": LogicalTopic("t", "0" * 31 + "1", chains)}, proxies=(ME,))


def refused_produce(caplog, v: View, entries: int, *, lease: bool = True) -> tuple[dict, list[str], dict]:
    """A Produce of `entries` partitions of topic t to a proxy of view `v` (its lease run out: `lease` False): (the
    answers by partition, the refusal lines logged meanwhile, the refusals counted by reason)."""
    async def scenario():
        broker = await Broker().start()
        d = await proxy(v, broker)
        if not lease:
            d.state.lease_deadline = time.monotonic() - 1
        try:
            with caplog.at_level(logging.INFO, logger="fedkafka.refusals"):
                answer = await ask(d, frame(dict.fromkeys(range(entries), batch())))
            return answers_of(answer), dict(d.observer.refusals)
        finally:
            broker.close()
    answers, counted = run(scenario)
    return answers, [r.getMessage() for r in caplog.records if r.name == "fedkafka.refusals"], counted


@pytest.mark.parametrize(("frozen", "lease", "reason"), [(True, True, "frozen"), (False, False, "lease")])
def test_a_request_of_many_entries_refused_for_one_reason_logs_one_line(caplog, frozen, lease, reason):
    answers, lines, counted = refused_produce(caplog, many_partitions(ENTRIES, frozen=frozen), ENTRIES, lease=lease)
    assert len(answers) == ENTRIES and {a[0] for a in answers.values()} == {ErrorCode.not_leader_or_follower}
    assert counted == {reason: ENTRIES}  # the metric counts every refused entry
    assert len(lines) == 1, lines[:3]
    line = lines[0]
    for part in (reason, str(ENTRIES), "t/0", "t/1", "client=app"):
        assert part in line, line
    assert "t/1999" not in line and len(line) < 500, line
