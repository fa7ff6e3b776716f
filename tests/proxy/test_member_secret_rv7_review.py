"""Review rv7 of 1bd4b8c (proxy-chosen member secrets, docs/DESIGN.md §5.2).

Guards for what the review found sound (an oversized secret header is refused before it is hashed and not echoed;
a controller that draws its own secret, as the previous release's, is followed by the proxy for heartbeats and
re-registrations), and one failing test: a holder of the service token that registers a member whose lease has
lapsed, under a secret of its own choosing, and keeps heartbeating, keeps the real proxy process out for as long as
it heartbeats (pre-existing since cb25d27, not introduced by 1bd4b8c)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from fedkafka.controller import service
from fedkafka.controllers import MEMBER_SECRET_HEADER
from fedkafka.proxy.view_source import RegistrationRefused
from proxy.test_member_secret_proxy import AUTH, INSTANCE, _controller, _heartbeat, _lease_runs_out, _source, _state

BODY = {"instance_id": INSTANCE, "host": "127.0.0.1", "port": 9092, "role": "pproxy", "pool": "default",
        "listeners": [], "member_secret": True}


def test_an_oversized_member_secret_header_is_refused_unhashed_and_not_echoed(tmp_path, monkeypatch):
    ctl = _controller(tmp_path / "ctl.db")
    hashed: list[int] = []
    real_hash = service._secret_hash
    monkeypatch.setattr(service, "_secret_hash", lambda s: hashed.append(len(s)) or real_hash(s))
    big = "S" * (1 << 20)

    async def run() -> httpx.Response:
        source = _source(ctl)
        answer = await source.client.post("http://controller/v1/proxies", json=BODY,
                                          headers={**AUTH, MEMBER_SECRET_HEADER: big})
        await source.client.aclose()
        return answer

    answer = asyncio.run(run())
    assert answer.status_code == 422
    assert "SSSSSSSS" not in answer.text and len(answer.content) < 1024
    assert (1 << 20) not in hashed


def test_a_controller_drawing_its_own_secret_is_followed_for_heartbeats_and_re_registrations(tmp_path, monkeypatch):
    """The previous release's controller draws a secret and ignores the proxy's (emulated: `_member_secret` draws):
    the proxy heartbeats with the answered secret, and its next registration presents the answered one (its own is
    not the member's: it would be refused, 409, while the lease is live)."""
    ctl = _controller(tmp_path / "ctl.db")
    monkeypatch.setattr(service, "_member_secret", lambda presented: service.secrets.token_urlsafe(32))

    async def run() -> None:
        ctl.publisher.bind(asyncio.get_running_loop())
        source, state = _source(ctl), _state()
        await source._register(state)
        drawn = source.member_secret
        assert drawn is not None and drawn != source.own_secret
        assert await _heartbeat(source, source.member_id, drawn, 0) == 200
        assert await _heartbeat(source, source.member_id, source.own_secret, 0) == 403
        await source._register(state)  # the lease is live: taken only because it presents the drawn secret
        assert source.member_secret not in (None, drawn, source.own_secret)
        await source._heartbeat_once(state)
        assert await _heartbeat(source, source.member_id, source.member_secret, 0) == 200
        await source.client.aclose()

    asyncio.run(run())


@pytest.mark.xfail(strict=True, reason="known limit (DESIGN §5.2 'A live member is registered again only with its "
                   "secret'): the service token is the only proof of a proxy's identity, as in KRaft")
def test_an_impostor_that_takes_a_lapsed_member_with_its_own_secret_does_not_lock_the_proxy_out_for_good(tmp_path):
    """A known limit (since cb25d27): the real proxy's lease lapses once (a stall); a holder of
    the service token registers the member under a secret it chose and heartbeats at each third of a lease. The real
    process (the same process, its own secret) is refused (409) at every retry, for as long as the impostor renews:
    before cb25d27 its re-registration took the member back. Expected here: the real proxy gets its member back
    within a bounded number of leases (or the takeover of a lapsed member is otherwise bounded)."""
    ctl = _controller(tmp_path / "ctl.db")

    async def run() -> list[int]:
        ctl.publisher.bind(asyncio.get_running_loop())
        proxy, state = _source(ctl), _state()
        await proxy._register(state)
        member = proxy.member_id
        _lease_runs_out(ctl, member)  # the real proxy stalled past its lease
        impostor = _source(ctl)
        chosen = "impostor-chosen-secret-" + "x" * 20
        taken = await impostor.client.post("http://controller/v1/proxies", json=BODY,
                                           headers={**AUTH, MEMBER_SECRET_HEADER: chosen})
        assert taken.status_code == 200 and taken.json()["member_secret"] == chosen
        refusals = []
        for _ in range(5):  # five leases: each time the real proxy retries, the impostor has just renewed
            assert await _heartbeat(impostor, member, chosen, 0) == 200
            try:
                await proxy._register(state)
            except RegistrationRefused as refused:
                refusals.append(refused.response.status_code)
            else:
                break
        await proxy.client.aclose()
        await impostor.client.aclose()
        return refusals

    refusals = asyncio.run(run())
    assert len(refusals) < 5, f"the real proxy was refused at every retry: {refusals}"
