"""A short fuzz run (`make fuzz` for long ones) against a real pproxy, cproxy, name service and controller
over the session's clusters: no process may die, every probe must be answered, and the well-behaved
confluent-kafka client beside it must see no error and consume every record it got acked."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
from pathlib import Path

import pytest

from fedkafka.fuzz.generator import PIPELINE_LENGTHS
from fedkafka.fuzz.run import Options, Run, api_versions, problems, run, start_environment

pytestmark = [pytest.mark.integration, pytest.mark.slow]


SHORT_RUN_FRAMES = 1200


def test_a_short_fuzz_run_kills_nothing_and_disturbs_no_one(kafka_clusters, tmp_path):
    """A frame budget and no time limit: a slow machine makes the run longer, never fails it (every send is
    answered or times out after `answer_timeout`, so the budget is always spent)."""
    options = Options(seed=3, frames=SHORT_RUN_FRAMES, duration=float("inf"), connections=8, workdir=tmp_path / "fuzz",
                      tag="fuzz-short", clusters={c.name: c.bootstrap for c in kafka_clusters[:2]})
    report = run(options)
    (tmp_path / "report.json").write_text(json.dumps(report, indent=2))
    # the harness itself worked: it spent its budget (a worker stops only when its next burst would overshoot
    # it) and the targets answered
    assert SHORT_RUN_FRAMES - max(PIPELINE_LENGTHS) < report["frames"] <= SHORT_RUN_FRAMES, report
    assert report["outcomes"].get("answered", 0) > 100, report["outcomes"]
    assert report["good_client"]["acked"] > 0, report["good_client"]
    found = problems(report)
    assert not found, "\n".join(found) + f"\n(report and crash corpus in {tmp_path})"


def test_the_watch_sees_a_death_keeps_the_last_sends_and_restarts(kafka_clusters, tmp_path):
    """The harness's own machinery: a proxy killed mid-run (SIGKILL, unlike the aborts fuzzing causes) is
    reported with its signal, its last sends are written to the corpus, and it serves again afterwards."""
    options = Options(seed=2, duration=14, connections=4, workdir=tmp_path / "fuzz", tag="fuzz-watch",
                      clusters={c.name: c.bootstrap for c in kafka_clusters[:2]})
    env, _own = start_environment(options)
    fuzz = Run(options, env)

    async def scenario():
        async def kill_soon():
            await asyncio.sleep(4)
            env.services["pproxy"].proc.send_signal(signal.SIGKILL)
        killer = asyncio.create_task(kill_soon())
        await fuzz.main()
        await killer

    try:
        asyncio.run(scenario())
        assert env.services["pproxy"].proc.poll() is None  # restarted, and alive at the end
        assert api_versions(env.address("pproxy"))[18] == (0, 4)
    finally:
        env.stop()
    killed = [d for d in fuzz.crashes if d["service"] == "pproxy" and d["how"] == "signal SIGKILL"]
    assert len(killed) == 1, fuzz.crashes
    assert env.services["pproxy"].starts == 2
    doc = json.loads(Path(killed[0]["corpus_file"]).read_text())
    assert doc["sends"] and {s["target"] for s in doc["sends"]} <= {"pproxy", "nameservice>pproxy"}
    assert all(base64.b64decode(s["data_b64"]) for s in doc["sends"])
    assert fuzz.probes["failed"] >= 1  # the probes noticed the outage too
