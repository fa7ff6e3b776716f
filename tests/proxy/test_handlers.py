"""Handlers as pure functions: (context, request) -> plan -> (results) -> response, no sockets."""

from __future__ import annotations

import datetime
import logging
from dataclasses import replace

from aiokafka.record.default_records import DefaultRecordBatchBuilder
from kio.schema.errors import ErrorCode
from kio.schema.init_producer_id.v4.request import InitProducerIdRequest
from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData
from kio.static.primitive import i32Timedelta

from fedkafka.fencing import MAX_PRODUCE_WAIT_S
from fedkafka.protocol import records as rec
from fedkafka.protocol.build import build
from fedkafka.protocol.codec import encode_request, encode_request_chunks, encode_response, response_type
from fedkafka.protocol.records import ProduceRequestFrame
from fedkafka.proxy.core.producer_ids import ProducerIdTable
from fedkafka.proxy.handlers import consume_side_produce, init_producer_id, metadata, produce
from fedkafka.proxy.plan import NO_RESPONSE, AnyBroker, Broker, CloseConnection, Context, Plan, UpstreamError
from fedkafka.view.model import (
    Cluster,
    LogicalTopic,
    PartitionChain,
    ProxyInfo,
    ProxyRole,
    Segment,
    View,
)
from fedkafka.view.offsets import resolve_fetch


class FakePhysical:
    replication_version = 0

    def __init__(self, down=()):
        self.down = set(down)
        self.refreshed: list[str] = []

    def replication(self, cluster, topic, partition):
        return None  # no physical partition's replicas known: Metadata lists each leader alone

    def leader(self, cluster, topic, partition):
        return 1 if cluster == "c1" else 2

    def reachable(self, cluster):
        return cluster not in self.down

    def request_refresh(self, cluster):
        self.refreshed.append(cluster)


def view(frozen_p: int | None = None) -> View:
    chains = [PartitionChain(segments=(Segment("c1", "phys", p, 0, None, 0),), leader_epoch=3, frozen=p == frozen_p)
              for p in range(2)]
    chains.append(PartitionChain(segments=(Segment("c1", "old", 0, 0, 50, 0), Segment("c2", "phys", 0, 10, None, 50))))
    return View(version=4, clusters={"c1": Cluster("c1", "h1:1"), "c2": Cluster("c2", "h2:2")},
                topics={"t": LogicalTopic("t", "0" * 31 + "1", tuple(chains))},
                proxies=(ProxyInfo(7, "p7", 9092, ProxyRole.PPROXY), ProxyInfo(8, "p8", 9092, ProxyRole.CPROXY)))


def ctx(v: View | None = None, **kw) -> Context:
    ids = ProducerIdTable()
    ids.add_block(1000, 10)
    base = dict(view=v or view(), me=ProxyInfo(7, "p7", 9092, ProxyRole.PPROXY), advertised={},
                physical=FakePhysical(), producer_ids=ids)
    return Context(**{**base, **kw})


def batch(producer_id=-1, epoch=-1, seq=-1) -> bytes:
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=producer_id,
                                  producer_epoch=epoch, base_sequence=seq, batch_size=1 << 20)
    b.append(0, timestamp=None, key=b"k", value=b"v", headers=[])
    return bytes(b.build())


def produce_kio(parts: dict[int, bytes], topic="t", acks=-1, txn=None) -> ProduceRequest:
    return ProduceRequest(transactional_id=txn, acks=acks, timeout=i32Timedelta.parse(datetime.timedelta(seconds=5)),
                          topic_data=(TopicProduceData(name=topic, partition_data=tuple(
                              PartitionProduceData(index=p, records=r) for p, r in parts.items())),))


def produce_req(parts: dict[int, bytes], topic="t", acks=-1, txn=None) -> ProduceRequestFrame:
    """A Produce v9 request as the core hands it to the handler: written by kio, read by the handler's own
    frame walk (`produce.read_request`)."""
    return produce.read_request(encode_request(produce_kio(parts, topic, acks, txn), 1, "test")[4:])


def broker_answer(responses: list[dict]) -> tuple:
    """A broker's ProduceResponse v9 as the core hands it to the handler: written by kio, read by the handler's
    own reader (`UpstreamProduce.read_response`)."""
    written = encode_response(build(response_type(0, 9), {"responses": responses}), 1)
    return produce.UpstreamProduce(9, 1000, ()).read_response(written[4:])


def upstream_ok(plan: Plan, base_offsets: dict[tuple[str, str, int], int]) -> list:
    """Answer each call as its broker would, with a base offset per physical (cluster, topic, partition)."""
    out = []
    for call in plan.calls:
        c = call.target.cluster
        out.append(broker_answer([
            {"name": t.name, "partition_responses": [
                {"index": pd.index, "error_code": ErrorCode.none, "base_offset": base_offsets[(c, t.name, pd.index)],
                 "log_start_offset": 0} for pd in t.partition_data]} for t in call.request.topic_data]))
    return out


