"""An operator's publish of a held move that takes long (slow acks, a slow source) gets an answer that tells the
truth: the admin client waits longer than the controller may take before it commits (`held.REPAIR_DEADLINE_S`,
past it the publish is refused, nothing changed), and a publish repeated after a lost answer answers the move it
published, 200 (docs/DESIGN.md §3.3; docs/OPERATIONS.md "A held move").

Time is the controller's injected clock (`held.monotonic`, the `held_clock` fixture), moved by the fakes: no
test waits for real."""

from __future__ import annotations

import httpx
import pytest

from fedkafka.controller.client import REPAIR_TIMEOUT_S, AdminClient, AdminError
from fedkafka.controller.errors import Conflict
from fedkafka.controller.held import REPAIR_DEADLINE_S, HeldMoves
from fedkafka.controller.models import MoveRow
from fedkafka.controller.moves import MoveHeld, Mover
from fedkafka.view.rebalance import Move


def _hold_at_its_freeze(api, kafka) -> tuple[Mover, int]:
    """Move t/0 c1 -> c2/t/1 held at its freeze (its target grew since the plan): the mover that ran it, its id."""
    kafka.ends.update({("c1", "t", 0): 42, ("c2", "t", 1): 0})
    mover = Mover(api.controller, ack_timeout=1)
    [move_id] = mover.plan(None, [Move("t", 0, "c1", "c2", "t", 1)])
    kafka.ends[("c2", "t", 1)] = 5
    with pytest.raises(MoveHeld):
        mover.run([move_id])
    return mover, move_id


def _held_at_its_freeze(api, kafka) -> int:
    """Move t/0 c1 -> c2/t/1 held at its freeze (its target grew since the plan)."""
    return _hold_at_its_freeze(api, kafka)[1]


def _slow(monkeypatch, kafka, clock: list[float], ack_s: float, source_read_s: float) -> None:
    """The acks of the frozen view take `ack_s`, each read of the source cluster c1 `source_read_s`."""
    real_wait = Mover.await_version

    def slow_acks(self, needed, progress, **kwargs):
        clock[0] += ack_s
        return real_wait(self, needed, progress, **kwargs)

    real_offsets = kafka.log_offsets

    def slow_offsets(cluster, bootstrap, partitions):
        clock[0] += source_read_s if cluster == "c1" else 0.0
        return real_offsets(cluster, bootstrap, partitions)

    def slow_log_ends(cluster, bootstrap, partitions):  # settled: the log end is the high watermark
        clock[0] += source_read_s if cluster == "c1" else 0.0
        return {(t, p): kafka.ends.get((cluster, t, p), 0) for t, p in partitions}

    monkeypatch.setattr(Mover, "await_version", slow_acks)
    kafka.log_offsets, kafka.log_end_offsets = slow_offsets, slow_log_ends


def _admin_through(api, clock: list[float]) -> AdminClient:
    """An admin client whose requests reach `api`'s controller; one whose answer comes later on `clock` than the
    request's read timeout is a ReadTimeout, as on a wire (the controller carried it out all the same)."""
    def handler(request: httpx.Request) -> httpx.Response:
        sent = clock[0]
        answer = api.request(request.method, request.url.path, content=request.content,
                             headers={"content-type": "application/json"})
        if clock[0] - sent > request.extensions["timeout"]["read"]:
            raise httpx.ReadTimeout("timed out", request=request)
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    return AdminClient("http://controller", "s3cret-token", transport=httpx.MockTransport(handler))


def _move(ctl, move_id: int) -> tuple:
    with ctl.session() as s:
        row = s.get_one(MoveRow, move_id)
        return row.state, row.seal, row.phys_start


