"""A proxy's own heartbeats (lease renewals and view acks) still count with member secrets, end to end through
ControllerViewSource and the controller's API: it presents the secret its registration got, a restarted proxy
(registering again, from its saved view or not) gets a new one that supersedes the old, the secret outlives a
controller restart (only its hash is in the database), and the proxy superseded registers again and counts
(docs/DESIGN.md §5.2, "Member secrets")."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx
import pytest

from fedkafka.controller.app import create_app
from fedkafka.controller.kafka_admin import KafkaAdmin
from fedkafka.controller.models import ProxyRow
from fedkafka.controller.service import Controller, Settings
from fedkafka.controllers import MEMBER_SECRET_HEADER
from fedkafka.proxy.state import ProxyState
from fedkafka.proxy.view_cache import ViewCache
from fedkafka.proxy.view_source import ControllerViewSource, RegistrationRefused
from fedkafka.view.model import ProxyInfo, ProxyRole, View

TOKEN = "member-secret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
INSTANCE = "127.0.0.1:9092"


def _controller(database) -> Controller:
    return Controller(Settings(db_url=f"sqlite:///{database}"), kafka=KafkaAdmin(2.0))


def _app_transport(ctl: Controller) -> httpx.ASGITransport:
    """The controller's API, in process."""
    return httpx.ASGITransport(app=create_app(ctl, TOKEN, background=False))


def _source(ctl: Controller, urls: str = "http://controller", token: str = TOKEN,
            transport: httpx.AsyncBaseTransport | None = None, cache: ViewCache | None = None) -> ControllerViewSource:
    """A proxy's view source asking `urls` with `token` through `transport` (by default `ctl`'s app itself), saving
    its view in `cache` when given one."""
    source = ControllerViewSource(urls, token, INSTANCE, lambda start, size: None)
    source.client = httpx.AsyncClient(transport=transport or _app_transport(ctl), timeout=10)
    if cache is not None:
        source.cache = cache
    return source


def _state() -> ProxyState:
    return ProxyState(view=View(version=0), me=ProxyInfo(0, "127.0.0.1", 9092, ProxyRole.PPROXY, "default"))


def _saved_views(tmp_path) -> ViewCache:
    """Where a proxy's runs save their view (and its produce deadline), one run after another."""
    return ViewCache(tmp_path / "view.json", INSTANCE)


async def _previous_run(ctl: Controller, cache: ViewCache | None = None) -> tuple[ControllerViewSource, ProxyState]:
    """The proxy's previous run: registered, its view and deadline saved in `cache` (if given)."""
    old, old_state = _source(ctl, cache=cache), _state()
    await old.start(old_state)
    return old, old_state


async def _close(*sources: ControllerViewSource) -> None:
    for source in sources:
        await source.client.aclose()


T = TypeVar("T")


def _with_controller(database, scenario: Callable[[Controller], Awaitable[T]]) -> T:
    """Runs `scenario` against a controller on `database` (its publisher bound to the scenario's loop), then stops
    the controller."""
    ctl = _controller(database)

    async def run() -> T:
        ctl.publisher.bind(asyncio.get_running_loop())
        return await scenario(ctl)

    try:
        return asyncio.run(run())
    finally:
        ctl.stop()


def _row(ctl: Controller, member: int) -> ProxyRow:
    ctl.flush_heartbeats()
    with ctl.session() as s:
        row = s.get(ProxyRow, member)
        s.expunge(row)
        return row


async def _heartbeat(source: ControllerViewSource, member: int, secret: str | None, version: int) -> int:
    headers = AUTH if secret is None else {**AUTH, MEMBER_SECRET_HEADER: secret}
    answer = await source.client.post(f"http://controller/v1/proxies/{member}/heartbeat", headers=headers,
                                      json={"applied_version": version, "load": {}})
    return answer.status_code


async def _renews(source: ControllerViewSource, version: int) -> int:
    """A heartbeat of `source` for its own member with its own secret (a run alive, acking `version`): the status."""
    return await _heartbeat(source, source.member_id, source.member_secret, version)


