"""A start that found the view cache's lock held by a live process (a restart racing its previous run's exit) takes
it once that process has exited, and is from then on a holder like one that had it from its start (docs/DESIGN.md
§4.9 F4, "Taken late"): its secret saved under the lock, its deadlines bound to it, the exited holders' secrets
shown at its next registration; never a deadline of the cache adopted, never the parent's word brought back."""

from __future__ import annotations

import json
import time

import httpx

from fedkafka.proxy.view_cache import ViewCache
from fedkafka.proxy.view_source import ControllerViewSource
from proxy.exit_proof_helpers import (
    INSTANCE,
    TOKEN,
    _close,
    _cut_off,
    _lease_lapsed,
    _predecessor_fence,
    _produces_until,
    _Recording,
    _release,
    _run,
    _secret_on_disk,
    _shown,
    _source,
    _state,
)


def _fence_lock(path) -> object:
    """The lock identity the deadline saved beside the view cache at `path` names (None: none)."""
    return json.loads(path.with_name(path.name + ".fence").read_text())["lock"]


def _worker_source(app, path, worker: int, secrets: tuple[str, str | None]) -> ControllerViewSource:
    """Worker `worker` of a `--workers` proxy: its own cache PATH.w<i> (instance `host:port/w<i>`), as
    `core.server` makes it, and the secrets its parent drew."""
    cache = ViewCache(path.with_name(f"{path.name}.w{worker}"), f"{INSTANCE}/w{worker}")
    source = ControllerViewSource("http://controller", TOKEN, INSTANCE, lambda s, n: None, cache=cache,
                                  worker=worker, chosen_secrets=secrets)
    source.client = httpx.AsyncClient(transport=_Recording(app, cache), timeout=10)
    return source


def test_a_lock_taken_late_lets_the_processs_own_restart_vouch_for_it(tmp_path):
    """P1 deregisters (a clean stop) but is still exiting, holding the lock, when its restart P2 starts: P2 gets no
    lock and registers. P1 exits; at its next heartbeat P2 takes the lock and saves its secret under it. P2 is
    killed: its restart P3 takes the lock, shows P2's secret, and the controller records P2's fence as ending at
    P3's registration (a move waits the grace), not P2's whole fence (15 min). Before: P3 showed P1's secret only,
    which the row no longer held."""
    path = tmp_path / "view.json"

    async def body(ctl, app) -> None:
        first, _ = _source(app, path)
        first_state = _state()
        await first.start(first_state)
        assert await first.deregister(first_state)  # P1 stops cleanly; it still holds the lock while it exits
        racing, _ = _source(app, path)
        racing_state = _state()
        await racing.start(racing_state)  # registers at once (P1 deregistered): the lock is still P1's
        assert racing.cache is not None and not racing.cache.holds_lock
        _release(first.cache)  # P1 has exited
        await racing._heartbeat_once(racing_state)
        assert racing.cache.holds_lock, "the lock, free since P1 exited, was not taken"
        assert _secret_on_disk(path) == racing.own_secret
        assert _fence_lock(path) is not None, "P2's deadline is not bound to the lock it holds"
        _release(racing.cache)  # P2 is killed
        _lease_lapsed(ctl)
        restart, sent = _source(app, path)
        await restart.start(_state())
        registered_by = time.time()
        recorded = _predecessor_fence(ctl)
        _release(restart.cache)
        await _close(first, racing, restart)
        assert _shown(sent)[-1] == racing.own_secret
        assert recorded is not None and recorded <= registered_by, (
            f"P2 (exited: its lock was taken) waited for until {recorded - registered_by:.0f} s after the restart")

    _run(tmp_path, body)


def test_a_lock_taken_late_before_registering_vouches_for_the_exited_holder(tmp_path):
    """K (the row's holder) is killed but its lease is live, while P2 starts and finds the lock held by H (a
    previous run still exiting, never registered): P2 is refused (K's live lease) and serves its saved view, no
    produce. H exits; before its next registration attempt P2 takes the lock, and shows the secrets saved under it
    (K's, and H's beside it: exited holders of the lock it now holds), so K's fence is recorded as ending at P2's
    registration. Before: P2 vouched for no one, K's whole fence was waited for."""
    path = tmp_path / "view.json"

    async def body(ctl, app) -> None:
        killed, _ = _source(app, path)
        await killed.start(_state())
        _release(killed.cache)  # K killed: its lease still live
        exiting = ViewCache(path, "127.0.0.1:9092")
        assert exiting.lock_for_life()  # H: a run after K, still exiting (never registered)
        exiting.swap_secret("h" * 43)
        racing, sent = _source(app, path)
        racing_state = _state()
        await racing.start(racing_state)  # refused: K's lease is live; serves the saved view
        assert racing.member_id is None and not racing.cache.holds_lock
        _release(exiting)  # H exits
        _lease_lapsed(ctl)
        await racing._register_from_cache(racing_state)
        registered_by = time.time()
        recorded = _predecessor_fence(ctl)
        holds = racing.cache.holds_lock
        _release(racing.cache)
        await _close(killed, racing)
        assert holds and _shown(sent)[-1] is not None and killed.own_secret in _shown(sent)[-1].split(",")
        assert recorded is not None and recorded <= registered_by

    _run(tmp_path, body)