def by_partition(resp) -> dict[int, tuple]:
    return {pr.index: (pr.error_code, pr.base_offset) for t in resp.responses for pr in t.partition_responses}


def test_metadata_lists_pool_proxies_and_logical_partitions():
    resp = metadata.handle(ctx(), None, MetadataRequest(topics=(
        MetadataRequestTopic(topic_id=None, name="t"), MetadataRequestTopic(topic_id=None, name="nope")),
        allow_auto_topic_creation=True, include_topic_authorized_operations=False))
    assert sorted(b.node_id for b in resp.brokers) == [7, 8]
    t, missing = resp.topics
    assert missing.error_code == ErrorCode.unknown_topic_or_partition  # no auto-create
    assert [p.partition_index for p in t.partitions] == [0, 1, 2]
    assert {p.leader_id for p in t.partitions} == {7}  # only produce-side proxies lead for a pproxy
    assert t.partitions[0].leader_epoch == 3


def _drained_view() -> View:
    """Proxy 7 drained (docs/DESIGN.md §4.11): not among the view's proxies, named draining; 9 leads instead."""
    v = view()
    return replace(v, proxies=(ProxyInfo(9, "p9", 9092, ProxyRole.PPROXY), *v.proxies[1:]), draining=(7,))


def test_a_draining_proxy_names_only_the_others_and_refuses_produce_before_sending():
    resp = metadata.handle(ctx(_drained_view()), None, MetadataRequest(topics=(
        MetadataRequestTopic(topic_id=None, name="t"),), allow_auto_topic_creation=False,
        include_topic_authorized_operations=False))
    assert sorted(b.node_id for b in resp.brokers) == [8, 9]  # it used to list itself always
    assert {p.leader_id for p in resp.topics[0].partitions} == {9}
    refusals = []
    answer = produce.handle(ctx(_drained_view(), on_refusal=lambda *a: refusals.append(a[0])), None,
                            produce_req({0: batch(), 2: batch()}))
    got = by_partition(answer)  # answered at once: nothing was sent upstream
    assert got[0][0] == got[2][0] == ErrorCode.not_leader_or_follower and got[0][0].retriable
    assert refusals == ["draining", "draining"]


def test_produce_splits_routes_and_translates():
    c = ctx()
    plan = produce.handle(c, None, produce_req({0: batch(), 1: batch(), 2: batch()}))
    targets = {call.target: call for call in plan.calls}
    assert set(targets) == {Broker("c1", 1), Broker("c2", 2)}
    c1_parts = {(t.name, pd.index) for t in targets[Broker("c1", 1)].request.topic_data for pd in t.partition_data}
    assert c1_parts == {("phys", 0), ("phys", 1)}  # nothing for c2's partition went to c1
    # logical p2 lives on c2/phys/0 whose segment starts at physical 10 = logical 50
    resp = plan.finish(upstream_ok(plan, {("c1", "phys", 0): 5, ("c1", "phys", 1): 0, ("c2", "phys", 0): 12}))
    assert by_partition(resp) == {0: (ErrorCode.none, 5), 1: (ErrorCode.none, 0), 2: (ErrorCode.none, 52)}


def test_a_write_below_the_active_segment_s_start_is_refused_not_acked_at_an_older_segment_s_offset():
    """p2: c1/old/0 sealed at logical 0..49, then c2/phys/0 from physical 10. Its physical topic created again empty
    (a lost disk) takes a write at 3: acked, that is logical 43, the sealed segment's on c1, where a reader looks for
    it (DESIGN §4.5, §9.3). It is refused (retriable) and counted; the other partitions are answered as usual."""
    v = view()
    chain = v.topics["t"].partitions[2]
    refusals: list[tuple] = []
    c = ctx(v, on_refusal=lambda *a: refusals.append(a))
    plan = produce.handle(c, None, produce_req({0: batch(), 2: batch()}))
    resp = plan.finish(upstream_ok(plan, {("c1", "phys", 0): 4, ("c2", "phys", 0): 3}))
    code, offset = by_partition(resp)[2]
    assert resolve_fetch(chain, 43).segment == chain.segments[0]  # where logical 43 is read
    assert (code, offset) == (ErrorCode.not_leader_or_follower, -1)
    assert by_partition(resp)[0] == (0, 4)
    assert [(r[0], r[1], r[2]) for r in refusals] == [(produce.BELOW_SEGMENT, "t", 2)]
    plan = produce.handle(c, None, produce_req({2: batch()}))
    assert by_partition(plan.finish(upstream_ok(plan, {("c2", "phys", 0): 10})))[2] == (0, 50)  # its start: acked


