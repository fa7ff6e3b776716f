"""Review rvfetch of the Fetch path (fetch.py, records.py's Fetch frames, view/offsets.py): each test shows a bug on
the code it was written against."""

from __future__ import annotations

from fedkafka.protocol import codec
from fedkafka.protocol import records as rec
from fedkafka.proxy.handlers import fetch

from .test_handlers_unit import ctx, fetch_request


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
    assert body.throttle_time_ms == 800
