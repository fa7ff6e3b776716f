"""The Fetch handler's codec work per request, kio entities against records.py's frames (issue #20).

One Fetch v12 of 1 or 4 partitions of 1 MiB each (64 KiB batches), identity (nothing to rewrite) and moved
(every baseOffset shifted). "kio" is what fetch.py did before: `build()` + kio's writer for the upstream request,
`codec.decode_response` for the broker's answer (records copied out of the frame), `build()` +
`codec.encode_response_chunks` for the client's answer. "records.py" is what it does now: `fetch_request_frame`,
`read_fetch_response` (records as views of the frame), `fit_to_segment_parts` (a moved segment's large batches
left in the frame but for their first 16 bytes), `fetch_response_parts` (records by reference). The kio column
includes `fit_to_segment` (the compiled twin when built). `timeit`, best of 7 rounds, with glibc's malloc
thresholds pinned as the proxy pins them.

    .venv/bin/python bench/fetch_frames_cost.py
"""

from __future__ import annotations

import struct
import timeit
from datetime import timedelta

import crc32c
from kio.schema.errors import ErrorCode
from kio.static.primitive import i32Timedelta

from fedkafka.protocol import codec
from fedkafka.protocol import records as rec
from fedkafka.protocol.build import build
from fedkafka.proxy.core.server import pin_malloc_thresholds

MiB = 1 << 20


def batch(base_offset: int, count: int, size: int) -> bytes:
    body = struct.pack(">hiqqqhii", 0, count - 1, 0, 0, -1, -1, -1, count) + b"r" * size
    return struct.pack(">qiibI", base_offset, 9 + len(body), 0, 2, crc32c.crc32c(body)) + body


RECORDS = b"".join(batch(i * 64, 64, 1024 * 64) for i in range(16))  # 1 MiB: 16 batches of 64 KiB


def kio_path(partitions: int, delta: int, frame: bytes) -> None:
    request = build(codec.request_schema(1, 12), {
        "cluster_id": None, "replica_id": -1, "max_wait": i32Timedelta.parse(timedelta(milliseconds=500)),
        "min_bytes": 1, "max_bytes": 50 * MiB, "isolation_level": 0, "session_id": 0, "session_epoch": -1,
        "rack_id": "", "forgotten_topics_data": [], "topics": [{"topic": "t", "partitions": [
            {"partition": p, "current_leader_epoch": -1, "fetch_offset": 0, "last_fetched_epoch": -1,
             "log_start_offset": -1, "partition_max_bytes": MiB} for p in range(partitions)]}]})
    codec.encode_request_chunks(request, 1)
    _, answer = codec.decode_response(codec.response_schema(1, 12), frame)
    out = []
    for t in answer.responses:
        for p in t.partitions:
            data = rec.fit_to_segment(p.records, phys_end=None, delta=delta, max_epoch=0)
            out.append({"partition_index": p.partition_index, "error_code": ErrorCode.none,
                        "high_watermark": p.high_watermark,
                        "last_stable_offset": p.last_stable_offset, "log_start_offset": 0,
                        "aborted_transactions": None, "preferred_read_replica": -1, "records": data})
    codec.encode_response_chunks(build(codec.response_schema(1, 12), {
        "error_code": ErrorCode.none, "session_id": 0, "responses": [{"topic": "log", "partitions": out}]}), 1)


def records_path(partitions: int, delta: int, frame: bytes) -> None:
    rec.fetch_request_frame(12, 1, "fedkafka-proxy", 500, 1, 50 * MiB, 0, (rec.FetchTopicRequest("t", tuple(
        rec.FetchPartitionRequest(p, 0, MiB) for p in range(partitions))),))
    answer = rec.read_fetch_response(frame, 12)
    out = []
    for t in answer.responses:
        for p in t.partitions:
            data = rec.fit_to_segment_parts(p.records, phys_end=None, delta=delta, max_epoch=0)
            out.append(rec.FetchPartitionData(p.partition_index, 0, p.high_watermark, p.last_stable_offset, 0, None,
                                              -1, data))
    rec.fetch_response_parts(12, 1, 0, 0, [("log", out)])


def best_us(path, partitions: int, delta: int, frame: bytes, number: int = 200) -> float:
    return min(timeit.repeat(lambda: path(partitions, delta, frame), number=number, repeat=7)) / number * 1e6


def main() -> None:
    # as the proxy does at start: else every MiB buffer is a fresh mmap whose pages fault in on each run
    print(f"records.py implementation: {rec.implementation()}; malloc thresholds pinned: {pin_malloc_thresholds()}")
    print("| µs per Fetch v12 | kio | records.py | ratio |\n| --- | --- | --- | --- |")
    for partitions in (1, 4):
        frame = b"".join(rec.fetch_response_parts(12, 0, 0, 0, [("t", [
            rec.FetchPartitionData(p, 0, 1024, 1024, 0, None, -1, RECORDS) for p in range(partitions)])]))[4:]
        for name, delta in (("identity", 0), ("moved", 1000)):
            old, new = (best_us(path, partitions, delta, frame) for path in (kio_path, records_path))
            print(f"| {partitions} x 1 MiB, {name} | {old:.0f} | {new:.0f} | {old / new:.1f} |")


if __name__ == "__main__":
    main()
