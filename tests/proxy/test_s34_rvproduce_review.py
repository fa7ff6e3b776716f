"""Review s34-rvproduce of the produce path (handlers/produce.py, core/produce_lane.py, core/dispatch.py): each
finding's test failed for its reason before its fix (xfail(strict=True) until branch s34-fixrvproduce); the tests
after a finding's check the fix's other sides.

The broker stand-in and the proxy are test_produce_lane's (a real Dispatcher, upstream pool and PhysicalClusters on
loopback)."""

from __future__ import annotations

import asyncio
import datetime

import pytest
from kio.schema.errors import ErrorCode

from fedkafka.protocol import codec
from fedkafka.protocol import records as rec
from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type
from fedkafka.proxy.core.dispatch import ProtocolViolation
from fedkafka.proxy.core.producer_ids import ProducerIdTable, StaticIdBlocks
from fedkafka.proxy.core.server import ProxyConfig, ProxyServer
from fedkafka.proxy.handlers import produce as produce_handler
from fedkafka.view.model import ProxyRole
from proxy.test_produce_lane import Broker, answers_of, ask, batch, frame, proxy, run, view

FOLLOWER_LAG_MS = 1_000  # how long the stand-in's followers take to fetch a write


class LaggingReplicas(Broker):
    """A leader whose followers fetch a write FOLLOWER_LAG_MS after it is appended, answering as Kafka's
    ReplicaManager.appendRecords does: every batch is appended to the leader's log at once (`log`); acks=0 and acks=1
    are answered at once (the request's timeout is not read: no DelayedProduce for them); acks=all waits for the
    followers up to the request's timeout_ms, and answers REQUEST_TIMED_OUT, the batch left appended, when they take
    longer."""

    def __init__(self) -> None:
        super().__init__(self._answer)
        self.log: list[bytes] = []

    def _answer(self, request: rec.ProduceRequestFrame) -> list:
        out = []
        for t in request.topic_data:
            answers = []
            for p in t.partition_data:
                offset = len(self.log)
                self.log.append(bytes(p.records))  # appended to the leader's log before any wait
                if request.acks == -1 and request.timeout_ms < FOLLOWER_LAG_MS:
                    answers.append(rec.ProducePartitionAnswer(p.index, ErrorCode.request_timed_out))
                else:
                    answers.append(rec.ProducePartitionAnswer(p.index, 0, offset, -1, 0))
            out.append((t.name, answers))
        return out


# Finding 1 (duplicated, non-idempotent acks=1 producers with a short request timeout). Kafka reads a Produce
# request's timeout only for acks=all (ReplicaManager.appendRecords creates a DelayedProduce only then): for acks=1
# it is ignored, and clients document it so (Sarama's Producer.Timeout, franz-go's ProduceRequestTimeout: "only
# relevant for acks=all"; KafkaJS's send({timeout})). The proxy upgrades acks=1 to acks=all (UPSTREAM_ACKS) but
# keeps the client's timeout as the replication wait (`_forward` and `lane_upstream`: min(request.timeout_ms, 30 s)).
# With followers lagging past that timeout the broker appends the batch and answers REQUEST_TIMED_OUT; the client
# retries and the record is appended again, each retry once more, and after its retries the client reports a failure
# for records that are in the log, several times: a broker answering acks=1 would have acked the first at once. The
# same timeout also becomes the proxy's send deadline for acks=1 (`dispatch._send_deadline`): a request waiting behind
# a barrier (a leader wait, a producer id) past it is refused REQUEST_TIMED_OUT unsent.
# Suggested fix: for a client's acks 0 or 1 (the timeout is not theirs to bound replication), send upstream with the
# cap (MAX_UPSTREAM_PRODUCE_TIMEOUT_MS) or at least a floor well above a follower's fetch round (replica.lag.time.max
# is 30 s), and take the send deadline from something other than that field; say in DESIGN §4.1 what acks=1 clients
# lose.
@pytest.mark.parametrize("lane", [True, False])
def test_an_acks_one_produce_with_a_short_timeout_is_acked_once_as_kafka_acks_it(lane):
    async def scenario():
        broker = await LaggingReplicas().start()
        d = await proxy(view(), broker, lane=lane)
        try:
            request = frame({0: batch(3)}, acks=1, timeout_ms=200)  # 200 ms: plenty for an acks=1 write
            first = answers_of(await ask(d, request))[0]
            if first[0] != 0:  # the client retries a retriable error, as every client does
                answers_of(await ask(d, request))
            return first, len(broker.log)
        finally:
            broker.close()

    first, appended = run(scenario)
    # what a broker answers acks=1: written at once, once
    assert (first[0], appended) == (0, 1), f"answered {ErrorCode(first[0]).name}, appended {appended} times"