def test_produce_refusals_are_retriable_and_per_partition():
    c = ctx(view(frozen_p=1), physical=FakePhysical(down={"c2"}))
    plan = produce.handle(c, None, produce_req({0: batch(), 1: batch(), 2: batch(), 9: batch()}))
    assert [call.target for call in plan.calls] == [Broker("c1", 1)]
    resp = plan.finish(upstream_ok(plan, {("c1", "phys", 0): 0}))
    got = by_partition(resp)
    assert got[0] == (ErrorCode.none, 0)
    assert got[1][0] == ErrorCode.not_leader_or_follower  # frozen
    assert got[2][0] == ErrorCode.not_leader_or_follower and got[2][0].retriable  # cluster down
    assert got[9][0] == ErrorCode.unknown_topic_or_partition


def test_lost_upstream_fails_only_its_partitions():
    c = ctx()
    plan = produce.handle(c, None, produce_req({0: batch(), 2: batch()}))
    results = [UpstreamError("c2", "gone") if call.target.cluster == "c2" else upstream_ok(Plan([call], None),
               {("c1", "phys", 0): 3})[0] for call in plan.calls]
    got = by_partition(plan.finish(results))
    assert got[0] == (ErrorCode.none, 3)
    assert got[2][0] == ErrorCode.request_timed_out and got[2][0].retriable
    assert "c2" in c.physical.refreshed


def test_expired_lease_and_transactions_are_refused():
    got = by_partition(produce.handle(ctx(lease_valid=False), None, produce_req({0: batch()})))
    assert got[0][0] == ErrorCode.not_leader_or_follower
    got = by_partition(produce.handle(ctx(), None, produce_req({0: batch()}, txn="tx")))
    assert got[0][0] == ErrorCode.transactional_id_authorization_failed


def test_acks_zero_has_no_response_but_the_broker_answer_is_awaited():
    """The client of an acks=0 write gets no answer, but the proxy awaits the broker's (acks=all): while it
    is out, the write counts as in flight, and the drain before a frozen view's ack waits for it."""
    plan = produce.handle(ctx(), None, produce_req({0: batch()}, acks=0))
    assert [(call.expect_response, rec.read_produce_request(bytes(encode_request_chunks(call.request, 1))[4:]).acks)
            for call in plan.calls] == [(True, -1)]  # acks as the broker reads it
    assert plan.finish(upstream_ok(plan, {("c1", "phys", 0): 4})) is NO_RESPONSE


def test_acks_zero_with_a_refused_partition_closes_the_connection():
    """A broker closes the connection after an acks=0 produce with any partition error (KafkaApis
    .handleProduceRequest): the client reads no answer, so that is its sign to refresh metadata. Old code answered
    NO_RESPONSE and kept the connection: during a drain the producer's records were dropped until its periodic
    refresh. The good parts of a mixed request are forwarded first, then the connection is closed."""
    draining = produce.handle(ctx(replace(view(), draining=(7,))), None, produce_req({0: batch()}, acks=0))
    assert isinstance(draining, CloseConnection) and "t/0 not_leader_or_follower (proxy draining)" in draining.reason
    assert by_partition(draining.answer)[0][0] == ErrorCode.not_leader_or_follower  # counted by the metrics

    mixed = produce.handle(ctx(view(frozen_p=1)), None, produce_req({0: batch(), 1: batch(), 9: batch()}, acks=0))
    assert [call.target for call in mixed.calls] == [Broker("c1", 1)]  # p0 is forwarded all the same
    assert [pd.index for t in mixed.calls[0].request.topic_data for pd in t.partition_data] == [0]
    closed = mixed.finish(upstream_ok(mixed, {("c1", "phys", 0): 4}))
    assert isinstance(closed, CloseConnection)
    assert "t/1 not_leader_or_follower" in closed.reason and "t/9 unknown_topic_or_partition" in closed.reason
    assert "t/0" not in closed.reason
    assert by_partition(closed.answer)[0] == (ErrorCode.none, 4)

    lost = produce.handle(ctx(), None, produce_req({0: batch()}, acks=0))  # an error the broker side gave
    assert isinstance(lost.finish([UpstreamError("c1", "gone")]), CloseConnection)
    clean = produce.handle(ctx(), None, produce_req({0: batch()}, acks=0))
    assert clean.finish(upstream_ok(clean, {("c1", "phys", 0): 4})) is NO_RESPONSE  # nothing to close for


