"""A short fuzz run (`make fuzz` for long ones) against a real pproxy, cproxy, name service and controller
over the session's clusters: no process may die, every probe must be answered, and the well-behaved
confluent-kafka client beside it must see no error and consume every record it got acked."""

from __future__ import annotations

import json

import pytest

from fedkafka.fuzz.run import Options, problems, run

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_short_fuzz_run_kills_nothing_and_disturbs_no_one(kafka_clusters, tmp_path):
    options = Options(seed=1, duration=40, connections=8, workdir=tmp_path / "fuzz", tag="fuzz-short",
                      clusters={c.name: c.bootstrap for c in kafka_clusters[:2]})
    report = run(options)
    (tmp_path / "report.json").write_text(json.dumps(report, indent=2))
    assert report["frames"] > 1000, report  # the harness itself worked: it sent, and the targets answered
    assert report["outcomes"].get("answered", 0) > 100, report["outcomes"]
    assert report["good_client"]["acked"] > 0, report["good_client"]
    found = problems(report)
    assert not found, "\n".join(found) + f"\n(report and crash corpus in {tmp_path})"
