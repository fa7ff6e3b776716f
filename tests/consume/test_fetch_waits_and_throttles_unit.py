"""When a Fetch stops waiting, and a quota-throttled broker's answer (fetch.py, docs/DESIGN.md §5.5): what Kafka's
broker answers at once ends the client's long poll, what it answers after the wait does not, and a throttled cluster's
partitions get no records and no error while the client gets the largest throttle time."""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from fedkafka.protocol import records as rec
from fedkafka.proxy.handlers import fetch
from fedkafka.proxy.plan import UpstreamError

from .test_fetch_review_rvfetch_unit import error_answer, throttled_broker_answer
from .test_handlers_unit import Physical, batch, ctx, fetch_request, partitions


def answer_with_records(topic: str, partition: int, records: bytes, hw: int) -> rec.FetchResponseFrame:
    """A broker's answer as records.py reads it (not throttled: throttle time 0)."""
    return rec.FetchResponseFrame(0, 0, 0, (rec.FetchTopicData(topic, (
        rec.FetchPartitionData(partition, ErrorCode.none, hw, hw, 0, None, -1, records),)),))


def test_a_partition_on_an_unreachable_cluster_leaves_the_other_partitions_long_poll():
    """The proxy answers NOT_LEADER_OR_FOLLOWER for a segment whose cluster is down; a client's metadata refresh
    changes nothing there, so answering it at once would make the client fetch in a busy loop for the whole outage.
    ("log", 0) at 75 is on c3, down; ("log", 1) on c1."""
    plan = fetch.handle(ctx(Physical(down={"c3"})), None, fetch_request(("log", 0, 75), ("log", 1, 0)))
    (call,) = plan.calls
    assert call.target.cluster == "c1" and call.request.max_wait_ms == 500
    answered = partitions(plan.finish([answer_with_records("t", 1, b"", hw=0)]))
    assert answered[("log", 0)].error_code == ErrorCode.not_leader_or_follower


def test_an_unknown_topic_leaves_the_other_partitions_long_poll_as_kafka_s_broker_does():
    """Kafka's broker answers an unknown topic before it reads (KafkaApis.handleFetchRequest: `erroneous`), after
    the other partitions' wait."""
    plan = fetch.handle(ctx(), None, fetch_request(("nope", 0, 0), ("log", 1, 0)))
    (call,) = plan.calls
    assert call.request.max_wait_ms == 500


def test_a_position_below_the_chain_answered_here_ends_the_wait():
    """OFFSET_OUT_OF_RANGE answered by the proxy: the client resets its position at once, not after c1's poll."""
    plan = fetch.handle(ctx(), None, fetch_request(("log", 0, -5), ("log", 1, 0)))
    (call,) = plan.calls
    assert call.request.max_wait_ms == 0
    answered = partitions(plan.finish([answer_with_records("t", 1, b"", hw=0)]))
    assert answered[("log", 0)].error_code == ErrorCode.offset_out_of_range


def test_an_out_of_range_answer_and_a_throttled_answer_finish_a_fetch_over_two_clusters_a_failed_call_does_not():
    """A failed call's partitions get NOT_LEADER_OR_FOLLOWER, which nothing mends while its broker is down: the other
    cluster's long poll paces the client's fetches instead of a loop of instant answers."""
    plan = fetch.handle(ctx(), None, fetch_request(("log", 0, 75), ("log", 1, 0)))
    assert len(plan.calls) == 2
    assert not plan.return_early(UpstreamError("c3", "connection lost"))
    assert plan.return_early(error_answer("t", 1, ErrorCode.offset_out_of_range))
    assert plan.return_early(throttled_broker_answer(200))
    assert not plan.return_early(answer_with_records("t", 1, b"", hw=0))


def test_a_throttled_cluster_s_partitions_are_empty_without_error_beside_another_cluster_s_records():
    """c3 is over a quota of the proxy's (no partition, 300 ms), c1 answers records: the client gets c1's records,
    ("log", 0) with no records, no error and unknown watermarks (-1: clients keep the ones they had), and 300 ms."""
    plan = fetch.handle(ctx(), None, fetch_request(("log", 0, 75), ("log", 1, 0)))
    results = [throttled_broker_answer(300) if c.target.cluster == "c3"
               else answer_with_records("t", 1, batch(0, 3), hw=3) for c in plan.calls]
    answer = plan.finish(results)
    assert answer.throttle_time_ms == 300 and answer.error_code == ErrorCode.none
    answered = partitions(answer)
    throttled = answered[("log", 0)]
    assert (throttled.error_code, throttled.records, throttled.high_watermark, throttled.log_start_offset,
            throttled.preferred_read_replica) == (ErrorCode.none, b"", -1, -1, -1)
    assert answered[("log", 1)].records and answered[("log", 1)].high_watermark == 3
