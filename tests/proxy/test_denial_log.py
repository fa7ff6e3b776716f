"""ACL denials are logged once per request: a request of many denied entries (a hostile client's 100 000 topic or
partition entries) writes one INFO line saying how many, the operation and resource type, a few of the names, the
principal and the host; the refusal metric still counts every entry."""

from __future__ import annotations

import logging

from kio.schema.errors import ErrorCode

from fedkafka.security.session import Session
from proxy.test_produce_lane import Broker, answers_of, ask, batch, frame, proxy, run, view, writers

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
