"""The contract between handlers (pure) and the core (I/O); see `fedkafka.proxy.handlers` for the rules.

A handler returns a `Reply`: a kio response entity (answered at once), `NO_RESPONSE` (acks=0), or a
`Plan`: upstream calls the core sends, and a `finish` function that turns their results into the next
`Reply`. Results are, per call and in order, the decoded response entity or an `UpstreamError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fedkafka.security.acl import CLUSTER_NAME, Authorizer, Operation, ResourceType
from fedkafka.security.session import Session
from fedkafka.view.model import Endpoint, ProxyInfo, ProxyRole, View


@dataclass(frozen=True, slots=True)
class AnyBroker:
    """Any reachable broker of a physical cluster."""

    cluster: str


@dataclass(frozen=True, slots=True)
class Broker:
    """One broker of a physical cluster, by its node id (e.g. a partition's leader)."""

    cluster: str
    node_id: int


Target = AnyBroker | Broker


@dataclass(frozen=True, slots=True)
class Call:
    target: Target
    request: Any  # a kio request entity
    expect_response: bool = True  # False for acks=0 produce
    # A broker serves one request per connection at a time: calls that may block (long-poll Fetch,
    # JoinGroup, SyncGroup) get a connection of their own so they never stall other clients' requests.
    dedicated: bool = False
    timeout_s: float | None = None  # None: the core's default; JoinGroup may legitimately wait a rebalance out
    # The timeout derives from a wait the client chose (Fetch max_wait, JoinGroup rebalance timeout): when it
    # runs out the call fails, but the cluster is not marked unreachable for everyone else.
    client_timeout: bool = False
    client_id: str | None = None  # None: the proxy's own; group calls carry the client's (shown by group tools)
    # Calls with the same key share one upstream connection whatever client connection they came from
    # (an idempotent producer that reconnects must not have its retries overtake its older batches).
    ordering_key: int | None = None


class UpstreamError(Exception):
    """A call that got no response: cluster unreachable, connection lost, timeout."""

    def __init__(self, cluster: str, reason: str):
        super().__init__(f"{cluster}: {reason}")
        self.cluster = cluster
        self.reason = reason


@dataclass(slots=True)
class Plan:
    calls: Sequence[Call]
    finish: Callable[[list[Any]], Reply]
    # The core sends a barrier plan's calls and waits for them before reading the client's next request,
    # so upstream order follows client order (idempotent producers depend on it).
    barrier: bool = False
    # Fan-out without added latency (docs/DESIGN.md §3.1): when set, the core finishes as soon as one result
    # satisfies it; calls still in flight are then given to `finish` as UNANSWERED.
    return_early: Callable[[Any], bool] | None = None
    delay_s: float = 0.0  # wait before sending (a handler's retry backoff; the core owns the clock)


class _NoResponse:
    def __repr__(self) -> str:
        return "NO_RESPONSE"


NO_RESPONSE: Any = _NoResponse()


class _Unanswered:
    def __repr__(self) -> str:
        return "UNANSWERED"


UNANSWERED: Any = _Unanswered()

Reply = Any  # kio response entity | NO_RESPONSE | Plan


class PhysicalState(Protocol):
    """What handlers may read about the physical clusters (kept fresh by the core)."""

    def leader(self, cluster: str, topic: str, partition: int) -> int | None: ...
    def reachable(self, cluster: str) -> bool: ...
    def request_refresh(self, cluster: str) -> None: ...


class ProducerIds(Protocol):
    """Logical producer ids and the (logical id, epoch, cluster) -> physical id map (docs/DESIGN.md §5.3)."""

    def next_logical(self) -> int | None: ...
    def physical(self, logical_id: int, epoch: int, cluster: str, topic: str, partition: int,
                 phys_start: int) -> tuple[int, int] | None: ...
    def store_physical(self, logical_id: int, epoch: int, cluster: str, producer_id: int, epoch_: int) -> None: ...


@dataclass(slots=True)
class Context:
    """Everything a handler may read. Built by the core per request; handlers never mutate the view."""

    view: View
    me: ProxyInfo
    advertised: dict[int, tuple[int, int]]
    physical: PhysicalState
    producer_ids: ProducerIds
    lease_valid: bool = True
    client_id: str | None = None
    max_fetch_wait_ms: int = 30_000  # a Fetch's max_wait is clamped to this (the proxy's --max-fetch-wait-ms)
    # The client connection's security state (listener protocol, principal); the SASL handler advances it.
    session: Session = field(default_factory=Session)
    authorizer: Authorizer | None = None  # None: authorization off, everything allowed
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def role(self) -> ProxyRole:
        return self.me.role


def reachable_brokers(ctx: Context, proxies) -> list[tuple[ProxyInfo, Endpoint]]:
    """The proxies a client can reach on the security protocol it came in on, each with that listener's
    address (docs/DESIGN.md §9): a SASL_SSL client is never sent to a PLAINTEXT port, nor the reverse."""
    protocol = ctx.session.protocol
    return [(p, e) for p in proxies if (e := p.endpoint(protocol)) is not None]


def authorized(ctx: Context, operation: Operation, resource_type: ResourceType, name: str = CLUSTER_NAME) -> bool:
    """Whether this connection's principal may do `operation` on the resource (docs/DESIGN.md §9). Handlers ask
    before building any upstream call, so a denied request never reaches a broker."""
    az = ctx.authorizer
    return az is None or az.allowed(ctx.session.principal, ctx.session.host, operation, resource_type, name)
