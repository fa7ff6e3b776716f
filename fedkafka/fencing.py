"""Time bounds the proxy's produce path and the controller's moves must agree on: one place for all of them.

A seal is safe only if no write a proxy forwarded can still land after the controller read the log end.
The proxy bounds how long any produce can run upstream; the controller waits at least that long before it
treats a silent proxy as fenced (docs/ARCHITECTURE.md, "Why no acked record lands above a seal").
"""

from __future__ import annotations

# A broker holds an acks=all write up to the request's timeout field while followers catch up; the proxy
# caps that field, so a live broker answers every produce within this many seconds.
MAX_PRODUCE_WAIT_S = 30.0
# The proxy's wait for any upstream answer: past it, the connection is closed and its requests failed.
UPSTREAM_REQUEST_TIMEOUT_S = MAX_PRODUCE_WAIT_S + 10.0
