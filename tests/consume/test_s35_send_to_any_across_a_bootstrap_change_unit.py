"""A call to any broker of a cluster that was trying the cluster's old bootstrap when the view changed it
(docs/DESIGN.md §9.2, "A cluster the proxy has not read yet"). Its failure is the old brokers', not the new
bootstrap's: the cluster is not marked unreachable for it (`Dispatcher._send_to_any`,
`PhysicalClusters.mark_unreachable` with the entry it asked), as a refresh of the old bootstrap is dropped
(`PhysicalClusters.refresh`)."""

from __future__ import annotations

import asyncio
import dataclasses

from kio.schema.errors import ErrorCode

from consume.test_handlers_unit import GAP, skipped_to
from consume.test_lost_and_left_out_fixf45_unit import FAILED_OVER, _context, _fetch_answer, _tracked
from fedkafka.proxy.core.dispatch import Dispatcher
from fedkafka.proxy.core.physical import PhysicalClusters
from fedkafka.proxy.handlers import topic_admin
from fedkafka.proxy.plan import UpstreamError
from fedkafka.view.model import View


class _RefusedOnceReleased:
    """An upstream pool whose every connection's set-up waits for `released`, then is refused; `connecting` is set
    once the first one waits. `tried`: the addresses asked."""

    def __init__(self) -> None:
        self.connecting, self.released = asyncio.Event(), asyncio.Event()
        self.tried: list[tuple[str, int]] = []

    def ready(self, host, port, slot):
        return None  # no connection open: get() opens one

    async def get(self, host, port, slot, cluster=""):
        self.tried.append((host, port))
        self.connecting.set()
        await self.released.wait()
        raise ConnectionRefusedError(f"{host}:{port}: connection refused")


def _moved(view: View) -> View:
    """`view` with c1 at new hosts (`PUT /v1/clusters`)."""
    c1 = dataclasses.replace(view.clusters["c1"], bootstrap="c1-new:9092")
    return dataclasses.replace(view, version=view.version + 1, clusters={**view.clusters, "c1": c1})


def _a_call_to_any_broker_of_c1_fails(view: View, moved: View | None) -> PhysicalClusters:
    """c1 and c2 tracked for `view` and read (c1's broker b:1); a CreateTopics' Metadata of c1's physical topic goes
    to any broker of c1 (`topic_admin._physical_calls`); while it tries the first, the proxy takes `moved` (None: no
    view change); then every address it tries refuses. Returns the proxy's physical clusters after."""

    async def scenario() -> PhysicalClusters:
        physical = _tracked(view, {"c1": ("t",), "c2": ("t",)})
        d = Dispatcher.__new__(Dispatcher)  # `_send` needs no more for a call that is no produce or offsets request
        pool = _RefusedOnceReleased()
        d.physical, d.pool = physical, pool  # type: ignore[assignment]
        metadata, _ = topic_admin._physical_calls("c1", ["t"], 5.0)
        sending = asyncio.ensure_future(d._send([metadata], slot=0))
        await pool.connecting.wait()
        if moved is not None:  # as the proxy's view listener does (`server._on_view`)
            physical.set_clusters({c.id: c.bootstrap for c in moved.clusters.values()})
        pool.released.set()
        (result,) = await sending
        assert isinstance(result, UpstreamError), result
        assert pool.tried == [("b", 1), ("c1", 9092)]  # the old bootstrap's candidates only
        return physical

    return asyncio.run(scenario())


def test_an_old_bootstraps_brokers_failing_a_call_after_a_bootstrap_change_do_not_skip_the_gaps_tail():
    """c1 failed over (read_only, the gap after 30); its brokers moved to new hosts, the old ones are gone. A call to
    any broker of c1 is trying the old ones when the view names c1-new. Until c1-new's first refresh answers, a reader
    of the gap at 35 waits (§9.2: a cluster not read yet counts as reachable). The call's failure used to mark c1-new
    unreachable (`Dispatcher._lost`) until its next refresh (up to a second): the reader was moved to 30 + GAP, past the
    tail c1-new holds, and never came back for it."""
    moved = _moved(FAILED_OVER)
    physical = _a_call_to_any_broker_of_c1_fails(FAILED_OVER, moved)
    p = _fetch_answer(_context(moved, physical), 35)
    assert p.error_code == ErrorCode.not_leader_or_follower and not p.records, skipped_to(p) - (30 + GAP)
    info = physical.clusters["c1"]
    assert (info.bootstrap, info.reachable, info.topics_read) == ("c1-new:9092", True, False)


def test_without_a_bootstrap_change_a_call_to_any_broker_still_marks_the_cluster_unreachable():
    """Every broker of c1 refusing still makes c1 unreachable (a dead cluster: the gap's tail is skipped, §9.2), and
    its refresh is asked for."""
    physical = _a_call_to_any_broker_of_c1_fails(FAILED_OVER, None)
    assert not physical.reachable("c1") and "c1" in physical._wanted
    assert skipped_to(_fetch_answer(_context(FAILED_OVER, physical), 35)) == 30 + GAP


def test_a_call_to_any_broker_of_a_cluster_the_view_dropped_meanwhile_tracks_nothing_again():
    """The view drops c1 while the call tries its brokers: their failure marks nothing and tracks c1 no more."""
    dropped = dataclasses.replace(FAILED_OVER, clusters={"c2": FAILED_OVER.clusters["c2"]})
    physical = _a_call_to_any_broker_of_c1_fails(FAILED_OVER, dropped)
    assert set(physical.clusters) == {"c2"} and not physical.reachable("c1")
