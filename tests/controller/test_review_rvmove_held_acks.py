"""Review (rvmove): an operator's publish of a held move seals the source segment without any proxy having acked a
view with the partition frozen (docs/DESIGN.md §4.1 step 2: "S can stop being active only through a move ... [which]
waits until every proxy ... has applied the frozen view"). Fails on main."""

from __future__ import annotations

import pytest

from fedkafka.controller.held import HeldMoves
from fedkafka.controller.moves import MoveHeld, Mover
from fedkafka.view.offsets import resolve_fetch
from fedkafka.view.rebalance import Move


@pytest.fixture
def setup(t_on_c1_c2):
    return t_on_c1_c2


def _physical(chain, logical: int) -> tuple:
    target = resolve_fetch(chain, logical)
    seg = target.segment
    return seg.cluster, seg.topic, seg.partition, target.physical_offset


def test_a_held_moves_publish_waits_for_every_live_proxy_to_apply_the_frozen_view(setup):
    """t/0 on c1/t/0 (42 records). A move to c2/t/1 is held at its freeze (its target grew since the plan), so the
    run never waits for acks: live proxy p1 keeps serving its older view, t/0 writable on c1. The operator publishes
    the held move at the source's log end 42 (every check passes) and the sweeper publishes it. p1, still on its old
    view, acks 8 more records on c1/t/0 at logical 42..49 (its view maps them there). In the published chain logical
    42 names c2/t/1 offset 0: the acked records below nothing, unreachable, their offsets handed out again. Expected:
    the publish (or the sweeper's) waits for, or refuses without, every live proxy's ack of a view with t/0 frozen."""
    api, kafka = setup
    ctl = api.controller
    node = api.post("/v1/proxies", json={"instance_id": "p1", "host": "h", "port": 9, "role": "pproxy"}).json()
    before = ctl.view.version
    api.post(f"/v1/proxies/{node['node_id']}/heartbeat", json={"applied_version": before}).raise_for_status()
    kafka.ends.update({("c1", "t", 0): 42, ("c2", "t", 1): 0})
    mover = Mover(ctl, ack_timeout=1)
    ids = mover.plan(None, [Move("t", 0, "c1", "c2", "t", 1)])
    kafka.ends[("c2", "t", 1)] = 5  # the target grew since the plan: held at the freeze
    with pytest.raises(MoveHeld):
        mover.run(ids)
    frozen_view = ctl.view.version
    assert ctl.view.chain("t", 0).frozen and frozen_view > before
    published = None
    try:
        HeldMoves(ctl, mover).publish(ids[0], seal=42, target_start=0)
        mover.sweep()
        published = mover.counts(ids)
    except Exception as e:  # a refusal is what is expected
        published = repr(e)
    from fedkafka.controller.models import ProxyRow
    with ctl.session() as s:
        applied = s.get(ProxyRow, node["node_id"]).applied_version
    # p1 never applied the frozen view, its lease is live: it still writes t/0 on c1 at logical 42..
    assert applied < frozen_view
    kafka.ends[("c1", "t", 0)] = 50
    chain = ctl.view.chain("t", 0)
    assert published != {"done": 1}, (
        f"held move published ({published}) while live proxy p1 applied view {applied} < frozen view {frozen_view}: "
        f"logical 42, acked by p1 at c1/t/0@42, now names {_physical(chain, 42)}")
