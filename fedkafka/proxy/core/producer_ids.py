"""Logical producer ids (from controller blocks) and the logical -> physical producer id map (docs/DESIGN.md §5.3).

A physical id is keyed by (logical id, epoch, cluster) and remembers, per physical partition, the segment
(phys_start) it wrote to; when the active segment of a partition changes, the mapping is dropped so a fresh
physical id (with no broker state anywhere) is used: a physical id never crosses a segment boundary.

A fresh physical id accepts any first sequence, so the broker's gap check is lost at a segment boundary.
The table keeps what that check needs: per logical producer and partition, the first sequence of each batch
this proxy answered with an error that surely wrote nothing (a refusal, an unknown partition, a bad batch, a broker
error; never the client's own request error, which anyone may send under any id), each until REFUSAL_MEMORY_S after
its own last refusal; past MAX_REFUSED_KEYS keys, a live refusal that cannot be kept makes the keys that hash to its
bucket overflow (`overflowing`).
A batch whose CRC-32C does not vouch for its header is remembered where the client's order puts it, not at the
sequence it claims (`note_refused_unread`: at the end last forwarded, or at no sequence, UNKNOWN_SEQUENCE), and only
under a producer id and epoch its connection vouches for (`note_refused_corrupt`); any other holds back that
connection's own batches, never another client's producer.
A later batch past any of them is a gap; forwarding it would let the client count the refused batch as written
(librdkafka acks earlier retries implicitly when a later sequence succeeds), so it is refused too
(NOT_LEADER_OR_FOLLOWER, as a leader refuses a whole pipeline): the client resends from its oldest unacked batch.
One time for all of them lost a batch (run 13): the oldest refused batch had gone through another proxy, the memory
of it ran out, and the batch refused 0.2 s before went with it.

A batch sent on a confirmed pair whose answer leaves open whether it was written (a timeout, a lost call) is kept too
(`note_ambiguous`): the broker checks what follows on the same physical id, but not on a fresh one, and the mapping is
one for all of a producer's partitions on a cluster, so another partition's move renews it; a batch past it that the
broker would not check is refused as a gap (`ambiguous_before`). Past MAX_MAPPINGS keys, the least recently noted one
goes to the refusal memory with its live batches (never dropped live: a batch past it would be written, and its own
acked implicitly); the keys whose last note ran out leave from the front as batches are noted and written
(`_ambiguous_live`), so the memory empties and the steady path's test that it is empty holds again.
A batch whose answer is still pending said nothing yet: while one of a producer's batches on a partition is in flight
(`note_sent` to `note_settled`, uncounted in the callback that notes its answer), a batch of it the broker would not
check waits too (`in_flight`): on a fresh id it was written while the one before it failed unwritten, acked implicitly.
A batch whose call the core gave up on (`note_abandoned`) counts until it can no longer be written; a full table
pushes out no live key, it holds the new key's bucket instead (`_count_new`).

A fresh physical id also takes any first sequence at the start of a partition's log: until the broker has
answered one of its batches there, a later batch could be written while an earlier one failed, and librdkafka
would then ack the earlier one implicitly. So the table remembers which (physical id, partition) pairs the
broker has confirmed; the produce handler sends an unconfirmed pair's batch alone (a barrier) and treats
any failure of it, even an ambiguous one, as a gap. Once confirmed, the broker's own sequence check holds.

Across a seal it also keeps, per logical producer and partition, the segment this proxy last wrote to
(and the physical id it wrote with). On the first batch for a newer segment the produce handler asks the
old segment's broker (DescribeProducers) for that id's last sequence: the sealed segment's floor. A retried
batch wholly below it is answered DUPLICATE_SEQUENCE_NUMBER (clients count it as written) instead of being
written a second time; a batch above it on the first write there is a gap, refused as above, while the floor is
behind the end this proxy forwarded there (at that end, the producer went on through another process: the floor is
only this process's own id's) and for REFUSAL_MEMORY_S at most (`gap_at_floor`).

Sequences wrap (after 2**31 - 1 comes 0): every comparison here is modulo 2**31, in the window a resend can be
behind (fedkafka/protocol/sequences.py), so the checks above go on working after a producer's sequences wrapped.
"""

from __future__ import annotations

import array
import asyncio
import collections
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Literal

from fedkafka.fencing import ABANDONED_SETTLE_S
from fedkafka.protocol import sequences as seqs

# The types are the handler contract's (fedkafka/proxy/plan.py): handlers see this table as `ProducerIds`.
from fedkafka.proxy.plan import (
    UNASKED,
    ConnectionProducers,
    PhysicalPartition,
    SegmentId,
    SegmentWrite,
    SeqKey,
    Unasked,
)

log = logging.getLogger(__name__)

