"""The proxy reuses an encoded Metadata answer while the view, this proxy and the topic set are the same: a
flood of all-topics Metadata requests costs a lookup, not a rebuild (bench/metadata_cost.py measures it)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic

from fedkafka.protocol import codec
from fedkafka.proxy.core.dispatch import Dispatcher
from fedkafka.proxy.core.physical import PhysicalClusters
from fedkafka.proxy.handlers import metadata
from fedkafka.proxy.state import ProxyState
from fedkafka.security.session import Session
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, ProxyInfo, ProxyRole, Segment, View

ME = ProxyInfo(1, "127.0.0.1", 9092, ProxyRole.BOTH)


def view(version: int, partitions: int) -> View:
    chains = tuple(PartitionChain(segments=(Segment("c1", "t", p, 0, None, 0),)) for p in range(partitions))
    return View(version=version, clusters={"c1": Cluster("c1", "127.0.0.1:1")},
                topics={"t": LogicalTopic("t", uuid.uuid4().hex, chains)}, proxies=(ME,))


def request_frame(correlation_id: int, topics=None) -> bytes:
    body = MetadataRequest(topics=None if topics is None else tuple(
        MetadataRequestTopic(topic_id=uuid.UUID(int=0), name=t) for t in topics),
        allow_auto_topic_creation=False, include_topic_authorized_operations=False)
    return codec.encode_request(body, correlation_id)[4:]


def answer(frame: bytes):
    return codec.decode_response(codec.response_type(3, 12), frame[4:])[1]


def test_repeated_metadata_is_answered_from_the_cache_until_the_view_changes():
    calls = []

    def counting_handle(ctx, header, request):
        calls.append(request.topics)
        return metadata.handle(ctx, header, request)

    async def scenario():
        state = ProxyState(view=view(1, 2), me=ME)
        d = Dispatcher(state=state, physical=PhysicalClusters(), producer_ids=None, pool=None)
        d.registry[3] = type(metadata)("counted")
        d.registry[3].cache_key, d.registry[3].handle = metadata.cache_key, counting_handle
        first = await (await d.start(request_frame(1), 0))
        second = await (await d.start(request_frame(2), 0))
        assert len(calls) == 1
        assert codec.response_correlation_id(second[4:]) == 2 and second[8:] == first[8:]
        await (await d.start(request_frame(3, ["t"]), 0))  # another topic set: its own answer
        assert len(calls) == 2
        state.apply(view(2, 3))
        third = await (await d.start(request_frame(4), 0))
        assert len(calls) == 3 and len(answer(third).topics[0].partitions) == 3
        state.set_node_id(5)  # another identity: another answer
        assert answer(await (await d.start(request_frame(5), 0))).controller_id == 5
        assert len(calls) == 4

    asyncio.run(scenario())


def test_cache_key_covers_version_identity_and_topics():
    ctx = dataclasses.make_dataclass("Ctx", ["me", "session", "authorizer", "physical"])(
        ME, Session(), None, PhysicalClusters())
    all_topics = MetadataRequest(topics=None, allow_auto_topic_creation=False,
                                 include_topic_authorized_operations=False)
    some = dataclasses.replace(all_topics, topics=(MetadataRequestTopic(topic_id=uuid.UUID(int=0), name="t"),))
    assert metadata.cache_key(ctx, all_topics) != metadata.cache_key(ctx, some)
    assert metadata.cache_key(ctx, all_topics) == metadata.cache_key(ctx, all_topics)
    # a SASL_SSL client gets other broker addresses than a PLAINTEXT one: never the same cached answer
    sasl = dataclasses.replace(ctx, session=Session.for_listener("SASL_SSL"))
    assert metadata.cache_key(ctx, all_topics) != metadata.cache_key(sasl, all_topics)
