"""Fetch on a produce-only proxy: advertised (so librdkafka enables MsgVer2 and idempotence: its feature
table requires Fetch v4 next to Produce v3), answered with retriable NOT_LEADER_OR_FOLLOWER per partition
so consumers refresh metadata and go to a cproxy. A `cproxy`/`both` serves Fetch with the consume handlers.
"""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import response_schema
from fedkafka.proxy.plan import Context

API_KEYS = {1: (4, 12)}
ROLE = "produce_only"
AUTHORIZES = True


def handle(ctx: Context, header, request):
    return build(response_schema(1, type(request).__version__), {
        "error_code": ErrorCode.none, "session_id": 0,
        "responses": [{"topic": t.topic, "partitions": [
            {"partition_index": p.partition, "error_code": ErrorCode.not_leader_or_follower, "high_watermark": -1,
             "aborted_transactions": None, "records": None} for p in t.partitions]} for t in request.topics]})
