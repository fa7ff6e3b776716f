"""The Produce lane (core/produce_lane.py) against the generic path it short-cuts: the same bytes to the broker and
to the client, every request it must not take left to the generic path, its route cache dropped with what decides
a route, and the core's bookkeeping (writes in flight, timeouts, metrics) kept.

A real Dispatcher, upstream pool and PhysicalClusters, against a broker stand-in on loopback that answers Produce
frames as it is told (written by records.py, which the protocol tests check against kio byte for byte)."""

from __future__ import annotations

import asyncio
import collections
import copy
import dataclasses
import itertools
import json
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from example_counts import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kio.schema.errors import ErrorCode
from protocol.test_produce_frames import kio_request
from protocol.test_records_twins import using

from fedkafka.protocol import codec
from fedkafka.protocol import records as rec
from fedkafka.proxy.core import connection, dispatch, produce_lane
from fedkafka.proxy.core.dispatch import Dispatcher, ProtocolViolation
from fedkafka.proxy.core.limits import Limits
from fedkafka.proxy.core.metrics import RequestMetrics
from fedkafka.proxy.core.physical import PhysicalClusters
from fedkafka.proxy.core.producer_ids import ProducerIdTable
from fedkafka.proxy.core.server import ProxyConfig, ProxyServer
from fedkafka.proxy.core.upstream import PRODUCE_API_KEY, UpstreamPool
from fedkafka.proxy.handlers import produce as produce_handler
from fedkafka.proxy.state import ProxyState
from fedkafka.security.acl import AclBinding, Operation, PatternType, Permission, ResourceType
from fedkafka.security.session import Session
from fedkafka.view.model import Cluster, ClusterState, LogicalTopic, PartitionChain, ProxyInfo, ProxyRole, Segment, View
from proxy.support import create_topic, read_partition, split_view
from proxy.test_limits_unit import _serve_with

ME = ProxyInfo(7, "p7", 9092, ProxyRole.PPROXY)
Answers = Callable[[rec.ProduceRequestFrame], list | None]  # the broker's (topic, answers) pairs; None: no answer


def ok(request: rec.ProduceRequestFrame) -> list:
    """Every partition written, at a base offset of 100 + its index."""
    return [(t.name, [rec.ProducePartitionAnswer(p.index, 0, 100 + p.index, -1, 0) for p in t.partition_data])
            for t in request.topic_data]


async def requests_of(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """A stand-in's view of its connection: each request frame (without its size prefix) until the connection ends."""
    while True:
        try:
            (size,) = struct.unpack(">i", await reader.readexactly(4))
            body = await reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        yield body


class Broker:
    """A broker's Produce side: records each request frame (correlation id zeroed) and answers as `answers` says."""

    def __init__(self, answers: Answers = ok):
        self.answers = answers
        self.frames: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0
        self.gate: asyncio.Event | None = None  # set: answers wait until it is
        self.throttle: Callable[[rec.ProduceRequestFrame], int] = lambda request: 0  # its answer's throttle_time_ms

    async def start(self) -> Broker:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for body in requests_of(reader):
            _, version, correlation_id = struct.unpack_from(">hhi", body)
            self.frames.append(body[:4] + bytes(4) + body[8:])
            request = rec.read_produce_request(body)
            topics = self.answers(request)
            if self.gate is not None:
                await self.gate.wait()
            if topics is not None:
                writer.write(rec.produce_response_frame(version, correlation_id, topics, self.throttle(request)))

    def close(self) -> None:
        assert self.server is not None
        self.server.close()


def view(version: int = 4, *, frozen: int | None = None, acls=(), c1_state=ClusterState.ACTIVE,
         draining=()) -> View:
    """Topic t: p0 and p1 on c1 (phys), p2 moved from c1 (old) to c2 (phys, its offsets 10.. logical 50..)."""
    chains = [PartitionChain(segments=(Segment("c1", "phys", p, 0, None, 0),), leader_epoch=3, frozen=p == frozen)
              for p in range(2)]
    chains.append(PartitionChain(segments=(Segment("c1", "old", 0, 0, 50, 0), Segment("c2", "phys", 0, 10, None, 50))))
    return View(version=version, clusters={"c1": Cluster("c1", "h1:1", state=c1_state), "c2": Cluster("c2", "h2:2")},
                topics={"t": LogicalTopic("t", "0" * 31 + "1", tuple(chains))}, proxies=(ME,), acls=tuple(acls),
                draining=tuple(draining))


async def proxy(v: View, broker: Broker, *, lane: bool = True, authorization: bool = False,
                warm: bool = True, producer_ids: ProducerIdTable | None = None) -> Dispatcher:
    """A dispatcher whose clusters c1 and c2 both have their leaders (node 1) at `broker`; slot 0's pooled connection
    open (`warm`), and producer PID's (its own, as `handle` orders an idempotent producer's calls): the lane writes
    only on an open one."""
    physical = PhysicalClusters()
    physical.set_clusters({c: f"127.0.0.1:{broker.port}" for c in v.clusters})
    for cluster, info in physical.clusters.items():
        info.brokers = {1: ("127.0.0.1", broker.port)}
        info.leaders = {(s.topic, s.partition): 1 for t in v.topics.values() for ch in t.partitions
                        for s in ch.segments if s.cluster == cluster}
    d = Dispatcher(state=ProxyState(view=v, me=ME), physical=physical,
                   producer_ids=ProducerIdTable() if producer_ids is None else producer_ids,
                   pool=UpstreamPool(), observer=RequestMetrics(), authorization=authorization)
    d.writes_in_flight = collections.Counter()
    if not lane:
        d.lane = None
    if warm:
        await d.pool.get("127.0.0.1", broker.port, 0, "c1")
        await d.pool.get("127.0.0.1", broker.port, PID, "c1")
    return d


PID = 1001  # the idempotent tests' logical producer id (its pooled connection: slot 1 of 4); physical 555/2 on c1


def batch(n: int = 1, producer_id: int = -1, epoch: int = -1, seq: int = -1) -> bytes:
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=producer_id,
                                  producer_epoch=epoch, base_sequence=seq, batch_size=1 << 20)
    for i in range(n):
        b.append(i, timestamp=1_700_000_000_000 + i, key=b"k%d" % i, value=b"v" * (i + 1), headers=[])
    return bytes(b.build())


def frame(parts: dict[int, bytes], *, version: int = 9, acks: int = -1, txn: str | None = None,
          timeout_ms: int = 5000, topic: str = "t", correlation_id: int = 11) -> bytes:
    """A client's Produce frame (after its size prefix), written by kio."""
    request = kio_request(version, txn, acks, timeout_ms, [(topic, list(parts.items()))])
    return codec.encode_request(request, correlation_id, "app")[4:]


