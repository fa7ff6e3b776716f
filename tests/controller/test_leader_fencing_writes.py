"""Every write the controller's API takes commits only while this controller holds the leader row (docs/DESIGN.md
§3.6): a controller that lost the row (paused past its lease, another took over; it notices within a third of one)
answers 503 and writes nothing, neither in the database nor on Kafka. Before, only the workflows' writes, cluster
state changes and topic deletions were fenced: clusters, topics, configs, client rules, users, ACLs, proxy
registrations and drains, and the views they composed, were committed by both controllers at once."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from controller.test_leadership import _lost_row
from fedkafka.controller.leadership import NotLeader
from fedkafka.controller.models import ClusterRow, PhysicalPartitionRow, ProxyRow, TopicRow, ViewRow

SALT = "AAAAAAAAAAA="  # 8 bytes
KEY = "A" * 43 + "="  # 32 bytes: SCRAM-SHA-256's digest size
CREDENTIAL = {"mechanism": "SCRAM-SHA-256", "salt": SALT, "iterations": 4096, "stored_key": KEY, "server_key": KEY}
ACL = {"resource_type": "TOPIC", "name": "t", "principal": "User:a", "operation": "READ"}
PROXY = {"host": "h", "port": 9, "role": "pproxy"}

WRITES = [  # (method, path, body): each a write of shared state, refused by a controller that lost the row
    ("put", "/v1/clusters/c3", {"bootstrap": "c3:9092"}),  # registration
    ("put", "/v1/clusters/c1", {"bootstrap": "c1:9093"}),  # a new bootstrap
    ("put", "/v1/clusters/c2", {"bootstrap": "c2:9092", "coordination": True}),  # the coordination cluster
    ("post", "/v1/clusters/c1/state", {"state": "read_only"}),  # fenced before too
    ("put", "/v1/topics/t", {"partitions": 4, "placement": "blocks"}),
    ("put", "/v1/topics/t", {"partitions": 2, "placement": "blocks", "config": {"retention.ms": "1000"}}),
    ("put", "/v1/topics/fresh", {"partitions": 2, "placement": "blocks"}),
    ("post", "/v1/admin/topics", {"name": "fresh", "partitions": 3}),
    ("post", "/v1/admin/topics/t/partitions", {"count": 4}),
    ("post", "/v1/admin/topics/t/config", {"ops": [{"name": "retention.ms", "value": "1000"}]}),
    ("delete", "/v1/topics/t", None),  # fenced before too
    ("put", "/v1/client-rules/r2", {"match": "prefix", "pattern": "app-", "pool": "p"}),
    ("put", "/v1/client-rules/r1", {"match": "exact", "pattern": "other", "pool": "p"}),
    ("delete", "/v1/client-rules/r1", None),
    ("put", "/v1/users/carol", {"credentials": [CREDENTIAL]}),
    ("delete", "/v1/users/bob", None),
    ("post", "/v1/acls", {"acls": [{**ACL, "operation": "WRITE"}]}),
    ("post", "/v1/acls/delete", {}),
    ("post", "/v1/proxies", {"instance_id": "p3", **PROXY}),  # a new proxy
    ("post", "/v1/proxies/{p1}/drain", None),
    ("post", "/v1/proxies/{p2}/undrain", None),
]


def _federation(api) -> dict[str, int]:
    """Clusters c1, c2; topic t; user bob; an ACL; rule r1; proxies p1, p2 (live) and p2b (drained, undrained
    by a case). Returns the node ids."""
    for cid in ("c1", "c2"):
        api.put(f"/v1/clusters/{cid}", json={"bootstrap": f"{cid}:9092"}).raise_for_status()
    api.put("/v1/topics/t", json={"partitions": 2, "placement": "blocks"}).raise_for_status()
    api.put("/v1/users/bob", json={"credentials": [CREDENTIAL]}).raise_for_status()
    api.post("/v1/acls", json={"acls": [ACL]}).raise_for_status()
    api.put("/v1/client-rules/r1", json={"match": "exact", "pattern": "app", "pool": "default"}).raise_for_status()
    nodes = {name: api.post("/v1/proxies", json={"instance_id": name, **PROXY}).json()["node_id"]
             for name in ("p1", "p2", "p2b")}
    api.post(f"/v1/proxies/{nodes['p2b']}/drain").raise_for_status()
    return {"p1": nodes["p1"], "p2": nodes["p2b"]}


def _state(api) -> dict:
    """What the federation holds: the database's rows (as the API lists them), the view, and Kafka's topics."""
    ctl = api.controller
    with ctl.session() as s:
        proxies = [(p.instance_id, p.host, p.port, p.role, p.pool, p.draining)
                   for p in s.scalars(select(ProxyRow).order_by(ProxyRow.node_id))]
        view = s.scalars(select(ViewRow.version)).one()
    reads = ("/v1/clusters", "/v1/topics", "/v1/users", "/v1/acls", "/v1/client-rules")
    return {**{path: api.get(path).json() for path in reads}, "proxies": proxies, "view": view,
            "kafka": (dict(api.kafka.created), dict(api.kafka.configs))}


@pytest.mark.parametrize(("method", "path", "body"), WRITES, ids=[f"{m} {p} {b}"[:80] for m, p, b in WRITES])
def test_a_controller_that_lost_the_row_writes_nothing(make_api, method, path, body):
    api = make_api()
    nodes = _federation(api)
    before = _state(api)
    api.controller.leadership, _new = _lost_row(api.controller)
    kwargs = {} if body is None else {"json": body}
    resp = getattr(api, method)(path.format(**nodes), **kwargs)
    assert resp.status_code == 503 and "not the active controller" in resp.json()["detail"], resp.text
    assert _state(api) == before


def test_a_controller_that_lost_the_row_publishes_no_view(make_api):
    """Its scans and lease rounds compose too: the view they would commit is not written (nor served)."""
    api = make_api()
    nodes = _federation(api)
    ctl = api.controller
    with ctl.session() as s:  # a change the active controller committed, not composed yet
        s.get(ProxyRow, nodes["p2"]).draining = False
        s.commit()
    before = _state(api)
    ctl.leadership, _new = _lost_row(ctl)
    served = ctl.view.version
    with pytest.raises(NotLeader, match="another controller took over"):
        ctl.compose()
    assert (_state(api), ctl.view.version) == (before, served)


@pytest.mark.parametrize(("method", "path", "body"), WRITES, ids=[f"{m} {p} {b}"[:80] for m, p, b in WRITES])
def test_the_controller_that_took_the_row_over_writes(make_api, method, path, body):
    """The same writes from the controller holding the row commit as before."""
    api = make_api()
    nodes = _federation(api)
    before = _state(api)
    _old, api.controller.leadership = _lost_row(api.controller)
    kwargs = {} if body is None else {"json": body}
    resp = getattr(api, method)(path.format(**nodes), **kwargs)
    assert resp.status_code in (200, 204), resp.text
    assert _state(api) != before


def test_a_controller_that_lost_the_row_records_no_scan(make_api):
    """Its scans (it may be cut off from a cluster the active one reaches) write no reachability, no log end older
    than the active one's (a failover seals at a stored end), and create no physical topic on Kafka."""
    api = make_api()
    _federation(api)
    ctl = api.controller
    with ctl.session() as s:
        topic_id = s.get(TopicRow, "t").topic_id
        clusters = list(s.scalars(select(ClusterRow)))
        needed = ctl._needed_topics(s, clusters)["c1"]
    ctl.leadership, _new = _lost_row(ctl)
    api.kafka.down.add("c2")
    with pytest.raises(NotLeader, match="another controller took over"):
        ctl.scan_once()
    with pytest.raises(NotLeader, match="another controller took over"):
        ctl._store_ends({("c1", "t", 0): (7, topic_id)})
    del api.kafka.created[("c1", "t")]
    with pytest.raises(NotLeader, match="another controller took over"):
        ctl._create_needed("c1", needed, {"c1": "c1:9092"}, clusters)
    with ctl.session() as s:
        reachable = {c.id: c.reachable for c in s.scalars(select(ClusterRow))}
        ends = {(r.cluster, r.physical_partition): r.scanned_end for r in s.scalars(select(PhysicalPartitionRow))}
    assert (reachable, ends.get(("c1", 0)), ("c1", "t") in api.kafka.created) == ({"c1": True, "c2": True}, None,
                                                                                  False)
