"""Pure federation view model (no I/O): clusters, logical topics, segment chains, proxies."""

from fedkafka.view.model import (
    Cluster,
    ClusterState,
    LogicalTopic,
    PartitionChain,
    ProxyInfo,
    ProxyRole,
    Segment,
    View,
)

__all__ = ["Cluster", "ClusterState", "LogicalTopic", "PartitionChain", "ProxyInfo", "ProxyRole", "Segment", "View"]
