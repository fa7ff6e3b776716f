"""Which proxy coordinates a group: what FindCoordinator answers and ListGroups lists by (handlers do not import each
other: the import contract).

A group's coordinator is a consume proxy of the caller's pool, chosen by rendezvous on the group id, so a group's
requests gather on one proxy; a draining proxy coordinates no group while another can (docs/DESIGN.md §4.11)."""

from __future__ import annotations

from fedkafka.proxy.plan import Context
from fedkafka.view.model import ProxyInfo

Candidates = tuple[ProxyInfo, *tuple[ProxyInfo, ...]]  # never empty


def consume_proxies(ctx: Context) -> Candidates:
    """The proxies that may coordinate a group for this proxy's clients: the consume proxies of its pool."""
    others = [p for p in ctx.view.proxies_in_pool(ctx.me.pool)
              if p.node_id != ctx.me.node_id and p.role.consumes()]
    if ctx.me.node_id in ctx.view.draining and others:  # a draining proxy coordinates no group (§4.11)
        return (others[0], *others[1:])
    return (ctx.me, *others)


def coordinator_of(ctx: Context, group_id: str, candidates: Candidates) -> ProxyInfo:
    return ctx.view.leader_for(f"group\0{group_id}", 0, candidates)
