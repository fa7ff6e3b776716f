"""DescribeCluster: the pool's proxies as the cluster's brokers (never a physical address)."""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import response_schema
from fedkafka.proxy.plan import Context, reachable_brokers

API_KEYS = {60: (0, 1)}
ROLE = "any"
AUTHORIZES = True


def handle(ctx: Context, header, request):
    # Not gated, as in Kafka: the brokers of the cluster are what Metadata shows anyone (admin tools ask it).
    found = [p for p in ctx.view.proxies_in_pool(ctx.me.pool) if p.node_id != ctx.me.node_id]
    brokers = [{"broker_id": p.node_id, "host": e.host, "port": e.port, "rack": p.rack}
               for p, e in reachable_brokers(ctx, (ctx.me, *found))]
    return build(response_schema(60, type(request).__version__), {
        "error_code": ErrorCode.none, "endpoint_type": 1, "cluster_id": ctx.view.federation_id,
        "controller_id": ctx.me.node_id, "brokers": brokers,
    })
