"""A member taken over by a new process while its previous process's fence has not run out (docs/DESIGN.md §4.9,
F4 and case 1 of "Why no acked write lands above a seal"; §5.2 "A live member is registered again only with its
secret").

The controller hands a member to a new process (a new member secret) once the lease has run out, not the fence: the
previous process, cut off from the controllers for longer than a lease, still produces under its old view until its
own deadline (F2). The new process's ack of the frozen view says nothing of what the previous one may still send, so
a move must not read its seal on it until the previous process's fence and the grace have passed, as for a silent
proxy. The old code counted the row as acked and sealed: a write the previous process sent to the sealed segment
was acked to its client and lost."""

from __future__ import annotations

import secrets
import threading
import time

import pytest

from controller.conftest import TAKEOVER_FENCE_S as FENCE_S
from controller.conftest import TAKEOVER_LEASE_S as LEASE_S
from fedkafka.controller.models import MoveRow, ProxyRow
from fedkafka.controller.moves import MoveFailed, Mover
from fedkafka.fencing import FENCE_GRACE_S
from fedkafka.view.rebalance import Move

SECRET_HEADER = "X-Fedkafka-Member-Secret"
PREDECESSOR_HEADER = "X-Fedkafka-Predecessor-Secret"
PROXY = {"instance_id": "h:9092", "host": "h", "port": 9092, "role": "pproxy", "pool": "p1", "member_secret": True}


def _process(api, secret: str) -> dict:
    """A proxy process registering member h:9092 with its own secret (one per process, as the proxy chooses it)."""
    answer = api.post("/v1/proxies", json=PROXY, headers={SECRET_HEADER: secret})
    assert answer.status_code == 200, answer.text
    return {**answer.json(), "secret": secret}


def _beat(api, process: dict, version: int) -> None:
    answer = api.post(f"/v1/proxies/{process['member_id']}/heartbeat", json={"applied_version": version, "load": {}},
                      headers={SECRET_HEADER: process["secret"]})
    assert answer.status_code == 200, answer.text


def _frozen_version(api) -> int | None:
    view = api.get("/v1/view").json()
    topic = next(t for t in view["topics"] if t["name"] == "t")
    return view["version"] if topic["partitions"][1]["frozen"] else None


def _acks_when_frozen(api, acking_first, process: dict) -> threading.Thread:
    """`process` applies the frozen view as soon as the controller serves it, and acks it."""

    def ack() -> None:
        while (version := _frozen_version(api)) is None:
            time.sleep(0.02)
        _beat(api, process, version)

    return acking_first(ack)


def _renewing_until(api, clock, process: dict, until: float) -> None:
    """The clock runs to `until` while `process` renews its own lease (and so its fence) every half lease."""
    while clock.now < until:
        clock.advance(min(LEASE_S / 2, until - clock.now))
        _beat(api, process, api.controller.view.version)


def test_a_new_processs_ack_does_not_seal_while_the_previous_process_may_still_write(takeover_api, clock, acking_first):
    """X1 (secret A) registers, then is cut off from the controllers: its lease runs out, its fence (and its own
    deadline, F1) does not. X2 (secret B, a restart or an impostor) registers the same member and acks the frozen view.
    The move waits for the member (rolled back here at its ack timeout, its seal never read) until X1's fence plus
    the grace has passed; then X2's ack counts and the move is done."""
    ctl = takeover_api.controller
    x1 = _process(takeover_api, secrets.token_urlsafe(32))
    x1_fence = clock.now + FENCE_S
    clock.advance(LEASE_S + 1)  # X1's lease ran out, its fence has FENCE_S - LEASE_S - 1 s to go
    x2 = _process(takeover_api, secrets.token_urlsafe(32))
    assert x2["member_id"] == x1["member_id"]

    mover = Mover(ctl, ack_timeout=1.0)
    ids = mover.plan(None, [Move("t", 1, "c2", "c1", "t", 1)])
    helper = _acks_when_frozen(takeover_api, acking_first, x2)
    with pytest.raises(MoveFailed, match=rf"; {x2['member_id']} taken over by a new process"):
        mover.run(ids)
    helper.join()
    assert mover.counts(ids) == {"rolled_back": 1}  # nothing sealed: X1 may still write to c2's segment
    with ctl.session() as s:
        assert s.get(MoveRow, ids[0]).seal is None

    _renewing_until(takeover_api, clock, x2, x1_fence + FENCE_GRACE_S - 1)  # a second before X1 is surely fenced
    ids = mover.plan(None, [Move("t", 1, "c2", "c1", "t", 1)])
    helper = _acks_when_frozen(takeover_api, acking_first, x2)
    with pytest.raises(MoveFailed, match=rf"; {x2['member_id']} taken over by a new process"):
        mover.run(ids)
    helper.join()
    assert mover.counts(ids) == {"rolled_back": 1}

    # X1 surely fenced: it sends nothing more (F2)
    _renewing_until(takeover_api, clock, x2, x1_fence + FENCE_GRACE_S + 1)
    ids = mover.plan(None, [Move("t", 1, "c2", "c1", "t", 1)])
    helper = _acks_when_frozen(takeover_api, acking_first, x2)
    assert mover.run(ids) == {"done": 1}
    helper.join()


