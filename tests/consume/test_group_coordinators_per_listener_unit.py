"""Group coordinators per client protocol (fix of review rvp): a group's coordinator is hashed over the consume proxies
of the pool that the view lists with a listener for the client's security protocol, not draining while any is.

Every proxy Metadata names to a client (`plan.listed_brokers`) hashes over the same candidates, so FindCoordinator
names only a proxy the client was told of and can reach, and their ListGroups answers together list every group
exactly once. Before the fix FindCoordinator at a PLAINTEXT listener answered COORDINATOR_NOT_AVAILABLE (forever) for
the groups hashed to a SASL_SSL-only proxy. A drained proxy is left out of `View.proxies` and named in `View.draining`
(docs/DESIGN.md §4.11); the views naming a draining proxy among the proxies too check the rule holds either way."""

from __future__ import annotations

import pytest
from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import request_type, response_type
from fedkafka.proxy.handlers import find_coordinator, groups, metadata
from fedkafka.proxy.plan import Context
from fedkafka.security.session import Session
from fedkafka.view.model import Cluster, Endpoint, ProxyInfo, ProxyRole, View

GROUPS = [f"group-{i}" for i in range(60)]


def _proxy(node: int, *protocols: str) -> ProxyInfo:
    listeners = tuple(Endpoint(p, f"p{node}", 9090 + i) for i, p in enumerate(protocols))
    return ProxyInfo(node, f"p{node}", 9090, ProxyRole.CPROXY, listeners=listeners)


# proxy 2 has no PLAINTEXT listener; all have SASL_SSL
PROXIES = (_proxy(1, "PLAINTEXT", "SASL_SSL"), _proxy(2, "SASL_SSL"), _proxy(3, "PLAINTEXT", "SASL_SSL"))


def _view(proxies=PROXIES, draining: tuple[int, ...] = ()) -> View:
    return View(version=3, clusters={"c1": Cluster("c1", "c1:9092")}, coordination_cluster="c1", proxies=proxies,
                draining=draining)


def _ctx(me: ProxyInfo, view: View, protocol: str) -> Context:
    return Context(view=view, me=me, advertised={}, physical=None, producer_ids=None,
                   session=Session(protocol=protocol))


def metadata_broker_ids(me: ProxyInfo, view: View, protocol: str) -> list[int]:
    """The brokers proxy `me` names in its Metadata answer to a client on `protocol`, in its order."""
    answer = metadata.handle(_ctx(me, view, protocol), None, build(request_type(3, 12), {
        "topics": [], "allow_auto_topic_creation": False, "include_topic_authorized_operations": False}))
    return [b.node_id for b in answer.brokers]


def _metadata_brokers(me: ProxyInfo, view: View, protocol: str) -> set[int]:
    return set(metadata_broker_ids(me, view, protocol))


def listed_by(me: ProxyInfo, view: View, protocol: str, group_ids: list[str] = GROUPS) -> list[str]:
    """The groups proxy `me` answers to ListGroups, the coordination cluster's one broker holding all of `group_ids`."""
    plan = groups.handle(_ctx(me, view, protocol), None,
                         build(request_type(16, 5), {"states_filter": [], "types_filter": []}))
    fan = plan.finish([build(response_type(3, 12), {"brokers": [{"node_id": 5, "host": "h", "port": 1}]})])
    answer = fan.finish([build(response_type(16, 5), {"groups": [
        {"group_id": g, "protocol_type": "consumer", "group_state": "Stable", "group_type": "classic"}
        for g in group_ids]})])
    assert answer.error_code == ErrorCode.none
    return [g.group_id for g in answer.groups]


def _coordinators(me: ProxyInfo, view: View, protocol: str) -> dict[str, tuple[int, ErrorCode]]:
    request = build(request_type(10, 4), {"key_type": 0, "coordinator_keys": GROUPS})
    return {c.key: (c.node_id, c.error_code)
            for c in find_coordinator.handle(_ctx(me, view, protocol), None, request).coordinators}