@pytest.mark.parametrize("lane", [True, False])
def test_an_acks_all_produce_keeps_its_own_timeout_upstream_and_an_acks_one_gets_the_cap(lane):
    """The fix's other side: an acks=all client's timeout is its own replication wait, sent as it is (capped); the
    stand-in times it out, as a broker does. acks=1 goes up with the cap, MAX_UPSTREAM_PRODUCE_TIMEOUT_MS."""
    async def scenario():
        broker = await LaggingReplicas().start()
        d = await proxy(view(), broker, lane=lane)
        try:
            all_ = answers_of(await ask(d, frame({0: batch()}, acks=-1, timeout_ms=200)))[0]
            await ask(d, frame({0: batch()}, acks=1, timeout_ms=200))
            return all_[0], [rec.read_produce_request(f).timeout_ms for f in broker.frames]
        finally:
            broker.close()

    code, sent = run(scenario)
    assert code == ErrorCode.request_timed_out
    assert sent == [200, produce_handler.MAX_UPSTREAM_PRODUCE_TIMEOUT_MS]

# Finding 2 (stuck producer: every new idempotent producer, on a proxy run with --view-file). Without a controller the
# proxy takes one random block of 2**20 logical producer ids at its start (server.ProxyServer.__init__:
# `add_block(random..., 1 << 20)`) and its ProducerIdTable has no `fetch_block`, so `_schedule_refill` does nothing:
# after 1,048,576 InitProducerId answers (a client creating a producer per task or request; Java producers are
# idempotent by default since Kafka 3.0, one InitProducerId each) `next_logical` is None for good and every
# InitProducerId is answered COORDINATOR_NOT_AVAILABLE (retriable: clients retry it until they give up) until the
# process restarts. Suggested fix: in static mode give the table a `fetch_block` that draws another random block
# (the ids never reach a broker, server.py says so), or let `next_logical` draw one itself when it has no source.
def test_a_static_view_proxy_keeps_handing_out_producer_ids_past_its_first_block(tmp_path):
    view_file = tmp_path / "view.json"
    view_file.write_text("{}")

    async def scenario():
        server = ProxyServer(ProxyConfig(role=ProxyRole.PPROXY, host="127.0.0.1", port=0,
                                         advertised_host="127.0.0.1", view_file=view_file))
        ids = server.producer_ids
        handed_out = 0
        while ids.next_logical() is not None:  # InitProducerId answers these (handlers/init_producer_id.py)
            handed_out += 1
        for _ in range(20):  # give any refill it schedules its turns
            await asyncio.sleep(0.01)
        return handed_out, ids.next_logical()

    handed_out, after = asyncio.run(scenario())
    assert handed_out == 1 << 20
    assert after is not None, "no producer id after the first block: InitProducerId is COORDINATOR_NOT_AVAILABLE"