def test_a_proxys_own_heartbeats_ack_its_views_and_only_a_hash_of_its_secret_is_stored(tmp_path):
    async def run(ctl: Controller) -> None:
        source, state = _source(ctl), _state()
        await source.start(state)
        assert source.member_id is not None and source.member_secret
        await source._heartbeat_once(state)
        row = _row(ctl, source.member_id)
        assert row.applied_version == state.applied_version == ctl.view.version
        assert row.secret_hash == hashlib.sha256(source.member_secret.encode()).hexdigest()
        assert source.member_secret not in row.secret_hash
        await source.client.aclose()

    _with_controller(tmp_path / "ctl.db", run)


def _lease_runs_out(ctl: Controller, member: int) -> None:
    """The member's proxy died a lease ago: its lease has run out, in the controller's memory and database."""
    with ctl._hb_lock:
        ctl._leases.pop(member, None)
    with ctl.session() as s:
        s.get(ProxyRow, member).lease_expires = time.time() - 1
        s.commit()


def test_a_restarted_proxy_registers_once_its_previous_runs_lease_ran_out_and_the_old_secret_is_refused(tmp_path):
    """A restart (a new process, a new secret) is refused while the previous run's lease is live (it could be another
    holder of the service token taking the member over, docs/DESIGN.md §5.2); it retries, backing off, and
    registers once the lease has run out, with a new secret. The previous run, alive after all (stalled past its
    lease), is refused in turn (409: no ping-pong) and does not take the member back."""
    async def run(ctl: Controller) -> None:
        old, old_state = await _previous_run(ctl)
        refusals: list[RegistrationRefused] = []
        restarted, state = _source(ctl), _state()
        wait = restarted._wait_refused

        async def counted(refusal: RegistrationRefused, delay: float) -> float:
            refusals.append(refusal)
            assert await _renews(old, 0) == 200  # the live one renews
            _lease_runs_out(ctl, old.member_id)  # ... then dies: its lease runs out, the restart may register
            return await wait(refusal, 0.01)

        restarted._wait_refused = counted  # type: ignore[method-assign]
        await asyncio.wait_for(restarted.start(state), 60)  # a guard against a hang, not a timing assertion
        assert len(refusals) == 1 and refusals[0].response.status_code == 409
        assert refusals[0].response.json()["kafka_error"] == "DUPLICATE_BROKER_REGISTRATION"
        assert restarted.member_id == old.member_id and restarted.member_secret not in (None, old.member_secret)
        member, version = restarted.member_id, ctl.view.version
        assert await _heartbeat(old, member, old.member_secret, version) == 403
        await restarted._heartbeat_once(state)
        assert _row(ctl, member).applied_version == version
        # the previous run heartbeats again: refused (403), and its registration with its stale secret too (409)
        stale = old.member_secret
        try:
            await old._heartbeat_once(old_state)
        except RegistrationRefused as refused:
            assert refused.response.status_code == 409
        else:
            raise AssertionError("the previous run took the live member back")
        assert old.member_secret == stale
        await restarted._heartbeat_once(state)  # the restarted one keeps its member
        assert _row(ctl, member).secret_hash == hashlib.sha256(restarted.member_secret.encode()).hexdigest()
        await _close(old, restarted)

    _with_controller(tmp_path / "ctl.db", run)


def test_a_restarted_proxy_serves_its_saved_view_until_its_previous_runs_lease_ran_out(tmp_path):
    """With a saved view, a restart refused because its previous run's lease is live serves that view at once
    (as across a controller outage) and registers from it once the lease has run out: nothing gives up."""
    cache = _saved_views(tmp_path)

    async def run(ctl: Controller) -> None:
        old, old_state = await _previous_run(ctl, cache)
        saved = old_state.view.version
        restarted, state = _source(ctl, cache=cache), _state()
        await asyncio.wait_for(restarted.start(state), 60)
        assert state.view.version == saved and not restarted._registered  # serving, not registered yet
        assert not state.lease_valid()  # reads only: the previous run may still be alive and ack for the member
        assert restarted.member_secret is None
        _lease_runs_out(ctl, old.member_id)  # the previous run is gone: it renews no more
        await asyncio.wait_for(restarted._register_from_cache(state), 60)
        assert restarted._registered and restarted.member_id == old.member_id
        assert restarted.member_secret not in (None, old.member_secret)
        await restarted._heartbeat_once(state)
        assert _row(ctl, restarted.member_id).applied_version == state.applied_version == ctl.view.version
        await _close(old, restarted)

    _with_controller(tmp_path / "ctl.db", run)


