"""fedkafka_proxy against a real controller (`fedkafka controller`): drain, undrain, check mode that predicts the
run (the controller's refusal included), and the wait until every proxy applied the view. The proxies are two
registrations that apply each view the controller publishes (heartbeats); the real proxies are in
tests/workflows/test_rolling_drain_integration.py."""

from __future__ import annotations

import json
import threading
import urllib.request

import pytest
from ansible_harness import run_module as run
from ansible_harness import running_controller


def _call(api: dict, method: str, path: str, body: dict | None = None, member_secret: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {api['token']}", "Content-Type": "application/json"}
    if member_secret is not None:  # a heartbeat presents its registration's secret (docs/DESIGN.md §5.2)
        headers["X-Fedkafka-Member-Secret"] = member_secret
    request = urllib.request.Request(api["controller_url"] + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


class AppliedEveryView:
    """Two registered pproxies that heartbeat the current view version as applied, as running proxies do."""

    def __init__(self, api: dict):
        self.api = api
        registered = [_call(api, "POST", "/v1/proxies", {"instance_id": f"h:{port}", "host": "h", "port": port,
                                                         "role": "pproxy", "pool": "default",
                                                         "member_secret": True}) for port in (9001, 9002)]
        self.members = [(r["member_id"], r["member_secret"]) for r in registered]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)
        self.thread.start()

    def _beat(self) -> None:
        while not self.stop.wait(0.1):
            version = _call(self.api, "GET", "/v1/status")["view_version"]
            for member, secret in self.members:
                _call(self.api, "POST", f"/v1/proxies/{member}/heartbeat", {"applied_version": version}, secret)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


@pytest.fixture
def federation(tmp_path):
    for api in running_controller(tmp_path):
        proxies = AppliedEveryView(api)
        yield api
        proxies.close()


def _draining(api: dict) -> dict[str, bool]:
    return {p["instance_id"]: p["draining"] for p in _call(api, "GET", "/v1/status")["proxies"]}


def test_drain_and_undrain_report_honest_changes_and_check_mode_writes_nothing(federation):
    api = federation
    args = {**api, "instance_id": "h:9002", "timeout": 30}
    failed, predicted = run("fedkafka_proxy", args, check_mode=True)
    assert not failed and predicted["changed"] and predicted["draining"], predicted
    assert _draining(api) == {"h:9001": False, "h:9002": False}  # check mode wrote nothing

    failed, result = run("fedkafka_proxy", args)
    assert not failed and result["changed"], result
    assert result["node_id"] == predicted["node_id"]
    status = _call(api, "GET", "/v1/status")
    assert {p["instance_id"]: p["draining"] for p in status["proxies"]} == {"h:9001": False, "h:9002": True}
    # returned once every proxy, the drained one too, applied the view without it
    assert all(p["applied_version"] >= result["view_version"] for p in status["proxies"])
    view = _call(api, "GET", "/v1/view")
    assert [p["host"] + ":" + str(p["port"]) for p in view["proxies"]] == ["h:9001"]
    assert view["draining"] == [result["node_id"]]

    failed, again = run("fedkafka_proxy", args)
    assert not failed and not again["changed"], again
    assert run("fedkafka_proxy", args, check_mode=True)[1]["changed"] is False

    back = {**args, "state": "active"}
    assert run("fedkafka_proxy", back, check_mode=True)[1]["changed"] is True
    failed, result = run("fedkafka_proxy", back)
    assert not failed and result["changed"] and not result["draining"], result
    assert _draining(api) == {"h:9001": False, "h:9002": False}
    assert run("fedkafka_proxy", back)[1]["changed"] is False


def test_check_mode_predicts_the_refusal_to_drain_the_last_proxy_of_a_pool(federation):
    api = federation
    assert not run("fedkafka_proxy", {**api, "instance_id": "h:9001", "timeout": 30})[0]
    args = {**api, "instance_id": "h:9002", "timeout": 30}
    failed_check, predicted = run("fedkafka_proxy", args, check_mode=True)
    failed, result = run("fedkafka_proxy", args)
    assert failed_check and failed, (predicted, result)
    assert "last live pproxy of pool 'default'" in predicted["msg"]
    assert result["msg"] == predicted["msg"]  # the controller's own refusal (409) is in tests/controller
    assert _draining(api) == {"h:9001": True, "h:9002": False}
    for check in (True, False):  # what a rolling restart asks: go on undrained, unchanged
        failed, skipped = run("fedkafka_proxy", {**args, "last_in_pool": "skip"}, check_mode=check)
        assert not failed and not skipped["changed"] and not skipped["draining"], skipped
        assert skipped["msg"] == predicted["msg"]
    assert _draining(api) == {"h:9001": True, "h:9002": False}


def test_an_unknown_proxy_is_a_clear_error(federation):
    failed, result = run("fedkafka_proxy", {**federation, "instance_id": "nowhere:1"})
    assert failed and "no live proxy nowhere:1" in result["msg"]
