"""A three-broker KRaft cluster for tests (node 1 is broker and controller, 2 and 3 are brokers of its quorum).

Test-only, until multi-broker local clusters land in fedkafka/kafka/cluster.py; then use those.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

from fedkafka.kafka.cluster import LocalKafkaCluster, free_port


class Node(LocalKafkaCluster):
    node_id: int = 1
    quorum: str = ""
    settings: dict[str, str] = {}

    def config(self) -> dict[str, str]:
        cfg = super().config()
        cfg.update({"node.id": str(self.node_id), "controller.quorum.bootstrap.servers": self.quorum,
                    "offsets.topic.replication.factor": "3", "default.replication.factor": "3",
                    "broker.heartbeat.interval.ms": "1000", **self.settings})
        if self.node_id != 1:
            cfg.update({"process.roles": "broker", "listeners": f"PLAINTEXT://{self.host}:{self.port}"})
        return cfg

    def format_storage(self, dist) -> None:
        if self.node_id == 1:
            return super().format_storage(dist)
        if (self.data_dir / "logs" / "meta.properties").exists():
            return
        props = self._write_files()
        subprocess.run(dist.java_command("kafka.tools.StorageTool", "format", "-t", self.cluster_id, "-c",
                                         str(props), "--no-initial-controllers", heap="256m"),
                       capture_output=True, check=True)


@contextlib.contextmanager
def started_three_brokers(base: Path, **settings: str) -> Iterator[list[Node]]:
    """Three nodes of cluster "trio"; `settings` go to every node's server.properties. Defaults keep a stopped
    (SIGSTOP) broker in the cluster and the ISR for a minute."""
    settings = {"broker.session.timeout.ms": "60000", "replica.lag.time.max.ms": "60000", **settings}
    controller_port = free_port()
    nodes = []
    for node_id in (1, 2, 3):
        node = Node("trio", base / f"n{node_id}", heap="384m")
        node.node_id, node.quorum, node.settings = node_id, f"127.0.0.1:{controller_port}", settings
        node.controller_port = controller_port if node_id == 1 else 0
        nodes.append(node)
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_ready(180)
        yield nodes
    finally:
        for node in nodes:
            if node.running:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(node.pid, signal.SIGCONT)
            node.stop(timeout=10)
