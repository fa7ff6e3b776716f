"""FindCoordinator: a proxy is the coordinator of a group; transactions are refused (docs/DESIGN.md §5.6, §5.9).

A group's coordinator is a consume proxy of the caller's pool, chosen by rendezvous on the group id, so a
group's requests gather on one proxy (`groups.py` serves them there). Served by every role: a transactional
producer's first request is FindCoordinator for its transactional id, and a producer normally reaches a pool
of produce-only proxies (one role per pool, §3.1); without this key advertised there, librdkafka failed with
"Required feature not supported by broker" and Java with "The node does not support FIND_COORDINATOR",
neither saying why. Every role answers a transactional id with the same refusal. A proxy that does not
consume answers a group lookup with a non-retriable refusal naming its role (a consumer pointed at a produce
pool fails, as it did when the key was not advertised, and now says why), not with a coordinator that would
not serve the group.
"""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import response_schema
from fedkafka.proxy.group_coordinators import Candidates, consume_proxies, coordinator_of
from fedkafka.proxy.plan import Context, authorized
from fedkafka.security.acl import Operation, ResourceType

FIND_COORDINATOR = 10
API_KEYS = {FIND_COORDINATOR: (0, 6)}
ROLE = "any"
AUTHORIZES = True

GROUP_KEY, TXN_KEY = 0, 1

NO_TRANSACTIONS = ("transactions are not available in this fedkafka federation (a transaction would span "
                   "physical clusters; see fedkafka's docs/ARCHITECTURE.md): use an idempotent producer instead")
NO_GROUPS = ("this fedkafka proxy serves producers only (role pproxy): consumer groups are coordinated by the "
             "proxies of a consume pool (role cproxy or both)")


def handle(ctx: Context, header, request):
    version = type(request).__version__
    keys = list(request.coordinator_keys) if version >= 4 else [request.key]
    key_type = getattr(request, "key_type", GROUP_KEY)
    candidates = consume_proxies(ctx)  # once a request, not once a key; and each distinct key worked out once
    found = {k: _coordinator_for(ctx, k, key_type, version, candidates) for k in dict.fromkeys(keys)}
    answers = [found[k] for k in keys]
    if version >= 4:
        return build(response_schema(FIND_COORDINATOR, version), {"coordinators": answers})
    return build(response_schema(FIND_COORDINATOR, version), {k: v for k, v in answers[0].items() if k != "key"})


def _coordinator_for(ctx: Context, key: str, key_type: int, version: int, candidates: Candidates) -> dict:
    if key_type == TXN_KEY:
        return _no_coordinator(key, _no_transactions_code(version), NO_TRANSACTIONS)
    if key_type != GROUP_KEY:
        return _no_coordinator(key, ErrorCode.invalid_request, f"key type {key_type} is not supported")
    if not ctx.me.role.consumes():
        return _no_coordinator(key, ErrorCode.invalid_request, NO_GROUPS)
    if not authorized(ctx, Operation.DESCRIBE, ResourceType.GROUP, key):
        ctx.refused("auth", key, -1, "no DESCRIBE on the group")  # counted and logged as every denial (DESIGN §11)
        return _no_coordinator(key, ErrorCode.group_authorization_failed, None)
    if ctx.view.coordination_cluster is None:
        return _no_coordinator(key, ErrorCode.coordinator_not_available, "no coordination cluster in the view")
    proxy = coordinator_of(ctx, key, candidates)
    endpoint = proxy.endpoint(ctx.session.protocol)
    if endpoint is None:
        return _no_coordinator(key, ErrorCode.coordinator_not_available,
                               f"the group's proxy has no {ctx.session.protocol} listener")
    return {"key": key, "node_id": proxy.node_id, "host": endpoint.host, "port": endpoint.port,
            "error_code": ErrorCode.none, "error_message": None}


def _no_transactions_code(version: int) -> ErrorCode:
    """The error that makes the asking client fail at once and print NO_TRANSACTIONS.

    The Java client (batched lookups, v4+) fails fatally on any unexpected code and prints our message, but
    answers TRANSACTIONAL_ID_AUTHORIZATION_FAILED with its own "Transactional Id authorization failed." and
    drops ours, which sends users looking for an ACL. librdkafka (v0-2) fails only on that code and retries
    every other one until its timeout; it prints our message next to it."""
    return ErrorCode.invalid_request if version >= 4 else ErrorCode.transactional_id_authorization_failed


def _no_coordinator(key: str, code: ErrorCode, message: str | None) -> dict:
    return {"key": key, "node_id": -1, "host": "", "port": -1, "error_code": code, "error_message": message}
