"""DescribeCluster: the pool's proxies as the cluster's brokers (never a physical address), answered as a Kafka 4
broker answers (AuthHelper.computeDescribeClusterResponse)."""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from fedkafka.protocol.build import build
from fedkafka.protocol.codec import response_schema
from fedkafka.proxy.plan import Context, cluster_authorized_operations, controller_id, listed_brokers

API_KEYS = {60: (0, 1)}
ROLE = "any"
AUTHORIZES = True

BROKER, CONTROLLER = 1, 2  # KIP-919's endpoint types (EndpointType); a proxy is a broker
_ENDPOINT_NAMES = {BROKER: "BROKER", CONTROLLER: "CONTROLLER"}


def handle(ctx: Context, header, request):
    # Not gated, as in Kafka: the brokers of the cluster are what Metadata shows anyone (admin tools ask it).
    version = type(request).__version__
    wanted = getattr(request, "endpoint_type", BROKER)  # v0 has none: a broker's
    if wanted != BROKER:
        return _wrong_endpoint(version, wanted)
    listed = listed_brokers(ctx)
    body = {"error_code": ErrorCode.none, "endpoint_type": BROKER, "cluster_id": ctx.view.federation_id,
            "controller_id": controller_id(ctx, listed),
            "brokers": [{"broker_id": p.node_id, "host": e.host, "port": e.port, "rack": p.rack} for p, e in listed]}
    if request.include_cluster_authorized_operations:
        body["cluster_authorized_operations"] = cluster_authorized_operations(ctx)
    return build(response_schema(60, version), body)


def _wrong_endpoint(version: int, wanted: int):
    """Kafka's broker: controllers asked for (an AdminClient with bootstrap.controllers) MISMATCHED_ENDPOINT_TYPE,
    an endpoint type it does not know UNSUPPORTED_ENDPOINT_TYPE; no broker, no cluster id."""
    if wanted in _ENDPOINT_NAMES:
        error = ErrorCode.mismatched_endpoint_type
        message = f"The request was sent to an endpoint of type BROKER, but we wanted an endpoint of type " \
                  f"{_ENDPOINT_NAMES[wanted]}"
    else:
        error, message = ErrorCode.unsupported_endpoint_type, f"Unsupported endpoint type {wanted}"
    return build(response_schema(60, version), {"error_code": error, "error_message": message, "cluster_id": "",
                                                "brokers": []})
