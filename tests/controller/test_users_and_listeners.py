"""Users (SCRAM credentials) and proxy listeners in the controller: stored, validated, in the view, never a password."""

from __future__ import annotations

import base64

import pytest

from fedkafka.security import scram


def _creds(password: str = "pw-123456", *mechanisms: str) -> list[dict]:
    return [{k: v for k, v in scram.make_credential("alice", m, password).to_dict().items() if k != "user"}
            for m in mechanisms or scram.MECHANISMS]


def test_a_user_travels_with_the_view_as_scram_hashes_only(make_api):
    api = make_api()
    res = api.put("/v1/users/alice", json={"credentials": _creds()})
    assert res.status_code == 200 and res.json()["changed"] is True
    # a new password (a new salt) replaces the credentials: how a password is rotated
    assert api.put("/v1/users/alice", json={"credentials": _creds("pw-new")}).json()["changed"] is True
    view = api.get("/v1/view").json()
    assert {(c["user"], c["mechanism"]) for c in view["credentials"]} == {("alice", "SCRAM-SHA-256"),
                                                                          ("alice", "SCRAM-SHA-512")}
    assert "pw-123456" not in str(view)
    listed = api.get("/v1/users").json()
    assert listed == [{"user": "alice", "credentials": [{"mechanism": "SCRAM-SHA-256", "iterations": 8192},
                                                        {"mechanism": "SCRAM-SHA-512", "iterations": 8192}]}]
    assert "stored_key" not in str(listed)


def test_the_same_credential_twice_changes_nothing_and_delete_removes_it(make_api):
    api = make_api()
    creds = _creds("pw", "SCRAM-SHA-512")
    api.put("/v1/users/bob", json={"credentials": creds})
    version = api.get("/v1/view").json()["version"]
    assert api.put("/v1/users/bob", json={"credentials": creds}).json()["changed"] is False
    assert api.get("/v1/view").json()["version"] == version
    assert api.delete("/v1/users/bob").status_code == 204
    assert api.get("/v1/view").json()["credentials"] == []
    assert api.delete("/v1/users/bob").status_code == 404


@pytest.mark.parametrize(("name", "change"), [
    ("a,b", {}),
    ("alice", {"mechanism": "SCRAM-SHA-1"}),
    ("alice", {"iterations": 1000}),
    ("alice", {"stored_key": base64.b64encode(b"short").decode()}),
    ("alice", {"salt": "not base64!"}),
])
def test_bad_credentials_are_refused_and_change_nothing(make_api, name, change):
    api = make_api()
    body = {"credentials": [_creds("pw", "SCRAM-SHA-256")[0] | change]}
    res = api.put(f"/v1/users/{name}", json=body)
    assert res.status_code in (404, 422), res.text
    assert api.get("/v1/view").json()["credentials"] == []


def test_proxy_listeners_reach_the_view_and_the_name_service_answer(make_api):
    api = make_api()
    listeners = [["SASL_SSL", "10.0.0.1", 9094], ["PLAINTEXT", "10.0.0.1", 9092]]
    assert api.post("/v1/proxies", json={"instance_id": "p", "host": "10.0.0.1", "port": 9094, "role": "both",
                                         "listeners": listeners}).status_code == 200
    assert api.get("/v1/view").json()["proxies"][0]["listeners"] == listeners
    assert api.get("/v1/proxies").json()["proxies"][0]["listeners"] == listeners
    bad = api.post("/v1/proxies", json={"instance_id": "q", "host": "h", "port": 1, "role": "both",
                                        "listeners": [["TLS", "h", 1]]})
    assert bad.status_code == 422
