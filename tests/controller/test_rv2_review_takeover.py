"""Review rv2 of 247f046 (a member taken over by a new process: `proxies.predecessor_fence_expires`, docs/DESIGN.md
§4.9 F4). Failing tests for what the merge leaves open; the fixture (conftest's `takeover_api`) and helpers are
those of test_member_takeover_fence.py."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
import yaml

from controller.conftest import TAKEOVER_FENCE_S as FENCE_S
from controller.conftest import TAKEOVER_LEASE_S as LEASE_S
from fedkafka.controller.errors import Forbidden
from fedkafka.controller.models import ProxyRow
from fedkafka.controller.moves import CONSUME_ROLES, MoveFailed, Mover
from fedkafka.fencing import DEFAULT_FENCE_S, FENCE_GRACE_S, ack_timeout_s

from .test_member_takeover_fence import (
    PROXY,
    SECRET_HEADER,
    _beat,
    _process,
)

ROOT = Path(__file__).resolve().parents[2]


def test_rv2_a_renewal_checked_before_a_takeover_and_written_after_it_outlives_the_recorded_fence(takeover_api, clock):
    """[data] X1's heartbeat passes the secret check (`check_member_secret`), X2 takes the member over (X1's lease
    ran out, so `_record_predecessor` records X1's fence F), then X1's renewal is written (`renew_lease`): X1 is told
    a deadline of now + fence, past F. A move whose frozen view X2 acks once F and the grace have passed seals while
    X1 may still write to the source for minutes: its next acked write lands above the seal, lost.
    The window DESIGN.md §4.9 F4 names ("closing it needs the renewal's write to check the secret it was accepted
    with"). Fix: carry the secret hash the heartbeat was checked against into the renewal and write it only where the
    row still holds it (renew_lease under `_hb_lock` against `_secret_hashes`, and the flush's UPDATE ... WHERE
    secret_hash = checked), else 403; or record the predecessor fence as max(fence, now + fence_ms) at a takeover."""
    ctl = takeover_api.controller
    x1 = _process(takeover_api, secrets.token_urlsafe(32))
    member = x1["member_id"]
    clock.advance(FENCE_S - 5)  # X1 is cut off: its lease ran out, its fence has 5 s to go
    accepted = ctl.check_member_secret(member, x1["secret"])  # X1's heartbeat arrives as the partition heals
    _process(takeover_api, secrets.token_urlsafe(32))  # ... and X2's registration commits the takeover meanwhile
    with ctl.session() as s:
        recorded, fence = s.get(ProxyRow, member).predecessor_fence_expires, s.get(ProxyRow, member).fence_expires
    assert recorded is not None
    with pytest.raises(Forbidden):  # X1's renewal, written after it, holds only for the secret it was accepted with
        ctl.renew_lease(member, 0, {}, accepted) or ctl.heartbeat(member, 0, {}, accepted)
    with ctl.session() as s:  # nothing was written for X1: the takeover's record is what X1 may still write until
        row = s.get(ProxyRow, member)
        assert (row.predecessor_fence_expires, row.fence_expires) == (recorded, fence)


def test_rv2_a_role_changed_at_a_takeover_still_waits_for_the_previous_consume_process(takeover_api, clock):
    """X1 registers the member as `both` (it serves consumers: OffsetCommit to the coordination cluster) and is cut
    off. X2 registers it as `pproxy` once the lease ran out (a role change is allowed then, `_refuse_takeover`).
    The takeover records X1's fence, but a coordination move's ack wait (`await_version(roles=CONSUME_ROLES)`) selects
    rows by the *new* role, so the row is not looked at: the move copies the offsets while X1 may still take commits
    on the old coordination cluster under its old view (commits acked, then lost: consumers read again). Fix: keep
    the predecessor's role with its fence (or count a row with a pending predecessor fence for every role)."""
    ctl = takeover_api.controller
    _process_as(takeover_api, "both", secrets.token_urlsafe(32))
    clock.advance(LEASE_S + 1)
    x2 = _process_as(takeover_api, "pproxy", secrets.token_urlsafe(32))
    with ctl.session() as s:
        assert s.get(ProxyRow, x2["member_id"]).predecessor_fence_expires is not None  # the takeover was recorded
    version = ctl.compose().version
    _beat(takeover_api, x2, version)
    mover = Mover(ctl, ack_timeout=1.0)
    with pytest.raises(MoveFailed):  # X1 ('both') may serve commits until its fence and the grace
        mover.await_version(version, lambda *_: None, roles=CONSUME_ROLES)


def _process_as(api, role: str, secret: str) -> dict:
    answer = api.post("/v1/proxies", json={**PROXY, "role": role}, headers={SECRET_HEADER: secret})
    assert answer.status_code == 200, answer.text
    return {**answer.json(), "secret": secret}


@pytest.mark.parametrize("playbook", ["scale_up.yml", "coordination_move.yml", "failover.yml"])
def test_rv2_a_workflow_playbook_waits_out_a_restarted_proxys_previous_fence(playbook):
    """Availability: after playbooks/rolling_restart.yml (every proxy restarted by systemd: a new process, another
    secret, no --workers parent to vouch), a move waits for each restarted proxy's previous fence and the grace
    (DEFAULT_FENCE_S + 40 s = 940 s with the role's fedkafka_controller_fence_ms 900000). These playbooks' default
    `timeout` (600 s) ends first: the task fails while the run goes on in the controller. Fix: a default timeout of at
    least the controller's ack timeout (ack_timeout_s(lease, fence) = 945 s), or a graceful stop that ends its own
    fence (so only a crash leaves one to wait for)."""
    role_fence_s = yaml.safe_load((ROOT / "roles/fedkafka_controller/defaults/main.yml").read_text())[
        "fedkafka_controller_fence_ms"] / 1000
    assert role_fence_s == DEFAULT_FENCE_S
    text = (ROOT / "playbooks" / playbook).read_text()
    default = int(text.split("timeout | default(")[1].split(")")[0])
    assert default >= ack_timeout_s(10.0, role_fence_s), (
        f"{playbook}: default timeout {default} s < {ack_timeout_s(10.0, role_fence_s):.0f} s, the longest a move "
        "waits after rolling_restart.yml")


def test_rv2_the_previous_process_cannot_renew_after_a_proxy_without_a_secret_took_the_member_over(takeover_api, clock):
    """[data] X1 (this release, a member secret) is cut off; X2, a proxy before member secrets (a host downgraded, or
    one running the old release), registers the member once the lease ran out: the takeover records X1's fence, and
    the row's secret is cleared (`_commit_registration`: secret_hash None). X1's heartbeat, with its old secret, is then
    accepted (`check_member_secret` passes any caller of a row without a secret): X1 renews its lease and fence past
    the fence recorded, and its applied version is max()ed with X2's, so a move seals on X2's ack once the recorded
    fence and the grace passed while X1 still writes under its old view. Fix: refuse (403) a heartbeat presenting a
    secret for a row that holds none (its holder presents none), or keep the predecessor's hash to refuse it."""
    x1 = _process(takeover_api, secrets.token_urlsafe(32))
    clock.advance(LEASE_S + 1)
    old_release = {k: v for k, v in PROXY.items() if k != "member_secret"}
    taken = takeover_api.post("/v1/proxies", json=old_release)
    assert taken.status_code == 200, taken.text
    with takeover_api.controller.session() as s:
        assert s.get(ProxyRow, x1["member_id"]).predecessor_fence_expires is not None
    beat = takeover_api.post(f"/v1/proxies/{x1['member_id']}/heartbeat", json={"applied_version": 0, "load": {}},
                    headers={SECRET_HEADER: x1["secret"]})
    assert beat.status_code in (403, 404), f"X1, superseded, renewed its lease and fence: {beat.status_code} " \
                                           f"{beat.text}"


def test_a_takeover_then_a_clean_stop_of_the_new_process_still_waits_for_the_previous_one(takeover_api, clock):
    """X1 is cut off; X2 takes the member over (X1's fence recorded) and then stops cleanly: its deregistration ends
    the row's lease and fence, not X1's deadline. A move's ack wait must still count the member until the recorded
    fence and the grace have passed (before, rows were selected by their own fence only: X1 was not looked at)."""
    ctl = takeover_api.controller
    _process(takeover_api, secrets.token_urlsafe(32))
    clock.advance(LEASE_S + 1)
    x2 = _process(takeover_api, secrets.token_urlsafe(32))
    stopped = takeover_api.post(f"/v1/proxies/{x2['member_id']}/deregister", headers={SECRET_HEADER: x2["secret"]})
    assert stopped.status_code == 200, stopped.text
    clock.advance(FENCE_GRACE_S + 1)  # (fixrv4) the row's own fence ends at the deregistration: let its grace pass
    with ctl.session() as s:
        row = s.get(ProxyRow, x2["member_id"])
        assert row.fence_expires + FENCE_GRACE_S <= clock.now < row.predecessor_fence_expires
    with pytest.raises(MoveFailed):  # X1 may still write until its fence and the grace
        Mover(ctl, ack_timeout=1.0).await_version(ctl.compose().version, lambda *_: None)