async def ask(d: Dispatcher, request: bytes, session: Session | None = None) -> bytes | None:
    answer = await (await d.start(request, 0, session))
    return None if answer is None else bytes(answer)


def answers_of(answer: bytes, version: int = 9) -> dict[int, tuple]:
    """(error, base offset, log start, message) by partition of a client's answer frame."""
    topics = rec.read_produce_response(answer[4:], version)
    return {p.index: (p.error_code, p.base_offset, p.log_start_offset, p.error_message) for _, ps in topics for p in ps}


NOT_LEADER = ErrorCode.not_leader_or_follower


def run(scenario):
    return asyncio.run(scenario())


# -- (a) the lane's bytes are the generic path's -----------------------------------------------------------------

ERRORS = [0, 0, 0, ErrorCode.not_leader_or_follower, ErrorCode.unknown_topic_or_partition,
          ErrorCode.request_timed_out, ErrorCode.not_enough_replicas, ErrorCode.invalid_record]


@st.composite
def broker_answers(draw) -> dict[tuple[str, int], rec.ProducePartitionAnswer | None]:
    """Per physical partition the broker's answer (None: left out of it)."""
    out = {}
    for key in [("phys", 0), ("phys", 1)]:
        if draw(st.integers(0, 9)) == 0:
            out[key] = None
            continue
        out[key] = rec.ProducePartitionAnswer(
            key[1], draw(st.sampled_from(ERRORS)), draw(st.integers(-1, 2**40)), draw(st.integers(-1, 2**41)),
            draw(st.integers(-1, 2**40)), tuple(draw(st.lists(st.tuples(st.integers(0, 5), st.none() | st.text(
                max_size=8)), max_size=2))), draw(st.none() | st.text(max_size=10)))
    return out


def scripted(answers: dict) -> Answers:
    def answer(request: rec.ProduceRequestFrame) -> list:
        return [(t.name, [a for p in t.partition_data if (a := answers[(t.name, p.index)]) is not None])
                for t in request.topic_data]
    return answer


async def through(lane: bool, request: bytes, answers: dict) -> tuple[list[bytes], bytes | None, int]:
    broker = await Broker(scripted(answers)).start()
    d = await proxy(view(), broker, lane=lane)
    try:
        answer = await ask(d, request)
        return broker.frames, answer, d.lane.taken if lane else 0
    finally:
        broker.close()


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])  # sockets, loaded
@given(st.integers(3, 12), st.sampled_from([-1, 1]), st.integers(-2, 0) | st.integers(2_000, 200_000),
       st.lists(st.sampled_from([0, 1]), min_size=1, max_size=2, unique=True), st.integers(1, 4), broker_answers(),
       st.sampled_from(["python", "compiled"]))
def test_the_lane_writes_the_generic_path_s_upstream_frame_and_client_answer(version, acks, timeout_ms, partitions,
                                                                              records, answers, implementation):
    """(A timeout of a few ms may run out between reading and sending on a loaded machine, on either path, at its own
    moment: test_a_lane_request_past_its_client_s_deadline_is_not_sent covers that.)"""
    request = frame({p: batch(records + p) for p in partitions}, version=version, acks=acks, timeout_ms=timeout_ms)
    with using(implementation):  # type: ignore[arg-type]
        generic = run(lambda: through(False, request, answers))
        lane = run(lambda: through(True, request, answers))
    assert lane[2] == 1  # taken by the lane
    assert lane[:2] == generic[:2]


def test_the_compiled_and_the_python_lane_write_the_same_bytes():
    answers = {("phys", 0): rec.ProducePartitionAnswer(0, 0, 7, 123, 0), ("phys", 1): None}
    request = frame({0: batch(3), 1: batch(2)}, version=12)
    with using("python"):
        python = run(lambda: through(True, request, answers))
    with using("compiled"):
        compiled = run(lambda: through(True, request, answers))
    assert python == compiled and python[2] == 1


@pytest.mark.parametrize("implementation", ["python", "compiled"])
@pytest.mark.parametrize("version", [8, 12])
def test_a_write_below_the_active_segment_s_start_is_refused_on_the_lane_as_on_the_generic_path(version,
                                                                                                 implementation):
    """p2's active segment is c2/phys/0 from physical 10 (logical 50). Its physical topic created again empty (a lost
    disk) takes a write at 3: acked, that would be logical 43, an offset of the sealed segment on c1 (rev3 finding 1).
    The lane's one-call translation leaves it to the generic answer, which refuses it, retriable, and counts it."""
    request = frame({2: batch(2)}, version=version)

    async def through_counting(lane: bool, base: int) -> tuple[bytes | None, int, dict]:
        broker = await Broker(scripted({("phys", 0): rec.ProducePartitionAnswer(0, 0, base, -1, 0)})).start()
        d = await proxy(view(), broker, lane=lane)
        try:
            answer = await ask(d, request)
            return answer, d.lane.taken if lane else 0, dict(d.observer.refusals)
        finally:
            broker.close()

    with using(implementation):  # type: ignore[arg-type]
        lane = run(lambda: through_counting(True, 3))
        generic = run(lambda: through_counting(False, 3))
        written = run(lambda: through_counting(True, 12))
    assert lane[1] == 1 and lane[0] == generic[0]
    assert answers_of(lane[0], version)[2][:2] == (NOT_LEADER, -1)
    assert lane[2] == generic[2] == {produce_handler.BELOW_SEGMENT: 1}
    assert answers_of(written[0], version)[2][:2] == (0, 52) and written[2] == {}  # at or past its start: acked


# -- (b) what the lane does not take goes the generic way, answered as before -------------------------------------

async def generic(d: Dispatcher, request: bytes, session: Session | None = None) -> bytes | None:
    """The answer to `request`, which the lane must have left to the generic path."""
    taken = d.lane.taken
    answer = await ask(d, request, session)
    assert d.lane.taken == taken, "the lane took a request it must leave"
    return answer



def test_a_transactional_request_is_refused_by_the_generic_path():
    async def scenario():
        broker = await Broker().start()
        d = await proxy(view(), broker)
        answer = await generic(d, frame({0: batch()}, txn="tx"))
        assert answers_of(answer)[0][0] == ErrorCode.transactional_id_authorization_failed
        assert broker.frames == []
    run(scenario)


def test_an_acks_zero_request_goes_the_generic_way_and_gets_no_answer():
    async def scenario():
        broker = await Broker().start()
        d = await proxy(view(), broker)
        assert await generic(d, frame({0: batch()}, acks=0)) is None
        assert len(broker.frames) == 1  # forwarded all the same, with acks=all
    run(scenario)