def test_acks_zero_error_log_line_names_a_bounded_number_of_partitions():
    many = {p: batch() for p in range(10, 10 + produce.SHOWN_ERRORS + 3)}  # none of them exist
    closed = produce.handle(ctx(), None, produce_req(many, acks=0))
    assert isinstance(closed, CloseConnection) and closed.reason.endswith(" and 3 more")
    assert closed.reason.count("unknown_topic_or_partition") == produce.SHOWN_ERRORS


def test_a_consume_only_proxy_closes_the_connection_of_an_acks_zero_producer():
    """Every partition is refused (NOT_LEADER_OR_FOLLOWER: go to a pproxy); an acks=0 producer would never read
    that, so its connection is closed. Old code: NO_RESPONSE, and its records went nowhere."""
    closed = consume_side_produce.handle(ctx(), None, produce_kio({0: batch()}, acks=0))
    assert isinstance(closed, CloseConnection)
    assert by_partition(closed.answer)[0][0] == ErrorCode.not_leader_or_follower
    answered = consume_side_produce.handle(ctx(), None, produce_kio({0: batch()}, acks=1))
    assert by_partition(answered)[0][0] == ErrorCode.not_leader_or_follower


def test_every_write_goes_upstream_with_acks_all():
    """Issue #12, hole 1: the seal is the high watermark. An acks=1 write the leader acknowledged before its
    followers had it can lie above the seal (acked, never consumed, its logical offsets reused); so the proxy
    forwards every write with acks=all, whatever the client asked, and caps the broker's wait."""
    for acks in (1, 0, -1):
        req = produce_req({0: batch(), 2: batch()}, acks=acks)
        req = replace(req, timeout_ms=600_000)
        plan = produce.handle(ctx(), None, req)
        sent = [rec.read_produce_request(bytes(encode_request_chunks(call.request, 1))[4:]) for call in plan.calls]
        assert [r.acks for r in sent] == [-1, -1]  # read back from the bytes the broker gets
        assert {r.timeout_ms for r in sent} == {MAX_PRODUCE_WAIT_S * 1000}
    acked = produce.handle(ctx(), None, produce_req({0: batch()}, acks=1))
    assert by_partition(acked.finish(upstream_ok(acked, {("c1", "phys", 0): 9}))) == {0: (ErrorCode.none, 9)}


def test_idempotent_produce_gets_a_physical_id_per_cluster_and_rewrites_batches():
    c = ctx()
    init = init_producer_id.handle(c, None, InitProducerIdRequest(
        transactional_id=None, transaction_timeout=i32Timedelta.parse(datetime.timedelta(seconds=60)),
        producer_id=-1, producer_epoch=-1))
    assert (init.error_code, init.producer_id, init.producer_epoch) == (ErrorCode.none, 1000, 0)
    req = produce_req({0: batch(1000, 0, 0)})
    first = produce.handle(c, None, req)
    assert first.barrier and [call.target for call in first.calls] == [AnyBroker("c1")]
    plan = first.finish([build(response_type(22, 4), {"error_code": ErrorCode.none, "producer_id": 555,
                                                      "producer_epoch": 2})])
    (call,) = plan.calls
    forwarded = bytes(call.request.topic_data[0].partition_data[0].records)  # a new head, the body by reference
    (h,) = rec.iter_batches(forwarded)
    assert (h.producer_id, h.producer_epoch, h.base_sequence) == (555, 2, 0)
    assert rec.crc_ok(forwarded, h)
    plan.finish([_answer(call, None, {})])  # answered, as the dispatcher runs it: nothing in flight (§5.3 rule 3)
    # a new active segment on the same partition: the physical id is not reused
    moved = replace(c.view, topics={"t": replace(c.view.topics["t"], partitions=(
        PartitionChain(segments=(Segment("c1", "phys", 0, 0, 9, 0), Segment("c1", "phys", 0, 9, None, 9))),
        *c.view.topics["t"].partitions[1:]))})
    again = produce.handle(replace(c, view=moved), None, req)
    assert again.barrier


def test_transactional_init_is_refused():
    resp = init_producer_id.handle(ctx(), None, InitProducerIdRequest(
        transactional_id="tx", transaction_timeout=i32Timedelta.parse(datetime.timedelta(seconds=60)),
        producer_id=-1, producer_epoch=-1))
    assert resp.error_code == ErrorCode.transactional_id_authorization_failed


