"""Produce on a consume-only proxy: advertised (librdkafka enables MsgVer2, without which it refuses to
parse v2 record batches, only when Produce v3 sits next to Fetch v4), answered with retriable
NOT_LEADER_OR_FOLLOWER per partition so producers refresh metadata and go to a pproxy. An acks=0 producer
reads no answer: its connection is closed instead, as a broker does after an acks=0 produce with errors.
"""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import response_schema
from fedkafka.proxy.plan import NO_RESPONSE, CloseConnection, Context

API_KEYS = {0: (3, 12)}
ROLE = "consume_only"
AUTHORIZES = True


def handle(ctx: Context, header, request):
    answer = build(response_schema(0, type(request).__version__), {"responses": [
        {"name": t.name, "partition_responses": [
            {"index": p.index, "error_code": ErrorCode.not_leader_or_follower, "base_offset": -1,
             "error_message": "this proxy serves consumers only"} for p in t.partition_data]}
        for t in request.topic_data]})
    if request.acks == 0:  # no partition, no error: nothing to close for
        refused = any(t.partition_data for t in request.topic_data)
        return CloseConnection("acks=0 produce to a consume-only proxy", answer) if refused else NO_RESPONSE
    return answer