@pytest.mark.parametrize("parts, topic, error", [
    ({7: batch()}, "t", ErrorCode.unknown_topic_or_partition),
    ({0: batch()}, "nope", ErrorCode.unknown_topic_or_partition),
    ({0: b"\x00" * 70}, "t", ErrorCode.corrupt_message),
])
def test_an_unknown_partition_or_a_bad_batch_is_answered_by_the_generic_path(parts, topic, error):
    async def scenario():
        broker = await Broker().start()
        d = await proxy(view(), broker)
        assert answers_of(await generic(d, frame(parts, topic=topic)))[next(iter(parts))][0] == error
        assert broker.frames == []
    run(scenario)


def test_a_corrupt_plain_batch_is_taken_by_the_lane_and_answered_by_its_broker_as_by_the_generic_path():
    """A plain batch whose only fault is its CRC is its broker's to refuse (docs/DESIGN.md §5.4, "The batch's CRC"):
    the lane forwards it as sent, as the generic path does, and the broker's CORRUPT_MESSAGE is the client's answer."""
    corrupt = bytearray(batch())
    corrupt[-1] ^= 0x01
    request = frame({0: bytes(corrupt)})
    refused = {("phys", 0): rec.ProducePartitionAnswer(0, ErrorCode.corrupt_message), ("phys", 1): None}
    generic = run(lambda: through(False, request, refused))
    lane = run(lambda: through(True, request, refused))
    assert lane[2] == 1 and lane[:2] == generic[:2]
    (sent,) = lane[0]
    assert bytes(corrupt) in sent and answers_of(lane[1])[0][0] == ErrorCode.corrupt_message


def test_a_partition_named_twice_is_refused_by_the_generic_path():
    async def scenario():
        broker = await Broker().start()
        d = await proxy(view(), broker)
        request = kio_request(9, None, -1, 5000, [("t", [(0, batch()), (0, batch())])])
        answer = await generic(d, codec.encode_request(request, 1, "app")[4:])
        (_, parts), = rec.read_produce_response(answer[4:], 9)
        assert [p.error_code for p in parts] == [ErrorCode.invalid_request] * 2 and broker.frames == []
    run(scenario)


@pytest.mark.parametrize("change", ["frozen", "cluster_not_active", "unreachable", "lease", "draining"])
def test_a_partition_the_proxy_refuses_is_refused_by_the_generic_path(change):
    async def scenario():
        broker = await Broker().start()
        v = view(frozen=0 if change == "frozen" else None, draining=(7,) if change == "draining" else (),
                 c1_state=ClusterState.DRAINING if change == "cluster_not_active" else ClusterState.ACTIVE)
        d = await proxy(v, broker)
        if change == "unreachable":
            d.physical.clusters["c1"].reachable = False
        if change == "lease":
            d.state.lease_deadline = time.monotonic() - 1
        assert answers_of(await generic(d, frame({0: batch()})))[0][0] == NOT_LEADER
        assert broker.frames == []
    run(scenario)


def test_an_idempotent_batch_is_rewritten_to_its_physical_id_by_the_generic_path():
    async def scenario():
        broker = await Broker().start()
        d = await proxy(view(), broker)
        d.producer_ids.store_physical(1000, 0, "c1", 555, 2)
        assert answers_of(await generic(d, frame({0: batch(producer_id=1000, epoch=0, seq=0)})))[0][:2] == (0, 100)
        (sent,) = broker.frames
        assert rec.produce_batch(rec.read_produce_request(sent).topic_data[0].partition_data[0].records) \
            .producer_id == 555
    run(scenario)


def test_partitions_on_two_clusters_go_the_generic_way():
    async def scenario():
        broker = await Broker().start()
        d = await proxy(view(), broker)
        answer = answers_of(await generic(d, frame({0: batch(), 2: batch()})))
        assert answer[0][:2] == (0, 100) and answer[2][:2] == (0, 100 - 10 + 50)  # p2: c2's segment, logical
        assert len(broker.frames) == 2
    run(scenario)


def test_a_closed_pooled_connection_goes_the_generic_way_which_opens_it():
    async def scenario():
        broker = await Broker().start()
        d = await proxy(view(), broker, warm=False)
        assert answers_of(await generic(d, frame({0: batch()})))[0][:2] == (0, 100)  # it connects
        assert answers_of(await ask(d, frame({0: batch()})))[0][:2] == (0, 100) and d.lane.taken == 1
    run(scenario)


def test_an_unknown_leader_is_waited_for_by_the_generic_path():
    async def scenario():
        broker = await Broker().start()
        d = await proxy(view(), broker)
        leaders = d.physical.clusters["c1"].leaders
        del leaders[("phys", 1)]
        waiting = asyncio.ensure_future(ask(d, frame({1: batch()})))
        await asyncio.sleep(0.05)
        assert not waiting.done() and broker.frames == []  # behind the generic path's leader wait
        leaders[("phys", 1)] = 1  # the refresh came in
        assert answers_of(await waiting)[1][:2] == (0, 101) and d.lane.taken == 0
    run(scenario)


def test_a_session_that_must_still_authenticate_or_expires_goes_the_generic_way():
    async def scenario():
        broker = await Broker().start()
        d = await proxy(view(), broker)
        expiring = Session(expires_at=time.monotonic() + 600)
        assert answers_of(await generic(d, frame({0: batch()}), expiring))[0][:2] == (0, 100)
        with pytest.raises(Exception, match=r"SASL|authenticat"):
            await generic(d, frame({0: batch()}), Session(protocol="SASL_PLAINTEXT", authenticated=False))
    run(scenario)


# -- (c) the route cache is dropped with what decides a route ------------------------------------------------------

def moved_p0(v: View) -> View:
    """p0 moved on: its active segment c1 moved/0 from offset 0, logical 40 (phys/0 sealed at 40)."""
    topic = v.topics["t"]
    chain = PartitionChain(segments=(Segment("c1", "phys", 0, 0, 40, 0), Segment("c1", "moved", 0, 0, None, 40)))
    topic = dataclasses.replace(topic, partitions=(chain, *topic.partitions[1:]))
    return dataclasses.replace(v, version=v.version + 1, topics={"t": topic})


def sent_to(frame_bytes: bytes) -> list[tuple[str, int]]:
    return [(t.name, p.index) for t in rec.read_produce_request(frame_bytes).topic_data for p in t.partition_data]


def test_a_new_view_drops_the_cached_routes():
    async def scenario():
        broker = await Broker().start()
        d = await proxy(view(), broker)
        assert answers_of(await ask(d, frame({0: batch()})))[0][:2] == (0, 100)
        d.physical.clusters["c1"].leaders[("moved", 0)] = 1
        d.state.view = moved_p0(d.state.view)
        assert answers_of(await ask(d, frame({0: batch()})))[0][:2] == (0, 140)  # moved/0 at 100: logical 140
        assert [sent_to(f) for f in broker.frames] == [[("phys", 0)], [("moved", 0)]]
        assert d.lane.taken == 2
        d.state.view = view(6, frozen=0)  # frozen for the next move: refused, not forwarded
        assert answers_of(await generic(d, frame({0: batch()})))[0][0] == NOT_LEADER and len(broker.frames) == 2
    run(scenario)


