"""A structure-aware fuzz harness against real proxies, the name service and the controller (`make fuzz`).

`frames` builds valid requests of every advertised API version from kio's schemas as a list of tokens
(each length, count, tag section and value its own token), `mutate` lies in them, and `driver` sends the
result (whole, slowly, truncated, pipelined) over several asyncio connections while `environment` watches
the processes and a well-behaved confluent-kafka client produces and consumes beside it.
"""
