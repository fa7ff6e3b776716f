"""Log forging: the controller's lines and errors quote names a client chose (a consumer group's id, a proxy's
instance id), as the proxy's refusal lines do, so a newline in one starts no line of its own making."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import delete

from controller.test_leadership import _drained_chain, _refused_once
from fedkafka.controller import coordination, workflows
from fedkafka.controller.errors import Conflict, Unavailable
from fedkafka.controller.models import SegmentRow
from fedkafka.controller.workflows import WorkflowEngine
from fedkafka.view.model import Segment, shadow_topic

FORGED = "app\n2026-12-07 05:00:00 INFO fedkafka.controller: all good"  # a group id that writes a second line
QUOTED = repr(FORGED)


def _one_line(records: list[logging.LogRecord], words: str) -> str:
    (line,) = [r.getMessage() for r in records if words in r.getMessage()]
    assert "\n" not in line and QUOTED in line, line
    return line


def test_a_group_raised_to_its_chain_is_logged_quoted(make_api, recording_kafka_class, caplog):
    _api, ctl = _drained_chain(make_api, recording_kafka_class)
    with ctl.session() as s:  # c1's segment dropped by a drain since the copy: the chain starts at 10
        s.execute(delete(SegmentRow).where(SegmentRow.cluster == "c1"))
        s.commit()
    with caplog.at_level(logging.WARNING, logger=coordination.__name__):
        raised = WorkflowEngine(ctl).coordination._not_below_chains({FORGED: [(shadow_topic("t"), 0, 3, 7, "")]})
    assert raised == {FORGED: [(shadow_topic("t"), 0, 10, None, "")]}
    assert _one_line(caplog.records, "restored at 10").startswith(f"group {QUOTED}: ")


def test_a_group_not_written_is_named_quoted(make_api, recording_kafka_class, monkeypatch):
    _api, ctl = _drained_chain(make_api, recording_kafka_class)
    monkeypatch.setattr(coordination.time, "sleep", lambda _s: None)
    _refused_once(ctl, lambda: None)
    with pytest.raises(Unavailable) as refused:
        WorkflowEngine(ctl).coordination.write("c2", {FORGED: [(shadow_topic("t"), 0, 5, -1, "")]}, patience_s=0)
    assert str(refused.value) == f"offsets of group {QUOTED} not written to c2: 1 partitions refused"


def test_a_group_not_read_back_is_named_quoted(make_api, recording_kafka_class, monkeypatch):
    _api, ctl = _drained_chain(make_api, recording_kafka_class)
    moving = WorkflowEngine(ctl).coordination
    ids = {shadow_topic("t"): "id-t"}
    monkeypatch.setattr(moving, "_groups_of", lambda cluster: [])  # c2 holds none of them
    monkeypatch.setattr(moving, "read_tagged", lambda cluster, groups, **_kw: ({}, ids))
    with pytest.raises(Conflict) as refused:
        moving._verify("c2", {FORGED: [(shadow_topic("t"), 0, 5, -1, "")]}, ids)
    assert str(refused.value).startswith(f"group {QUOTED}: offsets ") and "\n" not in str(refused.value)


def test_a_group_whose_topics_were_deleted_is_logged_quoted(caplog):
    with caplog.at_level(logging.INFO, logger=coordination.__name__):
        kept = coordination._of_topics_still_there(FORGED, [("s", 0, 5, -1, "")], {"s": "old"}, {"s": "new"})
    assert kept == []
    assert _one_line(caplog.records, "not written").startswith(f"group {QUOTED}: offsets of s ")


def test_a_drain_waiting_for_a_group_names_it_quoted():
    segs = [Segment("c1", "t", 0, 0, 10, 0), Segment("c2", "t", 0, 0, None, 10)]
    said = workflows._blocker("t", 0, segs, "c1", 4, FORGED)
    assert said == f"t/0: group {QUOTED} committed 4, c1's data ends at 10"


def test_a_proxy_drained_is_logged_with_its_instance_id_quoted(make_api, caplog):
    api = make_api()
    node, _other = (api.post("/v1/proxies", json={"instance_id": instance, "host": "h", "port": port,
                                                  "role": "pproxy", "pool": "default"}).json()["node_id"]
                    for instance, port in ((FORGED, 9001), ("h:9002", 9002)))  # the other one keeps the pool served
    with caplog.at_level(logging.INFO, logger="fedkafka.controller.service"):
        drained = api.post(f"/v1/proxies/{node}/drain")
    assert drained.status_code == 200, drained.text
    assert _one_line(caplog.records, "draining") == f"proxy {node} ({QUOTED}) draining"