def _client_sees(bootstrap: ProxyInfo, view: View, protocol: str) -> tuple[list[str], set[int]]:
    """What a client bootstrapped to `bootstrap` lists (ListGroups to every broker Metadata names) and which brokers."""
    known = _metadata_brokers(bootstrap, view, protocol)
    everyone = {p.node_id: p for p in (*view.proxies, bootstrap)}
    return [g for n in sorted(known) for g in listed_by(everyone[n], view, protocol)], known


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize("draining", [(), (1,), (3,)])
def test_the_brokers_a_client_is_told_of_list_every_group_once_and_name_only_themselves(protocol, draining):
    view = _view(draining=draining)
    for bootstrap in PROXIES:
        if bootstrap.endpoint(protocol) is None:
            continue
        listed, known = _client_sees(bootstrap, view, protocol)
        assert sorted(listed) == sorted(GROUPS), f"via proxy {bootstrap.node_id}: each group once"
        named = _coordinators(bootstrap, view, protocol)
        assert {code for _node, code in named.values()} == {ErrorCode.none}
        assert {node for node, _code in named.values()} <= known  # only proxies the client was told of
        assert not {node for node, _code in named.values()} & set(draining)  # a draining proxy coordinates none


def test_every_proxy_names_the_same_coordinator_to_clients_of_one_protocol():
    view = _view(draining=(3,))
    for protocol in ("PLAINTEXT", "SASL_SSL"):
        answers = [_coordinators(p, view, protocol) for p in PROXIES if p.endpoint(protocol) is not None]
        assert all(a == answers[0] for a in answers)


def test_a_proxy_the_view_does_not_list_yet_sends_its_clients_to_the_listed_coordinators():
    """It is no candidate while the view lists one: it lists no group and names the view's proxies, which its
    Metadata names too."""
    newcomer, view = _proxy(4, "PLAINTEXT"), _view()
    assert listed_by(newcomer, view, "PLAINTEXT") == []
    named = {node for node, _code in _coordinators(newcomer, view, "PLAINTEXT").values()}
    assert named and named <= _metadata_brokers(newcomer, view, "PLAINTEXT") - {4}
    listed, _known = _client_sees(newcomer, view, "PLAINTEXT")
    assert sorted(listed) == sorted(GROUPS)


def test_a_proxy_alone_with_its_protocol_coordinates_every_group_of_its_clients():
    """The view lists no consume proxy with a listener for the client's protocol (a proxy serving before the view lists
    the pool): this proxy coordinates, and lists, every group for them."""
    lone = _proxy(4, "SSL")
    assert sorted(listed_by(lone, _view(), "SSL")) == sorted(GROUPS)
    assert {node for node, _code in _coordinators(lone, _view(), "SSL").values()} == {4}


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_SSL"])
def test_a_drained_proxy_the_view_leaves_out_sends_its_clients_to_the_others(protocol):
    """As compose.build_view drains proxy 1: out of the view's proxies, named draining; it still serves its clients."""
    view = _view(proxies=PROXIES[1:], draining=(1,))
    for bootstrap in PROXIES:
        if bootstrap.endpoint(protocol) is None:
            continue
        listed, known = _client_sees(bootstrap, view, protocol)
        assert sorted(listed) == sorted(GROUPS)
        assert {node for node, _code in _coordinators(bootstrap, view, protocol).values()} <= known - {1}


def test_a_drained_proxy_alone_with_the_clients_protocol_coordinates_its_groups():
    """No other proxy of the pool has an SSL listener: the drained proxy's Metadata still names itself (listed_brokers),
    and it coordinates every group of those clients rather than naming peers they cannot reach."""
    drained = _proxy(1, "SSL")
    view = _view(proxies=PROXIES[1:], draining=(1,))
    assert _metadata_brokers(drained, view, "SSL") == {1}
    assert {node for node, _code in _coordinators(drained, view, "SSL").values()} == {1}
    assert sorted(listed_by(drained, view, "SSL")) == sorted(GROUPS)
