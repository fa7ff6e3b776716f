"""A produce is never sent upstream after the client's own request timeout (docs/DESIGN.md §4.2).

Routing can wait inside the proxy (a barrier, a leader wait, producer id retries). A client whose request
timed out meanwhile has moved on: it sends its next batches, or a retry through another proxy. Written
then, the old batch would land after them (a reordered key) or twice (a duplicate the broker cannot see).
"""

from __future__ import annotations

import asyncio
import datetime

from consume.test_handlers_unit import VIEW
from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData
from kio.static.primitive import i32Timedelta

from fedkafka.protocol import codec
from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type
from fedkafka.proxy.core.dispatch import Dispatcher, _send_deadline
from fedkafka.proxy.core.upstream import UpstreamPool
from fedkafka.proxy.handlers import produce
from fedkafka.proxy.plan import AnyBroker, Broker, Call, UpstreamError


def _produce(timeout_ms: int, acks: int = -1) -> ProduceRequest:
    return ProduceRequest(transactional_id=None, acks=acks,
                          timeout=i32Timedelta.parse(datetime.timedelta(milliseconds=timeout_ms)),
                          topic_data=(TopicProduceData(name="t", partition_data=(
                              PartitionProduceData(index=0, records=b""),)),))


class _State:
    view = VIEW  # its coordination cluster c1, the group offset calls' target

    def lease_valid(self) -> bool:
        return True


class _Physical:
    def __init__(self, port: int):
        self.port = port

    def address(self, cluster, node):
        return "127.0.0.1", self.port

    def tracked(self, cluster):
        return None


async def _listening_broker() -> tuple[asyncio.Server, int, bytearray]:
    """A TCP endpoint that records every byte it is sent and never answers."""
    received = bytearray()

    async def record(reader, writer):
        while chunk := await reader.read(65536):
            received.extend(chunk)

    server = await asyncio.start_server(record, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], received


def _dispatcher(port: int) -> Dispatcher:
    d = Dispatcher.__new__(Dispatcher)
    d.state, d.physical, d.pool = _State(), _Physical(port), UpstreamPool()
    return d


def test_a_produce_whose_client_timeout_passed_is_answered_without_being_sent():
    async def scenario():
        server, port, received = await _listening_broker()
        d = _dispatcher(port)
        try:
            call = Call(Broker("c1", 1), _produce(30_000))
            late = asyncio.get_running_loop().time() - 0.001
            (result,) = await d._send([call], slot=0, deadline=late)
            assert isinstance(result, UpstreamError) and "timeout passed" in result.reason
            await asyncio.sleep(0.2)
            assert received == b""  # nothing reached the broker

            in_time = asyncio.get_running_loop().time() + 30
            (future,) = await d._send([call], slot=0, deadline=in_time)
            assert not isinstance(future, UpstreamError)
            for _ in range(50):
                if received:
                    break
                await asyncio.sleep(0.02)
            assert len(received) > 4  # the same request, in time, is written to the broker
            future.cancel()
        finally:
            d.pool.close()
            server.close()

    asyncio.run(scenario())


def test_the_deadline_is_the_request_timeout_less_a_margin_and_only_for_produce():
    requests = {ms: produce.read_request(codec.encode_request(_produce(ms), 1)[4:]) for ms in (30_000, 500, 0, -1)}

    async def scenario():
        loop = asyncio.get_running_loop()
        loop.time = lambda: 1000.0  # the deadline is read off the loop's clock: held still, it is exact
        try:
            assert _send_deadline(0, requests[30_000]) == 1000.0 + 29.0  # 30 s less 1 s for the way here
            assert _send_deadline(0, requests[500]) == 1000.0 + 0.45  # a short timeout keeps 90% of it
            assert _send_deadline(0, requests[0]) is None  # timeout 0: no replication wait, not a deadline
            assert _send_deadline(0, requests[-1]) is None
            assert _send_deadline(1, requests[30_000]) is None  # not a produce: no deadline
        finally:
            del loop.time

    asyncio.run(scenario())


def test_an_acks_zero_produce_has_no_deadline_and_an_acks_one_produce_keeps_its_field_s():
    """acks=0: the client awaits no answer and never retries, so a batch refused unsent past its timeout field would be
    dropped without a word (it used to be); sent late, it is written once. acks=1: Kafka ignores the field for the
    replication wait (`produce.upstream_timeout_ms`), but Java and librdkafka time their request out at it, so it
    still bounds the send (review s34-rvproduce finding 1)."""
    def read(ms: int, acks: int):
        return produce.read_request(codec.encode_request(_produce(ms, acks), 1)[4:])

    async def scenario():
        loop = asyncio.get_running_loop()
        loop.time = lambda: 1000.0
        try:
            assert _send_deadline(0, read(500, 0)) is None
            assert _send_deadline(0, _produce(500, 0)) is None  # kio's request (a cproxy's), alike
            assert _send_deadline(0, read(500, 1)) == 1000.0 + 0.45
        finally:
            del loop.time

    asyncio.run(scenario())


