"""ACL denials are logged once per request: a request of many denied entries (a hostile client's 100 000 topic or
partition entries) writes one INFO line saying how many, the operation and resource type, a few of the names, the
principal and the host; the refusal metric still counts every entry."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

import pytest
from consume import test_handlers_unit as unit
from kio.schema.errors import ErrorCode

from fedkafka.protocol import records as rec
from fedkafka.protocol.build import build
from fedkafka.protocol.codec import response_type
from fedkafka.proxy.core.dispatch import Dispatcher
from fedkafka.proxy.core.metrics import RequestMetrics
from fedkafka.proxy.handlers import fetch
from fedkafka.proxy.state import ProxyState
from fedkafka.security.session import Session
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, Segment, View
from proxy.test_produce_lane import ME, Broker, answers_of, ask, batch, frame, proxy, run, scripted, view, writers

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
    for part in (reason, str(ENTRIES), "t/0", "t/1", "client='app'"):
        assert part in line, line
    assert "t/1999" not in line and len(line) < 500, line


def test_a_fetch_whose_fence_ran_out_while_it_waited_logs_one_line_for_its_partitions(caplog):
    """The refusals a read makes once its answer arrives (the proxy's fence ran out meanwhile: every partition's
    route is refused as `lease` with the context of now, `as_now`) are the request's: one line with the answer."""
    v = dataclasses.replace(unit.VIEW, topics={"log": LogicalTopic("log", "0" * 31 + "2", tuple(
        PartitionChain(segments=(Segment("c1", "t", p, 0, None, 0),)) for p in range(ENTRIES)))})
    state = ProxyState(view=v, me=v.proxies[0], lease_deadline=time.monotonic() + 3600)
    d = Dispatcher(state=state, physical=unit.Physical(), producer_ids=None, pool=None,  # type: ignore[arg-type]
                   observer=RequestMetrics())
    ctx = d.context("app", advertised={})
    plan = fetch.handle(ctx, None, unit.fetch_request(*(("log", p, 0) for p in range(ENTRIES))))
    answer = build(response_type(1, 12), {"responses": [{"topic": "t", "partitions": [
        {"partition_index": p, "error_code": ErrorCode.none, "high_watermark": 1, "last_stable_offset": 1,
         "log_start_offset": 0, "aborted_transactions": None, "preferred_read_replica": -1,
         "records": unit.batch(0, 1)} for p in range(ENTRIES)]}]})

    async def scenario():
        loop = d.loop
        item = loop.create_future()
        answered = d._one_call(loop, plan, item, 0, 7, None, None, ctx)
        state.lease_deadline = time.monotonic() - 1  # while the broker held the fetch
        with caplog.at_level(logging.INFO, logger="fedkafka.refusals"):
            item.set_result(answer)
            return await answered
    assert run(scenario) is not None
    lines = [r.getMessage() for r in caplog.records if r.name == "fedkafka.refusals"]
    assert d.observer.refusals == {"lease": ENTRIES}
    assert len(lines) == 1 and str(ENTRIES) in lines[0], lines[:3]
    assert "'log/0'" in lines[0] and "client='app'" in lines[0], lines[0]


def test_a_context_made_by_hand_still_logs_each_refusal(caplog):
    """Without the core's per-request report (`on_refusals`), each refusal goes to `on_refusal` as it comes."""
    observer = RequestMetrics()
    ctx = dataclasses.replace(unit.ctx(), lease_valid=False, client_id="app", on_refusal=observer.refused)
    with caplog.at_level(logging.INFO, logger="fedkafka.refusals"):
        fetch.handle(ctx, None, unit.fetch_request(("log", 0, 0), ("log", 1, 0)))
    assert observer.refusals == {"lease": 2}
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["refused lease 'log/0' client='app'",
                                                                       "refused lease 'log/1' client='app'"]


def test_a_produce_routed_again_counts_and_logs_its_refusals_once(caplog):
    """A Produce waiting for a partition's leader is routed again once it is known: each pass refuses the frozen
    partition, and the client gets one answer for it, so one refusal is counted and logged (not one per pass)."""
    async def scenario():
        broker = await Broker().start()
        d = await proxy(view(frozen=0), broker)
        leaders = d.physical.clusters["c1"].leaders
        del leaders[("phys", 1)]
        try:
            with caplog.at_level(logging.INFO, logger="fedkafka.refusals"):
                waiting = asyncio.ensure_future(ask(d, frame({0: batch(), 1: batch()})))
                await asyncio.sleep(0.05)  # a few passes, each waiting for the leader
                assert not waiting.done()
                leaders[("phys", 1)] = 1  # the refresh came in
                answers = answers_of(await waiting)
            return answers, dict(d.observer.refusals)
        finally:
            broker.close()
    answers, counted = run(scenario)
    assert answers[0][0] == ErrorCode.not_leader_or_follower and answers[1][0] == ErrorCode.none
    lines = [r.getMessage() for r in caplog.records if r.name == "fedkafka.refusals"]
    assert counted == {"frozen": 1} and len(lines) == 1 and "t/0" in lines[0], (counted, lines)


def below_segment_refusal(caplog, lane: bool) -> tuple[dict, int]:
    """A write to t/2 that c2's broker acks below the active segment's start (its physical topic created again
    empty), by User:carol from 10.0.0.7, through the Produce lane or the generic path: (the refusal line's fields,
    the requests the lane took)."""
    async def scenario():
        written_at_3 = scripted({("phys", 0): rec.ProducePartitionAnswer(0, 0, 3, -1, 0)})
        broker = await Broker(written_at_3).start()
        d = await proxy(view(), broker, lane=lane)
        carol = Session(principal="User:carol", host="10.0.0.7")
        try:
            with caplog.at_level(logging.INFO, logger="fedkafka.refusals"):
                answer = await ask(d, frame({2: batch(2)}), carol)
            assert answers_of(answer)[2][0] == ErrorCode.not_leader_or_follower
            return d.lane.taken if lane else 0
        finally:
            broker.close()
    taken = run(scenario)
    records = [r for r in caplog.records if r.name == "fedkafka.refusals"]
    caplog.clear()
    assert len(records) == 1, [r.getMessage() for r in records]
    return records[0].refusal, taken  # type: ignore[attr-defined]


def test_a_lane_refusal_line_names_the_principal_host_and_client_id_as_the_generic_path_s(caplog):
    """The Produce lane's refusal lines carry what the generic path's do (`Context.report_refusals`): the session's
    principal and host and the client id, with the same reason, count and examples."""
    lane, taken = below_segment_refusal(caplog, lane=True)
    generic, _ = below_segment_refusal(caplog, lane=False)
    assert taken == 1  # the lane answered it
    assert (lane["principal"], lane["host"], lane["client_id"]) == ("User:carol", "10.0.0.7", "app"), lane
    assert lane == generic
