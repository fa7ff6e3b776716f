"""Review of s36-tokens (the controller side): /metrics with --metrics-token-required takes the operator or the
service token only, the routing token 403 (fedkafka/controller/guard.py, scopes.METRICS_READERS).

Checked and sound: the guard refuses the routing token on exactly GET /metrics (a prefix or a trailing slash is
not the metrics route; without the flag /metrics stays open to everyone), the operator and service tokens still
read it, the docs (DESIGN §11, OPERATIONS' flag table and Prometheus job, the role's default) say the same.

Finding 1 (pre-existing, made visible by the docs now naming the operator token a reader): `fedkafka status`
reads the controller's /metrics with a bare `httpx.get` (fedkafka/cli/admin.py `_health`), without the token it
was given (`locate` returns it; `_token` is dropped) and without $FEDKAFKA_CA_FILE: against a controller run with
--metrics-token-required, its health summary fails ("cannot read the controller's /metrics") even with the
operator token, so `fedkafka status` (and `--check`) cannot be used there at all.
Fixed on main (s36-status); kept as a test.
"""

from __future__ import annotations

import shutil

from controller.test_token_scopes import ALL_THREE, OPERATOR_TOKEN, _started_client
from fedkafka.cli.admin import _controller_metrics, _health
from fedkafka.controller.client import AdminClient


def test_status_reads_the_controllers_metrics_with_the_operator_token_when_one_is_required(
        tmp_path, migrated_sqlite):
    """Fixed on main (s36-status: `_controller_metrics` asks through the CLI's AdminClient); here against the real
    controller's guard (tests/observe/test_status_metrics_unit.py uses a stand-in for the CLI's whole command)."""
    database = tmp_path / "c.db"
    shutil.copyfile(migrated_sqlite, database)
    api = _started_client(database, ALL_THREE, metrics_token_required=True)
    try:
        with AdminClient("http://testserver", OPERATOR_TOKEN, transport=api._transport) as admin:
            health = _health(admin.status(), _controller_metrics(admin), [])
        assert health.signals["controller_active"] is True
        assert health.issues == []
    finally:
        api.__exit__(None, None, None)