def test_a_new_leader_is_written_to_at_once():
    async def scenario():
        first, second = await Broker().start(), await Broker().start()
        d = await proxy(view(), first)
        assert answers_of(await ask(d, frame({0: batch()})))[0][:2] == (0, 100)
        info = d.physical.clusters["c1"]
        info.brokers = {**info.brokers, 2: ("127.0.0.1", second.port)}
        info.leaders[("phys", 0)] = 2
        await d.pool.get("127.0.0.1", second.port, 0, "c1")
        assert answers_of(await ask(d, frame({0: batch()})))[0][:2] == (0, 100)
        assert (len(first.frames), len(second.frames), d.lane.taken) == (1, 1, 2)
    run(scenario)


def test_a_lost_lease_and_an_unreachable_cluster_are_seen_by_the_next_request():
    async def scenario():
        broker = await Broker().start()
        d = await proxy(view(), broker)
        assert answers_of(await ask(d, frame({0: batch()})))[0][0] == 0
        d.state.lease_deadline = time.monotonic() - 1
        assert answers_of(await generic(d, frame({0: batch()})))[0][0] == NOT_LEADER
        d.state.lease_deadline = None
        d.physical.clusters["c1"].reachable = False
        assert answers_of(await generic(d, frame({0: batch()})))[0][0] == NOT_LEADER
        assert len(broker.frames) == 1
    run(scenario)


def writers(*principals: str) -> list[AclBinding]:
    return [AclBinding(ResourceType.TOPIC, "t", PatternType.LITERAL, p, "*", Operation.WRITE, Permission.ALLOW)
            for p in principals]


def test_acls_and_the_principal_decide_each_route():
    async def scenario():
        broker = await Broker().start()
        d = await proxy(view(acls=writers("User:alice")), broker, authorization=True)
        alice, bob = Session(principal="User:alice", host="10.0.0.1"), Session(principal="User:bob", host="10.0.0.1")
        assert answers_of(await ask(d, frame({0: batch()}), alice))[0][0] == 0 and d.lane.taken == 1
        denied = ErrorCode.topic_authorization_failed
        assert answers_of(await generic(d, frame({0: batch()}), bob))[0][0] == denied  # same view, same partition
        d.state.view = view(5, acls=writers("User:bob"))  # alice's right revoked, bob's granted
        assert answers_of(await generic(d, frame({0: batch()}), alice))[0][0] == denied
        assert answers_of(await ask(d, frame({0: batch()}), bob))[0][0] == 0 and d.lane.taken == 2
        assert len(broker.frames) == 2
    run(scenario)


# -- (d) writes in flight, request order, timeouts, metrics ---------------------------------------------------------

def test_a_lane_request_is_counted_by_its_view_until_answered_and_answered_in_order(monkeypatch):
    async def scenario():
        broker = await Broker().start()
        broker.gate = asyncio.Event()
        d = await proxy(view(), broker)
        # the client connection gets slot 0, whose pooled connection `proxy` opened: slots count per process, and
        # after other tests' connections this one's slot had none, so its first request went the generic way
        monkeypatch.setattr(connection, "_slots", itertools.count())
        server, port, _ = await _serve_with(d, Limits())
        r, w = await asyncio.open_connection("127.0.0.1", port)
        sizes = [struct.pack(">i", len(f)) + f for f in (
            frame({0: batch()}, correlation_id=1), frame({0: batch()}, topic="nope", correlation_id=2),
            frame({1: batch()}, correlation_id=3))]
        w.write(b"".join(sizes))
        for _ in range(3000):  # up to 30 s on a loaded machine: a wait, not a limit
            if d.lane.taken == 2:
                break
            await asyncio.sleep(0.01)
        assert d.lane.taken == 2 and d.writes_in_flight[4] == 2  # 1 and 3: held by the broker; 2 answered
        d.state.view = view(5)  # a newer view: the two stay counted under the one they were routed with
        broker.gate.set()
        got = []
        for _ in range(3):
            (size,) = struct.unpack(">i", await r.readexactly(4))
            got.append(struct.pack(">i", size) + await r.readexactly(size))
        assert [struct.unpack_from(">i", g, 4)[0] for g in got] == [1, 2, 3]  # in request order
        assert answers_of(got[0])[0][:2] == (0, 100) and answers_of(got[2])[1][:2] == (0, 101)
        assert answers_of(got[1])[0][0] == ErrorCode.unknown_topic_or_partition
        assert d.writes_in_flight[4] == 0 and d.writes_in_flight[5] == 0
        w.close()
        server.close()
    run(scenario)


def test_a_lane_request_without_an_answer_times_out_counted_and_refreshing(monkeypatch):
    monkeypatch.setattr(produce_lane, "REQUEST_TIMEOUT_S", 0.05)

    async def scenario():
        broker = await Broker(lambda request: None).start()
        d = await proxy(view(), broker)
        answer = answers_of(await ask(d, frame({0: batch()})))
        assert answer[0][0] == ErrorCode.request_timed_out and "timed out" in answer[0][3]
        assert d.lane.taken == 1 and d.writes_in_flight[4] == 0
        assert d.observer.upstream_errors == {"c1": 1}
        assert "c1" in d.physical._wanted  # refreshed: the leader may have moved
    run(scenario)


def test_a_lane_request_is_measured_as_the_generic_path_measures_it():
    async def scenario():
        observed = []
        for lane in (True, False):
            broker = await Broker(scripted({("phys", 0): rec.ProducePartitionAnswer(0, NOT_LEADER), ("phys", 1): None})
                                  ).start()
            d = await proxy(view(), broker, lane=lane)
            await ask(d, frame({0: batch(3), 1: batch(2)}))
            m = d.observer
            (series,) = m._series.values()
            observed.append((series.requests, series.count, series.errors, m.topic_bytes, m.cluster_bytes,
                             m.upstream_errors, sorted(d.physical._wanted)))
        assert observed[0] == observed[1]
        assert observed[0][2] == {NOT_LEADER: 1, ErrorCode.unknown_server_error: 1} and observed[0][6] == ["c1"]
    run(scenario)


