"""Property test: any sequence of admin operations leaves a view that keeps the invariants of docs/DESIGN.md §4."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from example_counts import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedkafka.controller.errors import ControllerError
from fedkafka.controller.service import Controller, Settings
from fedkafka.view.chains import is_contiguous
from fedkafka.view.model import ClusterState

operations = st.lists(st.one_of(
    st.tuples(st.just("cluster"), st.sampled_from(["c1", "c2", "c3", "c4"])),
    st.tuples(st.just("state"), st.sampled_from(["c1", "c2", "c3", "c4"]), st.sampled_from(list(ClusterState))),
    st.tuples(st.just("topic"), st.sampled_from(["a", "b", "c"]), st.integers(1, 12),
              st.sampled_from(["blocks", "balanced"])),
    st.tuples(st.just("delete"), st.sampled_from(["a", "b", "c"])),
), min_size=1, max_size=12)


@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_any_operation_sequence_keeps_the_view_invariants(recording_kafka_class, migrated_sqlite, ops):
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(migrated_sqlite, Path(tmp) / "p.db")  # a fresh database per example
        ctl = Controller(Settings(db_url=f"sqlite:///{Path(tmp) / 'p.db'}"), kafka=recording_kafka_class())
        versions = [ctl.view.version]
        for op in ops:
            try:
                if op[0] == "cluster":
                    ctl.put_cluster(op[1], f"127.0.0.1:{9000 + int(op[1][1:])}", None)
                elif op[0] == "state":
                    ctl.set_cluster_state(op[1], op[2].value)
                elif op[0] == "topic":
                    ctl.put_topic(op[1], op[2], op[3], {})
                else:
                    ctl.delete_topic(op[1])
            except ControllerError:
                pass  # refused input must leave the view as it was: checked by the invariants below
            view = ctl.view
            versions.append(view.version)
            for topic in view.topics.values():
                for chain in topic.partitions:
                    assert sum(s.active for s in chain.segments) == 1 and chain.segments[-1].active
                    assert is_contiguous(chain)
                    assert chain.active.cluster in view.clusters
                slots = [(c.active.cluster, c.active.topic, c.active.partition) for c in topic.partitions]
                assert len(set(slots)) == len(slots)  # no two logical partitions share a physical one
            assert view.coordination_cluster is None or view.coordination_cluster in view.clusters
            assert all(c.state != ClusterState.REMOVED for c in view.clusters.values()
                       if any(ch.active.cluster == c.id for t in view.topics.values() for ch in t.partitions))
        assert versions == sorted(versions)
        ctl.stop()
