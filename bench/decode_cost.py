"""Cost of the length pre-pass (`protocol/bounds.py`) on decode: kio's native reader alone vs. walk + reader.

Messages as the proxy sees them: a client's Produce v9 (3 partitions of 16 KiB batches) and Fetch v12
(12 partitions), a broker's Fetch v12 answer (12 partitions of 64 KiB records) and Metadata v12 answer
(100 topics of 16 partitions, 3 replicas). Plus the produce path's batch check (records.produce_batch:
structure and CRC-32C of a 16 KiB batch) against the header read it replaced. Both variants run interleaved
in one process; prints µs per call (best of the rounds) and the ratio, and writes
bench/results/decode_cost.json.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

from aiokafka.record.default_records import DefaultRecordBatchBuilder
from kio.serial import entity_reader

from fedkafka.protocol import codec
from fedkafka.protocol import records as rec
from fedkafka.protocol.build import build

ROUNDS, REPEAT = 7, 300


def produce_request() -> bytes:
    parts = [{"index": p, "records": bytes(16 << 10)} for p in range(3)]
    body = build(codec.request_type(0, 9), {"acks": -1, "timeout": timedelta(seconds=30),
                                            "topic_data": [{"name": "orders", "partition_data": parts}]})
    return codec.encode_request(body, 1, "rdkafka")[4:]


def fetch_request() -> bytes:
    parts = [{"partition": p, "fetch_offset": 1000 * p, "partition_max_bytes": 1 << 20, "log_start_offset": -1,
              "current_leader_epoch": 3} for p in range(12)]
    body = build(codec.request_type(1, 12), {"replica_id": -1, "max_wait": timedelta(milliseconds=500), "min_bytes": 1,
                                             "max_bytes": 50 << 20, "session_epoch": -1,
                                             "topics": [{"topic": "orders", "partitions": parts}]})
    return codec.encode_request(body, 2, "rdkafka")[4:]


def fetch_response() -> bytes:
    parts = [{"partition_index": p, "high_watermark": 10**6, "last_stable_offset": 10**6, "log_start_offset": 0,
              "preferred_read_replica": -1, "records": bytes(64 << 10)} for p in range(12)]
    body = build(codec.response_type(1, 12), {"responses": [{"topic": "orders", "partitions": parts}]})
    return codec.encode_response(body, 3)[4:]


def metadata_response() -> bytes:
    topics = [{"name": f"topic-{t}", "partitions": [
        {"partition_index": p, "leader_id": p % 3, "leader_epoch": 5, "replica_nodes": [0, 1, 2],
         "isr_nodes": [0, 1, 2]} for p in range(16)]} for t in range(100)]
    brokers = [{"node_id": n, "host": f"broker-{n}.example", "port": 9092} for n in range(3)]
    body = build(codec.response_type(3, 12), {"brokers": brokers, "cluster_id": "c1", "controller_id": 0,
                                              "topics": topics})
    return codec.encode_response(body, 4)[4:]


def record_batch() -> bytes:
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=7,
                                  producer_epoch=0, base_sequence=0, batch_size=1 << 20)
    for i in range(16):
        b.append(i, timestamp=None, key=b"key-%d" % i, value=bytes(1000), headers=[])
    return bytes(b.build())


def native_only(schema: type, header: type):
    def decode(frame: bytes):
        _, n = entity_reader(header)(frame, 0)
        return entity_reader(schema)(frame, n)
    return decode


def per_call_us(fn, frame: bytes) -> float:
    start = time.perf_counter()
    for _ in range(REPEAT):
        fn(frame)
    return (time.perf_counter() - start) / REPEAT * 1e6


def main() -> None:
    req_p, req_f = codec.request_type(0, 9), codec.request_type(1, 12)
    resp_f, resp_m = codec.response_type(1, 12), codec.response_type(3, 12)
    cases = {
        "produce v9 request (3 x 16 KiB)": (produce_request(), codec.decode_request,
                                            native_only(req_p, req_p.__header_schema__)),
        "fetch v12 request (12 partitions)": (fetch_request(), codec.decode_request,
                                              native_only(req_f, req_f.__header_schema__)),
        "fetch v12 response (12 x 64 KiB)": (fetch_response(), lambda f: codec.decode_response(resp_f, f),
                                             native_only(resp_f, resp_f.__header_schema__)),
        "metadata v12 response (100 x 16)": (metadata_response(), lambda f: codec.decode_response(resp_m, f),
                                             native_only(resp_m, resp_m.__header_schema__)),
        "produce batch check (16 KiB)": (record_batch(), rec.produce_batch, lambda b: next(rec.iter_batches(b))),
    }
    results = {}
    print(f"{'message':36} {'bytes':>8} {'before µs':>9} {'checked µs':>11} {'ratio':>6}")
    for name, (frame, checked, native) in cases.items():
        checked(frame), native(frame)  # warm caches
        pairs = [(per_call_us(native, frame), per_call_us(checked, frame)) for _ in range(ROUNDS)]
        kio_us = min(a for a, _ in pairs)  # the least disturbed round: these machines are shared
        checked_us = min(b for _, b in pairs)
        results[name] = {"bytes": len(frame), "kio_us": kio_us, "checked_us": checked_us,
                         "ratio": checked_us / kio_us}
        print(f"{name:36} {len(frame):8d} {kio_us:9.1f} {checked_us:11.1f} {checked_us / kio_us:6.2f}")
    out = Path(__file__).parent / "results" / "decode_cost.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
