"""Which proxy coordinates a group: what FindCoordinator answers and ListGroups lists by (handlers do not import each
other: the import contract).

A group's coordinator is a consume proxy of the caller's pool, chosen by rendezvous on the group id, so a group's
requests gather on one proxy (per security protocol: a client is only named a proxy it has a listener on); a draining
proxy coordinates no group while another can (docs/DESIGN.md §4.11)."""

from __future__ import annotations

from fedkafka.proxy.plan import Context
from fedkafka.view.model import ProxyInfo

Candidates = tuple[ProxyInfo, *tuple[ProxyInfo, ...]]  # never empty


def consume_proxies(ctx: Context) -> Candidates:
    """The proxies that may coordinate a group for this client: the consume proxies of this proxy's pool that the view
    lists with a listener for the client's security protocol, those not draining while any is (§4.11); this proxy
    alone when the view lists none (before it lists the pool).

    Worked out from the view and the client's protocol only, so every proxy that Metadata names to a client
    (`plan.listed_brokers`) hashes over the same candidates: FindCoordinator names a proxy the client can reach, and
    their ListGroups answers together list each group once. A proxy the view does not list (yet) is no candidate: it
    coordinates and lists no group while the view names one (review rvp)."""
    protocol = ctx.session.protocol
    listed = [p for p in ctx.view.proxies_in_pool(ctx.me.pool)
              if p.role.consumes() and p.endpoint(protocol) is not None]
    staying = [p for p in listed if p.node_id not in ctx.view.draining] or listed
    return (staying[0], *staying[1:]) if staying else (ctx.me,)


def coordinator_of(ctx: Context, group_id: str, candidates: Candidates) -> ProxyInfo:
    return ctx.view.leader_for(f"group\0{group_id}", 0, candidates)
