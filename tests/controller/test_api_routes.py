"""The controller's REST routes against the checked-in list docs/api-routes.txt: a route cannot vanish, appear
or lose its bearer-token check without that file changing in the same commit.

After an intended change: `python tests/controller/test_api_routes.py > docs/api-routes.txt`."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from fastapi import FastAPI

from fedkafka.controller.app import create_app
from fedkafka.controller.kafka_admin import KafkaAdmin
from fedkafka.controller.service import Controller, Settings

ROUTES_FILE = Path(__file__).resolve().parents[2] / "docs" / "api-routes.txt"
HEADER = ("# The controller's REST routes (OpenAPI paths): method, path, and whether the bearer token is needed.\n"
          "# Checked by tests/controller/test_api_routes.py; regenerate with\n"
          "# `python tests/controller/test_api_routes.py > docs/api-routes.txt` after an intended change.\n")


def route_lines(app: FastAPI) -> list[str]:
    lines = []
    for path, operations in app.openapi()["paths"].items():
        for method, op in operations.items():
            headers = {p["name"].lower() for p in op.get("parameters", []) if p["in"] == "header"}
            lines.append(f"{method.upper():6} {path}  {'token' if 'authorization' in headers else 'open'}")
    return sorted(lines, key=lambda line: (line.split()[1], line.split()[0]))


def current_app(db_dir: Path) -> FastAPI:
    controller = Controller(Settings(db_url=f"sqlite:///{db_dir / 'controller.db'}"), kafka=KafkaAdmin())
    return create_app(controller, "token", background=False)  # no lifespan: nothing starts, nothing connects


def test_the_routes_are_the_checked_in_list(tmp_path):
    listed = [line for line in ROUTES_FILE.read_text().splitlines() if line and not line.startswith("#")]
    assert route_lines(current_app(tmp_path)) == listed, f"regenerate {ROUTES_FILE} if the change is intended"


def test_only_health_and_metrics_are_open(tmp_path):
    open_routes = [line.split()[:2] for line in route_lines(current_app(tmp_path)) if line.endswith("open")]
    assert open_routes == [["GET", "/healthz"], ["GET", "/metrics"]]


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        sys.stdout.write(HEADER + "".join(f"{line}\n" for line in route_lines(current_app(Path(d)))))
