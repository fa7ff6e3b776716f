"""Review rv3 (merge 6721bab): with ONE listed proxy (a one-proxy deployment, a pool of one per role, a listener
only one proxy serves, the others draining) a physical partition of RF 3 with one replica out of sync reads replicas
[leader], ISR [leader]: the answer can name only listed brokers, and Kafka's ISR always holds the leader, so nothing
is left to show out of sync. docs/DESIGN.md used to claim under-replication "stays visible" with fewer proxies than
replicas; it now says so only while two or more proxies are listed, and this test holds the one-proxy answer to
what it documents (replica ids of brokers the answer does not list would be read as real nodes by some clients)."""

from __future__ import annotations

from proxy.test_handlers import ctx
from proxy.test_metadata_replicas_unit import PROXIES, Replicated, _partitions, _view


def test_one_listed_proxy_lists_the_leader_alone_in_sync_as_documented():
    one = PROXIES[:1]
    # partition 1's physical partition: RF 3, 2 in sync (REPLICATION in test_metadata_replicas_unit)
    (l1, r1, i1, o1) = _partitions(ctx(_view(one), me=one[0], physical=Replicated()))[1]
    assert (r1, i1, o1) == ([l1], [l1], [])


def test_two_listed_proxies_keep_it_visible():
    two = PROXIES[:2]
    (l1, r1, i1, _) = _partitions(ctx(_view(two), me=two[0], physical=Replicated()))[1]
    assert len(r1) == 2 and r1[0] == l1 and i1 == [l1]