def test_retriable_init_producer_id_is_retried_before_any_batch_is_answered():
    """A fresh cluster answers COORDINATOR_LOAD_IN_PROGRESS first: failing batch n while n+1 goes through
    would break the broker's sequence check, so the handler retries behind a barrier."""
    c = ctx()
    first = produce.handle(c, None, produce_req({0: batch(1000, 0, 0)}))
    loading = build(response_type(22, 4), {"error_code": ErrorCode.coordinator_load_in_progress,
                                            "producer_id": -1, "producer_epoch": -1})
    retry = first.finish([loading])
    assert isinstance(retry, Plan) and retry.barrier and retry.delay_s > 0
    assert [call.target for call in retry.calls] == [AnyBroker("c1")]
    plan = retry.finish([build(response_type(22, 4), {"error_code": ErrorCode.none, "producer_id": 9,
                                                      "producer_epoch": 0})])
    assert [call.target for call in plan.calls] == [Broker("c1", 1)]
    assert plan.calls[0].ordering_key == 1000  # one upstream connection per idempotent producer


def _moved_p0(v: View) -> View:
    """p0 sealed on c1 at physical 5, its new active segment on c2."""
    chains = list(v.topics["t"].partitions)
    chains[0] = PartitionChain(segments=(Segment("c1", "phys", 0, 0, 5, 0), Segment("c2", "phys", 0, 0, None, 5)),
                               leader_epoch=4)
    return replace(v, topics={"t": replace(v.topics["t"], partitions=tuple(chains))})


def _through(c: Context, req, pid_answer=(555, 0), sealed: dict[int, int] | None = None):
    """Run a produce plan: answer InitProducerId barriers with `pid_answer`, DescribeProducers with the last
    sequence of each physical id in `sealed`, Produce calls with offset 0."""
    plan, sent = produce.handle(c, None, req), []
    while isinstance(plan, Plan):  # barrier or not, each round's calls are answered in order
        sent += [(call.target, pd.index) for call in plan.calls if call.request.__api_key__ == 0
                 for pd in call.request.topic_data[0].partition_data]
        plan = plan.finish([_answer(call, pid_answer, sealed or {}) for call in plan.calls])
    return plan, sent


def _answer(call, pid_answer, sealed: dict[int, int]):
    if call.request.__api_key__ == 0:
        return upstream_ok(Plan([call], None), {(call.target.cluster, t.name, pd.index): 0
                                                for t in call.request.topic_data for pd in t.partition_data})[0]
    if call.request.__api_key__ == 22:
        return build(response_type(22, 4), {"error_code": ErrorCode.none, "producer_id": pid_answer[0],
                                             "producer_epoch": pid_answer[1]})
    assert call.request.__api_key__ == 61 and call.target == Broker("c1", 1)  # the sealed segment's leader
    (t,) = call.request.topics
    return build(response_type(61, 0), {"topics": [{"name": t.name, "partitions": [
        {"partition_index": t.partition_indexes[0], "error_code": ErrorCode.none, "active_producers": [
            {"producer_id": pid, "producer_epoch": 0, "last_sequence": last, "last_timestamp": 0,
             "coordinator_epoch": -1, "current_txn_start_offset": -1} for pid, last in sealed.items()]}]}]})


def test_a_batch_after_a_refused_one_is_not_written_across_a_segment_move():
    """The loss this guards against: batch 1 refused while p0 is frozen, batch 2 reaching the new segment
    first. A fresh physical id takes any sequence, the client would see 2 acked and count 1 as written."""
    c = ctx()
    got, sent = _through(c, produce_req({0: batch(1000, 0, 0)}))
    assert by_partition(got)[0][0] == ErrorCode.none and sent == [(Broker("c1", 1), 0)]
    got, sent = _through(replace(c, view=view(frozen_p=0)), produce_req({0: batch(1000, 0, 1)}))
    assert by_partition(got)[0][0] == ErrorCode.not_leader_or_follower and sent == []

    moved = replace(c, view=_moved_p0(c.view))
    got, sent = _through(moved, produce_req({0: batch(1000, 0, 2)}))
    assert by_partition(got)[0][0] == ErrorCode.not_leader_or_follower and sent == []  # nothing written
    got, sent = _through(moved, produce_req({0: batch(1000, 0, 1)}), pid_answer=(777, 0), sealed={555: 0})
    assert by_partition(got)[0][0] == ErrorCode.none and sent == [(Broker("c2", 2), 0)]  # the retry
    got, sent = _through(moved, produce_req({0: batch(1000, 0, 2)}))
    assert by_partition(got)[0][0] == ErrorCode.none and sent == [(Broker("c2", 2), 0)]
    # another producer and another partition were never affected
    got, _ = _through(moved, produce_req({1: batch(1001, 0, 9)}))
    assert by_partition(got)[1][0] == ErrorCode.none


