"""Time bounds the proxy's produce path and the controller's moves must agree on: one place for all of them.

A seal is safe only if no write a proxy forwarded can still land after the controller read the log end.
The proxy bounds how long any produce can run upstream; the controller waits at least that long after a silent
proxy's fence deadline before it treats it as fenced (docs/DESIGN.md §4.1, §4.9).
"""

from __future__ import annotations

# A broker holds an acks=all write up to the request's timeout field while followers catch up; the proxy
# caps that field, so a live broker answers every produce within this many seconds.
MAX_PRODUCE_WAIT_S = 30.0
# The proxy's wait for any upstream answer: past it, the connection is closed and its requests failed.
UPSTREAM_REQUEST_TIMEOUT_S = MAX_PRODUCE_WAIT_S + 10.0
# A proxy acks a frozen view only when no produce it routed under an older view is unanswered. It waits this
# long for their answers, then closes the upstream connections they are on (failing them: the clients retry
# later) and acks once they are failed. It never acks with one of them still out.
DRAIN_PATIENCE_S = 30.0
# After a proxy's lease ran out it routes no produce and sends none upstream; what it sent before may still
# be out, so the controller counts it as writing for this long (the longest a request can run upstream).
# The proxy does not close those connections: that would not unsend a request the broker already has, and
# its answer, lost, would make the client retry (maybe through another proxy: a duplicate).
FENCE_GRACE_S = UPSTREAM_REQUEST_TIMEOUT_S
# A batch whose call the core gave up on before its answer was noted (producer_ids `note_abandoned`: the client closed
# its connection mid-call, cancelling the plan; DESIGN §5.3 rule 3), and a produce request so given up on once written
# (its `writes_in_flight` count, §4.1 step 2), is uncounted this long after the cancellation. Not yet
# written then, it never is (the coroutine that would write it was cancelled at its await; a write is synchronous);
# written, its call would have ended by then had it run on (answered, or timed out and its connection closed, within
# UPSTREAM_REQUEST_TIMEOUT_S of the write), and the broker appends a request the proxy gave up on, if at all, within
# FENCE_GRACE_S of giving up (§4.1's assumption): twice that, from the cancellation. The producer-id count keeps its
# 80 s even when the connection closes sooner: a request the broker read is still appended after the close (only the
# answer is dropped), so for it a close bounds nothing. The drain's own count is released at the drain's last-resort
# close (`AbandonedWrites.close`), as the close of any pending produce is trusted, with the limit of a request the
# broker had already read and queued (§4.1 step 2). producer_ids.IN_FLIGHT_LEAK_S stays behind it.
ABANDONED_SETTLE_S = UPSTREAM_REQUEST_TIMEOUT_S + FENCE_GRACE_S
# How long a proxy may keep producing after its last renewal (docs/DESIGN.md §4.9): the controller (or its
# database) may be away this long before traffic stops. A move waits up to this (plus the grace) for a proxy
# that went silent, so it is also how long a proxy that died and never came back holds a move.
DEFAULT_FENCE_S = 900.0


def live_ack_timeout_s(lease_s: float) -> float:
    """How long a proxy that keeps renewing its lease may take to ack a frozen view: its drain, then a heartbeat."""
    return DRAIN_PATIENCE_S + 5.0 + lease_s / 3


def ack_timeout_s(lease_s: float, fence_s: float | None = None) -> float:
    """How long the controller waits for every proxy to ack a frozen view before it rolls a move back: a live
    proxy acks within its drain (plus a heartbeat), a silent one is fenced after its fence and the grace."""
    fence_s = lease_s if fence_s is None else fence_s
    return max(live_ack_timeout_s(lease_s), fence_s + FENCE_GRACE_S + 5.0)