def test_the_same_process_registering_again_leaves_nothing_to_wait_for(takeover_api, clock, acking_first):
    """X1 registers again with its own secret after its lease ran out (a 404/403 race, a lost answer): it is the
    process that acks, so its ack counts at once, as before."""
    x1 = _process(takeover_api, secrets.token_urlsafe(32))
    clock.advance(LEASE_S + 1)
    again = _process(takeover_api, x1["secret"])
    mover = Mover(takeover_api.controller, ack_timeout=5.0)
    ids = mover.plan(None, [Move("t", 1, "c2", "c1", "t", 1)])
    helper = _acks_when_frozen(takeover_api, acking_first, again)
    assert mover.run(ids) == {"done": 1}
    helper.join()


def test_a_takeover_after_the_previous_fence_and_grace_leaves_nothing_to_wait_for(takeover_api, clock, acking_first):
    """X1's fence and the grace have passed before X2 registers (X1 is surely fenced; a stopped proxy deregistered
    more than the grace before is the same): X2's ack counts at once."""
    _process(takeover_api, secrets.token_urlsafe(32))
    clock.advance(FENCE_S + FENCE_GRACE_S + 1)
    x2 = _process(takeover_api, secrets.token_urlsafe(32))
    mover = Mover(takeover_api.controller, ack_timeout=5.0)
    ids = mover.plan(None, [Move("t", 1, "c2", "c1", "t", 1)])
    helper = _acks_when_frozen(takeover_api, acking_first, x2)
    assert mover.run(ids) == {"done": 1}
    helper.join()


def _takes_over(api, clock, vouched: str) -> tuple[dict, dict]:
    """X1 registers, its lease runs out (not its fence), and X2 registers the member showing `vouched` as its
    predecessor's secret (X-Fedkafka-Predecessor-Secret): (X1, X2)."""
    x1 = _process(api, secrets.token_urlsafe(32))
    clock.advance(LEASE_S + 1)
    secret = secrets.token_urlsafe(32)
    answer = api.post("/v1/proxies", json=PROXY, headers={SECRET_HEADER: secret,
                                                          PREDECESSOR_HEADER: vouched or x1["secret"]})
    assert answer.status_code == 200, answer.text
    return x1, {**answer.json(), "secret": secret}


def test_a_process_whose_exit_is_vouched_for_is_waited_for_the_grace_only(takeover_api, clock, acking_first):
    """A --workers parent draws each worker's secret and, once it saw that process exit, passes it to the worker it
    starts again, which shows it: the exited process sends nothing more, but a write it sent just before its exit
    may still be appended within the grace (§4.1). So its fence is taken as ending at the registration (not the
    49 s it had left): the new process's ack counts once that and the grace have passed, not before
    (docs/DESIGN.md §4.10; reviewer rv5: it counted at once)."""
    _, x2 = _takes_over(takeover_api, clock, vouched="")
    vouched_at = clock.now  # X1's fence had FENCE_S - LEASE_S - 1 s to go
    mover = Mover(takeover_api.controller, ack_timeout=1.0)
    ids = mover.plan(None, [Move("t", 1, "c2", "c1", "t", 1)])
    helper = _acks_when_frozen(takeover_api, acking_first, x2)
    with pytest.raises(MoveFailed, match=rf"; {x2['member_id']} taken over by a new process"):
        mover.run(ids)
    helper.join()
    assert mover.counts(ids) == {"rolled_back": 1}

    _renewing_until(takeover_api, clock, x2, vouched_at + FENCE_GRACE_S + 1)  # the grace passed, X1's own fence has not
    ids = mover.plan(None, [Move("t", 1, "c2", "c1", "t", 1)])
    helper = _acks_when_frozen(takeover_api, acking_first, x2)
    assert mover.run(ids) == {"done": 1}
    helper.join()


