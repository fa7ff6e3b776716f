"""Producer sequence numbers compared across the wrap (docs/DESIGN.md §5.3).

A producer's sequences on a partition wrap: the record after sequence 2**31 - 1 has sequence 0 (Kafka's
DefaultRecordBatch.incrementSequence, librdkafka's rd_kafka_seq_wrap), and a batch may straddle the wrap (its
first sequence near 2**31 - 1, its last past 0). So sequences are compared modulo 2**31, in a window: a sequence
is *behind* another when it comes at most RETRY_WINDOW before it. Everything a client can resend is that close
behind what it sent last: an idempotent producer has at most 5 batches in flight per partition, and it resends
only those. Anything else is *after* (a batch a client sent later, or one that went through another proxy).

The window is not half the sequence space (the serial number arithmetic of RFC 1982): a sequence far below
another in plain numbers is after it unless it is in the window, so a producer that went on through another
proxy for a long while is seen as having jumped ahead, as plain comparisons saw it before the wrap was handled.
"""

from __future__ import annotations

SEQUENCE_SPACE = 2**31
LAST_SEQUENCE = SEQUENCE_SPACE - 1  # the batch after one ending here starts at 0
# How far behind the newest batch a resend can be: 5 batches in flight of ~100,000 records each (librdkafka's
# batch.num.messages defaults to 10,000; Java's 16 KiB batch.size holds a few thousand).
RETRY_WINDOW = 2**19


def wrapped(seq: int) -> int:
    """A sequence or a batch's end (first + record count, which may pass 2**31 - 1) in 0..2**31 - 1."""
    return seq % SEQUENCE_SPACE


def distance(a: int, b: int) -> int:
    """How many sequences b comes after a, going forward through the wrap (0..2**31 - 1)."""
    return (b - a) % SEQUENCE_SPACE


def behind(a: int, b: int) -> bool:
    """Whether sequence a comes before b by at most RETRY_WINDOW (a resend, as seen from b)."""
    return 0 < distance(a, b) <= RETRY_WINDOW


def after(a: int, b: int) -> bool:
    """Whether sequence a comes after b: neither the same sequence (modulo 2**31) nor behind it."""
    return distance(a, b) > RETRY_WINDOW


def within(seq: int, first: int, end: int) -> bool:
    """Whether sequence `seq` is one of a batch's sequences first..end - 1 (the batch may straddle the wrap)."""
    return distance(first, seq) < end - first
