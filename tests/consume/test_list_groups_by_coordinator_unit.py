"""ListGroups answered per proxy as Kafka answers it per broker: each lists only the groups it coordinates.

A client lists groups by asking every broker of the cluster (kafka-consumer-groups --list, AdminClient
listConsumerGroups, librdkafka's ListConsumerGroups) and joins the answers; Kafka's brokers each list the groups of
their own coordinator shards, so every group comes once. The proxies of a pool are the brokers the client sees, and
FindCoordinator names one of them per group."""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type, response_type
from fedkafka.proxy.handlers import find_coordinator, groups
from fedkafka.proxy.plan import Context
from fedkafka.view.model import Cluster, ProxyInfo, ProxyRole, View

GROUPS = [f"group-{i}" for i in range(40)]
PROXIES = (ProxyInfo(1, "p1", 9092, ProxyRole.CPROXY), ProxyInfo(2, "p2", 9092, ProxyRole.CPROXY),
           ProxyInfo(3, "p3", 9092, ProxyRole.PPROXY))
VIEW = View(version=3, clusters={"c1": Cluster("c1", "c1:9092")}, coordination_cluster="c1", proxies=PROXIES)


def ctx(me: ProxyInfo, view: View = VIEW) -> Context:
    return Context(view=view, me=me, advertised={}, physical=None, producer_ids=None)


def listed_by(me: ProxyInfo, view: View = VIEW) -> list[str]:
    """The groups proxy `me` answers to ListGroups, the coordination cluster's two brokers holding all of GROUPS."""
    plan = groups.handle(ctx(me, view), None, build(request_type(16, 5), {"states_filter": [], "types_filter": []}))
    brokers = build(response_type(3, 12), {"brokers": [{"node_id": n, "host": "h", "port": 1} for n in (5, 6)]})
    fan = plan.finish([brokers])
    halves = (GROUPS[::2], GROUPS[1::2])
    answers = [build(response_type(16, 5), {"groups": [{"group_id": g, "protocol_type": "consumer",
                                                        "group_state": "Stable", "group_type": "classic"}
                                                       for g in half]}) for half in halves]
    answer = fan.finish(answers)
    assert answer.error_code == ErrorCode.none
    return [g.group_id for g in answer.groups]


def coordinators(me: ProxyInfo, view: View = VIEW) -> dict[str, int]:
    request = build(request_type(10, 4), {"key_type": 0, "coordinator_keys": GROUPS})
    return {c.key: c.node_id for c in find_coordinator.handle(ctx(me, view), None, request).coordinators}


def test_the_proxies_of_a_pool_together_list_each_group_once():
    first, second = listed_by(PROXIES[0]), listed_by(PROXIES[1])
    assert sorted(first + second) == sorted(GROUPS)  # each group once: no duplicates across the pool's proxies
    assert first and second  # both coordinate some of the 40 groups


def test_a_proxy_lists_the_groups_find_coordinator_names_it_for():
    owner = coordinators(PROXIES[0])
    for proxy in PROXIES[:2]:
        assert set(listed_by(proxy)) == {g for g, node in owner.items() if node == proxy.node_id}


def test_a_draining_proxy_lists_no_group_and_the_others_list_them_all():
    """A draining proxy coordinates no group (FindCoordinator names the others): the others list its groups."""
    draining = View(version=4, clusters=VIEW.clusters, coordination_cluster="c1", proxies=PROXIES[1:],
                    draining=(1,))
    assert listed_by(PROXIES[0], draining) == []
    assert sorted(listed_by(PROXIES[1], draining)) == sorted(GROUPS)