def test_a_cancelled_lane_answer_cancels_its_call_and_is_counted_until_its_request_can_no_longer_be_written(
        monkeypatch):
    """Cancelled once written (the broker holds the request), the request counts in `writes_in_flight` for the drain
    until ABANDONED_SETTLE_S after the cancellation, as the generic path's (patched short here), then no more. It
    used to be uncounted at the cancellation (reviewer, rv2)."""
    monkeypatch.setattr(dispatch, "ABANDONED_SETTLE_S", 0.05)  # the bound `_uncount_or_hold` reads

    async def scenario():
        broker = await Broker(lambda request: None).start()
        d = await proxy(view(), broker)
        answer = await d.start(frame({0: batch()}), 0, None)
        assert d.lane.taken == 1 and d.writes_in_flight[4] == 1
        answer.cancel()  # the connection's writer, cancelled at the loop's teardown
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert answer.cancelled() and d.writes_in_flight[4] == 1, "the drain would ack with the request at the broker"
        for _ in range(500):
            if not d.writes_in_flight[4]:
                break
            await asyncio.sleep(0.01)
        assert d.writes_in_flight[4] == 0
    run(scenario)


def test_a_cancelled_lane_answer_written_is_released_when_the_drain_closes_its_upstream_connection():
    """ABANDONED_SETTLE_S (80 s) is more than a live proxy has to ack a frozen view (controller `live_ack_timeout`,
    38 s at the defaults): the drain's close (`close_drained_upstream`, at DRAIN_PATIENCE_S) closes the connection the
    written request is pending on, after which the broker can no longer append it, and releases the count then."""
    async def scenario():
        broker = await Broker(lambda request: None).start()
        d = await proxy(view(), broker)
        answer = await d.start(frame({0: batch()}), 0, None)
        answer.cancel()  # the connection's writer, cancelled at the loop's teardown
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert answer.cancelled() and d.writes_in_flight[4] == 1
        (held,) = [c for c in d.pool._conns.values() if c.has_pending(PRODUCE_API_KEY)]  # the broker holds it
        # the server's close (before this change: `pool.close_pending(PRODUCE_API_KEY)` alone)
        (getattr(d, "close_drained_upstream", None) or (lambda: d.pool.close_pending(PRODUCE_API_KEY)))()
        assert d.writes_in_flight[4] == 0, "counted until the 80 s timer, though its connection is closed"
        assert not len(d.abandoned_writes)
        assert held.closed, "its connection left open"
    run(scenario)


@pytest.mark.parametrize("topics", [[], [("t", [])]])
def test_a_request_of_no_partition_is_answered_by_the_generic_path(topics):
    async def scenario():
        broker = await Broker().start()
        d = await proxy(view(), broker)
        request = codec.encode_request(kio_request(9, None, -1, 5000, topics), 1, "app")[4:]
        answer = await generic(d, request)  # the lane asserted on its target and closed the connection
        assert [(n, list(ps)) for n, ps in rec.read_produce_response(answer[4:], 9)] == \
            [(n, []) for n, _ in topics] and broker.frames == []
    run(scenario)


@pytest.mark.parametrize("topics", [[("t", []), ("t", [(0, None)])], [("t", [(0, None)]), ("nope", [])]])
def test_a_topic_entry_of_no_partition_beside_one_partition_is_answered_by_the_generic_path(topics):
    """The lane's one-route answer is the request's first topic entry's first partition: a request whose other
    entry names no partition raised IndexError there (the connection closed with a traceback) or lost that entry
    from the answer."""
    async def scenario():
        broker = await Broker().start()
        d = await proxy(view(), broker)
        parts = [(n, [(i, batch()) for i, _ in ps]) for n, ps in topics]
        request = codec.encode_request(kio_request(9, None, -1, 5000, parts), 1, "app")[4:]
        answer = await generic(d, request)
        got = [(n, [(p.index, p.error_code, p.base_offset) for p in ps])
               for n, ps in rec.read_produce_response(answer[4:], 9)]
        assert got == [(n, [(i, 0, 100) for i, _ in ps]) for n, ps in topics] and len(broker.frames) == 1
    run(scenario)


@pytest.mark.parametrize("acks", [2, -2, 100])
def test_acks_other_than_minus_one_zero_or_one_are_refused_as_a_broker_refuses_them(acks):
    async def scenario():
        broker = await Broker().start()
        d = await proxy(view(), broker)
        answer = answers_of(await generic(d, frame({0: batch(), 1: batch()}, acks=acks)))
        assert {p: a[0] for p, a in answer.items()} == {0: ErrorCode.invalid_required_acks,
                                                        1: ErrorCode.invalid_required_acks}
        assert broker.frames == []
    run(scenario)


def test_a_consume_only_proxy_s_produce_goes_to_its_own_handler():
    async def scenario():
        broker = await Broker().start()
        d = await proxy(view(), broker)
        cproxy = dataclasses.replace(ME, role=ProxyRole.CPROXY)
        d2 = Dispatcher(state=ProxyState(view=view(), me=cproxy), physical=d.physical, producer_ids=ProducerIdTable(),
                        pool=d.pool)
        assert answers_of(await generic(d2, frame({0: batch()})))[0][0] == NOT_LEADER and broker.frames == []
    run(scenario)


def test_two_topic_entries_on_one_leader_are_taken_and_answered_in_request_order():
    async def scenario():
        broker = await Broker(lambda request: list(reversed(ok(request)))).start()  # the broker's own order
        d = await proxy(view(), broker)
        request = kio_request(9, None, -1, 5000, [("t", [(1, batch())]), ("t", [(0, batch(2))])])
        answer = await ask(d, codec.encode_request(request, 1, "app")[4:])
        assert d.lane.taken == 1 and len(broker.frames) == 1
        assert [(n, [(p.index, p.base_offset) for p in ps]) for n, ps in rec.read_produce_response(answer[4:], 9)] \
            == [("t", [(1, 101)]), ("t", [(0, 100)])]
    run(scenario)


def test_lane_calls_share_one_deadline_timer_per_connection(monkeypatch):
    monkeypatch.setattr(produce_lane, "REQUEST_TIMEOUT_S", 0.2)

    async def scenario():
        broker = await Broker().start()
        d = await proxy(view(), broker)
        answers = [await ask(d, frame({p % 2: batch()})) for p in range(3)]
        assert [answers_of(a)[p % 2][0] for p, a in enumerate(answers)] == [0, 0, 0] and d.lane.taken == 3
        (waits,) = d.lane._deadlines.values()
        assert not waits.calls and waits.timer is not None  # answered: gone from the head; one timer, still set
        broker.answers = lambda request: None  # the broker stops answering
        stuck = [await d.start(frame({p: batch()}), 0, None) for p in (0, 1)]
        assert [answers_of(await s)[p][0] for p, s in enumerate(stuck)] == [ErrorCode.request_timed_out] * 2
        await asyncio.sleep(0.3)  # the timer fired once more and found nothing out
        assert d.lane._deadlines == {} and d.writes_in_flight[4] == 0
    run(scenario)