def test_a_slow_publish_is_answered_and_a_repeated_one_answers_the_published_move(t_on_c1_c2, held_clock,
                                                                                  monkeypatch):
    """Acks in 19 s, each read of the source in 13 s: the publish commits 58 s in, within its deadline. The admin
    client used to give up at 30 s (an error for a move that was published) and the publish repeated then was
    refused (409: sealed, not held). Now the client waits past the deadline and gets the sealed move, and the same
    publish repeated (after a lost answer), also once the sweeper published it, answers that move: 200."""
    api, kafka = t_on_c1_c2
    ctl = api.controller
    move_id = _held_at_its_freeze(api, kafka)
    _slow(monkeypatch, kafka, held_clock, ack_s=19.0, source_read_s=13.0)
    with _admin_through(api, held_clock) as admin:
        answer = admin.publish_move(move_id, seal=42, target_start=0, force=True)
        assert answer["state"] == "sealed" and (answer["seal"], answer["phys_start"]) == (42, 0)
        assert _move(ctl, move_id) == ("sealed", 42, 0)
        again = admin.publish_move(move_id, seal=42, target_start=0, force=True)
        assert (again["id"], again["state"], again["seal"], again["phys_start"]) == (move_id, "sealed", 42, 0)
        assert any("already published" in c for c in again["checks"]), again["checks"]
        assert Mover(ctl).sweep() == [move_id]
        done = admin.publish_move(move_id, seal=42, target_start=0)
        assert (done["state"], done["seal"], done["phys_start"]) == ("done", 42, 0)
    assert [(g.cluster, g.phys_start, g.phys_end, g.logical_base) for g in ctl.view.chain("t", 0).segments] == [
        ("c1", 0, 42, 0), ("c2", 0, None, 42)]


def test_a_publish_repeated_with_another_seal_or_start_is_refused(t_on_c1_c2):
    """A repeat is the same publish: one naming another seal or target start is refused (409) naming what was
    published, nothing changed; a move that was never held is not published by hand, whatever it was sealed at."""
    api, kafka = t_on_c1_c2
    ctl = api.controller
    move_id = _held_at_its_freeze(api, kafka)
    held = HeldMoves(ctl, Mover(ctl, ack_timeout=1))
    assert held.publish(move_id, seal=42, target_start=0, force=True)["state"] == "sealed"
    for seal, start in ((43, 0), (42, 5)):
        with pytest.raises(Conflict, match=f"already published at seal 42 from 0, not at seal {seal} from {start}"):
            held.publish(move_id, seal=seal, target_start=start, force=True)
    assert _move(ctl, move_id) == ("sealed", 42, 0)
    kafka.ends[("c1", "t", 1)] = 7
    mover = Mover(ctl, ack_timeout=1)
    [plain] = mover.plan(None, [Move("t", 1, "c2", "c1", "t", 2)])
    mover.run([plain])
    with ctl.session() as s:
        row = s.get_one(MoveRow, plain)
        state, seal, start = row.state, row.seal, row.phys_start
    assert state == "done"
    with pytest.raises(Conflict, match="not held"):
        held.publish(plain, seal=seal, target_start=start)


def test_a_publish_past_its_deadline_is_refused_and_changes_nothing(t_on_c1_c2, held_clock, monkeypatch):
    """Acks in 19 s, each read of the source in 15 s: 64 s in, past `REPAIR_DEADLINE_S`, the publish is refused
    under the lock that would have sealed it (409, nothing changed, the move still held), so an answer the client
    gave up on is never a publish that happened after it; published again, faster, it goes through."""
    api, kafka = t_on_c1_c2
    ctl = api.controller
    move_id = _held_at_its_freeze(api, kafka)
    _slow(monkeypatch, kafka, held_clock, ack_s=19.0, source_read_s=15.0)
    with _admin_through(api, held_clock) as admin:
        with pytest.raises(AdminError, match=r"HTTP 409.*not published, nothing was changed \(it stays held\)") as e:
            admin.publish_move(move_id, seal=42, target_start=0, force=True)
        assert e.value.status == 409 and _move(ctl, move_id) == ("held", None, None)
        _slow(monkeypatch, kafka, held_clock, ack_s=1.0, source_read_s=1.0)
        assert admin.publish_move(move_id, seal=42, target_start=0, force=True)["state"] == "sealed"
    assert _move(ctl, move_id) == ("sealed", 42, 0)


def test_the_admin_client_outwaits_the_controllers_repair_deadline():
    """The client must outwait the server's deadline, or an operator is told "no answer" for a repair that
    committed: a publish or roll-back checked just before `held.REPAIR_DEADLINE_S` still commits (one transaction)
    and answers over the network after it, so the client's read timeout (`client.REPAIR_TIMEOUT_S`) keeps a margin
    beyond the deadline for that commit and the answer's way back (docs/DESIGN.md §3.3)."""
    waited_past_the_deadline_s = REPAIR_TIMEOUT_S - REPAIR_DEADLINE_S
    assert waited_past_the_deadline_s >= 15.0  # the commit and the answer's way back
    admin = AdminClient("http://127.0.0.1:1", "token")
    try:  # the repair requests wait that long, not the client's usual timeout
        assert admin._repair_timeout.read == REPAIR_TIMEOUT_S
    finally:
        admin.close()
