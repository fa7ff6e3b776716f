"""A read's upstream answer that arrives after the proxy's view changed (docs/DESIGN.md §4.9, "Readers").

A proxy acks a new view once the produce requests it routed under older ones are answered, never waiting for its
reads: a long-poll Fetch waits at the broker for up to --max-fetch-wait-ms meanwhile. Here partition 0 of "log"
lives on c1/t/0 (10 records); a move M takes it to c2 (5 records written there, logical 10..14), and a move back
reuses c1/t/0 from its log end (phys 10 = logical 15). A read routed before M whose answer arrives after the move
back must not translate c1/t/0's new records with the chain it was routed with (phys 10 as logical 10: c2's
offsets, so a group would commit past c2's records unread).

Each context is the one the core makes for a request (`Dispatcher.context`); the test applies the newer view to
the proxy's state (`ProxyState.apply`, what the view stream does) between `handle` and `finish`.
"""

from __future__ import annotations

import dataclasses
import time

from kio.schema.errors import ErrorCode

from consume import test_handlers_unit as unit
from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type
from fedkafka.protocol.records import iter_batches
from fedkafka.proxy.core.dispatch import Dispatcher
from fedkafka.proxy.handlers import fetch, list_offsets, offset_for_leader_epoch
from fedkafka.proxy.plan import Broker, Context
from fedkafka.proxy.state import ProxyState
from fedkafka.view.model import LogicalTopic, PartitionChain, Segment, View

ON_C1 = Segment("c1", "t", 0, 0, None, 0)
SEALED_ON_C1 = dataclasses.replace(ON_C1, phys_end=10)
ON_C2 = Segment("c2", "t", 0, 0, None, 10)


def view(version: int, *segments: Segment, epoch: int = 0, topic: str = "log") -> View:
    chain = PartitionChain(segments, leader_epoch=epoch)
    return dataclasses.replace(unit.VIEW, version=version, topics={
        topic: LogicalTopic(topic, unit.VIEW.topics["log"].topic_id, (chain, unit.IDENTITY))})


BEFORE = view(10, ON_C1)
MOVED = view(11, SEALED_ON_C1, ON_C2, epoch=1)  # M published
BACK_FROZEN = view(12, SEALED_ON_C1, ON_C2, epoch=1)  # the move back frozen (the flag does not matter to reads)
BACK = view(13, SEALED_ON_C1, dataclasses.replace(ON_C2, phys_end=5), Segment("c1", "t", 0, 10, None, 15), epoch=2)
# the move back with nothing written on c2: c1/t/0 from phys 10 is logical 10 again
BACK_EMPTY = view(13, SEALED_ON_C1, dataclasses.replace(ON_C2, phys_end=0), Segment("c1", "t", 0, 10, None, 10),
                  epoch=2)


def served(first: View = BEFORE, refusals: list | None = None) -> tuple[Context, ProxyState]:
    """The context the core makes for a request under `first`, and the proxy state it reads when the answer comes."""
    state = ProxyState(view=first, me=first.proxies[0], lease_deadline=time.monotonic() + 3600)
    d = Dispatcher(state=state, physical=unit.Physical(), producer_ids=None, pool=None)  # type: ignore[arg-type]
    ctx = d.context(None, advertised={})
    if refusals is not None:
        ctx.on_refusal, ctx.on_refusals = lambda *a: refusals.append(a[:3]), None  # each as it comes
    return ctx, state


def long_poll(offset: int, now: View | None, records: bytes, hw: int, fenced: bool = False):
    """The client's answer for "log"/0 from `offset`, routed under BEFORE; the broker answers c1/t/0 with `records`
    once the proxy serves `now` (None: the same view), or is past its fence (`fenced`)."""
    ctx, state = served()
    plan = fetch.handle(ctx, None, unit.fetch_request(("log", 0, offset)))
    (call,) = plan.calls
    assert call.target == Broker("c1", 7) and call.request.topics[0].partitions[0].fetch_offset == offset
    if now is not None:
        state.apply(now)
    if fenced:
        state.lease_deadline = time.monotonic() - 1
    return unit.partitions(plan.finish([unit.fetch_answer("t", 0, records, hw=hw)]))[("log", 0)]


def offsets(p) -> list[int]:
    return [h.base_offset for h in iter_batches(p.records)]


def test_a_long_poll_answered_after_a_move_and_the_move_back_gives_no_records():
    """The consumer waited at c1/t/0's end (logical 10); the broker answers the records written after the move back.
    The proxy now reads logical 10 from c2, so the answer is not its to translate: no records, no error (nothing that
    makes librdkafka reset its position), and the next fetch goes to c2. The old code answered them as 10..12."""
    for now in (BACK, BACK_FROZEN, MOVED):  # the proxy acked the move back's frozen view at least, or only M's
        p = long_poll(10, now, unit.batch(10, 3), hw=13)
        assert (p.error_code, p.records, p.high_watermark) == (ErrorCode.none, b"", -1), now.version
    ctx, _ = served(BACK)
    (call,) = fetch.handle(ctx, None, unit.fetch_request(("log", 0, 10))).calls
    assert call.target == Broker("c2", 7) and call.request.topics[0].partitions[0].fetch_offset == 0


