"""Review rvfetch of the Fetch path (fetch.py, records.py's Fetch frames, view/offsets.py): each test shows a bug on
the code it was written against."""

from __future__ import annotations

import datetime

from kio.schema.errors import ErrorCode

from fedkafka.protocol import codec
from fedkafka.protocol import records as rec
from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type, response_type
from fedkafka.proxy.handlers import fetch

from .test_handlers_unit import ctx, fetch_answer, fetch_request, partitions


def throttled_broker_answer(throttle_time_ms: int) -> rec.FetchResponseFrame:
    """What a Kafka broker answers a sessionless Fetch that broke a client quota (KafkaApis.handleFetchRequest:
    `fetchContext.getThrottledResponse`): error NONE, the throttle time, and no partition at all."""
    return rec.FetchResponseFrame(throttle_time_ms=throttle_time_ms, error_code=0, session_id=0, responses=())


def test_a_quota_throttled_broker_answer_is_no_error_and_its_throttle_time_reaches_the_client():
    """A physical cluster with a fetch (or request) quota on the proxy's user or client id answers an over-quota
    Fetch with no partitions and throttle_time_ms > 0 (and mutes the connection meanwhile). The proxy reads the
    missing partitions as a broken answer: every partition UNKNOWN_SERVER_ERROR, and the throttle time dropped, so
    the client logs an error per partition and fetches again at once, without the back-off Kafka asks of it."""
    plan = fetch.handle(ctx(), None, fetch_request(("log", 1, 0)))  # ("log", 1): identity segment c1/t/1
    answer = plan.finish([throttled_broker_answer(800)])
    (p,) = answer.responses[0].partitions
    assert p.error_code == 0, f"a throttled (empty) broker answer turned into error {p.error_code}"
    written = answer.response_frame(5)
    frame = written if isinstance(written, bytes) else b"".join(written)
    _, body = codec.decode_response(codec.response_schema(1, 12), frame[4:])
    assert body.throttle_time == datetime.timedelta(milliseconds=800)  # kio: throttle_time_ms as a timedelta


def fetch_with_epochs(*parts: tuple[str, int, int, int], max_wait_ms: int = 500):
    """A v12 Fetch of (topic, partition, offset, current leader epoch) entries."""
    return build(request_type(1, 12), {
        "replica_id": -1, "max_wait": datetime.timedelta(milliseconds=max_wait_ms), "min_bytes": 1,
        "max_bytes": 1 << 20, "isolation_level": 0, "session_id": 0, "session_epoch": -1, "rack_id": "",
        "forgotten_topics_data": [],
        "topics": [{"topic": t, "partitions": [{"partition": p, "current_leader_epoch": e, "fetch_offset": o,
                                                 "last_fetched_epoch": -1, "log_start_offset": -1,
                                                 "partition_max_bytes": 1 << 20}]} for t, p, o, e in parts]})


def test_a_partition_answered_with_an_error_is_not_held_back_for_the_other_partitions_long_poll():
    """Kafka answers a Fetch at once when reading any partition failed (ReplicaManager.fetchMessages:
    `errorReadingData`), so a consumer whose leader epoch went stale after a move learns it at once and refreshes
    metadata. The proxy answers that partition FENCED_LEADER_EPOCH itself, but still sends the other partition's
    call with the client's whole max_wait: the error reaches the client only when that long poll ends (up to
    --max-fetch-wait-ms, 30 s), and the moved partition is not read meanwhile. ("log", 0) has leader epoch 2; the
    client still holds 1. ("log", 1) is an idle identity segment on c1."""
    plan = fetch.handle(ctx(), None, fetch_with_epochs(("log", 0, 75, 1), ("log", 1, 0, 0), max_wait_ms=30_000))
    (call,) = plan.calls
    assert call.target.cluster == "c1"
    answered = partitions(plan.finish([fetch_answer("t", 1, b"", hw=0)]))
    assert answered[("log", 0)].error_code == ErrorCode.fenced_leader_epoch
    assert call.request.max_wait_ms == 0, (
        f"the FENCED_LEADER_EPOCH answer waits for a {call.request.max_wait_ms} ms long poll on c1")


def error_answer(topic: str, partition: int, error: ErrorCode):
    return build(response_type(1, 12), {"responses": [{"topic": topic, "partitions": [
        {"partition_index": partition, "error_code": error, "high_watermark": -1, "last_stable_offset": -1,
         "log_start_offset": -1, "aborted_transactions": None, "preferred_read_replica": -1, "records": None}]}]})


def test_a_broker_s_error_answer_finishes_a_fetch_over_two_clusters_as_kafka_answers_it_at_once():
    """The same rule for an error a broker answers: c3's leader of t/1 moved (NOT_LEADER_OR_FOLLOWER, at once),
    while c1 holds its idle partition for the client's max_wait. Kafka would answer the error at once; the proxy's
    fetch finishes early only on records (`_has_data`), so the client learns it must refresh metadata only once c1's
    long poll ends."""
    plan = fetch.handle(ctx(), None, fetch_request(("log", 0, 75), ("log", 1, 0)))
    assert sorted(c.target.cluster for c in plan.calls) == ["c1", "c3"]
    assert plan.return_early(error_answer("t", 1, ErrorCode.not_leader_or_follower)), \
        "an answer with an error does not finish the fetch: it waits for the other cluster's long poll"
