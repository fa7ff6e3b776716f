"""Review rvapi: the controller's name checks use `re.match` with patterns ending in `$`, which also matches
before a trailing newline (fedkafka/controller/service.py: CLUSTER_ID, BOOTSTRAP, USER_NAME). A cluster id,
bootstrap list or SCRAM user name ending in "\\n" passes as valid: a cluster "c1\\n" beside "c1" (the same in every
listing, log line and CLI table), a bootstrap whose last host Kafka clients cannot resolve, a user no client can
name."""

from __future__ import annotations

from urllib.parse import quote

SALT = "AAAAAAAAAAA="  # 8 bytes
KEY = "A" * 43 + "="  # 32 bytes: SCRAM-SHA-256's digest size
CREDENTIAL = {"mechanism": "SCRAM-SHA-256", "salt": SALT, "iterations": 4096, "stored_key": KEY, "server_key": KEY}


def test_a_cluster_id_with_a_trailing_newline_is_refused(make_api):
    api = make_api()
    resp = api.put("/v1/clusters/" + quote("c1\n"), json={"bootstrap": "c1:9092"})
    assert resp.status_code == 422, (resp.status_code, [c["id"] for c in api.get("/v1/clusters").json()])


def test_a_bootstrap_with_a_trailing_newline_is_refused(make_api):
    api = make_api()
    resp = api.put("/v1/clusters/c1", json={"bootstrap": "c1:9092\n"})
    assert resp.status_code == 422, resp.text


def test_a_user_name_with_a_trailing_newline_is_refused(make_api):
    api = make_api()
    resp = api.put("/v1/users/" + quote("alice\n"), json={"credentials": [CREDENTIAL]})
    assert resp.status_code == 422, resp.text