def test_broker_errors_open_a_gap_but_an_ambiguous_timeout_does_not():
    c = ctx()
    _through(c, produce_req({0: batch(1000, 0, 0)}))
    plan = produce.handle(c, None, produce_req({0: batch(1000, 0, 1)}))
    refused = broker_answer([{"name": "phys", "partition_responses": [
        {"index": 0, "error_code": ErrorCode.not_leader_or_follower, "base_offset": -1}]}])
    assert by_partition(plan.finish([refused]))[0][0] == ErrorCode.not_leader_or_follower
    got, sent = _through(c, produce_req({0: batch(1000, 0, 2)}))
    assert by_partition(got)[0][0] == ErrorCode.not_leader_or_follower and sent == []

    other = ctx()
    _through(other, produce_req({0: batch(1000, 0, 0)}))
    plan = produce.handle(other, None, produce_req({0: batch(1000, 0, 1)}))
    plan.finish([UpstreamError("c1", "connection lost")])  # may have been written: the broker decides
    got, sent = _through(other, produce_req({0: batch(1000, 0, 2)}))
    assert sent == [(Broker("c1", 1), 0)]


def test_a_retry_of_a_batch_the_sealed_segment_holds_is_not_written_twice():
    """Batch 1 reached c1 but its answer was lost; p0 moved; the client's retry must not be written on c2
    again: the sealed segment's broker says producer 555 got to sequence 1, so it is a duplicate."""
    c = ctx()
    _through(c, produce_req({0: batch(1000, 0, 0)}))
    plan = produce.handle(c, None, produce_req({0: batch(1000, 0, 1)}))
    assert by_partition(plan.finish([UpstreamError("c1", "connection lost")]))[0][0] == ErrorCode.request_timed_out

    moved = replace(c, view=_moved_p0(c.view))
    got, sent = _through(moved, produce_req({0: batch(1000, 0, 1)}), pid_answer=(777, 0), sealed={555: 1, 9: 40})
    assert by_partition(got)[0][0] == ErrorCode.duplicate_sequence_number and sent == []  # success, not rewritten
    # (a batch 3 here now is written: this proxy's batches there all landed, so 2 went through another process;
    # test_sealed_floor_elsewhere.py)
    got, sent = _through(moved, produce_req({0: batch(1000, 0, 2)}))
    assert by_partition(got)[0][0] == ErrorCode.none and sent == [(Broker("c2", 2), 0)]
    got, sent = _through(moved, produce_req({0: batch(1000, 0, 3)}))  # past the first write: the broker checks
    assert by_partition(got)[0][0] == ErrorCode.none and sent == [(Broker("c2", 2), 0)]
    got, sent = _through(moved, produce_req({0: batch(1000, 0, 1)}))  # a late duplicate still is one
    assert by_partition(got)[0][0] == ErrorCode.duplicate_sequence_number and sent == []


def test_no_floor_when_the_sealed_segment_does_not_know_the_producer():
    c = ctx()
    _through(c, produce_req({0: batch(1000, 0, 0)}))
    moved = replace(c, view=_moved_p0(c.view))
    got, sent = _through(moved, produce_req({0: batch(1000, 0, 5)}), sealed={})  # its state expired there
    assert by_partition(got)[0][0] == ErrorCode.none and sent == [(Broker("c2", 2), 0)]


def test_an_unknown_leader_is_waited_for_behind_a_barrier_then_refused():
    """A segment published a moment ago: the proxy refreshes and waits (the client's later batches wait too)
    instead of failing the batch; a leader that never shows up is LEADER_NOT_AVAILABLE after about 1.3 s."""
    class Learning(FakePhysical):
        known = False

        def leader(self, cluster, topic, partition):
            return super().leader(cluster, topic, partition) if self.known else None

    physical = Learning()
    c = ctx(physical=physical)
    plan = produce.handle(c, None, produce_req({0: batch()}))
    assert plan.barrier and plan.calls == [] and plan.delay_s > 0 and physical.refreshed == ["c1"]
    physical.known = True
    routed = plan.finish([])
    assert [call.target for call in routed.calls] == [Broker("c1", 1)]

    never = ctx(physical=Learning())
    reply, waits = produce.handle(never, None, produce_req({0: batch()})), 0
    while isinstance(reply, Plan):
        reply, waits = reply.finish([]), waits + 1
    assert by_partition(reply)[0][0] == ErrorCode.leader_not_available and waits == produce.LEADER_WAITS


