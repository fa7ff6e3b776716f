"""The controller's REST routes against the checked-in list docs/api-routes.txt: a route cannot vanish, appear,
lose its bearer-token check or change its token scope (controller.scopes) without that file changing in the
same commit; and every route has a scope.

After an intended change: `python tests/controller/test_api_routes.py > docs/api-routes.txt`."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from fastapi import FastAPI

from fedkafka.controller.app import create_app
from fedkafka.controller.kafka_admin import KafkaAdmin
from fedkafka.controller.scopes import OPEN, ROUTE_SCOPES, ROUTING, SERVICE, may
from fedkafka.controller.service import Controller, Settings

ROUTES_FILE = Path(__file__).resolve().parents[2] / "docs" / "api-routes.txt"
HEADER = ("# The controller's REST routes (OpenAPI paths): method, path, whether a bearer token is needed, and\n"
          "# which token may call it (fedkafka/controller/scopes.py): operator only, the service token too, or the "
          "routing\n# token as well (GET /v1/client-routing: name services).\n"
          "# Checked by tests/controller/test_api_routes.py; regenerate with\n"
          "# `python tests/controller/test_api_routes.py > docs/api-routes.txt` after an intended change.\n")


def app_routes(app: FastAPI) -> dict[tuple[str, str], bool]:
    """(method, path) -> whether the route asks for the bearer token."""
    routes = {}
    for path, operations in app.openapi()["paths"].items():
        for method, op in operations.items():
            headers = {p["name"].lower() for p in op.get("parameters", []) if p["in"] == "header"}
            routes[(method.upper(), path)] = "authorization" in headers
    return routes


def route_lines(app: FastAPI) -> list[str]:
    lines = [f"{method:6} {path}  {'token' if needs_token else 'open'}  {ROUTE_SCOPES.get((method, path), '?')}"
             for (method, path), needs_token in app_routes(app).items()]
    return sorted(lines, key=lambda line: (line.split()[1], line.split()[0]))


def current_app(db_dir: Path) -> FastAPI:
    controller = Controller(Settings(db_url=f"sqlite:///{db_dir / 'controller.db'}"), kafka=KafkaAdmin())
    return create_app(controller, "token", background=False)  # no lifespan: nothing starts, nothing connects


def test_the_routes_are_the_checked_in_list(tmp_path):
    listed = [line for line in ROUTES_FILE.read_text().splitlines() if line and not line.startswith("#")]
    assert route_lines(current_app(tmp_path)) == listed, f"regenerate {ROUTES_FILE} if the change is intended"


def test_every_route_has_a_scope_and_every_scope_a_route(tmp_path):
    routes = app_routes(current_app(tmp_path))
    unclassified = sorted(set(routes) - set(ROUTE_SCOPES))
    assert not unclassified, f"add these routes to fedkafka/controller/scopes.py ROUTE_SCOPES: {unclassified}"
    assert sorted(set(ROUTE_SCOPES) - set(routes)) == [], "ROUTE_SCOPES names a route the app no longer has"
    assert all((ROUTE_SCOPES[key] == OPEN) == (not needs_token) for key, needs_token in routes.items())


def test_the_service_and_routing_scopes_match_concrete_paths_and_nothing_else():
    for (method, template), scope in ROUTE_SCOPES.items():
        path = template.replace("{node_id}", "7").replace("{name}", "t-1").replace("{cluster_id}", "c1") \
            .replace("{run_id}", "3").replace("{move_id}", "4")
        assert may(SERVICE, method, path) == (scope in (OPEN, ROUTING, SERVICE)), (method, path)
        assert may(ROUTING, method, path) == (scope in (OPEN, ROUTING)), (method, path)
    assert [route for route, scope in ROUTE_SCOPES.items() if scope == ROUTING] == [("GET", "/v1/client-routing")]
    assert not may(SERVICE, "POST", "/v1/view")  # the method counts
    assert not may(SERVICE, "POST", "/v1/proxies/7/drain")
    assert not may(SERVICE, "POST", "/v1/proxies/7/heartbeat/x")  # whole path, one segment per parameter
    assert not may(SERVICE, "GET", "/v1/view/../topics")  # (the path arrives decoded and unnormalised)
    assert not may(SERVICE, "GET", "/v1/nonexistent")  # an unknown route: operator only
    assert not may(ROUTING, "GET", "/v1/client-routing/x") and not may(ROUTING, "POST", "/v1/client-routing")


def test_only_health_and_metrics_are_open(tmp_path):
    open_routes = [line.split()[:2] for line in route_lines(current_app(tmp_path)) if line.endswith("open")]
    assert open_routes == [["GET", "/healthz"], ["GET", "/metrics"]]


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        sys.stdout.write(HEADER + "".join(f"{line}\n" for line in route_lines(current_app(Path(d)))))