def a_second_between_looks(monkeypatch) -> tuple[asyncio.AbstractEventLoop, Callable[[], float]]:
    """Makes the running loop's clock move a second between any two looks (every deadline passes at once): the
    loop, and its real clock to put back."""
    loop = asyncio.get_running_loop()
    real = loop.time
    ticks = iter(range(1000))
    monkeypatch.setattr(loop, "time", lambda: real() + next(ticks))
    return loop, real


def test_a_lane_request_past_its_client_s_deadline_is_not_sent(monkeypatch):
    async def scenario():
        broker = await Broker().start()
        d = await proxy(view(), broker)
        loop, real = a_second_between_looks(monkeypatch)
        answer = await (await d.start(frame({0: batch()}, timeout_ms=100), 0, None))
        monkeypatch.setattr(loop, "time", real)
        code, _, _, message = answers_of(bytes(answer))[0]
        assert code == ErrorCode.request_timed_out and message == "the client's request timeout passed: not sent"
        assert broker.frames == [] and d.lane.taken == 1 and d.writes_in_flight[4] == 0
        assert d.observer.refusals == {"deadline": 1} and d.observer.upstream_errors == {"c1": 1}
        assert "c1" in d.physical._wanted
    run(scenario)


def test_a_request_past_the_dispatcher_s_element_limit_is_refused_not_taken():
    """The lane reads a frame with the dispatcher's own reader, held to --max-request-elements: a request past a
    configured limit closes the connection as on the generic path, and nothing reaches the broker."""
    async def scenario():
        broker = await Broker().start()
        d = await proxy(view(), broker)
        d.max_request_elements = 2  # the topic and its two partitions are three elements
        with pytest.raises(ProtocolViolation, match="more than 2 topics, partitions"):
            await ask(d, frame({0: batch(), 1: batch()}))
        assert broker.frames == [] and d.lane.taken == 0
    run(scenario)


# -- (e) idempotent batches: the lane takes its producer's steady state, with the generic path's bookkeeping --------

PHYSICAL = (555, 2)
SEQ_ERRORS = [0, 0, ErrorCode.out_of_order_sequence_number, ErrorCode.duplicate_sequence_number,
              ErrorCode.unknown_producer_id, ErrorCode.invalid_producer_epoch, ErrorCode.producer_fenced,
              ErrorCode.not_leader_or_follower, ErrorCode.request_timed_out,
              ErrorCode.not_enough_replicas_after_append, ErrorCode.invalid_record, None]  # None: left out
STEADY = ("steady", "floor_passed")  # the states the lane takes; any other it leaves
STATES = (*STEADY, "unconfirmed", "refused_here", "refused_before", "floor", "unseen")


def seg_of(p: int) -> tuple[str, str, int, int]:
    return ("c1", "phys", p, 0)


def seeded(states: dict[int, str], ends: dict[int, int], floors: dict[int, int]) -> ProducerIdTable:
    """A table in which producer PID (epoch 0) forwarded up to `ends[p]` on p (a partition of c1) as physical 555,
    in the state `states[p]` (STATES) there; its clock stands still."""
    table = ProducerIdTable(clock=lambda: 1000.0)
    table.store_physical(PID, 0, "c1", *PHYSICAL)
    for p, state in states.items():
        key, end = (PID, 0, "t", p), ends[p]
        if state != "unseen":
            table.physical(PID, 0, "c1", "phys", p, 0, (end - 1, end))
        if state != "unconfirmed":
            table.confirm(("c1", "phys", p, PHYSICAL[0]))
        if state == "floor_passed":  # written on p's old segment, the floor read there, and passed long since
            table.note_forwarded(key, ("c1", "old", p, 0), 444, 7)
            table.set_floor(key, seg_of(p), None)
        table.note_forwarded(key, seg_of(p), PHYSICAL[0], end)
        if state == "floor":  # a sealed segment's floor, still checked
            table.set_floor(key, seg_of(p), floors[p])
        if state in ("refused_here", "refused_before"):
            table.note_refused(key, end - 1 if state == "refused_here" else end - 3)
    return table


def table_state(table: ProducerIdTable) -> dict:
    """Everything the table holds, in its (LRU) orders: a copy, not views of its live per-key dicts (`_refused`'s and
    `_ambiguous`'s batches), which a later step may empty in place while another path drops the key's whole dict: a
    snapshot kept per step then changed after the fact, on one path only (a twin's false difference at an earlier step
    where both held the same)."""
    out = {name: copy.deepcopy(list(getattr(table, name).items()))
           for name in ("_refused", "_writes", "_floors", "_confirmed", "_floor_gaps", "_logical", "_ambiguous")}
    out["_map"] = [(k, (v[0], v[1], {p: list(e) for p, e in v[2].items()})) for k, v in table._map.items()]
    return out


def test_a_table_state_does_not_change_with_the_table_after_it():
    """A twin logs table_state after each step and compares the logs after both runs: a snapshot that shared the
    table's per-key dicts changed with later steps, on one path only (the generic path empties a key's dict in place
    where the lane drops the key), and the twin failed at a step where both tables had been the same."""
    now = [1000.0]
    table = ProducerIdTable(clock=lambda: now[0])
    table.note_ambiguous((PID, 0, "t", 0), 5)
    table.note_refused((PID, 0, "t", 1), 9)
    before = table_state(table)
    now[0] += 1
    table.note_ambiguous((PID, 0, "t", 0), 6)
    table.note_refused((PID, 0, "t", 1), 10)
    assert before["_ambiguous"] == [((PID, 0, "t", 0), {5: 1000.0})]
    assert before["_refused"] == [((PID, 0, "t", 1), {9: 1000.0})]


@st.composite
def producer_scenario(draw):
    partitions = draw(st.lists(st.sampled_from([0, 1]), min_size=1, max_size=2, unique=True))
    states = {p: draw(st.sampled_from(STATES)) for p in partitions}
    ends = {p: draw(st.integers(4, 60) | st.integers(2**31 - 40, 2**31 - 1)) for p in partitions}
    firsts = {p: ends[p] - draw(st.sampled_from([0, 0, 0, 1, 2, 3])) for p in partitions}  # the next, or a resend
    records = {p: draw(st.integers(1, 4)) for p in partitions}
    floors = {p: firsts[p] + draw(st.sampled_from([-1, 0, 1, records[p], records[p] + 2])) for p in partitions}
    answers = {("phys", p): (None if (code := draw(st.sampled_from(SEQ_ERRORS))) is None else
                             rec.ProducePartitionAnswer(p, code, draw(st.integers(-1, 2**40)), -1,
                                                        draw(st.integers(-1, 2**40)), (), None))
               for p in (0, 1)}
    return partitions, states, ends, firsts, records, floors, answers


