"""Review rv3 (merge 6721bab): docs/DESIGN.md ("Replicas and ISR stand for the physical partition's") says "Fewer
listed proxies than replicas list them all, with as many out of sync as the physical partition has (the leader
still in sync), so under-replication stays visible". With ONE listed proxy (a one-proxy deployment, a pool of one
per role, a listener only one proxy serves, the others draining) the answer is replicas [leader], ISR [leader] for
a physical partition of RF 3 with one replica out of sync: `--under-replicated-partitions` shows nothing
(metadata.py `_replicas`: `replicas[:max(1, len(replicas) - ...)]` keeps the leader). Either the answer or the
documented claim is wrong; this test holds the answer to the claim."""

from __future__ import annotations

from proxy.test_handlers import ctx
from proxy.test_metadata_replicas_unit import PROXIES, Replicated, _partitions, _view


def test_one_listed_proxy_keeps_an_under_replicated_partition_visible():
    one = PROXIES[:1]
    # partition 1's physical partition: RF 3, 2 in sync (REPLICATION in test_metadata_replicas_unit)
    (_, r1, i1, _) = _partitions(ctx(_view(one), me=one[0], physical=Replicated()))[1]
    assert len(i1) < len(r1), (r1, i1)  # fails today: [1] and [1], read as fully in sync
