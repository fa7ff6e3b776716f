"""Who may call which admin-API route: the operator token, the service token, the routing token, or anyone
(docs/DESIGN.md §11).

The controller takes an operator token (`--token-file`: every route), optionally a service token
(`--service-token-file`): what proxies need to run (register, heartbeat, read the view and the pools, allocate
producer-id blocks) and the admin requests a proxy forwards for Kafka clients (CreateTopics, DeleteTopics,
CreatePartitions, AlterConfigs, CreateAcls, DeleteAcls; a proxy run with --authorization checks the client's ACLs
before forwarding), and optionally a routing token (`--routing-token-file`) for name services: the client routing
only. A leaked service token cannot register clusters, change topics' placement, users, client rules or start
workflows; a leaked routing token (a name service faces clients and ends their TLS) cannot write ACLs or topics,
nor read the view (every user's SCRAM StoredKey and ServerKey).

The scopes nest: the service token may also call the routing scope's route (a name service still given the
service token keeps working while the operator rolls the routing token out), the operator token every route.

ROUTE_SCOPES lists every route; tests/controller/test_api_routes.py fails when a route is added without an
entry. A route missing from the table is operator-only (fail closed).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from fedkafka.controllers import token_problem

OPEN, ROUTING, SERVICE, OPERATOR = "open", "routing", "service", "operator"

# the scopes each token may call (OPERATOR: every route, listed or not)
ALLOWED_SCOPES = {ROUTING: (OPEN, ROUTING), SERVICE: (OPEN, ROUTING, SERVICE)}

# With --metrics-token-required, the tokens /metrics answers: the operator's and the service token (Prometheus's,
# docs/OPERATIONS.md "Controller tokens and HTTPS"); never the routing token, which opens GET /v1/client-routing only.
METRICS_READERS = (OPERATOR, SERVICE)

ROUTE_SCOPES: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): OPEN,
    ("GET", "/metrics"): OPEN,  # unless --metrics-token-required: then METRICS_READERS' tokens only
    # proxies (fedkafka/proxy/view_source.py)
    ("GET", "/v1/view"): SERVICE,
    ("GET", "/v1/view/stream"): SERVICE,
    ("POST", "/v1/proxies"): SERVICE,
    ("POST", "/v1/proxies/{node_id}/heartbeat"): SERVICE,
    ("POST", "/v1/proxies/{node_id}/deregister"): SERVICE,  # a stopping proxy, its member secret required
    ("POST", "/v1/producer-id-blocks"): SERVICE,
    # the name service (fedkafka/nameservice/resolver.py) calls /v1/client-routing only (every rule and pool's
    # proxies); /v1/proxies?client_id= (one client.id's pool, matched the same way) stays open to the service token
    ("GET", "/v1/proxies"): SERVICE,
    ("GET", "/v1/client-routing"): ROUTING,
    # admin requests a proxy forwards for Kafka clients (fedkafka/proxy/handlers/*_admin.py, alter_configs.py)
    ("POST", "/v1/admin/topics"): SERVICE,
    ("DELETE", "/v1/admin/topics/{name}"): SERVICE,
    ("POST", "/v1/admin/topics/{name}/config"): SERVICE,
    ("POST", "/v1/admin/topics/{name}/partitions"): SERVICE,
    ("POST", "/v1/acls"): SERVICE,
    ("POST", "/v1/acls/delete"): SERVICE,
    # the operator's: the CLI, the Ansible modules, dashboards
    ("GET", "/v1/acls"): OPERATOR,
    ("GET", "/v1/client-rules"): OPERATOR,
    ("PUT", "/v1/client-rules/{name}"): OPERATOR,
    ("DELETE", "/v1/client-rules/{name}"): OPERATOR,
    ("GET", "/v1/clusters"): OPERATOR,
    ("GET", "/v1/clusters/{cluster_id}"): OPERATOR,
    ("PUT", "/v1/clusters/{cluster_id}"): OPERATOR,
    ("POST", "/v1/clusters/{cluster_id}/state"): OPERATOR,
    ("GET", "/v1/moves"): OPERATOR,
    ("GET", "/v1/moves/{move_id}"): OPERATOR,
    ("POST", "/v1/moves/{move_id}/publish"): OPERATOR,
    ("POST", "/v1/moves/{move_id}/roll-back"): OPERATOR,
    ("POST", "/v1/proxies/{node_id}/drain"): OPERATOR,
    ("POST", "/v1/proxies/{node_id}/undrain"): OPERATOR,
    ("GET", "/v1/status"): OPERATOR,
    ("GET", "/v1/topics"): OPERATOR,
    ("DELETE", "/v1/topics/{name}"): OPERATOR,
    ("GET", "/v1/topics/{name}"): OPERATOR,
    ("PUT", "/v1/topics/{name}"): OPERATOR,
    ("GET", "/v1/users"): OPERATOR,
    ("DELETE", "/v1/users/{name}"): OPERATOR,
    ("GET", "/v1/users/{name}"): OPERATOR,
    ("PUT", "/v1/users/{name}"): OPERATOR,
    ("GET", "/v1/workflows"): OPERATOR,
    ("POST", "/v1/workflows"): OPERATOR,
    ("GET", "/v1/workflows/{run_id}"): OPERATOR,
}


def _pattern(template: str) -> re.Pattern[str]:
    # `{x}` matches what Starlette's default path convertor matches: one segment of the decoded path
    return re.compile("".join("[^/]+" if part.startswith("{") else re.escape(part)
                              for part in re.split(r"(\{[^}]+\})", template)))


_PATTERNS = [(method, _pattern(template), scope) for (method, template), scope in ROUTE_SCOPES.items()]


def may(role: str, method: str, path: str) -> bool:
    """May the token of `role` call `method path` (the request's decoded path, no query)?"""
    if role == OPERATOR:
        return True
    allowed = ALLOWED_SCOPES.get(role, ())
    return any(m == method and scope in allowed and pattern.fullmatch(path) for m, pattern, scope in _PATTERNS)


def route_allows(role: str, method: str, template: str) -> bool:
    """May the token of `role` call the route `method template` (a route missing from the table: operator only)?"""
    return role == OPERATOR or ROUTE_SCOPES.get((method, template), OPERATOR) in ALLOWED_SCOPES.get(role, ())


@dataclass(frozen=True)
class Tokens:
    operator: str
    service: str | None = None
    routing: str | None = None

    def __post_init__(self) -> None:
        # an empty token is no credential: `Authorization: Bearer ` (nothing after it) would match it; one no client
        # can send (a line break inside) is refused at start, not at each request (`token_problem`)
        for name, token in (("operator", self.operator), ("service", self.service), ("routing", self.routing)):
            problem = None if token is None else token_problem(token.strip())
            if problem is not None:
                raise ValueError(f"the {name} token {problem}")

    def role(self, authorization: str | None) -> str | None:
        """OPERATOR, SERVICE, ROUTING, or None (no or a wrong bearer token). Every comparison runs every time,
        each constant-time: the answer's timing tells nothing about any token."""
        scheme, _, given = (authorization or "").partition(" ")
        given_bytes = given.encode()
        matches = {role: token is not None and secrets.compare_digest(given_bytes, token.encode())
                   for role, token in ((OPERATOR, self.operator), (SERVICE, self.service), (ROUTING, self.routing))}
        if scheme.lower() != "bearer":
            return None
        return next((role for role, matched in matches.items() if matched), None)
