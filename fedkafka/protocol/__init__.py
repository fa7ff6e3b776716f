"""Kafka wire protocol: framing, header peek, kio-based codecs, error builders, version table.

Codecs come from kio (generated from Kafka's own JSON message schemas); the only hand-written byte
work is `records.py` (record-batch headers). This package must not import `fedkafka.proxy`.
"""
