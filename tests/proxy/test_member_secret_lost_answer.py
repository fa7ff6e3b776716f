"""A registration the controller committed but whose answer the proxy never got (a lost HTTP response): the proxy
chose its member secret itself, once per process, and sent it with the registration, so the row holds the hash of a
secret the proxy has. Its retry presents it and is registered again at once, its heartbeats count; another
process's registration (another secret: a restart, or another holder of the service token) is still refused while
the lease is live. As KRaft's broker-chosen incarnation id (docs/DESIGN.md §5.2, "A live member is registered again
only with its secret")."""

from __future__ import annotations

import asyncio
import hashlib

import httpx
import pytest

from fedkafka.controller.service import Controller
from fedkafka.controllers import MEMBER_SECRET_HEADER
from fedkafka.proxy.view_source import RegistrationRefused
from proxy.test_member_secret_proxy import _app_transport, _close, _heartbeat, _row, _source, _state, _with_controller


class FirstRegistrationAnswerLost(httpx.AsyncBaseTransport):
    """The controller's app; the first registration reaches it (and commits), its answer never reaches the proxy."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.answers: list[httpx.Response] = []  # the registrations' answers, as the controller gave them

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "POST" and request.url.path == "/v1/proxies":
            await response.aread()
            self.answers.append(response)
            if len(self.answers) == 1:
                raise httpx.ReadError("connection reset before the answer", request=request)
        return response


def test_a_registration_whose_answer_was_lost_is_taken_again_at_once_and_another_process_is_refused(tmp_path):
    async def run(ctl: Controller) -> None:
        transport = FirstRegistrationAnswerLost(_app_transport(ctl))
        source, state = _source(ctl, transport=transport), _state()
        refusals: list[RegistrationRefused] = []

        async def refused(refusal: RegistrationRefused, delay: float) -> float:
            refusals.append(refusal)
            raise AssertionError(f"the same process's retry was refused: {refusal}")

        source._wait_refused = refused  # type: ignore[method-assign]
        await asyncio.wait_for(source.start(state), 60)  # a guard against a hang, not a timing assertion
        lost, taken = transport.answers[0], transport.answers[1]
        assert lost.status_code == 200 and taken.status_code == 200 and not refusals
        member = lost.json()["member_id"]
        assert source.member_id == taken.json()["member_id"] == member
        await source._heartbeat_once(state)
        assert _row(ctl, member).applied_version == state.applied_version == ctl.view.version
        assert await _heartbeat(source, member, source.member_secret, ctl.view.version) == 200
        # only a hash of the proxy's secret is stored, and it is the one the lost answer's registration committed
        assert _row(ctl, member).secret_hash == hashlib.sha256(source.member_secret.encode()).hexdigest()
        other, other_state = _source(ctl), _state()  # another process of the identity: its own secret
        assert other.member_secret is None
        with pytest.raises(RegistrationRefused) as refusal:
            await other._register(other_state)
        assert refusal.value.response.status_code == 409
        assert refusal.value.response.json()["kafka_error"] == "DUPLICATE_BROKER_REGISTRATION"
        assert refusal.value.request.headers[MEMBER_SECRET_HEADER] != source.member_secret
        await source._heartbeat_once(state)  # the member stays the first process's
        assert await _heartbeat(source, member, source.member_secret, ctl.view.version) == 200
        await _close(source, other)

    _with_controller(tmp_path / "ctl.db", run)


class DrawingController(httpx.AsyncBaseTransport):
    """A controller before proxy-chosen secrets, as far as the proxy can tell: it ignores the secret a registration
    of a member whose lease is not live sends (`X-Fedkafka-Member-Secret`) and answers one it drew itself."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/v1/proxies":
            del request.headers[MEMBER_SECRET_HEADER]
        return await self.inner.handle_async_request(request)


def test_a_proxy_registered_by_a_controller_that_draws_the_secret_heartbeats_with_the_answered_one(tmp_path):
    """The registration asks with `member_secret: true` (a bool: an older controller's model refuses a string) and
    sends its own secret in the header; a controller that draws one instead answers it, and the proxy presents
    the answered one, as before."""
    async def run(ctl: Controller) -> None:
        source, state = _source(ctl, transport=DrawingController(_app_transport(ctl))), _state()
        own = source.own_secret
        await source.start(state)
        assert source.member_secret not in (None, own)
        await source._heartbeat_once(state)
        assert _row(ctl, source.member_id).applied_version == state.applied_version == ctl.view.version
        await source.client.aclose()

    _with_controller(tmp_path / "ctl.db", run)