def test_the_first_batch_of_a_physical_id_on_a_partition_goes_alone():
    """A broker takes any first sequence from an id it does not know: until it answered one batch of the id
    there, nothing later may reach it, or batch 1 failing while batch 2 lands would be acked implicitly."""
    c = ctx()
    first = produce.handle(c, None, produce_req({0: batch(1000, 0, 0)}))
    routed = first.finish([_answer(first.calls[0], (555, 0), {})])  # InitProducerId
    assert routed.barrier and [call.target for call in routed.calls] == [Broker("c1", 1)]
    assert by_partition(routed.finish([_answer(routed.calls[0], None, {})]))[0][0] == ErrorCode.none
    after = produce.handle(c, None, produce_req({0: batch(1000, 0, 1)}))
    assert not after.barrier  # the broker holds the id's state now and checks the sequence itself
    after.finish([_answer(after.calls[0], None, {})])  # answered before 2 is routed: nothing in flight
    moved = replace(c, view=_moved_p0(c.view))  # a new segment: a fresh id, unknown to c2
    plan = produce.handle(moved, None, produce_req({0: batch(1000, 0, 2)}))
    while plan.calls[0].request.__api_key__ != 0:
        plan = plan.finish([_answer(call, (777, 0), {555: 1}) for call in plan.calls])
    assert plan.barrier and [call.target for call in plan.calls] == [Broker("c2", 2)]


def test_a_lost_answer_to_a_first_batch_is_a_gap_until_the_client_resends_it():
    """Batch 0 of a fresh id: its answer is lost, maybe nothing was written. Batch 1 must not be written
    (c1 would take it as the id's first batch); the resend of 0 goes through and then 1 does."""
    c = ctx()
    plan = produce.handle(c, None, produce_req({0: batch(1000, 0, 0)}))
    plan = plan.finish([_answer(plan.calls[0], (555, 0), {})])
    got = by_partition(plan.finish([UpstreamError("c1", "connection lost")]))
    assert got[0][0] == ErrorCode.request_timed_out
    got, sent = _through(c, produce_req({0: batch(1000, 0, 1)}))
    assert by_partition(got)[0][0] == ErrorCode.not_leader_or_follower and sent == []
    got, sent = _through(c, produce_req({0: batch(1000, 0, 0)}))
    assert by_partition(got)[0][0] == ErrorCode.none and sent == [(Broker("c1", 1), 0)]
    got, sent = _through(c, produce_req({0: batch(1000, 0, 1)}))
    assert by_partition(got)[0][0] == ErrorCode.none and sent == [(Broker("c1", 1), 0)]

    timed_out = ctx()  # the broker's own "maybe written" (acks=all timeout) on a first batch: the same
    plan = produce.handle(timed_out, None, produce_req({0: batch(1000, 0, 0)}))
    plan = plan.finish([_answer(plan.calls[0], (555, 0), {})])
    answer = broker_answer([{"name": "phys", "partition_responses": [
        {"index": 0, "error_code": ErrorCode.request_timed_out, "base_offset": -1}]}])
    assert by_partition(plan.finish([answer]))[0][0] == ErrorCode.request_timed_out
    got, sent = _through(timed_out, produce_req({0: batch(1000, 0, 1)}))
    assert by_partition(got)[0][0] == ErrorCode.not_leader_or_follower and sent == []


def test_a_batch_refused_behind_a_resend_stays_refused_when_the_resend_lands():
    """The controller-restart loss: 95 refused (lease expired); its resend is in flight when 96 arrives and is
    refused as a gap. 95 landing must not make the proxy forget 96: 97 would take a fresh physical id (the
    sequence jumps), c1 would take it as that id's first batch, and librdkafka would ack 96 implicitly."""
    c = ctx()
    _through(c, produce_req({0: batch(1000, 0, 94)}))
    got, _ = _through(replace(c, lease_valid=False), produce_req({0: batch(1000, 0, 95)}))
    assert by_partition(got)[0][0] == ErrorCode.not_leader_or_follower
    resend = produce.handle(c, None, produce_req({0: batch(1000, 0, 95)}))  # in flight ...
    got, sent = _through(c, produce_req({0: batch(1000, 0, 96)}))  # ... while 96 arrives
    assert by_partition(got)[0][0] == ErrorCode.not_leader_or_follower and sent == []
    assert by_partition(resend.finish(upstream_ok(resend, {("c1", "phys", 0): 7})))[0] == (ErrorCode.none, 7)
    got, sent = _through(c, produce_req({0: batch(1000, 0, 97)}))
    assert by_partition(got)[0][0] == ErrorCode.not_leader_or_follower and sent == []  # 96 first
    got, sent = _through(c, produce_req({0: batch(1000, 0, 96)}))
    assert by_partition(got)[0][0] == ErrorCode.none and sent == [(Broker("c1", 1), 0)]
    got, sent = _through(c, produce_req({0: batch(1000, 0, 97)}))
    assert by_partition(got)[0][0] == ErrorCode.none and sent == [(Broker("c1", 1), 0)]


def _flipped(records: bytes, at: int = -1) -> bytes:
    out = bytearray(records)
    out[at] ^= 0x01
    return bytes(out)