async def through_producer(lane: bool, request: bytes, answers: dict, table: ProducerIdTable):
    broker = await Broker(scripted(answers)).start()
    d = await proxy(view(), broker, lane=lane, producer_ids=table)
    try:
        answer = await ask(d, request)
        return broker.frames, answer, table_state(table), d.lane.taken if lane else 0
    finally:
        broker.close()


@settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.too_slow])  # sockets, loaded
@given(st.integers(3, 12), st.sampled_from([-1, 1]), producer_scenario(), st.sampled_from(["python", "compiled"]))
def test_the_lane_does_the_generic_path_s_producer_bookkeeping(version, acks, scenario, implementation):
    """An idempotent producer's batches in every state the generic path forwards or refuses without asking a broker
    first, answered with any error: the same upstream frames (rewritten to the physical id), client answers and
    producer id table afterwards; taken by the lane only in the steady state."""
    partitions, states, ends, firsts, records, floors, answers = scenario
    request = frame({p: batch(records[p], PID, 0, firsts[p]) for p in partitions}, version=version, acks=acks)
    with using(implementation):  # type: ignore[arg-type]
        generic = run(lambda: through_producer(False, request, answers, seeded(states, ends, floors)))
        lane = run(lambda: through_producer(True, request, answers, seeded(states, ends, floors)))
    assert lane[:3] == generic[:3]
    assert lane[3] == all(state in STEADY for state in states.values())


def sent_producer(frame_bytes: bytes) -> list[tuple[int, int, int]]:
    return [(h.producer_id, h.producer_epoch, h.base_sequence) for t in rec.read_produce_request(frame_bytes).topic_data
            for p in t.partition_data for h in [rec.produce_batch(p.records)]]


def test_a_steady_idempotent_producer_goes_the_lane_rewritten_and_noted():
    async def scenario():
        broker = await Broker().start()
        table = seeded({0: "steady", 1: "steady"}, {0: 5, 1: 9}, {})
        d = await proxy(view(), broker, producer_ids=table)
        answer = answers_of(await ask(d, frame({0: batch(2, PID, 0, 5), 1: batch(1, PID, 0, 9)})))
        assert d.lane.taken == 1 and answer[0][:2] == (0, 100) and answer[1][:2] == (0, 101)
        assert sent_producer(broker.frames[0]) == [(555, 2, 5), (555, 2, 9)]
        assert table._writes[(PID, 0, "t", 0)].end == 7 and table._map[(PID, 0, "c1")][2][("phys", 1)] == [0, 10]
        broker.answers = scripted({("phys", 0): rec.ProducePartitionAnswer(0, ErrorCode.out_of_order_sequence_number),
                                   ("phys", 1): None})
        answers_of(await ask(d, frame({0: batch(1, PID, 0, 7)})))
        assert d.lane.taken == 2 and list(table._refused[(PID, 0, "t", 0)]) == [7]  # noted refused
        # the next batch is a gap now: the generic path refuses it, the lane does not take it
        assert answers_of(await generic(d, frame({0: batch(1, PID, 0, 8)})))[0][0] == NOT_LEADER
    run(scenario)


def fallback_cases() -> dict[str, tuple[Callable[[ProducerIdTable], None], dict[int, bytes]]]:
    """Per condition the lane leaves an idempotent request for: what is done to a steady table, and the request."""
    key = (PID, 0, "t", 0)
    next_batch = {0: batch(1, PID, 0, 5)}
    return {
        "no physical id": (lambda t: t._map.clear(), next_batch),
        "another epoch": (lambda t: None, {0: batch(1, PID, 1, 5)}),
        "unconfirmed": (lambda t: t._confirmed.clear(), next_batch),
        "refusal remembered": (lambda t: t.note_refused(key, 5), next_batch),
        "sealed floor": (lambda t: t.set_floor(key, seg_of(0), 3), next_batch),
        "floor to read": (lambda t: t.note_forwarded(key, ("c1", "old", 0, 0), 444, 9), next_batch),
        "past the forwarded end": (lambda t: None, {0: batch(1, PID, 0, 6)}),
        "another segment": (lambda t: t._map[(PID, 0, "c1")][2][("phys", 0)].__setitem__(0, 99), next_batch),
        "no sequences": (lambda t: None, {0: batch(1, PID, 0, -1)}),
        "a plain batch beside": (lambda t: None, {0: batch(1, PID, 0, 5), 1: batch()}),
        "another producer beside": (lambda t: None, {0: batch(1, PID, 0, 5), 1: batch(1, PID + 1, 0, 9)}),
        "transactional batch": (lambda t: None, {0: transactional(batch(1, PID, 0, 5))}),
    }


def transactional(records: bytes) -> bytes:
    """The batch with its transactional bit set (the CRC recomputed, so only that bit differs)."""
    out = bytearray(records)
    out[22] |= 0x10  # attributes: int16 at byte 21
    h = rec.produce_batch(records)
    rec.rewrite_producer(out, h, h.producer_id, h.producer_epoch)
    return bytes(out)


@pytest.mark.parametrize("case", sorted(fallback_cases()))
def test_an_idempotent_request_out_of_its_steady_state_is_left_untouched(case):
    """Left to the generic path (which may ask a broker first: InitProducerId, DescribeProducers) with nothing sent
    and not one entry of the producer id table changed, not even its LRU order."""
    change, parts = fallback_cases()[case]

    async def scenario():
        broker = await Broker().start()
        table = seeded({0: "steady", 1: "steady"}, {0: 5, 1: 9}, {})
        d = await proxy(view(), broker, producer_ids=table)
        change(table)
        before = table_state(table)
        request = frame(parts)
        assert d.lane.start(request, 0, None) is None
        assert table_state(table) == before and broker.frames == [] and d.lane.taken == 0
    run(scenario)


def test_an_idempotent_producer_without_its_own_open_connection_is_left_to_the_generic_path():
    """The generic path writes an idempotent producer's calls on its own pooled connection (`Call.ordering_key`),
    not on the client connection's slot: the lane only when that one is open."""
    async def scenario():
        broker = await Broker().start()
        table = seeded({0: "steady"}, {0: 5}, {})
        d = await proxy(view(), broker, producer_ids=table, warm=False)
        await d.pool.get("127.0.0.1", broker.port, 0, "c1")  # the slot's, not the producer's
        before = table_state(table)
        assert d.lane.start(frame({0: batch(1, PID, 0, 5)}), 0, None) is None
        assert table_state(table) == before and broker.frames == []
        assert answers_of(await generic(d, frame({0: batch(1, PID, 0, 5)})))[0][:2] == (0, 100)  # it connects
        assert answers_of(await ask(d, frame({0: batch(1, PID, 0, 6)})))[0][:2] == (0, 100) and d.lane.taken == 1
    run(scenario)


