"""One local cluster of three KRaft nodes (`fedkafka.kafka.cluster`, brokers=3) whose nodes a test may kill or
SIGSTOP; every node is resumed and stopped when the block ends."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

from fedkafka.kafka.cluster import LocalBroker, start_clusters


@contextlib.contextmanager
def started_three_brokers(base: Path, **settings: str) -> Iterator[list[LocalBroker]]:
    """The nodes of cluster "trio"; `settings` go to every node's server.properties. Defaults keep a stopped
    (SIGSTOP) broker in the cluster and the ISR for a minute."""
    settings = {"broker.session.timeout.ms": "60000", "replica.lag.time.max.ms": "60000",
                "broker.heartbeat.interval.ms": "1000", **settings}
    (cluster,) = start_clusters(["trio"], base, brokers=3, extra_config=settings, timeout=180)
    try:
        yield cluster.brokers
    finally:
        for node in cluster.brokers:
            if node.running:
                with contextlib.suppress(ProcessLookupError, TypeError):
                    os.kill(node.pid, signal.SIGCONT)
        cluster.stop(timeout=10)
