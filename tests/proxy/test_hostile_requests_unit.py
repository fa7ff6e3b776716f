"""What one hostile request may leave behind in a proxy worker: requests past --max-request-elements close the
connection (before any handler sees them), a Metadata request naming a topic many times gets it once, the
Metadata answer cache holds at most ANSWER_CACHE_BYTES, and the (api_key, version) pairs a client names but the
proxy does not serve leave no entry in any table (routes, metric series, kio's schema cache)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import struct
import uuid

import pytest
from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic

from fedkafka.protocol import codec
from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type
from fedkafka.proxy.core import dispatch
from fedkafka.proxy.core.dispatch import Dispatcher, ProtocolViolation
from fedkafka.proxy.core.observe import RequestMetrics
from fedkafka.proxy.core.physical import PhysicalClusters
from fedkafka.proxy.core.upstream import UpstreamPool
from fedkafka.proxy.handlers import metadata
from fedkafka.proxy.state import ProxyState
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, ProxyInfo, ProxyRole, Segment, View

ME = ProxyInfo(7, "127.0.0.1", 9092, ProxyRole.PPROXY)


def view(partitions: int = 2) -> View:
    chains = tuple(PartitionChain(segments=(Segment("c1", "t", p, 0, None, 0),)) for p in range(partitions))
    return View(version=1, clusters={"c1": Cluster("c1", "127.0.0.1:1")},
                topics={"t": LogicalTopic("t", uuid.uuid4().hex, chains)}, proxies=(ME,))


def dispatcher(v: View | None = None, **kw) -> Dispatcher:
    return Dispatcher(state=ProxyState(view=v or view(), me=ME), physical=PhysicalClusters(), producer_ids=None,
                      pool=UpstreamPool(), **kw)


def metadata_frame(topics: list[str] | None, correlation_id: int = 1) -> bytes:
    body = MetadataRequest(topics=None if topics is None else tuple(
        MetadataRequestTopic(topic_id=uuid.UUID(int=0), name=t) for t in topics),
        allow_auto_topic_creation=False, include_topic_authorized_operations=False)
    return codec.encode_request(body, correlation_id)[4:]


def produce_v3(partitions: int) -> bytes:
    """Produce v3, acks 1: one topic of `partitions` partitions with null records."""
    frame = struct.pack(">hhih", 0, 3, 7, -1) + struct.pack(">h", -1) + struct.pack(">hii", 1, 1000, 1)
    frame += struct.pack(">h", 1) + b"t" + struct.pack(">i", partitions)
    return frame + b"".join(struct.pack(">ii", i, -1) for i in range(partitions))


def answered_topics(frame: bytes) -> list[str]:
    return [t.name for t in codec.decode_response(codec.response_type(3, 12), frame[4:])[1].topics]


def test_a_request_past_the_element_limit_closes_the_connection_before_its_handler_runs():
    """Metadata (kio's walk) and Produce (records.py's), at the default limit and at a configured one."""
    async def scenario():
        d = dispatcher()
        with pytest.raises(ProtocolViolation, match="--max-request-elements"):
            await d.start(metadata_frame(["x"] * 100_001), 0)
        small = dispatcher(max_request_elements=1000)
        assert answered_topics(await (await small.start(metadata_frame(["x"] * 1000), 0))) == ["x"]
        with pytest.raises(ProtocolViolation, match="more than 1000 array elements"):
            await small.start(metadata_frame(["x"] * 1001), 0)
        with pytest.raises(ProtocolViolation, match="more than 1000 topics, partitions"):
            await small.start(produce_v3(1000), 0)  # the topic and its 1000 partitions

    asyncio.run(scenario())


def test_a_topic_named_many_times_is_answered_once_in_the_order_first_named():
    async def scenario():
        d = dispatcher()
        frame = metadata_frame(["t", "x", "t", "x", "t"] + ["y"] * 500)
        assert answered_topics(await (await d.start(frame, 0))) == ["t", "x", "y"]

    asyncio.run(scenario())


def test_the_metadata_answer_cache_holds_at_most_its_bytes_and_no_larger_answer(monkeypatch):
    monkeypatch.setattr(dispatch, "ANSWER_CACHE_BYTES", 2000, raising=False)
    calls = []

    def counting_handle(ctx, header, request):
        calls.append(request.topics)
        return metadata.handle(ctx, header, request)

    async def scenario():
        d = dispatcher(view(partitions=100))  # the all-topics answer: ~4 KiB
        d.registry[3] = type(metadata)("counted")
        d.registry[3].cache_key, d.registry[3].handle = metadata.cache_key, counting_handle
        for i in range(40):  # distinct topic sets, ~100 bytes of answer each
            await (await d.start(metadata_frame([f"u{i}"], i), 0))
        assert 0 < sum(map(len, d._answers.values())) <= 2000 and len(d._answers) < 40
        before = len(calls)
        big = [await (await d.start(metadata_frame(None, 100 + i), 0)) for i in range(2)]
        assert len(big[0]) > 2000 and len(calls) == before + 2  # not kept: built for each request
        assert sum(map(len, d._answers.values())) <= 2000

    asyncio.run(scenario())


def test_versions_the_proxy_does_not_serve_leave_no_entry_behind():
    """The reviewer's flood: ApiVersions (allowed before SASL authentication) at every version it does not
    serve is answered v0 and the connection kept; an unknown api_key closes the connection. Neither leaves a
    route, a metric series of its own or a kio schema cache entry."""
    async def scenario():
        observer = RequestMetrics()
        d = dispatcher(observer=observer)
        for version in range(5, 3000):
            assert await (await d.start(struct.pack(">hhih", 18, version, 1, -1), 0)) is not None
        refused = await (await d.start(struct.pack(">hhih", 0, 13, 1, -1), 0))  # Produce v13: kio knows it
        assert codec.decode_response(codec.response_type(0, 13), refused[4:])[0].correlation_id == 1
        for version in (0, 2, 200, 32767):  # Produce versions kio does not know
            with pytest.raises(ProtocolViolation, match="unknown api_key=0"):
                await d.start(struct.pack(">hhih", 0, version, 1, -1), 0)
        for api_key in range(1000, 1500):
            with pytest.raises(ProtocolViolation, match="unknown api_key"):
                await d.start(struct.pack(">hhih", api_key, 7, 1, -1), 0)
        assert len(d._routes) == 0
        requests = next(m for m in observer.collect() if m.name == "fedkafka_proxy_requests")
        assert [(s.labels, s.value) for s in requests.samples] == [({"api": "other", "version": "other"}, 3500)]
        schemas = codec._response_type.cache_info().currsize
        for api_key in range(1500, 2500):
            with pytest.raises(ProtocolViolation):
                await d.start(struct.pack(">hhih", api_key, 7, 1, -1), 0)
        assert codec._response_type.cache_info().currsize == schemas
        await (await d.start(metadata_frame(["t"]), 0))  # a served version is routed (and counted) as ever
        assert list(d._routes) == [(3, 12)]

    asyncio.run(scenario())


def test_a_join_group_whose_subscription_is_past_the_element_limit_closes_the_connection():
    """The subscription bytes a JoinGroup carries count against the same limit (a 16 MiB JoinGroup named ~5
    million topics): refused as a request past it is, before anything is sent upstream."""
    consume = ProxyInfo(7, "127.0.0.1", 9092, ProxyRole.CPROXY)
    coordinated = dataclasses.replace(view(), proxies=(consume,), coordination_cluster="c1")

    def join(n: int) -> bytes:
        body = build(request_type(11, 9), {
            "group_id": "g", "session_timeout": datetime.timedelta(seconds=10),
            "rebalance_timeout": datetime.timedelta(seconds=60), "member_id": "", "group_instance_id": None,
            "protocol_type": "consumer", "reason": None, "protocols": [{"name": "range", "metadata": struct.pack(
                ">hi", 0, n) + b"\x00\x01a" * n + struct.pack(">i", -1)}]})
        return codec.encode_request(body, 1)[4:]

    async def scenario():
        d = Dispatcher(state=ProxyState(view=coordinated, me=consume), physical=PhysicalClusters(), producer_ids=None,
                       pool=UpstreamPool(), max_request_elements=1000)
        with pytest.raises(ProtocolViolation, match=r"JoinGroup subscriptions of group 'g'.*more than 1000 array"):
            await d.start(join(1001), 0)
        assert not d.pool._conns and not d.pool._locks  # nothing was sent upstream, nor a connection begun

    asyncio.run(scenario())