class _Refused(Exception):
    """Ends a registration loop at its first refusal."""


async def _stop_at_refusal(refusal: RegistrationRefused, delay: float | None = None) -> float:
    raise _Refused(str(refusal))


def test_a_restart_started_without_a_controller_stops_producing_when_its_registration_is_refused(tmp_path):
    """A restart that found no controller serves its saved view with the saved deadline (§4.9, F5); once a
    controller answers and refuses it (409: the previous run, still alive, holds the member), it produces no more:
    the controller takes the other process's acks, a move may seal on them."""
    cache = _saved_views(tmp_path)

    async def run(ctl: Controller) -> None:
        old, _ = await _previous_run(ctl, cache)
        restarted, state = _source(ctl, cache=cache), _state()
        restarted._start_from_cache(state, restarted._load_saved(state))  # as if no controller answered at first
        assert state.lease_valid()  # the saved deadline the previous run was granted
        restarted._wait_refused = _stop_at_refusal  # type: ignore[method-assign]
        with pytest.raises(_Refused, match="refused"):
            await asyncio.wait_for(restarted._register_from_cache(state), 60)
        assert not restarted._registered and not state.lease_valid()
        await _close(old, restarted)

    _with_controller(tmp_path / "ctl.db", run)


def test_a_heartbeats_registration_refused_stays_with_the_controller_that_refused_it(tmp_path):
    """A registration after a heartbeat's 403/404 refused (409) is the leader's answer, not its failure: the
    heartbeat task logs the refusal and does not move on to the next controller."""
    source = ControllerViewSource("http://a,http://b", TOKEN, INSTANCE, lambda start, size: None)
    source.lease_ms = 30  # the heartbeat loop's pause: a tenth of a second at most
    refusal = httpx.Response(409, json={"detail": "live", "kafka_error": "DUPLICATE_BROKER_REGISTRATION"},
                             request=httpx.Request("POST", "http://a/v1/proxies"))
    rounds: list[str] = []

    async def refused(state: ProxyState, renew_after_registering: bool = True) -> None:
        rounds.append(source.controllers.current)
        if len(rounds) == 2:
            raise _Refused("two rounds")
        raise RegistrationRefused("registration refused", request=refusal.request, response=refusal)

    async def run() -> None:
        source._registered = True
        source._heartbeat_once = refused  # type: ignore[method-assign]
        with pytest.raises(_Refused):
            await asyncio.wait_for(source._heartbeat(_state()), 60)
        await source.client.aclose()

    asyncio.run(run())
    assert rounds == ["http://a", "http://a"]


def test_the_secret_outlives_a_controller_restart_and_a_wrong_one_stays_refused(tmp_path):
    database = tmp_path / "ctl.db"

    async def register(first: Controller) -> tuple[int, str, int]:
        source, state = _source(first), _state()
        await source.start(state)
        await source.client.aclose()
        assert source.member_id is not None and source.member_secret is not None
        return source.member_id, source.member_secret, state.applied_version

    member, secret, version = _with_controller(database, register)

    async def heartbeat(second: Controller) -> None:  # a failover: this controller never saw the registration
        source = _source(second)
        assert await _heartbeat(source, member, "not-" + secret, version) == 403
        assert await _heartbeat(source, member, None, version) == 403
        assert await _heartbeat(source, member, secret, version) == 200
        await source.client.aclose()

    _with_controller(database, heartbeat)
