"""Review (rvlane): the Produce lane against the generic path on requests drawn far and wide: many topic entries,
partitions named twice, unknown ones, corrupt/transactional/idempotent batches side by side, acks values,
transactional ids, frozen/draining/inactive views, ACLs and sessions. Whatever the lane takes, the broker frames,
the client's answer and the producer id table must be the generic path's."""

from __future__ import annotations

import time

from example_counts import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kio.schema.errors import ErrorCode
from protocol.test_produce_frames import kio_request

from fedkafka.protocol import codec
from fedkafka.proxy.core.dispatch import ProtocolViolation
from fedkafka.security.session import Session
from fedkafka.view.model import ClusterState
from proxy.test_produce_lane import PID, Broker, batch, proxy, run, seeded, table_state, view, writers

KINDS = ("plain", "corrupt", "idem_next", "idem_resend", "txn_plain")


def _batch(kind: str, p: int, ends: dict[int, int]) -> bytes:
    if kind == "plain" or (kind.startswith("idem") and p not in ends):
        return batch(2)
    if kind == "corrupt":
        b = bytearray(batch(2, PID, 0, ends.get(p, 5)))
        b[-1] ^= 0xFF
        return bytes(b)
    if kind == "idem_next":
        return batch(1, PID, 0, ends[p])
    if kind == "idem_resend":
        return batch(1, PID, 0, ends[p] - 1)
    return batch(1)


def _mostly(good, *bad):
    return st.sampled_from([good] * 6 + list(bad))


@st.composite
def scenarios(draw):
    kinds = st.sampled_from(["plain", "plain", "idem_next", "idem_next", "idem_resend", "corrupt", "txn_plain"])
    parts = st.lists(st.tuples(st.sampled_from([0, 0, 0, 1, 1, 1, 2, 7]), kinds), min_size=0, max_size=2)
    entries = draw(st.lists(st.tuples(_mostly("t", "nope"), parts), min_size=1, max_size=draw(_mostly(1, 2, 3))))
    return dict(
        entries=entries, version=draw(st.integers(3, 12)), acks=draw(_mostly(-1, 1, 1, 0, 2)),
        txn=draw(_mostly(None, "x")), frozen=draw(_mostly(None, 0, 1)), draining=draw(_mostly(False, True)),
        c1_active=draw(_mostly(True, False)), auth=draw(st.booleans()), who=draw(_mostly("alice", "bob", None)),
        lease=draw(_mostly(True, False)), reachable=draw(_mostly(True, False)))


async def _through(lane: bool, s: dict):
    ends = {0: 5, 1: 9}
    table = seeded({0: "steady", 1: "steady"}, ends, {})
    v = view(frozen=s["frozen"], draining=(7,) if s["draining"] else (),
             c1_state=ClusterState.ACTIVE if s["c1_active"] else ClusterState.DRAINING,
             acls=writers("User:alice") if s["auth"] else ())
    broker = await Broker().start()
    d = await proxy(v, broker, lane=lane, producer_ids=table, authorization=s["auth"])
    if not s["lease"]:
        d.state.lease_deadline = time.monotonic() - 1
    if not s["reachable"]:
        d.physical.clusters["c1"].reachable = False
    topics = [(name, [(p, _batch(kind, p, ends)) for p, kind in parts]) for name, parts in s["entries"]]
    request = codec.encode_request(kio_request(s["version"], s["txn"], s["acks"], 5000, topics), 11, "app")[4:]
    session = None if s["who"] is None else Session(principal=f"User:{s['who']}", host="10.0.0.1")
    try:
        try:
            answer = await (await d.start(request, 0, session))
            outcome = None if answer is None else bytes(answer) if isinstance(answer, bytes | bytearray) else repr(
                answer)
        except ProtocolViolation as e:
            outcome = f"violation: {e}"
        return outcome, broker.frames, table_state(table), d.lane.taken if lane else 0
    finally:
        broker.close()


@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_whatever_the_lane_takes_it_answers_as_the_generic_path(s):
    generic = run(lambda: _through(False, s))
    lane = run(lambda: _through(True, s))
    assert lane[:3] == generic[:3], (lane[3], lane[0], generic[0])


# -- a stateful twin: the same steps (requests, broker answers, view changes, lease, clock) through one proxy with
# the lane and one without; every answer, every broker frame and the producer id table after each step the same --

import asyncio  # noqa: E402
import dataclasses  # noqa: E402
import struct  # noqa: E402

from kio.schema.describe_producers.v0.response import DescribeProducersResponse, PartitionResponse, TopicResponse  # noqa: E402
from kio.schema.init_producer_id.v4.response import InitProducerIdResponse  # noqa: E402
from kio.schema.types import ProducerId  # noqa: E402
from kio.static.primitive import i16, i32, i32Timedelta  # noqa: E402

from fedkafka.protocol import records as rec  # noqa: E402
from fedkafka.proxy.core.producer_ids import ProducerIdTable  # noqa: E402
from proxy.test_produce_lane import PHYSICAL, moved_p0  # noqa: E402


