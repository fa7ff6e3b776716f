"""Handlers: one module per API family, each a pure function; the core does all I/O.

Interface (what a new module, e.g. `fetch.py` for the consume path, must provide):

    API_KEYS: dict[int, tuple[int, int]]   # api_key -> (min, max) versions this module implements
    ROLE: "produce" | "consume" | "any" | "produce_only"  # roles serving these keys; produce_only: pure pproxy
    NEEDS_CONTROLLER: bool  # optional: served only by a proxy with a controller (the admin writes)
    def handle(ctx: plan.Context, header, request) -> plan.Reply   # checked by mypy: plan.Handler

`handle` gets the decoded kio request (its version is `type(request).__version__`) and returns a kio response
entity, `plan.NO_RESPONSE`, a `plan.CloseConnection` (no answer; the core reads no more, writes the answers of the
requests it read, then closes the client's connection), or a `plan.Plan` whose `calls` the core sends upstream and
whose `finish(results)` returns the next Reply (it may chain further Plans). No sockets, no awaits, no globals:
every handler is unit-testable by calling `handle` and `finish` with hand-made results. A write the proxy drains
before it acks a view (Produce, OffsetCommit, DeleteGroups, OffsetDelete: `dispatch.DRAINED_API_KEYS`) chains only
barrier Plans before its first non-barrier one, whose `finish` returns the answer: a Plan after that is refused
unsent (`dispatch.DrainedLaterRound`, docs/DESIGN.md §4.1 step 2).

Authorization (docs/DESIGN.md §11): a module that checks what the principal may do sets `AUTHORIZES = True` and
asks `plan.authorized(ctx, operation, resource_type, name)` before building any upstream call. With
authorization on, the core serves a module without it to super users only (deny by default).

Optional: `def read_request(frame: bytes) -> request`: the module reads its own request frames (after the size
prefix) instead of kio, raising `codec.DecodeError` for a malformed one; the object it returns is passed as both
`header` and `request` (Produce: records.py's frame walk, the record sets left in the frame). Its `Call.request`s
and its answer may then be objects that write their own frames (`frame_parts(correlation_id, client_id)`,
`response_frame(correlation_id)`, with `__api_key__`/`__version__`), and an answer with `count_errors(counts)`
feeds the error metrics. A `Call.request` with `read_response(frame)` reads its broker's answer itself (the
frame after its size prefix; `codec.DecodeError` for a malformed one, which fails the call as kio's would):
`finish` gets what it returns instead of a kio entity. A module without `read_request` may use these too (Fetch:
`UpstreamFetch` and `FetchAnswer`; `response_frame` may return a list of parts, sent by reference).

Optional: `def cache_key(ctx, request) -> Hashable | None`. When a module's answer depends only on the view,
this proxy's identity and that key, the core reuses the encoded answer for the same view and key (Metadata:
a flood of all-topics requests then costs a dictionary lookup and a copy instead of a rebuild).

Register a module by adding it to `MODULES` below; the core's dispatch derives the advertised
ApiVersions from the registry intersected with every physical cluster's own ranges.
Handler modules must not import each other (shared helpers live in `fedkafka.proxy.plan` or `protocol`).
"""

from __future__ import annotations

from fedkafka.proxy.handlers import (
    acl_admin,
    acls,
    alter_configs,
    api_versions,
    cluster_ops,
    consume_side_produce,
    consumer_groups,
    delete_records,
    describe_cluster,
    describe_configs,
    describe_producers,
    fetch,
    find_coordinator,
    groups,
    init_producer_id,
    list_offsets,
    metadata,
    offset_for_leader_epoch,
    produce,
    produce_side_fetch,
    sasl,
    topic_admin,
)
from fedkafka.proxy.plan import Handler

MODULES: tuple[Handler, ...] = (api_versions, metadata, produce, init_producer_id, describe_cluster, describe_configs,
                                produce_side_fetch, fetch, list_offsets, offset_for_leader_epoch, find_coordinator,
                                groups, consume_side_produce, topic_admin, alter_configs, delete_records, cluster_ops,
                                consumer_groups, sasl, acls, acl_admin, describe_producers)
