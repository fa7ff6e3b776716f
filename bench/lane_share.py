"""Which Produce requests of the Java perf tool the Produce lane takes: a proxy in this process (its lane's count
`ProduceLane.taken` is read; the proxy exposes it nowhere else) in front of one broker, `kafka-producer-perf-test`
(idempotent by default since Kafka 3.0) writing through it, and the requests the generic path routed
(`produce.handle` calls) counted beside. Then the same with enable.idempotence=false.

Not a timing: the tool's throughput here shares a process with the proxy's event loop thread.

    .venv/bin/python bench/lane_share.py [--records 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import uuid

from confluent_kafka.admin import AdminClient, NewTopic
from produce_bench import perf_test
from scratch import scratch_dir

from fedkafka.kafka.cluster import start_clusters
from fedkafka.proxy.core.server import ProxyConfig, ProxyServer
from fedkafka.proxy.handlers import produce as produce_handler
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, ProxyRole, Segment, View

PARTITIONS = 4


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=100_000)
    args = ap.parse_args()
    handled = [0]  # Produce requests the generic path routed
    generic_handle = produce_handler.handle

    def counted_handle(*a):
        handled[0] += 1
        return generic_handle(*a)

    produce_handler.handle = counted_handle  # the dispatcher looks the handler up at each request
    with scratch_dir("lane-share-") as tmp:
        (cluster,) = start_clusters(["b1"], tmp / "k")
        try:
            names = {idem: f"lane-{idem}-{uuid.uuid4().hex[:6]}" for idem in ("true", "false")}
            admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
            for fut in admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in names.values()]).values():
                fut.result(30)
            view = View(version=1, clusters={"b1": Cluster("b1", cluster.bootstrap)}, topics={
                t: LogicalTopic(t, uuid.uuid4().hex, tuple(
                    PartitionChain(segments=(Segment("b1", t, p, 0, None, 0),)) for p in range(PARTITIONS)))
                for t in names.values()})
            (tmp / "view.json").write_text(json.dumps(view.to_dict()))
            asyncio.run(scenario(tmp / "view.json", names, args.records, handled))
        finally:
            cluster.stop()


async def scenario(view_file, names: dict[str, str], records: int, handled: list[int]) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    server = ProxyServer(ProxyConfig(role=ProxyRole.PPROXY, host="127.0.0.1", port=port,
                                     advertised_host="127.0.0.1", view_file=view_file))
    await server.start(sock)
    lane = server.dispatcher.lane if server.dispatcher is not None else None
    assert lane is not None  # a pproxy's dispatcher has a Produce lane
    try:
        for idem, topic in names.items():
            taken0, handled0 = lane.taken, handled[0]
            out = await asyncio.to_thread(perf_test, f"127.0.0.1:{port}", topic, records,
                                          extra=[f"enable.idempotence={idem}"])
            taken, generic = lane.taken - taken0, handled[0] - handled0
            print(f"kafka-producer-perf-test enable.idempotence={idem}, {records} records: lane took {taken} "
                  f"Produce requests, the generic path {generic} ({100 * taken / max(1, taken + generic):.1f}% "
                  f"in the lane); {out['line']}", flush=True)
    finally:
        await server.stop()
        sock.close()


if __name__ == "__main__":
    main()
