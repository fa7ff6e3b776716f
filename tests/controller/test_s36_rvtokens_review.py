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
"""

from __future__ import annotations

import shutil

import httpx
import pytest

from controller.test_token_scopes import ALL_THREE, AS_OPERATOR, OPERATOR_TOKEN, _started_client
from fedkafka.cli.admin import _health


@pytest.mark.xfail(strict=True, reason="rv s36-tokens finding 1: fedkafka status reads the controller's /metrics "
                                       "without its token: with --metrics-token-required it fails even with the "
                                       "operator token")
def test_status_reads_the_controllers_metrics_with_the_operator_token_when_one_is_required(
        tmp_path, migrated_sqlite, monkeypatch):
    database = tmp_path / "c.db"
    shutil.copyfile(migrated_sqlite, database)
    api = _started_client(database, ALL_THREE, metrics_token_required=True)
    try:
        token_file = tmp_path / "operator-token"
        token_file.write_text(OPERATOR_TOKEN + "\n")
        # the CLI's plain httpx.get, answered by this in-process controller
        monkeypatch.setattr(httpx, "get", lambda url, **kw: api.get(httpx.URL(url).path, headers=kw.get("headers")))
        status_doc = api.get("/v1/status", headers=AS_OPERATOR).json()
        health = _health("http://testserver", token_file, status_doc, [])
        assert health.signals["controller_active"] is True
        assert health.issues == []
    finally:
        api.__exit__(None, None, None)