def test_a_lock_taken_late_does_not_adopt_the_caches_deadline(tmp_path):
    """[guard] P2 started from the saved view while Q held the lock and produced from the saved deadline: P2 got
    none. Q exits, P2 takes the lock while still cut off: it does not produce from the deadline on disk (Q's, bound
    to the lock P2 now holds, saved with a view P2 may not serve) until a controller renews it."""
    path = tmp_path / "view.json"

    async def body(ctl, app) -> None:
        holder, _ = _source(app, path)
        await holder.start(_state())  # registered: its deadline saved under the lock
        racing, _ = _source(app, path)
        _cut_off(racing)
        racing_state = _state()
        await racing.start(racing_state)  # lock held by Q: the saved deadline is not ours
        assert not racing_state.lease_valid()
        _release(holder.cache)  # Q exits
        await racing._take_lock_once_free(racing_state)
        holds, may_produce = racing.cache.holds_lock, racing_state.lease_valid()
        _release(racing.cache)
        await _close(holder, racing)
        assert holds and not may_produce

    _run(tmp_path, body)


def test_a_process_that_never_gets_the_lock_saves_nothing_under_it(tmp_path):
    """[guard] Q, the lock's holder, lives: P2 tries the lock at each heartbeat and never gets it; the secret on
    disk stays Q's, every deadline P2 saves names no lock, and P2 shows no secret."""
    path = tmp_path / "view.json"

    async def body(ctl, app) -> None:
        holder, _ = _source(app, path)
        await holder.start(_state())
        _lease_lapsed(ctl)
        racing, sent = _source(app, path)
        racing_state = _state()
        await racing.start(racing_state)
        for _ in range(3):
            await racing._heartbeat_once(racing_state)
        holds, on_disk, bound = racing.cache.holds_lock, _secret_on_disk(path), _fence_lock(path)
        _release(holder.cache)
        await _close(holder, racing)
        assert not holds and on_disk == holder.own_secret and bound is None
        assert _shown(sent) == [None]

    _run(tmp_path, body)


def test_a_worker_takes_its_own_lock_late_not_a_siblings(tmp_path):
    """`--workers`: worker 1's cache is PATH.w1, its lock PATH.w1.lock. Its previous process still holds that lock
    when it starts; once it exits, worker 1 takes PATH.w1.lock (worker 0's PATH.lock, held by worker 0, untouched)
    and saves its secret in PATH.w1.secret, and its own restart shows it. Before: never taken."""
    path = tmp_path / "view.json"

    async def body(ctl, app) -> None:
        sibling = ViewCache(path, INSTANCE)
        assert sibling.lock_for_life()  # worker 0, alive
        previous = _worker_source(app, path, 1, ("p" * 43, None))
        await previous.start(_state())
        assert await previous.deregister(_state())  # still exiting, holding PATH.w1.lock
        worker = _worker_source(app, path, 1, ("w" * 43, "p" * 43))
        worker_state = _state()
        await worker.start(worker_state)
        assert not worker.cache.holds_lock
        _release(previous.cache)
        await worker._heartbeat_once(worker_state)
        holds, mine = worker.cache.holds_lock, _secret_on_disk(worker.cache.path)
        _release(worker.cache)
        restart = _worker_source(app, path, 1, ("r" * 43, None))
        await restart.start(_state())
        shown = restart.predecessor_secrets
        _release(restart.cache)
        _release(sibling)
        await _close(previous, worker, restart)
        assert holds and mine == "w" * 43 and shown == ("w" * 43,)
        assert _secret_on_disk(path) is None, "worker 0's secret file written by worker 1"

    _run(tmp_path, body)


