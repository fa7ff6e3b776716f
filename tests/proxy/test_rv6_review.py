"""Reviewer rv6 (failing tests) on member secrets' refusal of a live member's registration (cb25d27,
docs/DESIGN.md §5.2): a restart refused while its previous run is alive must not produce under its saved view;
a registration whose answer was lost leaves the proxy holding a secret the controller no longer takes."""

from __future__ import annotations

import asyncio

from fastapi.testclient import TestClient

from fedkafka.controller.app import create_app
from fedkafka.controller.service import Controller
from proxy.test_member_secret_proxy import (
    AUTH,
    TOKEN,
    _close,
    _controller,
    _previous_run,
    _renews,
    _saved_views,
    _source,
    _state,
    _with_controller,
)

SECRET_HEADER = "X-Fedkafka-Member-Secret"


def test_a_restart_refused_while_its_previous_run_is_alive_does_not_produce_under_the_saved_view(tmp_path):
    """A supervisor's restart race: the new process starts (SO_REUSEPORT: it binds next to the old one) while the
    previous run still runs and heartbeats. The controller refuses the new one (409, the previous run's lease
    is live) and takes the previous run's acks for the member: a move freezes a partition, the previous run
    drains and acks, the seal is read. The new process, not a member the controller waits for, serves its saved
    view with the saved produce deadline (`_start_from_cache`): its writes under the older view land on the
    sealed segment. Before cb25d27 a refused registration served nothing (the saved view's deadline was not
    taken: `_load_saved` sets lease_deadline to now)."""
    cache = _saved_views(tmp_path)

    async def run(ctl: Controller) -> None:
        old, _ = await _previous_run(ctl, cache)
        restarted, state = _source(ctl, cache=cache), _state()
        await asyncio.wait_for(restarted.start(state), 60)  # a guard against a hang, not a timing assertion
        assert not restarted._registered  # refused: the previous run's member is live
        # the previous run is alive: its heartbeats renew the member and ack views for it
        assert await _renews(old, ctl.view.version) == 200
        assert not state.lease_valid(), "an unregistered process produces while another acks for its member"
        await _close(old, restarted)

    _with_controller(tmp_path / "ctl.db", run)


def _proxy(instance: str, port: int) -> dict:
    return {"instance_id": instance, "host": "127.0.0.1", "port": port, "role": "both", "pool": "p1",
            "member_secret": True}


def test_a_registration_retried_after_its_answer_was_lost_is_taken(tmp_path):
    """The proxy's re-registration (a heartbeat refused 403/404) presents secret s1; the controller commits it
    (a new secret s2, the lease renewed) but the answer is lost (the client's 10 s timeout: `register_proxy`
    composes the view after the commit; a dropped connection). The proxy still holds s1, the only secret it was
    given: its heartbeats are refused (403, produce stops at once, `_heartbeat_once`) and its registrations too
    (409) until the lease the lost registration granted runs out, though no other process is involved. KRaft
    takes a retried registration of the same incarnation (BrokerRegistrationRequest's incarnation id)."""
    ctl = _controller(tmp_path / "ctl.db")
    try:
        with TestClient(create_app(ctl, TOKEN, background=False), headers=AUTH) as api:
            first = api.post("/v1/proxies", json=_proxy("a", 9092))
            assert first.status_code == 200, first.text
            s1 = first.json()["member_secret"]
            lost = api.post("/v1/proxies", json=_proxy("a", 9092), headers={SECRET_HEADER: s1})
            assert lost.status_code == 200, lost.text  # committed; the proxy never reads this answer
            retry = api.post("/v1/proxies", json=_proxy("a", 9092), headers={SECRET_HEADER: s1})
            assert retry.status_code == 200, retry.text
    finally:
        ctl.stop()