def test_a_long_poll_answered_after_a_seal_keeps_only_the_records_below_it():
    """Routed at 7 under BEFORE; the answer holds c1's last records (7..9) and the first ones after the move back.
    The proxy now asks the same (c1/t/0 from 7): translated with the chain now, the batch past the seal is dropped and
    the high watermark is the seal, so the reader moves on to c2. The old code answered 7 and 10, high watermark 13."""
    p = long_poll(7, BACK, unit.batch(7, 3) + unit.batch(10, 3), hw=13)
    assert (p.error_code, offsets(p), p.high_watermark) == (ErrorCode.none, [7], 10)


def test_a_long_poll_answered_after_the_physical_partition_went_to_a_later_segment_is_translated_with_it():
    """A -> B -> A with nothing written on B: logical 10 is c1/t/0's phys 10 again, now in the later segment, so the
    proxy asks the same and translates with that segment (base 10: the same offsets here, and leader epoch 2)."""
    p = long_poll(10, BACK_EMPTY, unit.batch(10, 3), hw=13)
    assert (p.error_code, offsets(p), p.high_watermark) == (ErrorCode.none, [10], 13)


def test_a_long_poll_answered_after_the_chain_was_replaced_gives_no_records():
    """The topic deleted and created again under the same name while the fetch waited: its partition 0 is another
    physical partition now. The old code translated the old one's records."""
    again = view(11, Segment("c2", "t2", 0, 0, None, 0))
    p = long_poll(10, again, unit.batch(10, 3), hw=13)
    assert (p.error_code, p.records) == (ErrorCode.none, b"")


def test_a_long_poll_answered_after_the_proxy_fence_ran_out_gives_no_records():
    """Past its fence the controller no longer waits for this proxy's acks, so no view it holds may translate the
    answer: no records (the next fetch is refused retriably, as at routing). The old code translated it."""
    p = long_poll(10, None, unit.batch(10, 3), hw=13, fenced=True)
    assert (p.error_code, p.records) == (ErrorCode.none, b"")


def test_a_long_poll_answered_after_an_unrelated_view_change_is_answered_as_before():
    other = dataclasses.replace(BEFORE, version=11, topics={**BEFORE.topics, "other": unit.VIEW.topics["log"]})
    p = long_poll(10, other, unit.batch(10, 3), hw=13)
    assert (p.error_code, unit.partitions_first_offset(p), p.high_watermark) == (ErrorCode.none, 10, 13)


def test_list_offsets_answered_after_the_move_back_is_translated_with_the_chain_now():
    """Latest: the proxy asks c1/t/0's log end under BEFORE and now alike, so its answer (13) is translated with the
    chain now: 18 (the old code said 13, inside c2's offsets). By timestamp the proxy now asks c2 as well: the answer
    is NOT_LEADER_OR_FOLLOWER and the client asks again (the old code took c1's phys 11, a record of the new segment,
    as logical 11)."""
    ctx, state = served()
    plan = list_offsets.handle(ctx, None, unit.list_request((0, -1)))
    state.apply(BACK)
    (p,) = plan.finish(unit.list_answers(plan.calls, {("c1", 0, -1): (13, -1)})).topics[0].partitions
    assert (p.error_code, p.offset, p.leader_epoch) == (ErrorCode.none, 18, 2)
    ctx, state = served()
    plan = list_offsets.handle(ctx, None, unit.list_request((0, 1500)))
    state.apply(BACK)
    (p,) = plan.finish(unit.list_answers(plan.calls, {("c1", 0, 1500): (11, 1600)})).topics[0].partitions
    assert (p.error_code, p.offset) == (ErrorCode.not_leader_or_follower, -1)


def epoch_request(current_epoch: int):
    return build(request_type(23, 4), {"replica_id": -1, "topics": [{"topic": "log", "partitions": [
        {"partition": 0, "current_leader_epoch": current_epoch, "leader_epoch": 0}]}]})


def test_offset_for_leader_epoch_answered_after_the_move_back_is_translated_with_the_chain_now():
    """c1/t/0's log end 13 after the move back is logical 18: the old code said 13, so a consumer at 16 (in the new
    segment) would see a truncation that did not happen. The client's epoch checked now (fenced), and a log end of
    a partition the proxy no longer asks (the active segment moved) is answered retriably."""
    answers = []
    for current, now in ((-1, BACK), (0, BACK), (-1, MOVED)):
        ctx, state = served()
        plan = offset_for_leader_epoch.handle(ctx, None, epoch_request(current))
        state.apply(now)
        (p,) = plan.finish(unit.list_answers(plan.calls, {("c1", 0, -1): (13, -1)})).topics[0].partitions
        answers.append((p.error_code, p.end_offset))
    assert answers == [(ErrorCode.none, 18), (ErrorCode.fenced_leader_epoch, -1),
                       (ErrorCode.not_leader_or_follower, -1)]
