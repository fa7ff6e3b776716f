"""The proxy freezes what it holds from its start (`server.freeze_startup_objects`): those objects leave the
cyclic collector's full collections, and a first view that is replaced is still freed, as every later one is;
many view swaps leave the process no bigger. Run in a fresh interpreter (a freeze is for the whole process);
objects counted, nothing timed."""

from __future__ import annotations

import json
import subprocess
import sys

SWAPS = """
import array, gc, json
from fedkafka.proxy.core.server import freeze_startup_objects
from fedkafka.proxy.state import ProxyState
from fedkafka.view.model import Cluster, LogicalTopic, PartitionChain, ProxyInfo, Segment, View

def view(version):  # as a view source makes them: from the controller's JSON
    topics = {f"t{i}": LogicalTopic(f"t{i}", f"id{i}", tuple(
        PartitionChain(segments=(Segment("c1", f"t{i}", p, 0, None, 0),)) for p in range(4))) for i in range(300)}
    v = View(version=version, clusters={"c1": Cluster("c1", "127.0.0.1:9092")}, coordination_cluster="c1",
             topics=topics)
    return View.from_dict(v.to_dict())

gc.collect()
before = len(gc.get_objects())
state = ProxyState(view=view(1), me=ProxyInfo(node_id=0, host="127.0.0.1", port=9092))
gc.collect()
first_view = len(gc.get_objects()) - before
frozen = freeze_startup_objects()
after_freeze = len(gc.get_objects())
frozen_now, tracked_now = array.array("q"), array.array("q")  # arrays: not tracked themselves
for version in range(2, 42):
    state.apply(view(version))
    gc.collect()
    frozen_now.append(gc.get_freeze_count())
    tracked_now.append(len(gc.get_objects()))
print(json.dumps({"first_view": first_view, "frozen": frozen, "after_freeze": after_freeze,
                  "counts": list(zip(frozen_now, tracked_now))}))
"""


def test_startup_objects_leave_full_collections_and_view_swaps_leave_nothing_behind():
    out = subprocess.run([sys.executable, "-c", SWAPS], check=True, capture_output=True, text=True)
    r = json.loads(out.stdout)
    assert r["first_view"] > 2000  # the view is a real part of what is frozen
    assert r["frozen"] > r["first_view"] and r["after_freeze"] < 100  # a full collection walks almost nothing
    frozen_after_swap, tracked_after_swap = r["counts"][0]
    assert frozen_after_swap <= r["frozen"] - r["first_view"]  # the frozen first view was freed when replaced
    assert tracked_after_swap >= r["first_view"]  # the current view is collected as usual (not frozen)
    assert r["counts"][-1] == r["counts"][4]  # 35 more swaps: not one object more, frozen or tracked
