"""The drain before a frozen view's ack (issue #12, hole 2) and the proxy's own fencing when its lease runs out,
on the real core (dispatcher, upstream pool, in-flight counting) against a broker that reads and never answers."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from kio.schema.errors import ErrorCode

from fedkafka.protocol import codec
from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type
from fedkafka.proxy.core.dispatch import Dispatcher
from fedkafka.proxy.core.server import ProxyConfig, ProxyServer
from fedkafka.proxy.plan import CloseConnection
from fedkafka.view.model import ProxyInfo, ProxyRole

from .test_handlers import batch, produce_kio, view


class SilentBroker:
    """Accepts connections and reads requests, answers none (a broker stalled on replication, or hung)."""

    async def __aenter__(self) -> SilentBroker:
        self.received = 0
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader, writer):
        while await reader.read(1 << 16):
            self.received += 1
        writer.close()

    async def __aexit__(self, *_):
        self.server.close()


def _proxy(port: int) -> tuple[ProxyServer, Dispatcher]:
    server = ProxyServer(ProxyConfig(role=ProxyRole.PPROXY, host="127.0.0.1", port=9, advertised_host="p7",
                                     view_file=Path("unused.json")))
    server.state.me = ProxyInfo(7, "p7", 9092, ProxyRole.PPROXY)
    server.state.view = view()
    server.physical.set_clusters({c: f"127.0.0.1:{port}" for c in ("c1", "c2")})
    for cid, node in (("c1", 1), ("c2", 2)):
        info = server.physical.clusters[cid]
        info.brokers = {node: ("127.0.0.1", port)}
        info.leaders = {("phys", 0): node, ("phys", 1): node}
    dispatcher = Dispatcher(state=server.state, physical=server.physical, producer_ids=None, pool=server.pool)
    server._wrap_for_inflight(dispatcher)
    return server, dispatcher


def _frame(acks: int = -1) -> bytes:
    return codec.encode_request(produce_kio({0: batch()}, acks=acks), 11)[4:]


def _error(response: bytes) -> ErrorCode:
    _, body = codec.decode_response(codec.response_type(0, 9), response[4:])
    return body.responses[0].partition_responses[0].error_code


def test_a_frozen_view_is_acked_only_once_no_older_write_is_unanswered():
    """Old code: after its patience the drain returned, and the proxy acked the frozen view, with the write
    still out upstream: it could land after the controller read the seal. Now the drain closes the upstream
    connection the write is on, the client is told to retry, and only then the drain is over."""
    async def scenario():
        async with SilentBroker() as broker:
            server, dispatcher = _proxy(broker.port)
            pending = await dispatcher.start(_frame(), 0)  # routed under view 4
            await server.inflight.drain_before(5, 0.05)  # patience runs out: the connection is closed ...
            assert pending.done()  # ... and the client has its answer before the view counts as drained
            assert _error(pending.result()) == ErrorCode.request_timed_out
            assert server.inflight.older_than(5) == 0
            server.pool.close()

    asyncio.run(scenario())


def test_an_acks_zero_write_counts_as_in_flight_until_the_broker_answered():
    async def scenario():
        async with SilentBroker() as broker:
            server, dispatcher = _proxy(broker.port)
            pending = await dispatcher.start(_frame(acks=0), 0)
            assert server.inflight.older_than(5) == 1
            await server.inflight.drain_before(5, 0.05)
            # still no answer to the client; its write got none either (REQUEST_TIMED_OUT), so its connection is
            # closed, as a broker closes it after an acks=0 produce with an error
            assert pending.done() and isinstance(pending.result(), CloseConnection)
            server.pool.close()

    asyncio.run(scenario())


def test_a_write_routed_before_the_lease_ran_out_is_not_sent_after_it():
    """A produce waiting behind a barrier (here: its new leader is not known yet) was routed with a valid
    lease; when it is ready to go the lease has run out, so the core does not send it."""
    async def scenario():
        async with SilentBroker() as broker:
            server, dispatcher = _proxy(broker.port)
            loop = asyncio.get_running_loop()
            server.state.lease_deadline = loop.time() + 3600
            leaders = server.physical.clusters["c1"].leaders
            known = dict(leaders)
            leaders.clear()
            starting = asyncio.ensure_future(dispatcher.start(_frame(), 0))
            await asyncio.sleep(0)  # routed: it waits for the leader behind a barrier
            server.state.lease_deadline = loop.time() - 1
            leaders.update(known)
            assert _error(await (await starting)) == ErrorCode.request_timed_out
            assert broker.received == 0
            server.pool.close()

    asyncio.run(scenario())


def test_a_proxy_registering_again_drains_before_it_acks_the_current_view():
    """Its lease ran out, the controller answered 404; registering again it takes the current view (maybe a
    frozen one) and reports it applied. That is an ack like any other: a produce routed under the older view
    and still out (waiting behind a barrier, say) must be over first, or it could land after the seal."""
    import httpx

    from fedkafka.proxy.state import ProxyState
    from fedkafka.proxy.view_source import ControllerViewSource
    from fedkafka.view.model import View

    current = view()  # version 4

    def controller(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/heartbeat"):
            return httpx.Response(404, json={"detail": "register again"})
        if request.url.path == "/v1/proxies":
            return httpx.Response(200, json={"node_id": 7, "lease_ms": 10_000})
        return httpx.Response(200, json=current.to_dict())

    async def scenario():
        source = ControllerViewSource("http://controller", "t", "p7:9092", lambda *_: None)
        source.client = httpx.AsyncClient(transport=httpx.MockTransport(controller))
        state = ProxyState(view=View(version=3), me=ProxyInfo(7, "p7", 9092, ProxyRole.PPROXY), applied_version=3)
        drained = []

        async def drain(version: int) -> None:
            drained.append((version, state.applied_version))

        source._drain = drain  # what run() hands it
        await source._heartbeat_once(state)
        assert drained[:2] == [(3, 3), (4, 3)]  # its own view's older writes before registering, 4's before the ack
        assert state.applied_version == 4

    asyncio.run(scenario())


def _group_proxy(port: int) -> tuple[ProxyServer, Dispatcher]:
    """A proxy serving consumer groups (ProxyRole.BOTH) whose coordination cluster, c1, is the silent broker.
    (`_proxy`'s pproxy has no group handler: its OffsetCommit was answered UNSUPPORTED_VERSION at once.)"""
    server, _ = _proxy(port)
    server.state.me = ProxyInfo(7, "p7", 9092, ProxyRole.BOTH)
    server.state.view = dataclasses.replace(view(), coordination_cluster="c1")
    dispatcher = Dispatcher(state=server.state, physical=server.physical, producer_ids=None, pool=server.pool)
    dispatcher._advertised = {8: (2, 9), 42: (0, 2), 47: (0, 0)}  # what the clusters' ApiVersions would give
    server._wrap_for_inflight(dispatcher)
    return server, dispatcher


def _offset_commit():
    return build(request_type(8, 8), {
        "group_id": "g", "generation_id_or_member_epoch": 1, "member_id": "m", "group_instance_id": None,
        "topics": [{"name": "t", "partitions": [{"partition_index": 0, "committed_offset": 5,
                                                 "committed_leader_epoch": -1, "committed_metadata": None}]}]})


def _delete_groups():
    return build(request_type(42, 2), {"groups_names": ["g"]})


def _offset_delete():
    return build(request_type(47, 0), {"group_id": "g", "topics": [{"name": "t", "partitions": [
        {"partition_index": 0}]}]})


def _error_codes(request, answer: bytes) -> list[ErrorCode]:
    """Where the Java AdminClient (and a consumer, for OffsetCommit) reads the answer's errors."""
    key, version = request.__api_key__, type(request).__version__
    _, body = codec.decode_response(codec.response_type(key, version), answer[4:])
    if key == 8:
        return [p.error_code for t in body.topics for p in t.partitions]
    if key == 42:
        return [r.error_code for r in body.results]
    return [body.error_code]


async def _until_received(broker: SilentBroker) -> None:
    while not broker.received:
        await asyncio.sleep(0.001)


def _frozen_view_is_acked_only_after(request) -> list[ErrorCode]:
    """`request` routed under view 4 and out at the coordination cluster (a silent broker) when the frozen view 5
    arrives: the drain before its ack waits for it; its answer's error codes once its connection failed."""
    async def scenario():
        async with SilentBroker() as broker:
            server, dispatcher = _group_proxy(broker.port)
            # the connection's task: `start` waits for the coordinator lookup (a barrier) before it returns
            starting = asyncio.ensure_future(dispatcher.start(codec.encode_request(request, 11)[4:], 0))
            await asyncio.wait_for(_until_received(broker), 30)  # its coordinator lookup reached the old cluster
            server.state.view = dataclasses.replace(server.state.view, version=5, commits_frozen=True)
            drain = asyncio.ensure_future(server.inflight.drain_before(5))
            for _ in range(10):
                await asyncio.sleep(0)
            assert not drain.done(), "the frozen view was acked with the request still on its way to A"
            assert server.inflight.older_than(5) == 1
            server.pool.close()  # its connection fails: the client gets its (retriable) answer
            await asyncio.wait_for(drain, 30)
            assert starting.done()
            return _error_codes(request, await (await starting))

    return asyncio.run(scenario())


def test_an_offset_commit_counts_as_in_flight_until_answered():
    """A coordination move copies the offsets once every consume proxy acked the view that freezes commits; a
    commit forwarded under an older view and still out could land on the old coordinator after the copy (lost).
    Old code counted produce requests only: the commit was not waited for."""
    assert _frozen_view_is_acked_only_after(_offset_commit()) == [ErrorCode.coordinator_not_available]


def test_a_delete_groups_in_flight_delays_the_ack_of_the_frozen_view():
    """docs/DESIGN.md §10.1 step 3: a DeleteGroups forwarded before the freeze and applied on A after the copy read
    the group's offsets would be acknowledged, then undone by the switch (the copied group is on B). Old code
    counted Produce and OffsetCommit only: the view was acked at once."""
    assert _frozen_view_is_acked_only_after(_delete_groups()) == [ErrorCode.coordinator_not_available]


def test_an_offset_delete_in_flight_delays_the_ack_of_the_frozen_view():
    """The same for OffsetDelete: the deleted offsets would come back on B and the group resume at them."""
    assert _frozen_view_is_acked_only_after(_offset_delete()) == [ErrorCode.coordinator_not_available]


def test_under_the_frozen_view_group_offset_writes_are_answered_retriably_and_reach_no_broker():
    """The whole core, not only the handler: nothing of an OffsetCommit, DeleteGroups or OffsetDelete reaches the
    old coordination cluster while a move copies the offsets, and each is answered with the error the Java
    AdminClient (and consumer) retries."""
    async def scenario():
        async with SilentBroker() as broker:
            server, dispatcher = _group_proxy(broker.port)
            server.state.view = dataclasses.replace(server.state.view, version=5, commits_frozen=True)
            answers = {}
            for request in (_offset_commit(), _delete_groups(), _offset_delete()):
                answer = await (await dispatcher.start(codec.encode_request(request, 11)[4:], 0))
                answers[request.__api_key__] = _error_codes(request, answer)
            await asyncio.sleep(0)
            assert broker.received == 0
            server.pool.close()
            return answers

    retry = [ErrorCode.coordinator_load_in_progress]
    assert asyncio.run(scenario()) == {8: retry, 42: retry, 47: retry}


def test_a_consume_only_proxy_refuses_produce_without_closing_the_connection():
    """A cproxy answers Produce with kio's decode (consume_side_produce has no frame walk of its own): the core's
    produce deadline must read that request too. Broken once: the deadline read only the walked frame's
    `timeout_ms`, and every Produce to a cproxy closed the client's connection as an internal error."""
    async def scenario():
        server = ProxyServer(ProxyConfig(role=ProxyRole.CPROXY, host="127.0.0.1", port=9, advertised_host="p8",
                                         view_file=Path("unused.json")))
        server.state.me = ProxyInfo(8, "p8", 9092, ProxyRole.CPROXY)
        server.state.view = view()
        dispatcher = Dispatcher(state=server.state, physical=server.physical, producer_ids=None, pool=server.pool)
        dispatcher._advertised = {0: (3, 12)}  # what the clusters' ApiVersions would give
        pending = await dispatcher.start(_frame(), 0)
        assert _error(await pending) == ErrorCode.not_leader_or_follower
        server.pool.close()

    asyncio.run(scenario())


def test_an_acks_zero_produce_to_a_consume_only_proxy_closes_and_counts_its_errors():
    """The core turns a handler's CloseConnection into a Close in the answer's place (the connection writes the
    answers before it, then closes) and counts the errors of the answer the client did not get, as a broker
    records them when it closes the connection. Old code: no answer, nothing counted, the connection kept."""
    from fedkafka.proxy.core.observe import RequestMetrics

    async def scenario():
        server = ProxyServer(ProxyConfig(role=ProxyRole.CPROXY, host="127.0.0.1", port=9, advertised_host="p8",
                                         view_file=Path("unused.json")))
        server.state.me = ProxyInfo(8, "p8", 9092, ProxyRole.CPROXY)
        server.state.view = view()
        metrics = RequestMetrics()
        dispatcher = Dispatcher(state=server.state, physical=server.physical, producer_ids=None, pool=server.pool,
                                observer=metrics)
        dispatcher._advertised = {0: (3, 12)}
        closed = await (await dispatcher.start(_frame(acks=0), 0))
        assert isinstance(closed, CloseConnection) and "consume-only" in closed.reason
        assert metrics._series[(0, 9)].errors == {ErrorCode.not_leader_or_follower: 1}
        server.pool.close()

    asyncio.run(scenario())
