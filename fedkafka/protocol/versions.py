"""The supported API-version table: what the proxy may advertise, intersected with the clusters.

Rules from docs/DESIGN.md §5.7: Produce is advertised from v0 (librdkafka needs it) but v0-2 are refused as
Kafka 4 does; Produce is capped at v12 and Fetch at v12 (v13 carries topic ids), OffsetCommit at v9.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

VersionRange = tuple[int, int]

PRODUCE = 0
FETCH = 1
METADATA = 3
OFFSET_COMMIT = 8
API_VERSIONS = 18
INIT_PRODUCER_ID = 22
DESCRIBE_CONFIGS = 32
DESCRIBE_CLUSTER = 60

# Upper bounds no handler may exceed until topic ids are translated (docs/DESIGN.md §5.7).
HARD_CAPS: dict[int, int] = {PRODUCE: 12, FETCH: 12, OFFSET_COMMIT: 9}
# Advertised minimum differs from the accepted minimum for these keys.
ADVERTISED_MIN: dict[int, int] = {PRODUCE: 0}
ACCEPTED_MIN: dict[int, int] = {PRODUCE: 3}


def intersect(implemented: Mapping[int, VersionRange],
              cluster_tables: Iterable[Mapping[int, VersionRange]]) -> dict[int, VersionRange]:
    """Per API key: the implemented range capped by HARD_CAPS and narrowed by every cluster's range.

    Keys a cluster does not support at all are dropped; an empty intersection drops the key.
    The advertised minimum of Produce stays 0 (the clusters' own minimum is 0 too).
    """
    out: dict[int, VersionRange] = {}
    tables = list(cluster_tables)
    for key, (lo, hi) in implemented.items():
        hi = min(hi, HARD_CAPS.get(key, hi))
        for table in tables:
            if key not in table:
                hi = -1
                break
            c_lo, c_hi = table[key]
            lo, hi = max(lo, c_lo), min(hi, c_hi)
        if lo <= hi:
            out[key] = (min(lo, ADVERTISED_MIN.get(key, lo)), hi)
    return out


def accepts(advertised: Mapping[int, VersionRange], api_key: int, version: int) -> bool:
    """Whether a request version is served: inside the advertised range and not below the accepted min."""
    rng = advertised.get(api_key)
    if rng is None:
        return False
    lo = max(rng[0], ACCEPTED_MIN.get(api_key, rng[0]))
    return lo <= version <= rng[1]


def widened(table: Mapping[int, VersionRange], other: Mapping[int, VersionRange]) -> dict[int, VersionRange]:
    """Per API key of either table the smallest range holding its ranges in both."""
    out = dict(table)
    for key, (lo, hi) in other.items():
        known = out.get(key)
        out[key] = (lo, hi) if known is None else (min(lo, known[0]), max(hi, known[1]))
    return out
