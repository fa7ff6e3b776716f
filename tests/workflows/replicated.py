"""Faults on replicated physical clusters, shared by the tests and bench/replicated_soak.py: kill the leader
broker of a partition while it is being moved, restart every broker of a cluster in turn, take the config
database away for longer than a lease. Each step names what it did, for the checker's timeline."""

from __future__ import annotations

import contextlib
import time

from confluent_kafka.admin import AdminClient

from fedkafka.kafka.cluster import LocalBroker, LocalKafkaCluster

from .support import Federation, wait_for


def frozen_segments(fed: Federation, topic: str, cluster: str) -> list[tuple[str, int]]:
    """Physical (topic, partition) on `cluster` of the chains frozen right now (a move in progress)."""
    return [(c["segments"][-1]["topic"], c["segments"][-1]["partition"]) for c in fed.chains(topic)
            if c["frozen"] and c["segments"][-1]["cluster"] == cluster]


def kill_leader_during_move(fed: Federation, topic: str, cluster: LocalKafkaCluster, run_id: int,
                            timeout: float = 30.0) -> LocalBroker:
    """SIGKILL the leader broker of a partition of `topic` that is being moved off `cluster`: the first
    frozen chain seen while run `run_id` runs (polled every 20 ms: the freeze lasts a few hundred ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frozen = frozen_segments(fed, topic, cluster.name)
        if frozen:
            leader = cluster.leader_of(*frozen[0])
            leader.kill()
            return leader
        run = fed.api.get(f"/v1/workflows/{run_id}").json()
        if run["state"] in ("done", "failed"):
            break
        time.sleep(0.02)
    raise AssertionError(f"no chain of {topic} on {cluster.name} was seen frozen during run {run_id}")


def restart(broker: LocalBroker, cluster: LocalKafkaCluster) -> None:
    broker.start()
    cluster.wait_ready(120)
    wait_in_sync(cluster)


def wait_in_sync(cluster: LocalKafkaCluster, timeout: float = 120.0) -> None:
    """Until every partition of every topic on the cluster has all its replicas in sync again."""
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap, "log_level": 0})

    def all_in_sync() -> bool:
        with contextlib.suppress(Exception):
            topics = admin.list_topics(timeout=5).topics.values()
            return all(len(p.isrs) == len(p.replicas) for t in topics for p in t.partitions.values())
        return False

    wait_for(all_in_sync, timeout, what=f"every replica of {cluster.name} in sync")


def rolling_restart(cluster: LocalKafkaCluster, mark=lambda label: None) -> None:
    """Stop (SIGTERM: Kafka's controlled shutdown) and start each broker in turn, waiting for every replica
    to be back in sync before the next, as an operator's rolling restart does."""
    for broker in cluster.brokers:
        mark(f"restart {cluster.name} broker {broker.node_id}")
        broker.stop(timeout=60)
        restart(broker, cluster)