MAX_MAPPINGS = 100_000
# A refused batch is forgotten this long after it was last refused itself: by then the client resent it here or,
# if the logical leader moved to another proxy, wrote it there; remembering it longer would fail a later
# head-of-line batch.
REFUSAL_MEMORY_S = 30.0
# A sealed segment's floor is forgotten when none of the producer's batches for the partition came here for this
# long: a producer away that long may have written on through another proxy, round the wrap, to just below the
# floor (2**31 records in 5 minutes: over 7 million a second on one partition), and its new batches would be
# answered as duplicates without being written. A resend from before the seal comes no later than this after
# the floor was read with the clients' default timeouts (librdkafka's message.timeout.ms, Java's
# delivery.timeout.ms is 2 minutes), and comes every few seconds until answered; one later still is written
# again (a duplicate).
FLOOR_MEMORY_S = 300.0
# A producer's batches on a partition still counted in flight when none of them was sent for this long are taken for
# a count an exit missed, and dropped (`in_flight`). A call ends (answered, timed out, its connection lost, or never
# sent) within UPSTREAM_REQUEST_TIMEOUT_S (40 s) of its write; between its count (`note_sent`) and its write lie at
# most its connection's set-up: a slot's lock, a retiring connection's drain (up to 40 s more), a connect and a SASL
# login (CONNECT_TIMEOUT_S, 5 s, a step). A count dropped while a batch it counts may still be written would let a
# fresh physical id's batch out behind it (a loss, DESIGN §5.3 rule 3), a count kept too long only holds back the
# producer's batches the broker would not check (retriable): so a wide margin, and the clients' own delivery timeout
# (librdkafka's message.timeout.ms, 5 minutes; Java's delivery.timeout.ms, 2) has failed such a batch by then.
IN_FLIGHT_LEAK_S = 300.0
# Refused batches remembered per producer and partition (a client has at most 5 in flight on a partition; a few
# more from batches it wrote through another proxy meanwhile); past it they are folded, refusing more (`_cap`).
REFUSED_BATCHES = 16
# (producer, partition) keys with refused batches remembered, a cap of their own: keys of the other maps never push
# them out. Measured (tracemalloc, CPython 3.12, each key holding its own topic name, as each request's are): ~0.5 KB
# a key with one refused batch, ~1.4 KB with 16, ~1.6 KB with 16 and a 249-character ASCII name (the produce handler
# notes only names a logical topic can have, `TOPIC_NAME`: at most 231 ASCII characters, one byte each), so at most
# ~160 MB per worker process, ~170 MB with 76 bytes more for a key taken in during an overflow (`_inexact`) and the
# buckets' 32 KB, outside the byte budget (DESIGN §4.12), as the rest of this table. Full, the least
# recently refused key goes if its refusals all ran out; if they did not (every key refused within REFUSAL_MEMORY_S:
# a failover of that many producer partitions on one worker, or a client with WRITE claiming made-up producer ids in
# unknown partitions or corrupt batches), the new refusal is not kept but its key's bucket overflows for as long as it
# would have been remembered (`overflowing`). The keys kept stay exact: they are written when resent and leave; a key
# taken in while its bucket overflows waits only for the refusals not kept before (`_inexact`), then is written and
# leaves, so the keys left out get in, as many at a time as the memory holds (about MAX_REFUSED_KEYS every 30 s), and
# the overflow ends. Pushing out a live key instead renewed the overflow for good (every resend pushed out another).
MAX_REFUSED_KEYS = 100_000
# Buckets of keys whose live refusals were not kept (a key's hash picks one; str hashes are salted per process): a
# collision only refuses a batch more (retriable), and keys the memory holds exactly are never refused by it.
OVERFLOW_BUCKETS = 4096
_OVERFLOW_LOG_S = 60.0
# A refused batch's first sequence when it is not known (`note_refused_unread`): never a sequence (those are
# 0..2**31 - 1). It holds back every batch of its key the broker would not check itself, as an overflowing bucket
# does (`unsequenced`), until it runs out as any refused batch does; it is never written, skipped or folded.
UNKNOWN_SEQUENCE = -1
# (producer id, epoch) pairs a connection vouches for (`vouch`): a client's connection carries one producer, a few
# epochs; past this the oldest goes (its corrupt batches are then held against the connection: `note_refused_corrupt`)
VOUCHED_PRODUCERS = 8
# Partitions one connection's corrupt batches of ids it does not vouch for are held on; past this, all of them
HELD_PARTITIONS = 64
_NEVER = -float("inf")

__all__ = ["UNASKED", "UNKNOWN_SEQUENCE", "PhysicalPartition", "ProducerIdTable", "SegmentId", "SegmentWrite",
           "SeqKey", "StaticIdBlocks"]


class StaticIdBlocks:
    """The logical producer id blocks of a proxy without a controller (--view-file), which no controller allocates:
    the first at a random start high in the 63-bit space, so that another process's ids (another static proxy, this
    one before a restart, whose clients keep theirs) are unlikely to meet them; each next one right after the one
    before, so that no id of this process is handed out twice (a fresh random block could overlap one still in use).
    The table takes one whenever its block runs low (`fetch`, its `fetch_block`): with the one random block and no
    refill, every InitProducerId past 2**20 was COORDINATOR_NOT_AVAILABLE until a restart (review s34-rvproduce
    finding 2). Logical ids never reach a broker: every idempotent batch goes upstream rewritten to a physical id
    (`produce._as_physical_producer`, the lane's `lane_forwarded`), transactional ones are refused, and
    DescribeProducers answers with the logical ids it maps back."""

    def __init__(self, size: int = 1 << 20, start: int | None = None):
        self.size = size
        self._next = random.randrange(1 << 40, 1 << 60) if start is None else start

    def take(self) -> tuple[int, int]:
        """The next block: (start, size)."""
        start = self._next
        self._next += self.size
        return start, self.size

    async def fetch(self) -> tuple[int, int]:
        return self.take()


