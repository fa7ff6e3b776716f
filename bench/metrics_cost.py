"""Per-request cost of the proxy's metrics: the same Dispatcher without an observer (no --admin-listen) and with
the Prometheus one (`proxy/core/observe.py`), interleaved in one process.

Three requests: ApiVersions (answered by the proxy itself: the cheapest request, so the largest ratio),
Produce v9 with 4 partitions of 1 KiB to a loopback broker that answers at once (the whole path: handler, plan,
pooled upstream connection, answer; records are not decoded), and a produce refused for a frozen partition (the
refusal counter; its log line is off at the bench's WARNING level, as it is when INFO is not wanted).
Plus the observer alone on that produce (request, answer and upstream hooks; CPU only, no I/O), the part of the
cost that does not drown in a loaded machine's noise. Prints µs per request (best of the rounds' medians, as the
least disturbed figure) and the ratio on/off; writes bench/results/metrics_cost.json.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import struct
import time
import uuid
from datetime import timedelta
from pathlib import Path

from kio.schema.errors import ErrorCode
from prometheus_client import CollectorRegistry

from fedkafka.protocol import codec
from fedkafka.protocol.build import build
from fedkafka.proxy.core.dispatch import Dispatcher
from fedkafka.proxy.core.observe import RequestMetrics
from fedkafka.proxy.core.physical import ClusterInfo, PhysicalClusters
from fedkafka.proxy.core.producer_ids import ProducerIdTable
from fedkafka.proxy.core.upstream import UpstreamPool
from fedkafka.proxy.plan import Broker, Call
from fedkafka.proxy.state import ProxyState
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, ProxyInfo, ProxyRole, Segment, View

ROUNDS, REQUESTS, PARTITIONS = 9, 400, 4


def batch(n: int) -> bytes:
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    builder.append(0, timestamp=None, key=b"k", value=bytes(n), headers=[])
    return bytes(builder.build())


def produce_frame(topic: str) -> bytes:
    parts = [{"index": p, "records": batch(1024)} for p in range(PARTITIONS)]
    body = build(codec.request_type(0, 9), {"acks": -1, "timeout": timedelta(seconds=30),
                                            "topic_data": [{"name": topic, "partition_data": parts}]})
    return codec.encode_request(body, 1, "bench")[4:]


def api_versions_frame() -> bytes:
    body = build(codec.request_type(18, 3), {"client_software_name": "bench", "client_software_version": "1"})
    return codec.encode_request(body, 1, "bench")[4:]


async def loopback_broker() -> tuple[asyncio.Server, int]:
    """Answers every Produce v9 at once with base offset 0 for each partition."""
    body = build(codec.response_type(0, 9), {"responses": [{"name": "phys", "partition_responses": [
        {"index": p, "error_code": ErrorCode.none, "base_offset": 0} for p in range(PARTITIONS)]}]})
    answer = codec.encode_response(body, 0)

    async def serve(reader, writer):
        try:
            while True:
                size = struct.unpack(">i", await reader.readexactly(4))[0]
                frame = await reader.readexactly(size)
                writer.write(answer[:4] + frame[4:8] + answer[8:])  # its correlation id
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def federation(port: int, frozen: bool) -> tuple[View, PhysicalClusters]:
    me = ProxyInfo(1, "127.0.0.1", 9092, ProxyRole.PPROXY)
    chains = tuple(PartitionChain(segments=(Segment("c1", "phys", p, 0, None, 0),), frozen=frozen)
                   for p in range(PARTITIONS))
    view = View(version=1, clusters={"c1": Cluster("c1", f"127.0.0.1:{port}")}, proxies=(me,),
                topics={"orders": LogicalTopic("orders", uuid.uuid4().hex, chains)})
    physical = PhysicalClusters()
    physical.clusters["c1"] = ClusterInfo("c1", f"127.0.0.1:{port}", brokers={1: ("127.0.0.1", port)},
                                          leaders={("phys", p): 1 for p in range(PARTITIONS)})
    return view, physical


def dispatcher(port: int, observed: bool, frozen: bool = False) -> Dispatcher:
    view, physical = federation(port, frozen)
    extra = {"observer": RequestMetrics(CollectorRegistry())} if observed else {}
    return Dispatcher(state=ProxyState(view=view, me=view.proxies[0]), physical=physical,
                      producer_ids=ProducerIdTable(), pool=UpstreamPool(), **extra)


async def median_us(d: Dispatcher, frame: bytes) -> float:
    times = []
    for corr in range(REQUESTS):
        frame = frame[:4] + corr.to_bytes(4, "big") + frame[8:]
        t = time.perf_counter()
        answer = await (await d.start(frame, 0))
        times.append(time.perf_counter() - t)
        assert codec.response_correlation_id(answer[4:]) == corr
    return statistics.median(times) * 1e6


async def main() -> dict:
    server, port = await loopback_broker()
    cases = {"api_versions": (api_versions_frame(), False), "produce_4x1KiB": (produce_frame("orders"), False),
             "produce_refused_frozen": (produce_frame("orders"), True)}
    out = {}
    for name, (frame, frozen) in cases.items():
        off_d, on_d = dispatcher(port, False, frozen), dispatcher(port, True, frozen)
        off, on = [], []
        for _ in range(ROUNDS):  # interleaved: machine noise hits both alike
            off.append(await median_us(off_d, frame))
            on.append(await median_us(on_d, frame))
        off_d.pool.close()
        on_d.pool.close()
        out[name] = {"off_us": min(off), "on_us": min(on)}
        out[name]["ratio_on_over_off"] = out[name]["on_us"] / out[name]["off_us"]
        out[name]["added_us"] = out[name]["on_us"] - out[name]["off_us"]
    server.close()
    out["observer_alone_produce_us"] = observer_alone_us(produce_frame("orders"), port)
    return out


def observer_alone_us(frame: bytes, port: int) -> float:
    """The observer's own work for one produce: request hook, answer hook, upstream hook."""
    observer = RequestMetrics(CollectorRegistry())
    view, _ = federation(port, False)
    _, request = codec.decode_request(frame)
    answer = build(codec.response_type(0, 9), {"responses": [{"name": "orders", "partition_responses": [
        {"index": p, "error_code": ErrorCode.none, "base_offset": 0} for p in range(PARTITIONS)]}]})
    calls = [Call(Broker("c1", 1), request)]
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(REQUESTS):
            observer.answered(observer.request(0, 9, request, view), answer)
            observer.upstream(calls, [answer])
        best = min(best, (time.perf_counter() - started) / REQUESTS * 1e6)
    return best


if __name__ == "__main__":
    try:
        import uvloop
        result = uvloop.run(main())
    except ImportError:
        result = asyncio.run(main())
    for case, numbers in result.items():
        if not isinstance(numbers, dict):
            print(f"{case:24s} {numbers:7.1f} us")
            continue
        print(f"{case:24s} off {numbers['off_us']:7.1f} us  on {numbers['on_us']:7.1f} us  "
              f"ratio {numbers['ratio_on_over_off']:.3f}  (+{numbers['added_us']:.1f} us)")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "metrics_cost.json").write_text(json.dumps(result, indent=2))
