"""Controllers as the member-secret tests meet them: operator and service tokens on, every request sent as the
service (what a proxy host holds), registrations as this release's proxy sends them
(tests/controller/test_member_secret.py, test_member_deregister.py, test_rv4_review_deregister_predecessor.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from fastapi.testclient import TestClient

from controller.conftest import clients_on_migrated_copies
from fedkafka.controller.scopes import Tokens

OPERATOR_TOKEN, SERVICE_TOKEN = "op-token-1", "svc-token-2"
AS_SERVICE = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
SECRET_HEADER = "X-Fedkafka-Member-Secret"


def registration(instance: str, port: int) -> dict:
    """A registration as this release's proxy sends it: it asks for a member secret (it presents it)."""
    return {"instance_id": instance, "host": "127.0.0.1", "port": port, "role": "both", "pool": "p1",
            "member_secret": True}


def own_secret(n: int) -> dict:
    """Process `n`'s own secret, as a proxy of this release chooses it (32 characters or more)."""
    return {SECRET_HEADER: f"process-{n}-".ljust(43, "s")}


def service_clients(tmp_path: Path, migrated_sqlite: Path) -> Iterator[Callable[..., TestClient]]:
    """The body of a factory fixture (`yield from` it): a controller on a copy of the migrated database (or on
    `database`, a restart), service token on (`clients_on_migrated_copies`)."""
    return clients_on_migrated_copies(tmp_path, migrated_sqlite, Tokens(OPERATOR_TOKEN, SERVICE_TOKEN), AS_SERVICE)
