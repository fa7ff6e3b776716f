"""A proxy's own heartbeats (lease renewals and view acks) still count with member secrets, end to end through
ControllerViewSource and the controller's API: it presents the secret its registration got, a restarted proxy
(registering again, from its saved view or not) gets a new one that supersedes the old, the secret outlives a
controller restart (only its hash is in the database), and the proxy superseded registers again and counts
(docs/DESIGN.md §5.2, "Member secrets")."""

from __future__ import annotations

import asyncio
import hashlib

import httpx

from fedkafka.controller.api.views import MEMBER_SECRET_HEADER
from fedkafka.controller.app import create_app
from fedkafka.controller.kafka_admin import KafkaAdmin
from fedkafka.controller.models import ProxyRow
from fedkafka.controller.service import Controller, Settings
from fedkafka.proxy.state import ProxyState
from fedkafka.proxy.view_source import ControllerViewSource
from fedkafka.view.model import ProxyInfo, ProxyRole, View

TOKEN = "member-secret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
INSTANCE = "127.0.0.1:9092"


def _controller(database) -> Controller:
    return Controller(Settings(db_url=f"sqlite:///{database}"), kafka=KafkaAdmin(2.0))


def _source(ctl: Controller) -> ControllerViewSource:
    source = ControllerViewSource("http://controller", TOKEN, INSTANCE, lambda start, size: None)
    source.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(ctl, TOKEN, background=False)),
                                      timeout=10)
    return source


def _state() -> ProxyState:
    return ProxyState(view=View(version=0), me=ProxyInfo(0, "127.0.0.1", 9092, ProxyRole.PPROXY, "default"))


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


def test_a_proxys_own_heartbeats_ack_its_views_and_only_a_hash_of_its_secret_is_stored(tmp_path):
    ctl = _controller(tmp_path / "ctl.db")

    async def run() -> None:
        ctl.publisher.bind(asyncio.get_running_loop())
        source, state = _source(ctl), _state()
        await source.start(state)
        assert source.member_id is not None and source.member_secret
        await source._heartbeat_once(state)
        row = _row(ctl, source.member_id)
        assert row.applied_version == state.applied_version == ctl.view.version
        assert row.secret_hash == hashlib.sha256(source.member_secret.encode()).hexdigest()
        assert source.member_secret not in row.secret_hash
        await source.client.aclose()

    try:
        asyncio.run(run())
    finally:
        ctl.stop()


def test_a_restarted_proxy_gets_a_new_secret_the_old_is_refused_and_the_superseded_one_registers_again(tmp_path):
    ctl = _controller(tmp_path / "ctl.db")

    async def run() -> None:
        ctl.publisher.bind(asyncio.get_running_loop())
        old, old_state = _source(ctl), _state()
        await old.start(old_state)
        restarted, state = _source(ctl), _state()  # the same proxy started again: it registers again
        await restarted.start(state)
        assert restarted.member_id == old.member_id and restarted.member_secret != old.member_secret
        member, version = restarted.member_id, ctl.view.version
        assert await _heartbeat(old, member, old.member_secret, version) == 403
        await restarted._heartbeat_once(state)
        assert _row(ctl, member).applied_version == version
        # the superseded process (alive after all) is refused, registers again with a secret of its own
        stale = old.member_secret
        await old._heartbeat_once(old_state)
        assert old.member_secret not in (None, stale)
        assert await _heartbeat(old, member, old.member_secret, version) == 200
        await old.client.aclose()
        await restarted.client.aclose()

    try:
        asyncio.run(run())
    finally:
        ctl.stop()


def test_the_secret_outlives_a_controller_restart_and_a_wrong_one_stays_refused(tmp_path):
    database = tmp_path / "ctl.db"
    first = _controller(database)

    async def register() -> tuple[int, str, int]:
        first.publisher.bind(asyncio.get_running_loop())
        source, state = _source(first), _state()
        await source.start(state)
        await source.client.aclose()
        assert source.member_id is not None and source.member_secret is not None
        return source.member_id, source.member_secret, state.applied_version

    try:
        member, secret, version = asyncio.run(register())
    finally:
        first.stop()
    second = _controller(database)  # a failover: this controller never saw the registration

    async def heartbeat() -> None:
        second.publisher.bind(asyncio.get_running_loop())
        source = _source(second)
        assert await _heartbeat(source, member, "not-" + secret, version) == 403
        assert await _heartbeat(source, member, None, version) == 403
        assert await _heartbeat(source, member, secret, version) == 200
        await source.client.aclose()

    try:
        asyncio.run(heartbeat())
    finally:
        second.stop()
