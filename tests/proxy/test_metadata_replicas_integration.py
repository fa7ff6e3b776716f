"""A topic whose physical partitions have three replicas reads three replicas through the proxy, and an ISR shrunk on
the physical cluster reads shrunk, on a real three-broker cluster (unit cases: test_metadata_replicas_unit.py). The
proxy used to list the leader alone: replication factor 1 and no under-replicated partition, whatever the cluster
held."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from three_brokers import started_three_brokers

from fedkafka.kafka.tools import run_tool
from fedkafka.view.model import ProxyInfo, ProxyRole

from .support import ProxyProcess, free_port, split_view

# three Kafka JVMs of its own for 2-3.5 minutes: with the other 3-broker scenarios in `make test-replicated`
pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(os.environ.get("FEDKAFKA_REPLICATED_FAULTS") != "1",
                                 reason="heavy: runs with FEDKAFKA_REPLICATED_FAULTS=1 (make test-replicated)")]

PARTITIONS = 2


def _partitions(admin: AdminClient, topic: str) -> dict[int, tuple[int, list[int], list[int]]]:
    meta = admin.list_topics(topic, timeout=10).topics.get(topic)
    return {} if meta is None else {p: (m.leader, list(m.replicas), list(m.isrs)) for p, m in meta.partitions.items()}


def _describe(bootstrap: str, *args: str) -> str:
    """`kafka-topics --describe` through the proxy (the Java AdminClient's describeTopics)."""
    done = run_tool("kafka-topics", "--bootstrap-server", bootstrap, "--describe", *args, check=False, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    return done.stdout


def _all_in_sync_of(partitions: dict[int, tuple[int, list[int], list[int]]], count: int) -> bool:
    return len(partitions) == PARTITIONS and all(len(isr) == count for _, _, isr in partitions.values())


@pytest.mark.timeout(600)
def test_three_physical_replicas_read_three_and_a_shrunk_isr_reads_shrunk(tmp_path, unique_name):
    with started_three_brokers(tmp_path, **{"replica.lag.time.max.ms": "3000"}) as nodes:
        bootstrap = ",".join(n.bootstrap for n in nodes)
        direct = AdminClient({"bootstrap.servers": bootstrap})
        direct.create_topics([NewTopic("phys", PARTITIONS, 3)])["phys"].result(60)
        deadline = time.monotonic() + 60
        while not _all_in_sync_of(physical := _partitions(direct, "phys"), 3):
            assert time.monotonic() < deadline, physical
            time.sleep(0.2)
        layout = [("trio", "phys", p) for p in range(PARTITIONS)]
        proxy = ProxyProcess(tmp_path, split_view({"trio": bootstrap}, unique_name, layout))
        # the pool: this proxy and two more (never started: a describe connects to none of them)
        pool = [ProxyInfo(n, "127.0.0.1", port, ProxyRole.PPROXY) for n, port in
                ((1, proxy.port), (2, free_port()), (3, free_port()))]
        proxy.write_view(split_view({"trio": bootstrap}, unique_name, layout, proxies=pool))
        with proxy:
            through = AdminClient({"bootstrap.servers": proxy.bootstrap})
            logical = _partitions(through, unique_name)
            assert sorted(logical) == list(range(PARTITIONS))
            for leader, replicas, isr in logical.values():
                assert len(replicas) == 3 and replicas[0] == leader and sorted(replicas) == [1, 2, 3]
                assert isr == replicas
            described = _describe(proxy.bootstrap, "--topic", unique_name)
            assert len(re.findall(r"ReplicationFactor:\s*3\b", described)) == 1, described
            assert _describe(proxy.bootstrap, "--under-replicated-partitions").strip() == ""
            victim = next(n for n in nodes if all(leader != n.node_id for leader, _, _ in physical.values()))
            os.kill(victim.pid, signal.SIGSTOP)  # a follower of both partitions stops fetching: out of their ISRs
            deadline = time.monotonic() + 120  # the lag (3 s), then the proxy's next refresh (every 30 s)
            while not _all_in_sync_of(logical := _partitions(through, unique_name), 2):
                assert time.monotonic() < deadline, logical
                time.sleep(1)
            for _leader, replicas, isr in logical.values():
                assert len(replicas) == 3 and isr == replicas[:2]
            # what an operator runs: both logical partitions listed under-replicated
            under = _describe(proxy.bootstrap, "--under-replicated-partitions")
            assert len(re.findall(rf"Topic:\s*{unique_name}\s+Partition:\s*\d", under)) == PARTITIONS, under
            os.kill(victim.pid, signal.SIGCONT)
            assert proxy.alive()
