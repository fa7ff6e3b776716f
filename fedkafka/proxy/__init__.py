"""The fedkafka proxy: speaks the Kafka protocol to unmodified clients, routes to physical clusters.

`core/` does the I/O (listener, client connections, upstream pool, dispatch); `handlers/` are pure
functions of (context, request) -> plan; `plan.py` is the contract between the two.
"""