def test_a_wrong_predecessor_secret_vouches_for_nothing(takeover_api, clock, acking_first):
    """Only the secret of the member's holder vouches for its exit: a guessed one leaves X1's fence to wait for."""
    _, x2 = _takes_over(takeover_api, clock, vouched=secrets.token_urlsafe(32))
    mover = Mover(takeover_api.controller, ack_timeout=1.0)
    ids = mover.plan(None, [Move("t", 1, "c2", "c1", "t", 1)])
    helper = _acks_when_frozen(takeover_api, acking_first, x2)
    with pytest.raises(MoveFailed, match=rf"; {x2['member_id']} taken over by a new process"):
        mover.run(ids)
    helper.join()
    assert mover.counts(ids) == {"rolled_back": 1}


def test_an_older_processs_secret_is_a_plain_takeover_not_an_error(takeover_api, clock):
    """A single-process proxy that proves its previous run's exit with its view cache's lock shows the secret that
    run saved, which may not be the member's: that run's registration never committed, so an older process (X0 here)
    holds the row, or another host's process took it over since (X1). Registered all the same, as a takeover that
    waits X1's whole fence: X0's exit says nothing of X1's (docs/DESIGN.md §4.9, F4)."""
    x0 = _process(takeover_api, secrets.token_urlsafe(32))
    clock.advance(LEASE_S + 1)
    x1, x1_fence = _process(takeover_api, secrets.token_urlsafe(32)), clock.now + FENCE_S
    clock.advance(LEASE_S + 1)
    answer = takeover_api.post("/v1/proxies", json=PROXY,
                               headers={SECRET_HEADER: secrets.token_urlsafe(32), PREDECESSOR_HEADER: x0["secret"]})
    assert answer.status_code == 200, answer.text
    with takeover_api.controller.session() as s:
        row = s.get(ProxyRow, x1["member_id"])
        assert row.predecessor_fence_expires == pytest.approx(x1_fence)  # not now: X1 is not vouched for


def test_any_of_several_predecessor_secrets_vouches(takeover_api, clock):
    """A single-process proxy shows every run since its lock's last answered registration (a restart that exited
    before its registration committed, then the next): the member's holder among them proves its exit, so its
    fence is recorded as ending now, not X1's whole fence (docs/DESIGN.md §4.9, F4)."""
    x1 = _process(takeover_api, secrets.token_urlsafe(32))
    clock.advance(LEASE_S + 1)
    shown = ",".join([secrets.token_urlsafe(32), x1["secret"]])  # a run the row never held, then X1
    answer = takeover_api.post("/v1/proxies", json=PROXY,
                               headers={SECRET_HEADER: secrets.token_urlsafe(32), PREDECESSOR_HEADER: shown})
    assert answer.status_code == 200, answer.text
    with takeover_api.controller.session() as s:
        assert s.get(ProxyRow, x1["member_id"]).predecessor_fence_expires == pytest.approx(clock.now, abs=1e-3)


@pytest.mark.parametrize("shown", [",".join(["s" * 43] * 5), "a,,b", ",", "x" * 257])
def test_a_malformed_predecessor_header_is_refused(takeover_api, clock, shown):
    """More than 4 secrets, an empty one, or one longer than a secret may be: refused, nothing registered."""
    answer = takeover_api.post("/v1/proxies", json=PROXY,
                               headers={SECRET_HEADER: secrets.token_urlsafe(32), PREDECESSOR_HEADER: shown})
    assert answer.status_code == 422, answer.text
    assert takeover_api.get("/v1/proxies").json()["proxies"] == []
