"""Cost of an all-topics Metadata request at the proxy, with and without the answer cache, in one run.

A view of 200 logical topics x 16 partitions; the real Dispatcher decodes, answers and encodes each request
(no sockets: this is the CPU a flood of Metadata requests costs). "uncached" is the same dispatcher with a
metadata module that offers no cache key (what every request cost before the cache). Prints per-request
times and the ratio; writes bench/results/metadata_cost.json.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import types
import uuid
from pathlib import Path

from kio.schema.metadata.v12.request import MetadataRequest

from fedkafka.protocol import codec
from fedkafka.proxy import handlers
from fedkafka.proxy.core.dispatch import Dispatcher
from fedkafka.proxy.core.physical import PhysicalClusters
from fedkafka.proxy.handlers import metadata
from fedkafka.proxy.state import ProxyState
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, ProxyInfo, ProxyRole, Segment, View

TOPICS, PARTITIONS, REQUESTS = 200, 16, 200


def view() -> View:
    me = ProxyInfo(1, "127.0.0.1", 9092, ProxyRole.BOTH)
    topics = {f"t{i:04d}": LogicalTopic(f"t{i:04d}", uuid.uuid4().hex, tuple(
        PartitionChain(segments=(Segment("c1", f"t{i:04d}", p, 0, None, 0),)) for p in range(PARTITIONS)))
        for i in range(TOPICS)}
    return View(version=1, clusters={"c1": Cluster("c1", "127.0.0.1:1")}, topics=topics, proxies=(me,))


def dispatcher(modules) -> Dispatcher:
    v = view()
    state = ProxyState(view=v, me=v.proxies[0])
    return Dispatcher(state=state, physical=PhysicalClusters(), producer_ids=None, pool=None, modules=modules)


async def per_request_s(d: Dispatcher) -> list[float]:
    frame = codec.encode_request(MetadataRequest(topics=None, allow_auto_topic_creation=False,
                                                 include_topic_authorized_operations=False), 7)[4:]
    times = []
    for corr in range(REQUESTS):
        frame = frame[:4] + corr.to_bytes(4, "big") + frame[8:]
        t = time.perf_counter()
        answer = await (await d.start(frame, 0))
        times.append(time.perf_counter() - t)
        assert codec.response_correlation_id(answer[4:]) == corr
    return times


async def main() -> dict:
    uncached_metadata = types.ModuleType("uncached_metadata")
    uncached_metadata.API_KEYS, uncached_metadata.ROLE = metadata.API_KEYS, metadata.ROLE
    uncached_metadata.handle = metadata.handle
    modules = tuple(uncached_metadata if m is metadata else m for m in handlers.MODULES)
    old = await per_request_s(dispatcher(modules))
    new = await per_request_s(dispatcher(handlers.MODULES))
    partitions = TOPICS * PARTITIONS
    out = {
        "partitions": partitions, "requests": REQUESTS,
        "uncached_median_ms": statistics.median(old) * 1e3,
        "uncached_us_per_partition": statistics.median(old) * 1e6 / partitions,
        "cached_median_ms": statistics.median(new) * 1e3,
        "cached_first_ms": new[0] * 1e3,
    }
    out["ratio_uncached_over_cached"] = out["uncached_median_ms"] / out["cached_median_ms"]
    return out


if __name__ == "__main__":
    result = asyncio.run(main())
    for k, v in result.items():
        print(f"{k:28} {v:,.3f}" if isinstance(v, float) else f"{k:28} {v}")
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / "metadata_cost.json").write_text(json.dumps(result, indent=2))
