"""A proxy run with --workers N against the controller (docs/DESIGN.md §4.10): one node id for clients, one row per
worker for acks and fences. Moves use a recording stand-in for log ends; the real proxy processes are in
tests/workflows/test_proxy_workers_integration.py."""

from __future__ import annotations

import threading
import time

import pytest

from fedkafka.controller.moves import MoveFailed, Mover
from fedkafka.controller.service import MAX_WORKER
from fedkafka.fencing import FENCE_GRACE_S
from fedkafka.view.rebalance import Move

PROXY = {"instance_id": "h:9092", "host": "h", "port": 9092, "role": "pproxy"}


@pytest.fixture
def api(make_api, recording_kafka_class):
    class LogEnds(recording_kafka_class):
        def log_offsets(self, cluster, bootstrap, partitions):
            return {(t, p): (0, 0) for t, p in partitions}

    api = make_api(kafka=LogEnds())
    for cid in ("c1", "c2"):
        api.put(f"/v1/clusters/{cid}", json={"bootstrap": f"{cid}:9092"}).raise_for_status()
    api.put("/v1/topics/t", json={"partitions": 2, "placement": "blocks"}).raise_for_status()
    return api


def _register(api, worker: int) -> dict:
    answer = api.post("/v1/proxies", json={**PROXY, "worker": worker})
    assert answer.status_code == 200, answer.text
    return answer.json()


def _heartbeat(api, member: dict, version: int) -> None:
    member_id = member.get("member_id", member["node_id"])  # a controller that knows no workers: the node's row
    answer = api.post(f"/v1/proxies/{member_id}/heartbeat", json={"applied_version": version})
    assert answer.status_code == 200, answer.text


def _frozen_version(api) -> int | None:
    view = api.get("/v1/view").json()
    topic = next(t for t in view["topics"] if t["name"] == "t")
    return view["version"] if topic["partitions"][1]["frozen"] else None


def _ack_when_frozen(api, acking_first, members: list[dict]) -> threading.Thread:
    """Each of `members` applies the frozen view as soon as it is published, the others do not."""

    def ack() -> None:
        while (version := _frozen_version(api)) is None:
            time.sleep(0.02)
        for member in members:
            _heartbeat(api, member, version)

    return acking_first(ack)


def _went_silent(ctl, member_id: int, seconds_ago: float, fence_in: float) -> None:
    """The worker stopped renewing: its lease ran out `seconds_ago`, its fence runs out in `fence_in` s."""
    from fedkafka.controller.models import ProxyRow

    with ctl._hb_lock:
        ctl._leases.pop(member_id, None)
        ctl._pending.pop(member_id, None)
    with ctl.session() as s:
        row = s.get(ProxyRow, member_id)
        row.lease_expires = time.time() - seconds_ago
        row.fence_expires = time.time() + fence_in
        s.commit()


def _fence_of(ctl, member_id: int) -> float:
    from fedkafka.controller.models import ProxyRow

    ctl.flush_heartbeats()
    with ctl.session() as s:
        return s.get(ProxyRow, member_id).fence_expires


def test_the_workers_of_a_proxy_share_one_node_id_and_one_broker_entry(api):
    """Clients see one broker per host: every worker answers Metadata with the same node id, and the view lists the
    node once, whichever worker registered first. Each worker has its own member row and producer-id block."""
    second = _register(api, 1)  # worker 1 first: the node's row is made for it
    assert [p["node_id"] for p in api.get("/v1/view").json()["proxies"]] == [second["node_id"]]
    first = _register(api, 0)
    assert first["node_id"] == second["node_id"] == first["member_id"] != second["member_id"]
    assert first["producer_id_block"]["start"] != second["producer_id_block"]["start"]
    proxies = api.get("/v1/view").json()["proxies"]
    assert [(p["node_id"], p["port"]) for p in proxies] == [(first["node_id"], 9092)]
    again = _register(api, 1)  # a restarted worker is the same member
    assert (again["node_id"], again["member_id"]) == (second["node_id"], second["member_id"])
    status = api.get("/v1/status").json()["proxies"]
    assert len(status) == 1 and [w["worker"] for w in status[0]["workers"]] == [0, 1]


def test_a_single_process_proxy_registers_as_before(api):
    node = api.post("/v1/proxies", json=PROXY).json()
    assert node["node_id"] == node["member_id"] and node["worker"] == 0
    assert "workers" not in api.get("/v1/status").json()["proxies"][0]


@pytest.mark.parametrize("body", [{"worker": -1}, {"worker": MAX_WORKER + 1}, {"instance_id": "h:9092/w1"}],
                         ids=["negative", "too-high", "a-worker-row's-instance-id"])
def test_a_bad_worker_registration_is_refused(api, body):
    _register(api, 1)
    answer = api.post("/v1/proxies", json={**PROXY, **body})
    assert answer.status_code == 422 and ("worker" in answer.text or "instance_id" in answer.text), answer.text
    status = api.get("/v1/status").json()["proxies"]
    assert [w["worker"] for w in status[0]["workers"]] == [1]  # worker 1's row is still its own


