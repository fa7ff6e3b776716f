"""As a new user: `fedkafka local up`, then a consumer group and `kafka-consumer-groups --describe` through
the name service (controller-made topic, shadow topic and proxies): lag is correct in logical offsets."""

from __future__ import annotations

import collections

import pytest

from fedkafka.kafka.tools import run_tool

from .support import produce_values

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_group_lag_through_the_name_service(local_federation, fedkafka_cli):
    state_dir, status = local_federation
    bootstrap = status["nameservice"]["bootstrap"]
    fedkafka_cli(state_dir, "topic", "create", "lagged", "--partitions", "8")
    acks = produce_values(bootstrap, "lagged", [f"v{i}" for i in range(400)])
    ends = collections.Counter(p for p, _, _ in acks)
    assert len(ends) == 8
    consumed = run_tool("kafka-console-consumer", "--bootstrap-server", bootstrap, "--topic", "lagged",
                        "--group", "lag-group", "--from-beginning", "--max-messages", "300", "--timeout-ms", "60000",
                        timeout=180)
    assert len(consumed.stdout.splitlines()) == 300, consumed.stderr[-2000:]
    described = run_tool("kafka-consumer-groups", "--bootstrap-server", bootstrap, "--describe", "--group",
                         "lag-group", timeout=180)
    assert described.returncode == 0, described.stderr[-2000:]
    rows = {}
    for line in described.stdout.splitlines():
        cols = line.split()
        if len(cols) >= 6 and cols[0] == "lag-group" and cols[1] == "lagged":
            current = 0 if cols[3] == "-" else int(cols[3])
            rows[int(cols[2])] = (current, int(cols[4]), int(cols[5]) if cols[5] != "-" else int(cols[4]))
    assert sorted(rows) == list(range(8)), described.stdout
    assert {p: end for p, (_, end, _) in rows.items()} == dict(ends)  # logical log ends
    assert all(current + lag == end for current, end, lag in rows.values())
    assert sum(lag for _, _, lag in rows.values()) == 100
