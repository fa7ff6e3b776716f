"""The Fetch handler's CPU per request, step by step (issue #20): what a Fetch round trip costs in
`handlers/fetch.py` and the codecs it calls, without the core, the sockets or a broker.

One Fetch v12 of N partitions of one logical topic, each on an identity (active) segment, the broker's answer
carrying `--kb` KiB of 64 KiB batches per partition: the client's request decoded (kio), `fetch.handle` (routing,
the upstream request), the broker's request written (`frame_parts`), its answer read (`read_response`),
`finish` (translation, the client's answer), the client's frame written (`response_frame`). CPU time of this
thread (`time.thread_time`), best of 5 rounds: on a loaded machine a wall clock counts the time others ran.

    .venv/bin/python bench/fetch_handler_cost.py [--partitions 4] [--kb 64]
"""

from __future__ import annotations

import argparse
import datetime
import struct
import time
import uuid
from collections.abc import Callable

import crc32c
from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import decode_request, encode_request, encode_response, request_schema, response_schema
from fedkafka.proxy.handlers import fetch
from fedkafka.proxy.plan import Context
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, ProxyInfo, ProxyRole, Segment, View


class _Physical:
    def leader(self, cluster: str, topic: str, partition: int) -> int:
        return 7

    def reachable(self, cluster: str) -> bool:
        return True

    def request_refresh(self, cluster: str) -> None:
        pass

    def topic_id(self, cluster: str, topic: str) -> uuid.UUID | None:
        return uuid.UUID(int=1)

    def topic_name(self, cluster: str, topic_id: uuid.UUID) -> str | None:
        return "t"


def _batch(base: int, count: int, size: int) -> bytes:
    body = struct.pack(">hiqqqhii", 0, count - 1, 0, 0, -1, -1, -1, count) + b"r" * (size - 61)
    return struct.pack(">qiibI", base, 9 + len(body), 0, 2, crc32c.crc32c(body)) + body


def _frames(partitions: int, kb: int) -> tuple[Context, bytes, bytes]:
    """The handler's context, the client's request frame and the broker's answer frame (both after the size)."""
    chains = tuple(PartitionChain(segments=(Segment("c1", "t", p, 0, None, 0),)) for p in range(partitions))
    view = View(version=1, clusters={"c1": Cluster("c1", "c1:9092")}, coordination_cluster="c1",
                topics={"log": LogicalTopic("log", uuid.uuid4().hex, chains)},
                proxies=(ProxyInfo(1, "p1", 9092, ProxyRole.CPROXY),))
    ctx = Context(view=view, me=view.proxies[0], advertised={}, physical=_Physical(),
                  producer_ids=None)  # type: ignore[arg-type]  # Fetch never asks for producer ids
    request = build(request_schema(1, 12), {
        "replica_id": -1, "max_wait": datetime.timedelta(milliseconds=500), "min_bytes": 1, "max_bytes": 50 << 20,
        "isolation_level": 0, "session_id": 0, "session_epoch": -1, "rack_id": "", "forgotten_topics_data": [],
        "topics": [{"topic": "log", "partitions": [
            {"partition": p, "current_leader_epoch": -1, "fetch_offset": 100, "last_fetched_epoch": -1,
             "log_start_offset": -1, "partition_max_bytes": 1 << 20} for p in range(partitions)]}]})
    records = b"".join(_batch(100 + 64 * i, 64, 65536) for i in range(max(1, kb // 64)))
    answer = build(response_schema(1, 12), {"responses": [{"topic": "t", "partitions": [
        {"partition_index": p, "error_code": ErrorCode.none, "high_watermark": 10**6, "last_stable_offset": 10**6,
         "log_start_offset": 0, "aborted_transactions": None, "preferred_read_replica": -1, "records": records}
        for p in range(partitions)]}]})
    return ctx, encode_request(request, 5)[4:], encode_response(answer, 9)[4:]


def cpu_us(fn: Callable[[], object], n: int = 2000, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.thread_time()
        for _ in range(n):
            fn()
        best = min(best, (time.thread_time() - start) / n)
    return best * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--kb", type=int, default=64, help="record bytes per partition in the broker's answer, KiB")
    args = ap.parse_args()
    ctx, request_frame, answer_frame = _frames(args.partitions, args.kb)
    header, request = decode_request(request_frame)
    plan = fetch.handle(ctx, header, request)
    (call,) = plan.calls
    result = call.request.read_response(answer_frame)
    out = plan.finish([result])

    def whole() -> None:
        h, r = decode_request(request_frame)
        p = fetch.handle(ctx, h, r)
        (c,) = p.calls
        c.request.frame_parts(9, "fedkafka-proxy")
        p.finish([c.request.read_response(answer_frame)]).response_frame(5)

    steps: list[tuple[str, Callable[[], object]]] = [
        ("decode_request", lambda: decode_request(request_frame)),
        ("handle", lambda: fetch.handle(ctx, header, request)),
        ("frame_parts", lambda: call.request.frame_parts(9, "fedkafka-proxy")),
        ("read_response", lambda: call.request.read_response(answer_frame)),
        ("finish", lambda: plan.finish([result])),
        ("response_frame", lambda: out.response_frame(5)),
        ("all of it", whole),
    ]
    print(f"Fetch v12, {args.partitions} partitions x {args.kb} KiB, CPU µs per request (best of 5)")
    for name, fn in steps:
        print(f"{name:16} {cpu_us(fn):8.1f}")


if __name__ == "__main__":
    main()