def test_a_node_with_two_workers_is_not_acked_until_both_applied(api, acking_first):
    """docs/DESIGN.md §4.10: worker 0's ack of the frozen view does not stand for worker 1, which may still route
    produce with the old view. The old code kept one row per instance id, so both workers heartbeat the same row,
    and the first ack sealed the move."""
    ctl = api.controller
    w0, w1 = _register(api, 0), _register(api, 1)
    mover = Mover(ctl, ack_timeout=1.0)
    ids = mover.plan(None, [Move("t", 1, "c2", "c1", "t", 1)])
    helper = _ack_when_frozen(api, acking_first, [w0])
    with pytest.raises(MoveFailed, match=rf"proxies {w1['node_id']}/w1 did not apply view"):
        mover.run(ids)
    helper.join()
    assert mover.counts(ids) == {"rolled_back": 1}
    assert api.get("/v1/status").json()["proxies"][0]["applied_version"] < ctl.view.version  # the node: its lowest

    ids = mover.plan(None, [Move("t", 1, "c2", "c1", "t", 1)])
    helper = _ack_when_frozen(api, acking_first, [w0, w1])
    assert mover.run(ids) == {"done": 1}
    helper.join()


def test_a_dead_workers_own_fence_governs_not_its_siblings(api, acking_first):
    """A worker that died (or hangs) stops renewing; its live sibling keeps renewing the node's lease, but that
    renews only the sibling's own fence. The move waits for the dead worker until its own fence and the grace ran
    out, exactly as for a silent proxy (docs/DESIGN.md §4.9 case 2), then seals on the live worker's ack."""
    ctl = api.controller
    w0, w1 = _register(api, 0), _register(api, 1)
    _went_silent(ctl, w1["member_id"], seconds_ago=FENCE_GRACE_S + 1, fence_in=60)
    fence_before = _fence_of(ctl, w1["member_id"])
    _heartbeat(api, w0, 0)
    assert _fence_of(ctl, w1["member_id"]) == fence_before  # the sibling's renewal is not the dead worker's
    assert [p["node_id"] for p in api.get("/v1/view").json()["proxies"]] == [w0["node_id"]]  # still listed

    mover = Mover(ctl, ack_timeout=1.0)
    ids = mover.plan(None, [Move("t", 1, "c2", "c1", "t", 1)])
    helper = _ack_when_frozen(api, acking_first, [w0])
    with pytest.raises(MoveFailed, match=rf"proxies {w1['node_id']}/w1 did not apply view"):
        mover.run(ids)  # the dead worker may still be writing until its fence (plus the grace)
    helper.join()
    assert mover.counts(ids) == {"rolled_back": 1}

    _went_silent(ctl, w1["member_id"], seconds_ago=FENCE_GRACE_S + 1, fence_in=-(FENCE_GRACE_S + 1))
    ids = mover.plan(None, [Move("t", 1, "c2", "c1", "t", 1)])
    helper = _ack_when_frozen(api, acking_first, [w0])
    assert mover.run(ids) == {"done": 1}  # fenced for good: only the live worker's ack is needed
    helper.join()


def test_a_live_workers_own_fence_is_not_stretched_by_a_dead_sibling(api, acking_first):
    """The other way round: worker 0 (the node's own row) died, worker 1 lives. Worker 0's fence governs, and the
    node stays listed (and its partitions led) while worker 1 holds the lease."""
    ctl = api.controller
    w0, w1 = _register(api, 0), _register(api, 1)
    _went_silent(ctl, w0["member_id"], seconds_ago=FENCE_GRACE_S + 1, fence_in=60)
    ctl.expire_leases()
    assert [p["node_id"] for p in api.get("/v1/view").json()["proxies"]] == [w0["node_id"]]
    mover = Mover(ctl, ack_timeout=1.0)
    ids = mover.plan(None, [Move("t", 1, "c2", "c1", "t", 1)])
    helper = _ack_when_frozen(api, acking_first, [w1])
    with pytest.raises(MoveFailed, match=rf"proxies {w0['node_id']} did not apply view"):
        mover.run(ids)
    helper.join()


def test_a_node_leaves_the_view_only_when_every_worker_lost_its_lease(api):
    ctl = api.controller
    w0, w1 = _register(api, 0), _register(api, 1)
    _went_silent(ctl, w0["member_id"], seconds_ago=1, fence_in=60)
    ctl.expire_leases()
    assert [p["node_id"] for p in api.get("/v1/view").json()["proxies"]] == [w0["node_id"]]
    _went_silent(ctl, w1["member_id"], seconds_ago=1, fence_in=60)
    ctl.expire_leases()
    assert api.get("/v1/view").json()["proxies"] == []
    _heartbeat(api, w1, 0)  # within its fence: renewed, and the node is listed again
    assert [p["node_id"] for p in api.get("/v1/view").json()["proxies"]] == [w0["node_id"]]
