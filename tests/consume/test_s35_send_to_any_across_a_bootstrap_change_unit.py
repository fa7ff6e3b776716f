"""A call to any broker of a cluster that was trying the cluster's old bootstrap when the view changed it
(docs/DESIGN.md §9.2, "A cluster the proxy has not read yet"). Its failure is the old brokers', not the new
bootstrap's: the cluster is not marked unreachable for it (`Dispatcher._send_to_any`,
`PhysicalClusters.mark_unreachable` with the entry it asked), as a refresh of the old bootstrap is dropped
(`PhysicalClusters.refresh`). Session 36: the call goes on with the new bootstrap's brokers, not the old one's others
(`Dispatcher._send_to_any`): answered there, or, none answering, the cluster unreachable for the new one's failure."""

from __future__ import annotations

import asyncio
import dataclasses

from kio.schema.errors import ErrorCode

from consume.test_handlers_unit import GAP, skipped_to
from consume.test_lost_and_left_out_fixf45_unit import FAILED_OVER, _context, _fetch_answer, _tracked
from fedkafka.proxy.core.dispatch import Dispatcher
from fedkafka.proxy.handlers import topic_admin
from fedkafka.proxy.plan import UpstreamError
from fedkafka.view.model import View

ANSWER = object()  # what a broker that answers sends back


class _Answering:
    """An open connection whose every call is answered with ANSWER."""

    def send(self, request, expect_response, client_id):
        answered: asyncio.Future = asyncio.get_running_loop().create_future()
        answered.set_result(ANSWER)
        return answered


class _RefusedOnceReleased:
    """An upstream pool whose every connection's set-up waits for `released`, then is refused, except to the hosts
    `answering`; `connecting` is set once the first one waits. `tried`: the addresses asked."""

    def __init__(self, answering: frozenset[str] = frozenset()) -> None:
        self.connecting, self.released = asyncio.Event(), asyncio.Event()
        self.tried: list[tuple[str, int]] = []
        self.answering = answering

    def ready(self, host, port, slot):
        return None  # no connection open: get() opens one

    async def get(self, host, port, slot, cluster=""):
        self.tried.append((host, port))
        self.connecting.set()
        await self.released.wait()
        if host in self.answering:
            return _Answering()
        raise ConnectionRefusedError(f"{host}:{port}: connection refused")


def _moved(view: View) -> View:
    """`view` with c1 at new hosts (`PUT /v1/clusters`)."""
    c1 = dataclasses.replace(view.clusters["c1"], bootstrap="c1-new:9092")
    return dataclasses.replace(view, version=view.version + 1, clusters={**view.clusters, "c1": c1})


def _a_call_to_any_broker_of_c1(view: View, moved: View | None, answering: frozenset[str] = frozenset()):
    """c1 and c2 tracked for `view` and read (c1's broker b:1); a CreateTopics' Metadata of c1's physical topic goes
    to any broker of c1 (`topic_admin._physical_calls`); while it tries the first, the proxy takes `moved` (None: no
    view change); then every address it tries refuses but those at `answering` hosts. Returns the proxy's physical
    clusters after, the addresses tried and the call's outcome (its answer, or an UpstreamError)."""

    async def scenario():
        physical = _tracked(view, {"c1": ("t",), "c2": ("t",)})
        d = Dispatcher.__new__(Dispatcher)  # `_send` needs no more for a call that is no produce or offsets request
        pool = _RefusedOnceReleased(answering)
        d.physical, d.pool = physical, pool  # type: ignore[assignment]
        metadata, _ = topic_admin._physical_calls("c1", ["t"], 5.0)
        sending = asyncio.ensure_future(d._send([metadata], slot=0))
        await pool.connecting.wait()
        if moved is not None:  # as the proxy's view listener does (`server._on_view`)
            physical.set_clusters({c.id: c.bootstrap for c in moved.clusters.values()})
        pool.released.set()
        (result,) = await sending
        return physical, pool.tried, result if isinstance(result, UpstreamError) else await result

    return asyncio.run(scenario())


def test_a_call_trying_an_old_bootstraps_brokers_goes_on_with_the_new_bootstraps_and_skips_no_gap():
    """c1 failed over (read_only, the gap after 30); its brokers moved to new hosts, the old ones are gone. A call to
    any broker of c1 is trying the old broker b:1 when the view names c1-new. The call goes on with c1-new (it
    answers) and c1 stays reachable: a reader of the gap at 35 waits for c1-new's first refresh (§9.2: a cluster not
    read yet counts as reachable). It used to try the old bootstrap's other address (c1:9092, gone too) and fail the
    call; before session 35 that failure also marked c1-new unreachable until its next refresh (up to a second): the
    reader was moved to 30 + GAP, past the tail c1-new holds, and never came back for it."""
    moved = _moved(FAILED_OVER)
    physical, tried, result = _a_call_to_any_broker_of_c1(FAILED_OVER, moved, answering=frozenset({"c1-new"}))
    assert (tried, result) == ([("b", 1), ("c1-new", 9092)], ANSWER)
    p = _fetch_answer(_context(moved, physical), 35)
    assert p.error_code == ErrorCode.not_leader_or_follower and not p.records, skipped_to(p) - (30 + GAP)
    info = physical.clusters["c1"]
    assert (info.bootstrap, info.reachable, info.topics_read) == ("c1-new:9092", True, False)


def test_a_new_bootstrap_that_refuses_too_makes_the_cluster_unreachable():
    """The call goes on with c1-new, which refuses as well: that failure is the new bootstrap's own, so c1 is
    unreachable (a dead cluster: the gap's tail is skipped, §9.2) and its refresh asked for."""
    moved = _moved(FAILED_OVER)
    physical, tried, result = _a_call_to_any_broker_of_c1(FAILED_OVER, moved)
    assert tried == [("b", 1), ("c1-new", 9092)] and isinstance(result, UpstreamError), result
    assert not physical.reachable("c1") and "c1" in physical._wanted


def test_without_a_bootstrap_change_a_call_to_any_broker_still_marks_the_cluster_unreachable():
    """Every broker of c1 refusing still makes c1 unreachable (a dead cluster: the gap's tail is skipped, §9.2), and
    its refresh is asked for."""
    physical, tried, result = _a_call_to_any_broker_of_c1(FAILED_OVER, None)
    assert tried == [("b", 1), ("c1", 9092)] and isinstance(result, UpstreamError), result
    assert not physical.reachable("c1") and "c1" in physical._wanted
    assert skipped_to(_fetch_answer(_context(FAILED_OVER, physical), 35)) == 30 + GAP


def test_a_call_to_any_broker_of_a_cluster_the_view_dropped_meanwhile_tracks_nothing_again():
    """The view drops c1 while the call tries its brokers: it tries no other, marks nothing and tracks c1 no more."""
    dropped = dataclasses.replace(FAILED_OVER, clusters={"c2": FAILED_OVER.clusters["c2"]})
    physical, tried, result = _a_call_to_any_broker_of_c1(FAILED_OVER, dropped)
    assert tried == [("b", 1)] and isinstance(result, UpstreamError), result
    assert set(physical.clusters) == {"c2"} and not physical.reachable("c1")