class ProducerIdTable:
    def __init__(self, fetch_block: Callable[[], Awaitable[tuple[int, int]]] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        # per producer and partition: the first sequence of each batch refused here -> when it was last refused itself
        self._refused: collections.OrderedDict[SeqKey, dict[int, float]] = collections.OrderedDict()
        # per bucket of keys (`_bucket`): until when a live refusal not kept (MAX_REFUSED_KEYS) would be remembered
        self._overflow_until = array.array("d", [_NEVER]) * OVERFLOW_BUCKETS
        # keys taken into the memory while their bucket overflowed (a refusal of theirs may be missing from it) -> until
        # when the bucket overflowed then: their refusals not kept ran out by that time, later ones are all kept
        self._inexact: dict[SeqKey, float] = {}
        self._overflow_logged = _NEVER
        self._writes: collections.OrderedDict[SeqKey, SegmentWrite] = collections.OrderedDict()
        # per producer and partition: (segment, its floor, when a batch was last checked against it)
        self._floors: collections.OrderedDict[SeqKey, tuple[SegmentId, int | None, float]] = collections.OrderedDict()
        self._confirmed: collections.OrderedDict[PhysicalPartition, None] = collections.OrderedDict()
        # per producer and partition: (segment, when a batch past its sealed floor was first refused as a gap)
        self._floor_gaps: collections.OrderedDict[SeqKey, tuple[SegmentId, float]] = collections.OrderedDict()
        # per producer and partition: the first sequence of each batch sent on a confirmed pair whose answer left open
        # whether it was written (REQUEST_TIMED_OUT, a lost call) -> when it was last so answered (`note_ambiguous`)
        self._ambiguous: collections.OrderedDict[SeqKey, dict[int, float]] = collections.OrderedDict()
        # until when the key at the front of `_ambiguous` was last seen live (`_ambiguous_live`)
        self._ambiguous_until = _NEVER
        # per producer and partition: (batches sent upstream whose call has not ended, when the latest of the key's
        # batches was sent) (`note_sent`, `note_settled`)
        self._in_flight: dict[SeqKey, tuple[int, float]] = {}
        # per producer and partition: when each batch of it whose call was given up on is uncounted (`note_abandoned`)
        self._abandoned: dict[SeqKey, list[float]] = {}
        # per bucket of keys (`_bucket`): until when a batch sent uncounted (the table full) may be in flight, and the
        # latest of them (`_count_new`)
        self._uncounted_until = array.array("d", [_NEVER]) * OVERFLOW_BUCKETS
        self._uncounted_any = _NEVER
        self._sweep_after = _NEVER  # no key of a full table can leave before then (`_sweep_in_flight`)
        self._uncounted_logged = _NEVER
        self._next = 0
        self._end = 0
        self._fetch_block = fetch_block
        self._refill: asyncio.Task[None] | None = None  # the block asked for (`_schedule_refill`), until it ends
        self._spare: tuple[int, int] | None = None
        self._map: collections.OrderedDict[tuple[int, int, str], tuple[int, int, dict]] = collections.OrderedDict()
        # (cluster, physical id) -> (logical id, logical epoch); kept when `_map` drops the id at a segment
        # boundary, since the id's state still sits on the sealed segment's broker (DescribeProducers reads it)
        self._logical: collections.OrderedDict[tuple[str, int], tuple[int, int]] = collections.OrderedDict()

    def add_block(self, start: int, size: int) -> None:
        if self._next >= self._end:
            self._next, self._end = start, start + size
        else:
            self._spare = (start, size)

    def next_logical(self) -> int | None:
        if self._next >= self._end:
            if self._spare is None:
                self._schedule_refill()
                return None
            self._next, self._end = self._spare[0], self._spare[0] + self._spare[1]
            self._spare = None
        pid = self._next
        self._next += 1
        if self._end - self._next < 100 and self._spare is None:
            self._schedule_refill()
        return pid

    def physical(self, logical_id: int, epoch: int, cluster: str, topic: str, partition: int,
                 phys_start: int, sequences: tuple[int, int] | None = None) -> tuple[int, int] | None:
        """The physical (id, epoch) to write with, or None: obtain a fresh one first.

        `sequences` = (first, end) of the batches to forward. A first sequence beyond what this proxy
        forwarded means another proxy wrote the gap under its own physical id (the logical leader moved
        between proxies and back): the broker would answer OUT_OF_ORDER_SEQUENCE_NUMBER for good, so a
        fresh physical id (no broker state anywhere) is used instead. Compared across the wrap (`seqs.after`):
        a resend is at most seqs.RETRY_WINDOW behind the newest end."""
        key = (logical_id, epoch, cluster)
        entry = self._map.get(key)
        if entry is None:
            return None
        seen = entry[2]
        previous = seen.setdefault((topic, partition), [phys_start, None])
        if previous[0] != phys_start:
            del self._map[key]  # segment boundary: never reuse a physical id here
            return None
        if sequences is not None:
            first, end = sequences
            if previous[1] is not None and seqs.after(first, previous[1]):
                del self._map[key]
                return None
            if previous[1] is None or seqs.after(end, previous[1]):
                previous[1] = seqs.wrapped(end)
        self._map.move_to_end(key)
        return entry[0], entry[1]

    def steady(self, key: SeqKey, segment: SegmentId, first_seq: int) -> tuple[int, int] | None:
        """The physical (id, epoch) a batch of `key` from `first_seq` goes to `segment` with, when the produce handler
        would forward it as it is with nothing to learn first and no state read but what `physical` and
        `note_forwarded` then change (the Produce lane's test; None: leave it to the handler). That is: the id is
        mapped for this segment and has forwarded up to or past `first_seq` there (`physical` keeps it), the broker
        answered one of its batches there (`confirmed`: no barrier), no refusal remembered for `key` (no gap to
        check, none to forget), and no sealed floor to read or check (`_against_sealed_floor` forwards without
        looking), and no batch of `key` not known written (`note_ambiguous`): the handler's `ambiguous_before` drops
        those that ran out, which the lane would leave (the table then differed from the handler's). Reads only:
        nothing changes, not even an LRU order."""
        if key in self._refused or (self._ambiguous and key in self._ambiguous):
            return None
        floor = self._floors.get(key)
        if floor is not None and floor[0] == segment:
            if floor[1] is not None:  # `floor` would renew or forget it, and the batch is checked against it
                return None
        elif (write := self._writes.get(key)) is not None and write.segment != segment:
            return None  # a floor to read first (DescribeProducers)
        return self.broker_checked(key, segment, first_seq)

    def broker_checked(self, key: SeqKey, segment: SegmentId, first_seq: int) -> tuple[int, int] | None:
        """The physical (id, epoch) `physical` keeps for a batch of `key` from `first_seq` to `segment` when the broker
        checks its sequence itself: mapped for this segment, no forward jump (no fresh id), and confirmed there (the
        broker holds the id's state: a batch past an unwritten one is OUT_OF_ORDER_SEQUENCE_NUMBER). Reads only."""
        cluster, topic, partition, phys_start = segment
        entry = self._map.get((key[0], key[1], cluster))
        if entry is None:
            return None
        previous = entry[2].get((topic, partition))
        if previous is None or previous[0] != phys_start or previous[1] is None or seqs.after(first_seq, previous[1]):
            return None
        if (cluster, topic, partition, entry[0]) not in self._confirmed:
            return None
        return entry[0], entry[1]

    def overflowing(self, key: SeqKey) -> bool:
        """Whether a refusal of `key` not kept in the memory (past MAX_REFUSED_KEYS) could still be remembered: one of
        its bucket's would be, and the memory does not hold the key; or the memory took it in while its bucket
        overflowed, and the bucket's refusals then would be (the key's later ones are all kept). Meanwhile the produce
        handler refuses, as a gap, every batch of `key` the broker would not check itself (`broker_checked`): a fresh
        physical id, or the first batch of one on its partition. Nothing is written past a forgotten refusal; `key`'s
        new physical ids wait (retriable) until it ends. `steady` never takes such a batch (only `broker_checked`
        ones)."""
        until = self._inexact.get(key, _NEVER) if key in self._refused else self._overflow_until[self._bucket(key)]
        return until != _NEVER and self._clock() <= until  # no clock read before a bucket ever overflowed

    def store_physical(self, logical_id: int, epoch: int, cluster: str, producer_id: int, epoch_: int) -> None:
        log.info("producer %s epoch %s -> physical %s epoch %s on %s", logical_id, epoch, producer_id, epoch_, cluster)
        self._map[(logical_id, epoch, cluster)] = (producer_id, epoch_, {})
        while len(self._map) > MAX_MAPPINGS:
            self._map.popitem(last=False)
        _put(self._logical, (cluster, producer_id), (logical_id, epoch))

    def logical_of(self, cluster: str, producer_id: int) -> tuple[int, int] | None:
        """The (logical id, epoch) this proxy wrote as `producer_id` on `cluster`, or None: not one of its own."""
        return self._logical.get((cluster, producer_id))

    def note_refused(self, key: SeqKey, first_seq: int) -> None:
        """A batch starting at `first_seq` was answered with an error and nothing of it was written. Each refused batch
        is remembered until REFUSAL_MEMORY_S after its own last refusal: refusing a batch (as a gap, or again) renews
        that batch's memory, never an older one's, so a batch the client wrote through another proxy is forgotten
        30 s after it was last refused here while the batches refused after it still hold back the ones past them."""
        now = self._clock()
        batches = _noted(self._refused.get(key), first_seq, now)
        self._keep_refused(key, batches, now)
        floor = self._floors.get(key)
        if floor is not None and floor[1] is not None:  # the producer is still here: its floor with it
            self._floors[key] = (floor[0], floor[1], now)

    def note_refused_unread(self, key: SeqKey) -> None:
        """A batch of `key` was refused whose header is not the client's for sure (its CRC-32C does not match: a bit
        flip may have hit its base sequence too, `records.header_intact`), so the sequence it claims is not
        remembered: one hit to after the real one let the batch after it pass as a forward jump, go out on a fresh
        physical id and be written while this one was not. It is remembered at the end this process last forwarded
        for `key` (`note_forwarded`, on any segment: the sequence the client's next batch in order starts at). The
        client sends in order and resends from its oldest unacked batch, so the real first sequence is that end (the
        batch after the last one forwarded), behind it (a resend of a forwarded batch: the broker or the memories
        hold back what follows it, as for any resend), or after it only if the batches between went through another
        process or were refused here (then already remembered): there this memory refuses the batch too, for 30 s at
        most after its last refusal, retriable, as rule 2 does a batch written elsewhere. With nothing forwarded for
        `key` here, at UNKNOWN_SEQUENCE: every batch of `key` the broker does not check is refused as a gap until it
        runs out (`unsequenced`)."""
        write = self._writes.get(key)
        self.note_refused(key, UNKNOWN_SEQUENCE if write is None else write.end)

    def vouch(self, connection: ConnectionProducers, producer_id: int, epoch: int) -> None:
        """`connection` was given (InitProducerId) or sent a batch whose CRC-32C held under (`producer_id`, `epoch`):
        its corrupt batches claiming them may touch the table (`note_refused_corrupt`), as its intact ones do. At most
        VOUCHED_PRODUCERS pairs (a client's connection carries one producer; the oldest goes first)."""
        vouched = connection.vouched
        pair = (producer_id, epoch)
        if pair in vouched:
            return
        if len(vouched) >= VOUCHED_PRODUCERS:
            del vouched[next(iter(vouched))]
        vouched[pair] = None

    def note_refused_corrupt(self, connection: ConnectionProducers, key: SeqKey) -> None:
        """A batch claiming `key` whose CRC-32C fails was refused on `connection`. Its producer id and epoch may be
        damaged, or forged: remembered under them, another client's corrupt batches refused a producer that never sent
        them (at no sequence, every batch of it the broker does not check; at its end forwarded, every batch past it),
        30 s after each, for as long as they came. So the table takes it (`note_refused_unread`) only when `connection`
        vouches for the id and epoch: then it touches no state its intact batches could not. Any other is held against
        the connection itself (`held`): its own batches on the partition that the broker does not check wait until
        REFUSAL_MEMORY_S after it, the rule of a batch remembered at no sequence (`unsequenced`), for the one client
        that sent it; at most HELD_PARTITIONS partitions, past that all of the connection's."""
        if (key[0], key[1]) in connection.vouched:
            self.note_refused_unread(key)
            return
        now = self._clock()
        held = connection.held
        where: tuple[str, int] | None = (key[2], key[3])
        if where not in held and len(held) >= HELD_PARTITIONS:
            for gone in [w for w, when in held.items() if now - when > REFUSAL_MEMORY_S]:
                del held[gone]
            if len(held) >= HELD_PARTITIONS:  # all of them then: it holds back more, never less
                held.clear()
                where = None
        held[where] = now

    def held(self, connection: ConnectionProducers, topic: str, partition: int) -> bool:
        """Whether `connection` sent a corrupt batch on the partition (or, past HELD_PARTITIONS, on any) under an id it
        does not vouch for within REFUSAL_MEMORY_S (`note_refused_corrupt`)."""
        held = connection.held
        if not held:
            return False
        when = max(held.get((topic, partition), _NEVER), held.get(None, _NEVER))
        return when != _NEVER and self._clock() - when <= REFUSAL_MEMORY_S

    def unsequenced(self, key: SeqKey) -> bool:
        """Whether a live refused batch of `key` is remembered at no sequence (`note_refused_unread`): the produce
        handler then refuses, as a gap, every batch of `key` the broker would not check (`broker_checked` None)."""
        batches = self._refused.get(key)
        if batches is None or UNKNOWN_SEQUENCE not in batches:
            return False
        return self._clock() - batches[UNKNOWN_SEQUENCE] <= REFUSAL_MEMORY_S

    def _keep_refused(self, key: SeqKey, batches: dict[int, float], now: float) -> None:
        """Into the memory, most recently refused last. Past MAX_REFUSED_KEYS the least recently refused key goes if its
        refusals all ran out; if they did not, `key` is not kept and its bucket overflows for as long as it would have
        been remembered. A key taken in while its bucket overflows is inexact (`overflowing`)."""
        if key not in self._refused:
            while len(self._refused) >= MAX_REFUSED_KEYS:
                oldest, held = next(iter(self._refused.items()))
                if now <= max(held.values(), default=_NEVER) + REFUSAL_MEMORY_S:
                    self._overflow(key, max(batches.values()) + REFUSAL_MEMORY_S, now)
                    return
                self._forget(oldest)
            if (until := self._overflow_until[self._bucket(key)]) >= now:
                self._inexact[key] = until
        self._refused[key] = batches
        self._refused.move_to_end(key)

    def _overflow(self, key: SeqKey, until: float, now: float) -> None:
        """`key`'s refusal is not kept: its bucket holds back, until `until`, every batch the broker does not check."""
        bucket = self._bucket(key)
        self._overflow_until[bucket] = max(self._overflow_until[bucket], until)
        if now - self._overflow_logged >= _OVERFLOW_LOG_S:
            self._overflow_logged = now
            log.warning("more than %s producer partitions refused within %.0f s: producer %s/%s %s/%s not kept in the "
                        "refusal memory; its batches (and those of keys sharing its bucket) that the brokers do not "
                        "check are refused until %.0f s from now", MAX_REFUSED_KEYS, REFUSAL_MEMORY_S, *key,
                        until - now)

    def _bucket(self, key: SeqKey) -> int:
        return hash(key) % len(self._overflow_until)

    def _forget(self, key: SeqKey) -> None:
        del self._refused[key]
        self._inexact.pop(key, None)

    def note_ambiguous(self, key: SeqKey, first_seq: int) -> None:
        """A batch starting at `first_seq`, sent on a confirmed (physical id, partition), got an answer that leaves
        open whether it was written (REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS_AFTER_APPEND, or none at all). While the
        producer's batches go on with that id there, the broker checks them (a batch past an unwritten one is
        OUT_OF_ORDER_SEQUENCE_NUMBER); a batch it would not check (`broker_checked` None: a fresh physical id, as
        another partition's segment change or forward jump renews the mapping for all, or a new segment) past this one
        is refused as a gap (`ambiguous_before`) until a batch up to it is written, and for REFUSAL_MEMORY_S after its
        own last such answer at most, as a refused batch is remembered (rule 2). Past MAX_MAPPINGS keys the least
        recently noted one goes to the refusal memory with its live batches (`_push_out_ambiguous`), never dropped."""
        now = self._clock()
        self._ambiguous[key] = _noted(self._ambiguous.get(key), first_seq, now)
        self._ambiguous.move_to_end(key)
        self._ambiguous_live(now)
        while len(self._ambiguous) > MAX_MAPPINGS:
            self._push_out_ambiguous(*self._ambiguous.popitem(last=False), now)

    def _push_out_ambiguous(self, key: SeqKey, batches: dict[int, float], now: float) -> None:
        """`key`'s batches not known written, pushed out of their full memory: the live ones are remembered as refused
        (rule 2), each with the time of its own last ambiguous answer, so they run out when they would have here. That
        memory has a cap of its own and overflows rather than drop a live key (`_keep_refused`): a batch past them is
        still refused, now also one the broker checks (and the key leaves the lane) until they are written: retriable,
        and the client resends its oldest batch first. Dropping the key lost a batch: a batch past it went out on a
        fresh physical id, was written, and librdkafka acked the timed-out one implicitly."""
        _expire(batches, now)
        if not batches:
            return
        refused = self._refused.get(key)
        if refused is not None:
            _expire(refused, now)
            for seq, when in refused.items():
                batches[seq] = max(batches.get(seq, when), when)
            _cap(batches)
        self._keep_refused(key, batches, now)

    def _ambiguous_live(self, now: float) -> bool:
        """Whether batches not known written may still be live: the keys at the front of their memory (least recently
        noted first) whose last note ran out are dropped, up to the first one that did not. Amortized O(1): each key
        dropped was noted once, and one live key is looked at. A key's batches were all noted at or before its last
        note, so every key that ran out leaves once those noted before it did: a key whose producer never writes it
        again (an epoch bump after a timeout, a producer gone) no longer keeps the memory non-empty for good. Until the
        front key was last seen live it is not looked at again (a key noted later runs out no earlier; a front key
        resolved in part may have run out earlier: `_resolve_ambiguous` is then called in vain until that time)."""
        if now <= self._ambiguous_until:
            return True
        ambiguous = self._ambiguous
        while ambiguous:
            key, batches = next(iter(ambiguous.items()))
            until = max(batches.values(), default=_NEVER) + REFUSAL_MEMORY_S
            if now <= until:
                self._ambiguous_until = until
                return True
            del ambiguous[key]
        return False

    def ambiguous_before(self, key: SeqKey, first_seq: int) -> int | None:
        """The first sequence of the oldest batch of `key` not known written (`note_ambiguous`) that `first_seq` would
        skip, or None."""
        batches = self._ambiguous.get(key)
        if batches is None:
            return None
        _expire(batches, self._clock())
        if not batches:
            del self._ambiguous[key]
            return None
        skipped = [s for s in batches if seqs.after(first_seq, s)]
        return _oldest(skipped) if skipped else None

    def _resolve_ambiguous(self, key: SeqKey, end_seq: int) -> None:
        """Sequences up to end_seq - 1 were written: the batches not known written before end_seq were too (in the
        batch; or before it, which the broker checked: a batch past one not known written goes out only when it does,
        `ambiguous_before`)."""
        batches = self._ambiguous.get(key)
        if batches is None:
            return
        for s in [s for s in batches if seqs.behind(s, end_seq)]:
            del batches[s]
        if not batches:
            del self._ambiguous[key]

    def note_written(self, key: SeqKey, first_seq: int, end_seq: int) -> None:
        """Sequences first_seq..end_seq-1 were written (or were already): the refused batches among them are
        forgotten, and the batches not known written up to them (`note_ambiguous`). If refused batches remain, the
        next one to resend starts at end_seq and is remembered as refused too (when the written ones were), so a batch
        past it waits for it: forgetting it would let a batch past it through (and librdkafka ack it implicitly)."""
        if self._ambiguous:  # empty but within REFUSAL_MEMORY_S of an ambiguous answer: the steady path's only cost
            now = self._clock()
            if now <= self._ambiguous_until or self._ambiguous_live(now):
                self._resolve_ambiguous(key, end_seq)
        batches = self._refused.get(key)
        if batches is None:
            return
        written = [s for s in batches if s != UNKNOWN_SEQUENCE and seqs.within(s, first_seq, end_seq)]
        if not written:
            return
        when = max(batches.pop(s) for s in written)
        if not batches:
            self._forget(key)
            return
        if len(batches) == 1 and UNKNOWN_SEQUENCE in batches:
            return  # it holds back only what the broker does not check; a resend chain past it would hold back more
        batches.setdefault(seqs.wrapped(end_seq), when)
        _cap(batches)

    def refused_before(self, key: SeqKey, first_seq: int) -> int | None:
        """The first sequence of the oldest remembered refused batch that `first_seq` would skip, or None."""
        batches = self._refused.get(key)
        if batches is None:
            return None
        _expire(batches, self._clock())
        if not batches:
            self._forget(key)
            return None
        skipped = [s for s in batches if s != UNKNOWN_SEQUENCE and seqs.after(first_seq, s)]
        return _oldest(skipped) if skipped else None

    def note_sent(self, key: SeqKey) -> bool:
        """A batch of `key` goes upstream now (generic path and lane alike); whether it was counted: then, and only
        then, `note_settled` (or `note_abandoned`) once its call ended (the caller keeps the answer: an uncounted
        batch's settle would uncount a later batch of its key). The time of the key's latest send is kept with its
        count: a count is taken for one an exit missed only when no batch of the key was sent for IN_FLIGHT_LEAK_S
        (`in_flight`). A new key of a full table takes `_count_new`'s way (rare: the common case is a dict get and
        set)."""
        in_flight = self._in_flight
        known = in_flight.get(key)
        now = self._clock()
        if known is None:
            if len(in_flight) >= MAX_MAPPINGS and not self._count_new(key, now):
                return False
            in_flight[key] = (1, now)
        else:
            in_flight[key] = (known[0] + 1, now)
        return True

    def note_settled(self, key: SeqKey) -> None:
        """The call of a batch of `key` ended (answered, lost, not sent): no longer in flight."""
        in_flight = self._in_flight
        known = in_flight.get(key)
        if known is None:
            return
        if known[0] > 1:
            in_flight[key] = (known[0] - 1, known[1])
        else:
            del in_flight[key]
            if self._abandoned:  # none of its batches left to abandon (each counts one): nothing outlives its count
                self._abandoned.pop(key, None)

    def note_abandoned(self, key: SeqKey) -> None:
        """The core gave up on the call of a batch of `key` before its answer was noted (its plan cancelled: the client
        closed its connection), so `note_settled` never comes for it: it is uncounted ABANDONED_SETTLE_S from now, once
        its request can no longer be written (`in_flight`, `_sweep_in_flight`). Nothing counted (dropped already, or
        sent uncounted): nothing to uncount."""
        if key in self._in_flight:
            at = self._clock() + ABANDONED_SETTLE_S
            self._abandoned.setdefault(key, []).append(at)
            self._sweep_after = min(self._sweep_after, at)

    def in_flight(self, key: SeqKey) -> bool:
        """Whether a batch of `key` is in flight, its answer pending (DESIGN §5.3 rule 3, "An answer still pending"):
        the produce handler then holds back, as a gap, every batch of `key` the broker would not check itself (a
        fresh physical id, or the first batch of one on the partition), until every answer is in; it asks only for
        such a batch. A batch given up on counts until its bound (`note_abandoned`); a batch sent uncounted (the table
        full) holds its bucket's keys until IN_FLIGHT_LEAK_S after it (`_count_new`). A count still up when no batch of
        `key` was sent for IN_FLIGHT_LEAK_S (longer than any call can last from its send: every call ends, answered or
        failed, within its connection's set-up and the upstream request timeout) is one an exit missed, and is dropped
        rather than hold the producer back for good. Starts no clock: a steady pipeline is never dropped."""
        known = self._in_flight.get(key)
        if self._uncounted_any != _NEVER and self._uncounted_held(key):
            return True
        if known is None:
            return False
        now = self._clock()
        if self._abandoned and key in self._abandoned:
            known = self._settle_abandoned(key, known, now)
            if known is None:
                return False
        idle = now - known[1]
        if idle <= IN_FLIGHT_LEAK_S:
            return True
        log.warning("producer %s/%s %s/%s: %s batch(es) still counted in flight %.0f s after its last batch was sent; "
                    "dropped (an exit missed)", *key, known[0], idle)
        self._drop_in_flight(key)
        return False

    def _uncounted_held(self, key: SeqKey) -> bool:
        now = self._clock()
        if now > self._uncounted_any:
            self._uncounted_any = _NEVER  # every bucket's ran out: `in_flight` looks no further
            return False
        return now <= self._uncounted_until[self._bucket(key)]

    def _settle_abandoned(self, key: SeqKey, known: tuple[int, float], now: float) -> tuple[int, float] | None:
        """`key`'s count less its abandoned batches whose bound passed (None: none left)."""
        deadlines = self._abandoned[key]
        due = 0
        while due < len(deadlines) and now > deadlines[due]:
            due += 1
        if not due:
            return known
        del deadlines[:due]
        if not deadlines:
            del self._abandoned[key]
        if known[0] <= due:
            self._drop_in_flight(key)
            return None
        known = self._in_flight[key] = (known[0] - due, known[1])
        return known

    def _drop_in_flight(self, key: SeqKey) -> None:
        del self._in_flight[key]
        self._abandoned.pop(key, None)

    def _count_new(self, key: SeqKey, now: float) -> bool:
        """Whether a batch of `key`, not counted yet, is counted: the table full (MAX_MAPPINGS keys), only a key whose
        count `in_flight` would drop now leaves (`_sweep_in_flight`); a live one never does (a fresh-id batch of it
        would go out behind one unanswered). With none to leave, the batch goes uncounted and its key's bucket is
        held: every batch of those keys the broker would not check waits (retriable, `in_flight`) until
        IN_FLIGHT_LEAK_S after the last batch so sent, the bound by which its call ended (the backstop's premise).
        Only a batch `note_sent` leaves uncounted holds (or extends the hold), sent or not: the generic path sends
        it, the lane (`produce.lane_forwarded`) sends nothing and raises LaneUncounted, and the generic path then
        notes the request's batches again (the hold, if they are counted then, only holds back retriable batches
        longer). With room, a key of a held bucket is counted as any other, since its callers settle only what
        `note_sent` counted, so an uncounted batch's end never uncounts a later batch of its key. It used to take no
        key of a held bucket in, and each of their sends, uncounted, pushed the hold on: a bucket of a producer sending
        steadily stayed held for good, the table empty."""
        if now >= self._sweep_after:
            self._sweep_in_flight(now)
            if len(self._in_flight) < MAX_MAPPINGS:
                return True
        bucket = self._bucket(key)
        self._uncounted_until[bucket] = self._uncounted_any = now + IN_FLIGHT_LEAK_S
        if now - self._uncounted_logged >= _OVERFLOW_LOG_S:
            self._uncounted_logged = now
            log.warning("more than %s producer partitions with batches in flight on this worker: producer %s/%s %s/%s "
                        "not counted; its batches (and those of keys sharing its bucket) that the brokers do not check "
                        "are refused (retriable) for %.0f s", MAX_MAPPINGS, *key, IN_FLIGHT_LEAK_S)
        return False

    def _sweep_in_flight(self, now: float) -> None:
        """The keys of a full table whose counts `in_flight` would drop now leave (their abandoned batches past their
        bound, or none of their batches sent for IN_FLIGHT_LEAK_S); the next sweep not before one more can."""
        earliest = float("inf")
        for key, known in list(self._in_flight.items()):
            if key in self._abandoned:
                settled = self._settle_abandoned(key, known, now)
                if settled is None:
                    continue
                known = settled
                if key in self._abandoned:
                    earliest = min(earliest, self._abandoned[key][0])
            if now - known[1] > IN_FLIGHT_LEAK_S:
                self._drop_in_flight(key)
            else:
                earliest = min(earliest, known[1] + IN_FLIGHT_LEAK_S)
        self._sweep_after = earliest

    def confirmed(self, where: PhysicalPartition) -> bool:
        """Whether the broker answered a batch of this physical id on this partition (so it checks sequences)."""
        return where in self._confirmed

    def confirm(self, where: PhysicalPartition) -> None:
        _put(self._confirmed, where, None)

    def note_forwarded(self, key: SeqKey, segment: SegmentId, producer_id: int, end_seq: int) -> None:
        """A batch of `key` ending before `end_seq` went to `segment` as `producer_id`. Past the floor by more than
        a resend can be behind, the floor is dropped: no resend can come from before the seal any more, and a
        producer that goes on round the wrap would come back below it (answered as duplicates, not written).
        Dropped when the batch is forwarded, not when its answer comes in: the next may be routed before that."""
        end = seqs.wrapped(end_seq)
        earlier = self._writes.get(key)
        if earlier is not None and earlier.segment == segment and not seqs.after(end, earlier.end):
            end = earlier.end  # a resend: the newest end stays
        _put(self._writes, key, SegmentWrite(segment, producer_id, end))
        known = self._floors.get(key)
        if known is not None and known[0] == segment and known[1] is not None \
                and seqs.distance(known[1], end_seq - 1) > seqs.RETRY_WINDOW:
            self._floors[key] = (segment, None, known[2])

    def earlier_write(self, key: SeqKey, segment: SegmentId) -> SegmentWrite | None:
        """This proxy's last write for `key` when it went to another segment than `segment`."""
        write = self._writes.get(key)
        return write if write is not None and write.segment != segment else None

    def floor(self, key: SeqKey, segment: SegmentId) -> int | Literal[Unasked.UNASKED] | None:
        """The sequence the producer's batches on `segment` start at (None: not known), or UNASKED.
        Each look, and each refusal of the producer's batches here, renews it; forgotten (None) after
        FLOOR_MEMORY_S without either."""
        known = self._floors.get(key)
        if known is None or known[0] != segment:
            return UNASKED
        if known[1] is None:
            return None
        now = self._clock()
        if now - known[2] > FLOOR_MEMORY_S:
            log.info("producer %s/%s %s/%s: floor %s on %s forgotten (unused for %.0f s)", *key, known[1], segment,
                     now - known[2])
            self._floors[key] = (segment, None, known[2])
            return None
        self._floors[key] = (segment, known[1], now)
        return known[1]

    def set_floor(self, key: SeqKey, segment: SegmentId, floor: int | None) -> None:
        _put(self._floors, key, (segment, floor, self._clock()))

    def gap_at_floor(self, key: SeqKey, segment: SegmentId) -> bool:
        """Whether a batch past the sealed segment's floor may still be refused as a gap: for REFUSAL_MEMORY_S after
        the first such refusal, as a refused batch is remembered (rule 2). A client that keeps its pipeline here
        resends the batch at the floor first, and once it is forwarded there is no gap to refuse; one that has not
        in that time wrote it through another process, and refusing on would refuse the producer here for good."""
        known = self._floor_gaps.get(key)
        now = self._clock()
        if known is None or known[0] != segment:
            _put(self._floor_gaps, key, (segment, now))
            return True
        return now - known[1] <= REFUSAL_MEMORY_S

    def _schedule_refill(self) -> None:
        """Ask for the next block, unless an ask is under way: one at a time (docs/DESIGN.md §5.3). The ask counts
        from its scheduling, not from when its task first runs, so a burst of InitProducerIds in one turn of the loop
        asks once; and until its task is done, whichever way it ends (a block, a failure, cancelled, even before it
        ran), so a failed ask never blocks the next."""
        fetch_block = self._fetch_block
        if fetch_block is None or (self._refill is not None and not self._refill.done()):
            return

        async def refill() -> None:
            try:
                start, size = await fetch_block()
                self.add_block(start, size)
            except Exception as e:  # the next InitProducerId retries
                log.warning("could not fetch a producer id block: %s", e)

        self._refill = asyncio.get_running_loop().create_task(refill())


def _put(table: collections.OrderedDict, key, value) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > MAX_MAPPINGS:
        table.popitem(last=False)


def _noted(batches: dict[int, float] | None, first_seq: int, now: float) -> dict[int, float]:
    """A key's batches (refused, or not known written) with the one at `first_seq` noted at `now`: the expired ones
    dropped, at most REFUSED_BATCHES kept (`_cap`)."""
    batches = {} if batches is None else batches
    _expire(batches, now)
    batches[first_seq if first_seq == UNKNOWN_SEQUENCE else seqs.wrapped(first_seq)] = now
    _cap(batches)
    return batches


def _expire(batches: dict[int, float], now: float) -> None:
    for seq in [s for s, when in batches.items() if now - when > REFUSAL_MEMORY_S]:
        del batches[seq]


def _cap(batches: dict[int, float]) -> None:
    """At most REFUSED_BATCHES: past that the newest refused batch is folded into the one before it, which takes the
    later of their two refusal times. That one holds back everything the newest did (a batch past the newest is past
    it too) for at least as long: nothing is forgotten early, only more refused (the batches between the two). The
    one renewed so may be a batch written through another proxy (the client's only batch refused here folded into
    it); only a refusal that finds the memory full renews it, and the others expire unrenewed within 30 s, so the
    producer is held back here a minute at most, not for good."""
    while len(batches) > REFUSED_BATCHES:
        newest = _newest(batches)
        when = batches.pop(newest)
        before = _newest(batches)
        batches[before] = max(batches[before], when)


def _oldest(batches: list[int] | dict[int, float]) -> int:
    """The sequence none of the others is behind (compared across the wrap)."""
    return _first_by(batches, seqs.behind)


def _newest(batches: dict[int, float]) -> int:
    """The sequence none of the others is after (compared across the wrap)."""
    return _first_by(batches, seqs.after)


def _first_by(batches: list[int] | dict[int, float], beats) -> int:
    found = (s for s in batches if s != UNKNOWN_SEQUENCE)
    first = next(found)
    for seq in found:
        if beats(seq, first):
            first = seq
    return first