def test_a_late_take_keeps_the_parents_dropped_word_dropped_and_the_recorded_fence(tmp_path):
    """The rv6 scenario, then Q exits: worker 0 A (word from parent X) died; Q (a second parent's worker 0) took the
    lock and, cut off, produces from A's saved deadline; X's restart A' gets no lock, drops X's word, registers: A's
    whole fence recorded. Q exits, A' takes the lock late and is registered again (its row superseded meanwhile):
    the fence recorded for A, covering Q's production, never moves back (the controller only moves it forward, and
    A' shows only exited holders' secrets, the file's), and the parent's word is not brought back."""
    path = tmp_path / "view.json"

    async def body(ctl, app) -> None:
        exited, _ = _source(app, path, secrets=("a" * 43, None))
        exited.worker = 0
        await exited.start(_state())
        _release(exited.cache)
        holder, _ = _source(app, path, secrets=("q" * 43, None))
        holder.worker = 0
        _cut_off(holder)
        holder_state = _state()
        await holder.start(holder_state)
        holder_until = _produces_until(holder_state)
        _lease_lapsed(ctl)
        restarted, sent = _source(app, path, secrets=("b" * 43, "a" * 43))
        restarted.worker = 0
        restarted_state = _state()
        await restarted.start(restarted_state)
        assert restarted.predecessor_secrets == () and _shown(sent) == [None]
        recorded_at_takeover = _predecessor_fence(ctl)
        _release(holder.cache)  # Q exits
        await restarted._take_lock_once_free(restarted_state)
        shown_after = restarted.predecessor_secrets
        _lease_lapsed(ctl)
        await restarted._register(restarted_state, refresh_view=True)  # as after a 404
        recorded = _predecessor_fence(ctl)
        holds = restarted.cache.holds_lock
        _release(restarted.cache)
        await _close(exited, holder, restarted)
        assert holds, "the lock, free since Q exited, was not taken"
        assert holder_until > time.time() + 60 and recorded_at_takeover >= holder_until - 1.0
        assert recorded is not None and recorded >= recorded_at_takeover
        assert set(shown_after) <= {"a" * 43, "q" * 43}, "a secret shown that no exited holder of the lock saved"

    _run(tmp_path, body)


def test_a_late_take_does_not_bring_back_a_parents_word_a_live_holder_of_a_removed_lock_file_needs(tmp_path):
    """[data] Worker 0 A (parent X's word for it: sA) dies; Q takes its lock L1 and, cut off, produces from A's
    saved deadline (bound to L1). The lock file is deleted; H makes and takes a new one, L2. X's restart A' finds L2
    held by H: it drops X's word and is refused (A's lease is live). H exits, A''s lease wait ends, A' takes L2 late
    and registers: the secrets saved under L2 (H's) vouch for no one the row holds, and X's word must not come back
    with the lock: it would end A's fence while Q, holding L1, produces under it. So A's whole fence is recorded."""
    path = tmp_path / "view.json"

    async def body(ctl, app) -> None:
        exited, _ = _source(app, path, secrets=("a" * 43, None))
        exited.worker = 0
        await exited.start(_state())
        _release(exited.cache)  # A dies: its deadline saved under L1
        holder, _ = _source(app, path, secrets=("q" * 43, None))
        holder.worker = 0
        _cut_off(holder)
        holder_state = _state()
        await holder.start(holder_state)  # Q takes L1, produces from A's deadline
        holder_until = _produces_until(holder_state)
        path.with_name(path.name + ".lock").unlink()  # the lock file deleted under Q
        other = ViewCache(path, INSTANCE)
        assert other.lock_for_life()  # H takes the new file, L2
        other.swap_secret("h" * 43)
        restarted, sent = _source(app, path, secrets=("b" * 43, "a" * 43))
        restarted.worker = 0
        restarted_state = _state()
        await restarted.start(restarted_state)  # L2 is H's: the word dropped; A's lease live: refused
        assert restarted.member_id is None and not restarted.cache.holds_lock
        _release(other)  # H exits
        _lease_lapsed(ctl)
        await restarted._register_from_cache(restarted_state)
        recorded = _predecessor_fence(ctl)
        holds = restarted.cache.holds_lock
        _release(restarted.cache)
        _release(holder.cache)
        await _close(exited, holder, restarted)
        assert holds, "L2, free since H exited, was not taken"
        assert "a" * 43 not in (_shown(sent)[-1] or "").split(",")
        assert holder_until > time.time() + 60, "Q produces from A's saved deadline (the scenario's premise)"
        assert recorded is not None and recorded >= holder_until - 1.0, (
            f"Q (holding L1) may produce until {holder_until - time.time():.0f} s from now, a move waits only until "
            f"{recorded - time.time():.0f} s + the grace")

    _run(tmp_path, body)