class _LeaseRunsOutWhileConnecting:
    """A pool whose connection takes a login to open (TLS and SASL: seconds), during which the lease runs out."""

    def __init__(self, state, real: UpstreamPool):
        self.state, self.real = state, real

    def ready(self, host, port, slot):
        return None  # no connection open yet: get() opens one

    async def get(self, host, port, slot, cluster=""):
        conn = await self.real.get(host, port, slot, cluster)
        self.state.valid = False
        return conn

    def close(self):
        self.real.close()


def _dispatcher_whose_lease_runs_out_while_connecting(port: int) -> Dispatcher:
    """A dispatcher to `port` whose lease is valid until its pool has opened the connection."""
    d = _dispatcher(port)
    d.state = _State()
    d.state.valid = True
    d.state.lease_valid = lambda: d.state.valid
    d.pool = _LeaseRunsOutWhileConnecting(d.state, d.pool)
    return d


def test_a_produce_whose_lease_ran_out_while_its_connection_opened_is_not_sent():
    async def scenario():
        server, port, received = await _listening_broker()
        d = _dispatcher_whose_lease_runs_out_while_connecting(port)
        try:
            in_time = asyncio.get_running_loop().time() + 30
            (result,) = await d._send([Call(Broker("c1", 1), _produce(30_000))], slot=0, deadline=in_time)
            assert isinstance(result, UpstreamError) and "lease expired" in result.reason, result
            await asyncio.sleep(0.2)
            assert received == b""  # checked before the connection was found, and again once it was
        finally:
            d.pool.close()
            server.close()

    asyncio.run(scenario())


def test_a_group_offset_write_whose_fence_ran_out_while_its_connection_opened_is_not_sent():
    """The groups handler reads the fence when the coordinator lookup answers (docs/DESIGN.md §4.9 F2); a new
    connection to the coordinator may take its login (seconds) after that. A commit, a DeleteGroups or an OffsetDelete
    written past the fence could reach a coordination cluster a move has left after the move's copy (§10.1): checked
    again once the connection is there, as produce is. The old code wrote them."""
    writes = [build(request_type(8, 8), {"group_id": "g", "generation_id_or_member_epoch": 1, "member_id": "m",
                                         "group_instance_id": None, "topics": [{"name": "__fedkafka_shadow_log",
                                                                                "partitions": [{
                                                                                    "partition_index": 0,
                                                                                    "committed_offset": 5,
                                                                                    "committed_leader_epoch": -1,
                                                                                    "committed_metadata": None}]}]}),
              build(request_type(42, 2), {"groups_names": ["g"]}),
              build(request_type(47, 0), {"group_id": "g", "topics": [
                  {"name": "__fedkafka_shadow_log", "partitions": [{"partition_index": 0}]}]})]

    async def scenario(request):
        server, port, received = await _listening_broker()
        d = _dispatcher_whose_lease_runs_out_while_connecting(port)
        d.observer = _Refusals()
        try:
            (result,) = await d._send([Call(Broker("c1", 1), request)], slot=0)
            assert isinstance(result, UpstreamError) and "fence ran out" in result.reason, result
            await asyncio.sleep(0.2)
            assert received == b"", type(request).__name__  # nothing reached the coordinator
            assert d.observer.seen == [("lease", "c1")]
        finally:
            d.pool.close()
            server.close()

    for request in writes:
        asyncio.run(scenario(request))


class _Refusals:
    def __init__(self):
        self.seen: list[tuple] = []

    def refused(self, reason, name, partition, message, client_id=None):
        self.seen.append((reason, name))


class _FirstBrokerFailsSlowly:
    """Any-broker rotation: the first broker's connect fails after the lease ran out (a login that timed out),
    the second broker's connection is already open."""

    def __init__(self, state, real: UpstreamPool, dead_port: int):
        self.state, self.real, self.dead_port = state, real, dead_port

    def ready(self, host, port, slot):
        return None if port == self.dead_port else self.real.ready(host, port, slot)

    async def get(self, host, port, slot, cluster=""):
        if port == self.dead_port:
            self.state.valid = False
            raise ConnectionRefusedError("login timed out")
        return await self.real.get(host, port, slot, cluster)

    def close(self):
        self.real.close()


def test_a_produce_to_any_broker_is_checked_again_after_a_broker_that_failed():
    async def scenario():
        server, port, received = await _listening_broker()
        d = _dispatcher(port)
        await d.pool.get("127.0.0.1", port, 0)  # the second broker's connection is open before the produce
        d.state = _State()
        d.state.valid = True
        d.state.lease_valid = lambda: d.state.valid
        d.physical.candidates = lambda cluster: [("127.0.0.1", 1), ("127.0.0.1", port)]
        d.pool = _FirstBrokerFailsSlowly(d.state, d.pool, dead_port=1)
        try:
            in_time = asyncio.get_running_loop().time() + 30
            (result,) = await d._send([Call(AnyBroker("c1"), _produce(30_000))], slot=0, deadline=in_time)
            assert isinstance(result, UpstreamError) and "lease expired" in result.reason, result
            await asyncio.sleep(0.2)
            assert received == b""  # the open connection of the next broker was not used without a new check
        finally:
            d.pool.close()
            server.close()

    asyncio.run(scenario())
