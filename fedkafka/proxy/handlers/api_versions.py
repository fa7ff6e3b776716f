"""ApiVersions: advertise only what the registry implements, intersected with every cluster (docs/DESIGN.md §5.7)."""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import response_schema
from fedkafka.proxy.plan import Context

API_KEYS = {18: (0, 4)}
ROLE = "any"
AUTHORIZES = True


def handle(ctx: Context, header, request):
    ctx.session.answered_api_versions()  # before SaslHandshake, Kafka answers one (security/session.py)
    return answer(ctx.advertised, type(request).__version__, ErrorCode.none)


def answer(advertised: dict[int, tuple[int, int]], version: int, error: ErrorCode):
    """Also used by the core for an unsupported ApiVersions version (answered as v0, like Kafka)."""
    keys = [{"api_key": k, "min_version": lo, "max_version": hi} for k, (lo, hi) in sorted(advertised.items())]
    return build(response_schema(18, version), {"error_code": error, "api_keys": keys})