class AnyBroker(Broker):
    """The stand-in, also answering InitProducerId (ids 600, 601, ...) and DescribeProducers (no floor known)."""

    def __init__(self, answers):
        super().__init__(answers)
        self.next_id = 600

    async def _serve(self, reader, writer) -> None:
        while True:
            try:
                (size,) = struct.unpack(">i", await reader.readexactly(4))
                body = await reader.readexactly(size)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            api_key, version, correlation_id = struct.unpack_from(">hhi", body)
            if api_key == 22:
                self.next_id += 1
                writer.write(codec.encode_response(InitProducerIdResponse(
                    throttle_time=i32Timedelta.parse(__import__("datetime").timedelta(0)), error_code=ErrorCode.none,
                    producer_id=ProducerId(self.next_id), producer_epoch=i16(0)), correlation_id))
                continue
            if api_key == 61:
                writer.write(codec.encode_response(DescribeProducersResponse(
                    throttle_time=i32Timedelta.parse(__import__("datetime").timedelta(0)), topics=(TopicResponse(
                        name="x", partitions=(PartitionResponse(
                            partition_index=i32(0), error_code=ErrorCode.unknown_server_error, error_message=None,
                            active_producers=()),)),)),
                    correlation_id))
                continue
            self.frames.append(body[:4] + bytes(4) + body[8:])
            topics = self.answers(rec.read_produce_request(body))
            if topics is not None:
                writer.write(rec.produce_response_frame(version, correlation_id, topics))


CODES = [0, 0, 0, 0, ErrorCode.not_leader_or_follower, ErrorCode.out_of_order_sequence_number,
         ErrorCode.request_timed_out, ErrorCode.duplicate_sequence_number, ErrorCode.invalid_record]
SEQ_KINDS = ["plain", "idem_next", "idem_next", "idem_next", "idem_resend", "idem_skip", "corrupt"]


def views(variant: str, version: int):
    base = view(version, acls=writers("User:alice"))
    if variant == "frozen0":
        return view(version, frozen=0, acls=writers("User:alice"))
    if variant == "moved_p0":
        return moved_p0(dataclasses.replace(base, version=version - 1))
    if variant == "bob":
        return view(version, acls=writers("User:bob"))
    if variant == "draining":
        return view(version, draining=(7,), acls=writers("User:alice"))
    return base


steps_strategy = st.lists(st.one_of(
    st.tuples(st.just("send"), st.lists(st.tuples(st.sampled_from([0, 0, 1, 1, 2]), st.sampled_from(SEQ_KINDS)),
                                        min_size=1, max_size=1)
              | st.lists(st.tuples(st.sampled_from([0, 1]), st.sampled_from(SEQ_KINDS)), min_size=2, max_size=2,
                         unique_by=lambda x: x[0]),
              st.sampled_from(CODES), st.sampled_from(CODES), st.sampled_from([-1, 1])),
    st.tuples(st.just("view"), st.sampled_from(["base", "frozen0", "moved_p0", "bob", "draining"])),
    st.tuples(st.just("lease"), st.booleans()),
    st.tuples(st.just("tick"), st.sampled_from([1.0, 31.0])),
), min_size=1, max_size=25)


def _seq_batch(kind: str, p: int, client: dict) -> bytes:
    if kind == "plain":
        return batch(2)
    if kind == "corrupt":
        b = bytearray(batch(1, PID, 0, client[p]))
        b[-1] ^= 0xFF
        return bytes(b)
    if kind == "idem_resend":
        return batch(1, PID, 0, max(client[p] - 1, 0))
    if kind == "idem_skip":
        client[p] += 1
    out = batch(1, PID, 0, client[p])
    client[p] += 1
    return out


async def _steps(lane: bool, steps, auth: bool):
    now = [1000.0]
    table = ProducerIdTable(clock=lambda: now[0])
    table.store_physical(PID, 0, "c1", *PHYSICAL)
    for p, end in ((0, 5), (1, 9)):
        table.physical(PID, 0, "c1", "phys", p, 0, (end - 1, end))
        table.confirm(("c1", "phys", p, PHYSICAL[0]))
        table.note_forwarded((PID, 0, "t", p), ("c1", "phys", p, 0), PHYSICAL[0], end)
    client = {0: 5, 1: 9, 2: 0}
    codes: dict = {}
    broker = await AnyBroker(lambda r: [(t.name, [rec.ProducePartitionAnswer(
        p.index, codes.get(p.index, 0), 100 + p.index if codes.get(p.index, 0) == 0 else -1, -1, 0)
        for p in t.partition_data]) for t in r.topic_data]).start()
    d = await proxy(views("base", 4), broker, lane=lane, producer_ids=table, authorization=auth)
    d.physical.clusters["c1"].leaders[("moved", 0)] = 1
    version = 4
    session = Session(principal="User:alice", host="10.0.0.1")
    log = []
    try:
        for step in steps:
            if step[0] == "send":
                _, parts, code0, code1, acks = step
                codes.clear()
                codes.update({0: code0, 1: code1})
                topics = [("t", [(p, _seq_batch(kind, p, client)) for p, kind in parts])]
                request = codec.encode_request(kio_request(9, None, acks, 5000, topics), 11, "app")[4:]
                try:
                    answer = await (await d.start(request, 0, session))
                    log.append(bytes(answer))
                except ProtocolViolation as e:
                    log.append(str(e))
            elif step[0] == "view":
                version += 1
                d.state.view = views(step[1], version)
            elif step[0] == "lease":
                d.state.lease_deadline = None if step[1] else time.monotonic() - 1
            else:
                now[0] += step[1]
            log.append((len(broker.frames), table_state(table)))
        return log, broker.frames, d.lane.taken if lane else 0
    finally:
        broker.close()


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps_strategy, st.booleans())
def test_step_by_step_the_lane_keeps_the_generic_path_s_answers_frames_and_table(steps, auth):
    generic = run(lambda: _steps(False, steps, auth))
    lane = run(lambda: _steps(True, steps, auth))
    assert lane[1] == generic[1]
    for i, (a, b) in enumerate(zip(lane[0], generic[0], strict=True)):
        assert a == b, (i, steps)