def test_an_idempotent_lane_request_past_its_deadline_is_noted_forwarded_as_the_generic_path_notes_it(monkeypatch):
    """Not sent, answered REQUEST_TIMED_OUT; its sequences count as forwarded (as `handle` routes before the send
    looks at the deadline), and nothing is noted refused (its partition is confirmed): noted not known written, on
    both paths (DESIGN §5.3 rule 3)."""
    states = []
    for lane in (False, True):
        async def scenario(lane: bool = lane):
            broker = await Broker().start()
            table = seeded({0: "steady"}, {0: 5}, {})
            d = await proxy(view(), broker, lane=lane, producer_ids=table)
            loop, real = a_second_between_looks(monkeypatch)
            answer = await (await d.start(frame({0: batch(2, PID, 0, 5)}, timeout_ms=100), 0, None))
            monkeypatch.setattr(loop, "time", real)
            assert answers_of(bytes(answer))[0][0] == ErrorCode.request_timed_out and broker.frames == []
            states.append((table_state(table), d.lane.taken if lane else None))
        run(scenario)
    assert states[1][0] == states[0][0] and states[1][1] == 1
    assert states[0][0]["_writes"][-1][1].end == 7


def produce_idempotently(bootstrap: str, topic: str, n: int) -> list:
    """n records to partition 0 by a librdkafka producer with enable.idempotence=true (small batches: many
    requests, several in flight); its delivery reports (error, offset, value)."""
    from confluent_kafka import Producer

    reports: list = []
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 1,
                         "batch.num.messages": 20})
    for i in range(n):
        producer.produce(topic, value=b"v%06d" % i, partition=0,
                         on_delivery=lambda err, msg: reports.append((err, msg.offset(), msg.value())))
        if i % 50 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    return reports


@pytest.mark.integration
def test_a_real_idempotent_producer_goes_the_lane_and_every_record_lands_once_in_order(kafka_clusters, unique_name,
                                                                                       tmp_path, monkeypatch):
    """confluent-kafka with enable.idempotence=true through a real proxy (in this process: the lane's count is read)
    into a real broker: after its first batch (a physical id obtained, the batch sent alone by the generic path) the
    lane takes its requests, and the partition holds every record once, in the order produced."""
    c1 = kafka_clusters[0]
    physical = f"phys-{unique_name}"
    create_topic(c1.bootstrap, physical, 1)
    view_file = tmp_path / "view.json"
    view_file.write_text(json.dumps(split_view({"c1": c1.bootstrap}, unique_name, [("c1", physical, 0)]).to_dict()))
    n = 3000
    handled = []  # the Produce requests the generic path routed
    generic_handle = produce_handler.handle
    monkeypatch.setattr(produce_handler, "handle", lambda *a: handled.append(1) or generic_handle(*a))

    async def scenario():
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        server = ProxyServer(ProxyConfig(role=ProxyRole.PPROXY, host="127.0.0.1", port=port,
                                         advertised_host="127.0.0.1", view_file=view_file))
        await server.start(sock)
        try:
            reports = await asyncio.to_thread(produce_idempotently, f"127.0.0.1:{port}", unique_name, n)
            return reports, server.dispatcher.lane.taken
        finally:
            await server.stop()
            sock.close()

    reports, taken = asyncio.run(scenario())
    assert [err for err, _, _ in reports if err is not None] == []
    print(f"lane: {taken}, generic: {len(handled)}")
    assert taken > 10 * len(handled), f"the lane took {taken} requests, the generic path {len(handled)}"
    stored = read_partition(c1.bootstrap, physical, 0)
    assert [value for _, _, value in stored] == [b"v%06d" % i for i in range(n)]  # each once, in order
    assert sorted(offset for _, offset, _ in reports) == [offset for offset, _, _ in stored]


def test_an_idempotent_lane_request_without_an_answer_is_noted_as_the_generic_path_notes_it(monkeypatch):
    """A steady producer's batch the broker never answers: REQUEST_TIMED_OUT on both paths, the same table after
    (forwarded, nothing refused: its partition is confirmed, so a resend is the broker's to deduplicate)."""
    monkeypatch.setattr(produce_lane, "REQUEST_TIMEOUT_S", 0.05)
    monkeypatch.setattr(dispatch, "REQUEST_TIMEOUT_S", 0.05)
    states = []
    for lane in (False, True):
        async def scenario(lane: bool = lane):
            broker = await Broker(lambda request: None).start()
            table = seeded({0: "steady", 1: "steady"}, {0: 5, 1: 9}, {})
            d = await proxy(view(), broker, lane=lane, producer_ids=table)
            answer = answers_of(await ask(d, frame({0: batch(2, PID, 0, 5), 1: batch(1, PID, 0, 9)})))
            assert [answer[p][0] for p in (0, 1)] == [ErrorCode.request_timed_out] * 2
            states.append((broker.frames, table_state(table), d.lane.taken if lane else None))
        run(scenario)
    assert states[1][:2] == states[0][:2] and states[1][2] == 1
    assert [w.end for _, w in states[0][1]["_writes"]] == [7, 10] and states[0][1]["_refused"] == []


@pytest.mark.parametrize("end", [5, 2**31 - 1])
def test_the_lane_s_bookkeeping_done_twice_is_done_once(end):
    """A lane request whose write fails (ConnectionError: nothing written) goes the generic way after the lane noted
    it forwarded: `handle` noting the same batch again must change nothing more, not even an LRU order."""
    request = rec.read_produce_request(frame({0: batch(3, PID, 0, end), 1: batch(1, PID, 0, 9)}))
    headers = [rec.produce_batch(p.records) for t in request.topic_data for p in t.partition_data]
    v = view()
    routes = [produce_handler.lane_route(v, True, "t", p) for p in (0, 1)]
    states = []
    for times in (1, 2):
        table = seeded({0: "steady", 1: "steady"}, {0: end, 1: 9}, {})
        table.store_physical(PID + 1, 0, "c1", 777, 0)  # another producer's entries: the orders have something to show
        table.note_forwarded((PID + 1, 0, "t", 0), seg_of(0), 777, 3)
        producer = produce_handler.lane_producer(table, request, routes, headers)  # type: ignore[arg-type]
        assert producer is not None
        for _ in range(times):
            produce_handler.lane_forwarded(table, producer)
        states.append(table_state(table))
    assert states[0] == states[1]


async def calls_of_a_lane_request(start_now, request) -> list[str]:
    """The qualified names of the Python functions, in call order, that one Produce request taken by `start_now` (a
    dispatcher's, read once as a connection reads it) runs until its answer: what the per-request cuts count."""
    called: list[str] = []

    def profile(f, what, _arg):
        if what == "call":
            called.append(f.f_code.co_qualname)
    sys.setprofile(profile)
    try:
        taken = start_now(request, 0)
        assert taken is not None
        await taken
    finally:
        sys.setprofile(None)
    return called
