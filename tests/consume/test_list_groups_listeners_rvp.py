"""Review (rvp): ListGroups lists the groups a proxy coordinates, by a hash over the pool's consume proxies that does
not look at listeners, while Metadata lists only the proxies with a listener for the client's security protocol.

A pool of two cproxies: proxy 1 listens on PLAINTEXT and SASL_SSL, proxy 2 on SASL_SSL only. A PLAINTEXT admin client
(kafka-consumer-groups --list, AdminClient.listConsumerGroups) is told of proxy 1 only (Metadata), asks it ListGroups,
and gets only the groups the hash gives proxy 1: every group whose coordinator is proxy 2 (used by the SASL_SSL
clients) is listed by no broker it knows. Before the change proxy 1 listed every group."""

from __future__ import annotations

from consume.test_group_coordinators_per_listener_unit import listed_by, metadata_broker_ids
from fedkafka.view.model import Cluster, Endpoint, ProxyInfo, ProxyRole, View

GROUPS = [f"group-{i}" for i in range(40)]
BOTH_LISTENERS = (Endpoint("PLAINTEXT", "p1", 9092), Endpoint("SASL_SSL", "p1", 9093))
PROXIES = (ProxyInfo(1, "p1", 9092, ProxyRole.CPROXY, listeners=BOTH_LISTENERS),
           ProxyInfo(2, "p2", 9093, ProxyRole.CPROXY, listeners=(Endpoint("SASL_SSL", "p2", 9093),)))
VIEW = View(version=3, clusters={"c1": Cluster("c1", "c1:9092")}, coordination_cluster="c1", proxies=PROXIES)


def _brokers_in_metadata(me: ProxyInfo) -> list[int]:
    return metadata_broker_ids(me, VIEW, "PLAINTEXT")


def _listed_by(me: ProxyInfo) -> list[str]:
    """The groups proxy `me` answers a PLAINTEXT client's ListGroups, the coordination cluster holding all of GROUPS."""
    return listed_by(me, VIEW, "PLAINTEXT", GROUPS)


def test_a_plaintext_admin_client_lists_every_group_from_the_brokers_metadata_names():
    known = _brokers_in_metadata(PROXIES[0])
    assert known == [1]  # proxy 2 has no PLAINTEXT listener: the client never hears of it
    listed = [g for p in PROXIES if p.node_id in known for g in _listed_by(p)]
    missing = sorted(set(GROUPS) - set(listed))
    assert missing == [], f"{len(missing)} of {len(GROUPS)} groups listed by no broker the client knows: {missing[:5]}"


def test_a_proxy_the_view_does_not_list_yet_lists_no_group_another_proxy_lists_too():
    """A proxy started and serving before the view lists it (or dropped from it while it serves) names itself in its
    Metadata and hashes over itself and the pool, while the pool's other proxies hash over the view's proxies: the
    groups it wins are listed by it and by their coordinator in the view, twice to a client bootstrapped to it."""
    newcomer = ProxyInfo(3, "p3", 9092, ProxyRole.CPROXY, listeners=(Endpoint("PLAINTEXT", "p3", 9092),))
    assert _brokers_in_metadata(newcomer) == [3, 1]  # itself, and the listed proxies with a PLAINTEXT listener
    everyone_else = {g for g in GROUPS if g in _listed_by(PROXIES[0]) or g in _listed_by(PROXIES[1])}
    twice = sorted(set(_listed_by(newcomer)) & everyone_else)
    assert twice == [], f"{len(twice)} groups listed by two proxies: {twice[:5]}"