def test_bad_batches_are_answered_per_partition_and_the_rest_is_written():
    """A corrupt batch (CRC), a bad second batch, a batch whose lengths lie: each answered for its own
    partition; the good partition of the same request is written. Idempotent batches included: their
    rewrite recomputes the CRC, which used to turn a corrupt batch into a valid one at the broker."""
    c = ctx()
    lying_length = bytearray(batch(1000, 0, 5))
    lying_length[8:12] = (10**6).to_bytes(4, "big")
    req = produce_req({0: batch(1000, 0, 0), 1: _flipped(batch(1000, 0, 0)),
                       2: batch(1000, 0, 0) + _flipped(batch(1000, 0, 1), -2), 3: bytes(lying_length)})
    resp, sent = _through(c, req)
    assert sent == [(Broker("c1", 1), 0)]  # only the good batch left the proxy
    got = by_partition(resp)
    assert got[0] == (ErrorCode.none, 0)
    assert got[1][0] == ErrorCode.corrupt_message
    assert got[2][0] == ErrorCode.corrupt_message
    assert got[3] == (ErrorCode.unknown_topic_or_partition, -1)  # the topic check comes first
    req = produce_req({0: batch(1000, 0, 1), 1: bytes(lying_length), 2: batch(1000, 0, 0) + batch(1000, 0, 1)})
    resp, sent = _through(c, req)
    got = by_partition(resp)
    assert got[1][0] == ErrorCode.corrupt_message and sent == [(Broker("c1", 1), 0)]
    assert got[2][0] == ErrorCode.invalid_record  # Kafka: exactly one batch per partition from Produce v3
    # a truncated second batch used to raise out of the handler: the connection was dropped, not answered
    resp, sent = _through(c, produce_req({0: batch(1000, 0, 2) + batch(1000, 0, 3)[:30]}))
    assert by_partition(resp)[0][0] == ErrorCode.corrupt_message and sent == []


def test_a_corrupt_plain_batch_goes_to_its_broker_whose_corrupt_message_reaches_the_client():
    """A plain batch's CRC-32C is its broker's to check (docs/DESIGN.md §5.4, "The batch's CRC"): forwarded as the
    client sent it, by reference, and the broker's CORRUPT_MESSAGE (nothing written) is the client's answer for its
    partition; the good partition beside it is written. An idempotent one is still checked here (the bookkeeping acts
    on its header): refused, not forwarded."""
    corrupt = _flipped(batch())
    plan = produce.handle(ctx(), None, produce_req({0: corrupt, 1: batch(), 2: _flipped(batch(1000, 0, 0))}))
    (call,) = plan.calls
    sent = {pd.index: pd.records for t in call.request.topic_data for pd in t.partition_data}
    assert sorted(sent) == [0, 1] and bytes(sent[0]) == corrupt
    answer = broker_answer([{"name": "phys", "partition_responses": [
        {"index": 0, "error_code": ErrorCode.corrupt_message, "base_offset": -1, "log_start_offset": -1},
        {"index": 1, "error_code": ErrorCode.none, "base_offset": 4, "log_start_offset": 0}]}])
    got = by_partition(plan.finish([answer]))
    assert got == {0: (ErrorCode.corrupt_message, -1), 1: (ErrorCode.none, 4), 2: (ErrorCode.corrupt_message, -1)}


def test_the_broker_s_answer_reaches_the_client_field_for_field_and_an_unknown_code_is_logged_by_number(caplog):
    """The broker's answer as records.py reads it (plain ints, milliseconds): its append time, record errors and
    message reach the client, its offsets in logical space; a code kio does not know (a newer broker's) is
    passed on and named by its number in the sequence log."""
    c = ctx()
    _through(c, produce_req({0: batch(1000, 0, 0)}))  # the physical id is known and confirmed
    plan = produce.handle(c, None, produce_req({0: batch(1000, 0, 1), 1: batch()}))
    frame = rec.produce_response_frame(9, 1, [("phys", [
        rec.ProducePartitionAnswer(0, 9999, -1, -1, 0),
        rec.ProducePartitionAnswer(1, 0, 3, 1_700_000_000_123, 1, ((0, "bad"),), "partly")])])
    with caplog.at_level(logging.DEBUG, logger="fedkafka.proxy.handlers.produce"):
        answer = plan.finish([produce.UpstreamProduce(9, 1000, ()).read_response(frame[4:])])
    unknown, appended = answer.responses[0].partition_responses
    assert (unknown.index, unknown.error_code, unknown.base_offset) == (0, 9999, -1)
    assert "answered 9999 at -1" in caplog.text
    assert appended == rec.ProducePartitionAnswer(1, 0, 3, 1_700_000_000_123, 1, ((0, "bad"),), "partly")  # identity
