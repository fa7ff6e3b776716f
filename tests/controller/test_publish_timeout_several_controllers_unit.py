"""Review rv1: a held publish whose answer timed out at the active controller, with `--url` naming several
controllers. The publish may have been carried out there (docs/OPERATIONS.md "A held move": "no answer from the
controller in time", run the same command again); the client must say so, not pass the request on to the next
controller and report that one's state (a standby's 503, an unreachable host), and must not send the publish to the
same active controller a second time behind the operator's back. No network: httpx.MockTransport."""

from __future__ import annotations

import httpx
import pytest

from fedkafka.controller.client import AdminClient, AdminError
from fedkafka.controllers import ACTIVE_HEADER

PUBLISH = "/v1/moves/7/publish"


def _client(handler, urls: str) -> AdminClient:
    return AdminClient(urls, "s3cret-token", transport=httpx.MockTransport(handler))


def test_a_publish_that_timed_out_at_the_active_controller_says_it_may_have_been_carried_out():
    """a (active) takes the publish and never answers in time; b is down. Before: "controller at http://b
    unreachable", which reads as "nothing happened" for a publish a may have committed."""
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "a":
            raise httpx.ReadTimeout("timed out", request=request)
        raise httpx.ConnectError("connection refused", request=request)

    with _client(handler, "http://a,http://b") as api, pytest.raises(AdminError) as e:
        api.publish_move(7, 42, 5)
    assert "may have been carried out" in str(e.value), str(e.value)


def test_a_publish_that_timed_out_at_the_active_controller_is_not_reported_as_a_standbys_503():
    """a (active) times out; b is a standby naming a. Before: the answer was b's "HTTP 503"."""
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "a":
            raise httpx.ReadTimeout("timed out", request=request)
        return httpx.Response(503, headers={ACTIVE_HEADER: "http://a"}, json={"detail": "standby"})

    with _client(handler, "http://a,http://b") as api, pytest.raises(AdminError) as e:
        api.publish_move(7, 42, 5)
    assert e.value.status != 503 and "may have been carried out" in str(e.value), str(e.value)


def test_a_publish_that_timed_out_is_sent_to_the_active_controller_once():
    """Three controllers: a (active) times out, b is a standby naming a. Before: the client went back to a and
    sent the publish a second time (another 90 s wait), the operator never asked for a repeat."""
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(f"{request.url.host} {request.url.path}")
        if request.url.host == "a":
            raise httpx.ReadTimeout("timed out", request=request)
        return httpx.Response(503, headers={ACTIVE_HEADER: "http://a"}, json={"detail": "standby"})

    with _client(handler, "http://a,http://b,http://c") as api, pytest.raises(AdminError):
        api.publish_move(7, 42, 5)
    assert sent.count(f"a {PUBLISH}") == 1, sent


def test_a_publish_whose_connection_was_lost_after_it_was_sent_says_it_may_have_been_carried_out():
    """One controller; it read the publish and the connection dropped before its answer (a controller restarted, a
    proxy in between timed out): DESIGN §3.3 names "a connection lost" as a case for the repeat. Before: "controller
    at http://a unreachable", read as "nothing was sent"."""
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)

    with _client(handler, "http://a") as api, pytest.raises(AdminError) as e:
        api.publish_move(7, 42, 5)
    assert "may have been carried out" in str(e.value), str(e.value)


def test_only_the_wait_for_a_publishs_answer_is_longer():
    """REPAIR_TIMEOUT_S is meant for the answer (the controller's 60 s deadline). Before, it was also the connect
    timeout: with --url a,b and a blackholed (SYN dropped), a publish waited 90 s, not 30, before asking b."""
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return httpx.Response(200, json={"state": "sealed"})

    with _client(handler, "http://a") as api:
        api.publish_move(7, 42, 5)
    assert seen[0]["read"] >= 90.0 and seen[0]["connect"] <= 30.0, seen


# Fix (fixrv1c): which requests the client sends again on the next controller, and what each failure says.

def test_a_roll_back_that_timed_out_at_the_active_controller_is_sent_once_and_says_run_it_again():
    """The roll-back waits as long as the publish and is as safe to repeat: the operator is told so, not to check."""
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.host)
        if request.url.host == "a":
            raise httpx.ReadTimeout("timed out", request=request)
        return httpx.Response(503, headers={ACTIVE_HEADER: "http://a"}, json={"detail": "standby"})

    with _client(handler, "http://a,http://b,http://c") as api, pytest.raises(AdminError) as e:
        api.roll_back_move(7)
    assert sent == ["a"], sent
    assert "may have been carried out" in str(e.value) and "run the same command again" in str(e.value), str(e.value)


def test_a_workflow_that_timed_out_is_not_sent_again_and_says_check_before_repeating():
    """A workflow run (scale-up, decommission, ...) sent twice runs twice: never resent, the operator told to check."""
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.host)
        if request.url.host == "a":
            raise httpx.ReadTimeout("timed out", request=request)
        return httpx.Response(201, json={"id": 1})

    with _client(handler, "http://a,http://b") as api, pytest.raises(AdminError) as e:
        api.request("POST", "/v1/workflows", {"kind": "scale_up"})
    assert sent == ["a"], sent
    assert "may have been carried out" in str(e.value) and "check" in str(e.value), str(e.value)
    assert "run the same command again" not in str(e.value)


@pytest.mark.parametrize("not_sent", [httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout])
def test_a_publish_that_never_reached_a_controller_goes_to_the_next(not_sent):
    """Nothing was sent to a (refused, no connection in time): b, the active one, is asked and its answer is given."""
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.host)
        if request.url.host == "a":
            raise not_sent("no connection", request=request)
        return httpx.Response(200, json={"id": 7, "state": "sealed"})

    with _client(handler, "http://a,http://b") as api:
        assert api.publish_move(7, 42, 5) == {"id": 7, "state": "sealed"}
    assert sent == ["a", "b"], sent


def test_a_read_that_timed_out_goes_to_the_next_controller_and_never_says_carried_out():
    """A GET changes nothing: asked again of the next controller; when none answers, no "may have been carried out"."""
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.host)
        raise httpx.ReadTimeout("timed out", request=request)

    with _client(handler, "http://a,http://b") as api, pytest.raises(AdminError) as e:
        api.moves()
    assert sent == ["a", "b"], sent
    # each controller asked named with what it did (s36: the round's error names them all, not the last one only)
    assert "(http://a did not answer (timed out); http://b did not answer (timed out))" in str(e.value), str(e.value)
    assert "carried out" not in str(e.value) and "unreachable" not in str(e.value), str(e.value)