# Finding 3 (stuck producer; and an acks=0 produce answered). The advertised table is the intersection of every
# cluster's ApiVersions (dispatch.Dispatcher.advertised), read again at each metadata refresh (physical.learn sets
# `changed`), so it can narrow under connections that negotiated the wider one: a cluster added with an older Kafka
# (its first refresh lowers Produce's max for every client already connected), a broker of an older version read
# during a rolling upgrade or downgrade. A client keeps its connection's negotiated version (it asks ApiVersions
# once per connection); a Produce at a version no longer advertised is answered by `Dispatcher._unsupported` with
# `error_response(ProduceResponse, UNSUPPORTED_VERSION)`: a ProduceResponse with no topic at all, since Produce's
# answer has no top-level error code. The client finds no answer for its partitions (Java's Sender completes only the
# partitions a response names: the batches expire after delivery.timeout.ms; librdkafka refuses a Produce answer
# without its one topic as a parse error), its connection stays up so it never asks ApiVersions again, and every
# later Produce on it goes the same way: the producer is stuck until something else breaks the connection. An acks=0
# Produce is answered too (the client reads an answer it did not ask for, with the next request's correlation id
# slot). A Kafka broker never narrows its versions under a live connection, and closes the connection on a request
# version it does not take (its request parsing fails).
# Suggested fix: close the client's connection (ProtocolViolation) on a Produce (and any request but ApiVersions) at a
# version no longer advertised, so the client reconnects and negotiates again, as from a broker; or answer Produce
# per partition (UNSUPPORTED_VERSION for each, nothing for acks=0, then close).
@pytest.mark.parametrize("acks", [-1, 0])
def test_a_produce_at_a_version_no_longer_advertised_closes_the_connection_or_answers_each_partition(acks):
    async def scenario():
        broker = await Broker().start()
        d = await proxy(view(), broker)
        try:
            first = await ask(d, frame({0: batch()}, version=12, acks=-1))  # negotiated while c1 and c2 took v12
            assert first is not None and rec.read_produce_response(first[4:], 12)[0][0] == "t"
            for info in d.physical.clusters.values():  # a refresh read a broker of an older Kafka (Produce up to v9)
                info.api_versions = {0: (0, 9), 1: (0, 16), 18: (0, 3)}
            d.physical.changed.set()
            try:
                answer = await ask(d, frame({0: batch(), 1: batch()}, version=12, acks=acks))
            except ProtocolViolation:
                return "closed"
            return answer
        finally:
            broker.close()

    answer = run(scenario)
    if answer == "closed":
        return  # as a broker does: the client reconnects and asks ApiVersions again
    if acks == 0:
        assert answer is None, "an acks=0 produce was answered"
    assert answer is not None
    answered = {(name, p.index) for name, parts in rec.read_produce_response(answer[4:], 12) for p in parts}
    assert answered == {("t", 0), ("t", 1)}, f"the client's partitions got no answer: {answered or 'none'}"


def test_a_static_view_proxy_s_next_blocks_hand_out_no_id_twice():
    """Finding 2's fix: each next block follows the last (a fresh random one could overlap ids still in use)."""
    async def scenario():
        blocks = StaticIdBlocks(size=150)
        ids = ProducerIdTable(blocks.fetch)
        ids.add_block(*blocks.take())
        handed_out: list[int] = []
        for _ in range(2000):
            pid = ids.next_logical()
            if pid is not None:
                handed_out.append(pid)
            await asyncio.sleep(0)  # the refill's turn
        return handed_out

    handed_out = asyncio.run(scenario())
    assert len(handed_out) == 2000 and len(set(handed_out)) == 2000


def test_a_version_never_advertised_is_answered_unsupported_version_and_a_narrowed_one_of_any_api_closes():
    """Finding 3's fix closes only on a version this process once advertised; one it never did (a client that asked
    no ApiVersions) is answered UNSUPPORTED_VERSION as before (tests/proxy/test_bad_input.py). ApiVersions itself is
    answered as v0 with the table, as Kafka does."""
    async def scenario():
        broker = await Broker().start()
        d = await proxy(view(), broker)
        try:
            for info in d.physical.clusters.values():  # clusters of an older Kafka from the start
                info.api_versions = {0: (0, 9), 1: (0, 16), 18: (0, 3), 22: (0, 5)}
            d.physical.changed.set()
            never = await ask(d, frame({0: batch()}, version=12))  # Produce v12: never advertised here
            init = build(request_type(22, 4), {"transactional_id": None, "producer_id": -1, "producer_epoch": -1,
                                               "transaction_timeout": datetime.timedelta(seconds=60)})
            assert await ask(d, codec.encode_request(init, 5, "app")[4:]) is not None
            for info in d.physical.clusters.values():  # InitProducerId narrowed to v3
                info.api_versions = {0: (0, 9), 1: (0, 16), 18: (0, 3), 22: (0, 3)}
            d.physical.changed.set()
            versions_answer = await ask(d, codec.encode_request(
                build(request_type(18, 4), {"client_software_name": "t", "client_software_version": "1"}), 6)[4:])
            try:
                await ask(d, codec.encode_request(init, 7, "app")[4:])
            except ProtocolViolation as e:
                return never, versions_answer, str(e)
            return never, versions_answer, None
        finally:
            broker.close()

    never, versions_answer, closed = run(scenario)
    assert never is not None and not rec.read_produce_response(never[4:], 12)  # Kafka's UNSUPPORTED_VERSION body
    _, body = codec.decode_response(codec.response_type(18, 0), versions_answer[4:])
    assert body.error_code == ErrorCode.unsupported_version  # ApiVersions v4 narrowed to v3: answered, as v0
    assert closed is not None and "no longer advertised" in closed
