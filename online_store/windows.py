"""Sliding event-time windows made of buckets, updated incrementally.

A window of `window_s` seconds is `BUCKETS_PER_WINDOW` buckets of
`window_s // BUCKETS_PER_WINDOW` seconds. The window "as of" a clock T holds
the buckets `head - n < b <= head` with `head = T // bucket_s`. Adding and
expiring keep a running total, so reading a value is O(1) and the result
depends only on the set of events, never on their arrival order.

The buckets live in a ring of n slots (bucket b in slot `b % n`), allocated at the
first add: a busy jukebox holds a dozen windows for up to a day, and a ring of machine
integers is 8 bytes a bucket where a dict of boxed ints was ~70 (bench.state_memory).
Moving the head clears the slots of the buckets it passes, which are the ones leaving.

>>> w = SlidingSum(3600)
>>> w.advance(7200); w.add(7100); w.add(7199, 2); w.add(3000)
True
True
False
>>> w.total, w.buckets
(3, {118: 1, 119: 2})
>>> w.advance(10_680)   # buckets 119..178 now: 7100 (bucket 118) has left
>>> w.total
2
>>> w.advance(10_740)   # and now 7199 (bucket 119) too
>>> w.total, w.buckets
(0, {})
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterator
from itertools import chain

from online_store.definitions import BUCKETS_PER_WINDOW

_N = BUCKETS_PER_WINDOW
_ZEROS = array("q", bytes(8 * _N))
# The bits of a ring's bytes (read little-endian) above each slot's low byte.
_ABOVE_BYTE = int.from_bytes((b"\x00" + b"\xff" * 7) * _N, "little")
_LITTLE = sys.byteorder == "little"


class _Window:
    """What every window shares: its width, its buckets' width, and its head (the bucket
    of the clock). Subclasses say what leaving buckets take with them (`_expire`) and what
    they hold (`_held`, for equality)."""

    __slots__ = ("bucket_s", "head", "window_s")

    def __init__(self, window_s: int, head: int | None) -> None:
        self.window_s = window_s
        self.bucket_s = window_s // _N
        self.head = head

    def advance(self, clock_s: int) -> None:
        """Move the window's end to the bucket of `clock_s` (never backwards)."""
        head = clock_s // self.bucket_s
        passed = self.head
        if passed is not None and head <= passed:
            return
        self.head = head
        if passed is not None:
            self._expire(passed, head)

    def _expire(self, passed: int, head: int) -> None:
        """Drop the buckets that left as the head moved from `passed` to `head`."""
        raise NotImplementedError

    def _bucket(self, t_s: int) -> int | None:
        """The bucket of event time `t_s`, None when it is outside the window."""
        bucket = t_s // self.bucket_s
        head = self.head
        if head is None or bucket <= head - _N or bucket > head:
            return None
        return bucket

    def _held(self) -> object:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return (type(other) is type(self) and self.window_s == other.window_s  # type: ignore[attr-defined]
                and self.head == other.head and self._held() == other._held())  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.window_s}, head={self.head}, held={self._held()})"


class SlidingSum(_Window):
    """Running sum of non-negative integers (exact, 64-bit) over a bucketed sliding window.

    The window is its constructor's config; `slots` and `head` restore a snapshot.
    """

    __slots__ = ("slots", "total")

    def __init__(self, window_s: int, slots: array | None = None, head: int | None = None) -> None:
        super().__init__(window_s, head)
        self.slots = slots  # array('q') of n sums, None until the first add
        self.total = 0 if slots is None else sum(slots)

    def _expire(self, passed: int, head: int) -> None:
        slots = self.slots
        if slots is None:
            return
        if not self.total or head - passed >= _N:  # amounts are >= 0: a zero total is all empty
            self.slots, self.total = None, 0
            return
        for bucket in range(passed + 1, head + 1):
            at = bucket % _N
            if slots[at]:
                self.total -= slots[at]
                slots[at] = 0
        if not self.total:
            self.slots = None  # an idle jukebox's window holds nothing

    def add(self, t_s: int, amount: int = 1) -> bool:
        """Count `amount` at event time `t_s`; False when it is outside the window."""
        bucket = self._bucket(t_s)
        if bucket is None:
            return False
        if amount < 0:
            raise ValueError(f"a window sums non-negative amounts, not {amount}")
        slots = self.slots
        if slots is None:
            slots = self.slots = array("q", _ZEROS)
        slots[bucket % _N] += amount  # a float raises TypeError: sums here stay exact
        self.total += amount
        return True

    def bucket_items(self) -> Iterator[tuple[int, int]]:
        """(bucket, sum) of every non-empty bucket in the window, oldest first."""
        slots, head = self.slots, self.head
        if slots is None or head is None:
            return
        for bucket in range(head - _N + 1, head + 1):
            if slots[bucket % _N]:
                yield bucket, slots[bucket % _N]

    @property
    def buckets(self) -> dict[int, int]:
        return dict(self.bucket_items())

    def replace_buckets(self, buckets: dict[int, int]) -> None:
        """Hold exactly `buckets` (each inside the window), total recomputed."""
        self.slots, self.total = None, 0
        for bucket, amount in buckets.items():
            if not self.add(bucket * self.bucket_s, amount):
                raise ValueError(f"bucket {bucket} is outside the window ending at {self.head}")

    def _held(self) -> dict[int, int]:
        return self.buckets

    def __reduce__(self):
        return (sum_window, sum_form(self))


def sum_form(window: SlidingSum) -> tuple:
    """(window_s, head, lead, body, width): the ring's slots as machine bytes (native
    order, as `SeenEvents`) without the empty slots at either end (`lead` of them before
    `body`), one byte a slot (`width` 1) when every sum is under 256, eight otherwise.
    A jukebox with a few minutes of traffic keeps most of each ring empty, a busy one
    counts a few plays a bucket, and its snapshot is written for every epoch it is
    touched in.

    >>> w = SlidingSum(3600); w.advance(7200); w.add(7100, 3); w.add(7199, 2)
    True
    True
    >>> window_s, head, lead, body, width = sum_form(w); (head, lead, body, width)
    (120, 58, b'\\x03\\x02', 1)
    >>> w.add(7199, 300); sum_form(w)[3:]
    True
    (b'\\x03\\x00\\x00\\x00\\x00\\x00\\x00\\x00.\\x01\\x00\\x00\\x00\\x00\\x00\\x00', 8)
    >>> sum_window(*sum_form(w)) == w
    True
    """
    slots = window.slots
    if slots is None or not window.total:
        return (window.window_s, window.head, 0, b"", 1)
    if _LITTLE and window.total < 256:  # sums are >= 0: every slot fits its low byte
        low = slots.tobytes()[::8]
        body = low.lstrip(b"\x00")
        return (window.window_s, window.head, len(low) - len(body), body.rstrip(b"\x00"), 1)
    raw = slots.tobytes()
    bits = int.from_bytes(raw, "little")  # finds the first and last non-empty slot in C
    if not bits:
        return (window.window_s, window.head, 0, b"", 1)
    lead, end = ((bits & -bits).bit_length() - 1) >> 6, (bits.bit_length() + 63) >> 6
    if _LITTLE and not bits & _ABOVE_BYTE:  # every slot's low byte is its whole value
        return (window.window_s, window.head, lead, raw[lead << 3:end << 3:8], 1)
    return (window.window_s, window.head, lead, raw[lead << 3:end << 3], 8)


def sum_window(window_s: int, head: int | None, lead: int, body: bytes, width: int = 8) -> SlidingSum:
    """A SlidingSum from its snapshot (`sum_form`; snapshots before 2026-12-03 have no
    `width`: eight bytes a slot)."""
    if not body:
        return SlidingSum(window_s, None, head)
    slots = array("q", bytes(8 * lead))
    if width == 1:
        slots.extend(body)  # an iterable of ints, one a slot
    else:
        slots.frombytes(body)
    slots.extend(_ZEROS[len(slots):])
    return SlidingSum(window_s, slots, head)


class SlidingCounter(_Window):
    """Multiset of keys (songs, devices, countries) over a bucketed sliding window.

    A slot holds its bucket's keys and amounts as one flat list, `[key, amount, ...]`: a
    bucket has a few keys, and a list of them is a third of the memory of a dict.
    """

    __slots__ = ("slots", "totals")

    def __init__(self, window_s: int, slots: list | None = None, head: int | None = None) -> None:
        super().__init__(window_s, head)
        self.slots = slots  # n flat lists (or None), None until the first add
        self.totals: dict = {}
        if slots:  # a resumed window: every slot's pairs, as one flat run, read two at a time
            flat = iter(chain.from_iterable(filter(None, slots)))
            totals, get = self.totals, self.totals.get
            for key, amount in zip(flat, flat):  # half the time of indexing each slot's pairs
                totals[key] = get(key, 0) + amount

    def _expire(self, passed: int, head: int) -> None:
        slots = self.slots
        if slots is None:
            return
        if head - passed >= _N:
            self.slots, self.totals = None, {}
            return
        totals = self.totals
        for bucket in range(passed + 1, head + 1):
            pairs = slots[bucket % _N]
            if pairs is None:
                continue
            slots[bucket % _N] = None
            for at in range(0, len(pairs), 2):
                left = totals[pairs[at]] - pairs[at + 1]
                if left:
                    totals[pairs[at]] = left
                else:
                    del totals[pairs[at]]
        if not totals:
            self.slots = None

    def add(self, t_s: int, key: object, amount: int = 1) -> bool:
        bucket = self._bucket(t_s)
        if bucket is None:
            return False
        slots = self.slots
        if slots is None:
            slots = self.slots = [None] * _N
        pairs = slots[bucket % _N]
        if pairs is None:
            slots[bucket % _N] = self._slot(key, amount)
        else:
            try:
                at = pairs.index(key)
            except ValueError:
                at = 1  # odd: not a key's position
            if at % 2 == 0:
                pairs[at + 1] += amount
            else:  # new to this bucket (a key repeated in a slot would still expire right)
                pairs.extend((key, amount))
        self.totals[key] = self.totals.get(key, 0) + amount
        return True

    @staticmethod
    def _slot(key: object, amount: int) -> list:
        return [key, amount]

    @property
    def distinct(self) -> int:
        return len(self.totals)

    def top_count(self) -> int:
        return max(self.totals.values(), default=0)

    @property
    def buckets(self) -> dict[int, dict]:
        """{bucket: {key: amount}} of every non-empty bucket in the window."""
        slots, head = self.slots, self.head
        held: dict[int, dict] = {}
        if slots is None or head is None:
            return held
        for bucket in range(head - _N + 1, head + 1):
            pairs = slots[bucket % _N]
            if pairs:
                counts = held[bucket] = {}
                for at in range(0, len(pairs), 2):
                    counts[pairs[at]] = counts.get(pairs[at], 0) + pairs[at + 1]
        return held

    def _held(self) -> dict[int, dict]:
        return self.buckets

    def __reduce__(self):
        # Totals are rebuilt from the slots on load: a snapshot holds each amount once.
        return (SlidingCounter, (self.window_s, self.slots, self.head))


class SlidingIdCounter(SlidingCounter):
    """A SlidingCounter whose keys are 64-bit ids (`dedup.event_digest` of a song id):
    a slot is an `array('Q')`, and a snapshot holds its bytes. Counting songs by their
    strings made the window the costliest part of a busy jukebox's snapshot (54 of 98 µs
    to pickle a jukebox after an hour at 10 plays a minute, 2026-12-03).

    >>> songs = SlidingIdCounter(3600); songs.advance(7200)
    >>> songs.add(7100, 2**64 - 1), songs.add(7150, 2**64 - 1), songs.add(7150, 7)
    (True, True, True)
    >>> songs.distinct, songs.top_count()
    (2, 2)
    >>> import pickle; pickle.loads(pickle.dumps(songs)) == songs
    True
    """

    __slots__ = ()

    @staticmethod
    def _slot(key: object, amount: int) -> array:
        return array("Q", (key, amount))

    def __reduce__(self):
        slots = self.slots
        raw = None if slots is None else [None if pairs is None else pairs.tobytes() for pairs in slots]
        return (id_counter, (self.window_s, raw, self.head))


def id_counter(window_s: int, raw: list | None, head: int | None) -> SlidingIdCounter:
    """A SlidingIdCounter from its snapshot: each slot's bytes (native order)."""
    slots = None
    if raw is not None:
        slots = [None] * _N
        for at, held in enumerate(raw):
            if held is not None:
                slots[at] = array("Q")
                slots[at].frombytes(held)
    return SlidingIdCounter(window_s, slots, head)


class SlidingSet(_Window):
    """Which keys (customers, jukeboxes, countries) occurred in a bucketed sliding window.

    Each key keeps only the slot of its latest bucket: a window that is read for its
    members and their number needs no counts. A snapshot is one string of the keys and
    one byte per key, because pickling a day of a jukebox's payers key by key was its
    costliest part (34 of 52 µs, 2026-12-03). Keys are entity ids: no newline in them.

    >>> payers = SlidingSet(3600); payers.advance(7200)
    >>> payers.add(7100, "c1"), payers.add(7150, "c2"), payers.add(3000, "c3")
    (True, True, False)
    >>> sorted(payers), "c1" in payers, len(payers)
    (['c1', 'c2'], True, 2)
    >>> payers.advance(10_680)   # bucket 118 (c1 at 7100) has left
    >>> sorted(payers)
    ['c2']
    >>> import pickle; pickle.loads(pickle.dumps(payers)) == payers
    True
    """

    __slots__ = ("latest",)

    def __init__(self, window_s: int, latest: dict[str, int] | None = None, head: int | None = None) -> None:
        super().__init__(window_s, head)
        self.latest = {} if latest is None else latest  # key -> slot of its latest bucket

    def _expire(self, passed: int, head: int) -> None:
        if not self.latest:
            return
        if head - passed >= _N:
            self.latest = {}
            return
        leaving = {bucket % _N for bucket in range(passed + 1, head + 1)}
        for key in [key for key, slot in self.latest.items() if slot in leaving]:
            del self.latest[key]

    def add(self, t_s: int, key: str) -> bool:
        bucket = self._bucket(t_s)
        if bucket is None:
            return False
        slot = self.latest.get(key)
        # A slot stands for the one bucket of the window that fills it: head - (head - slot) % n.
        if slot is None or (self.head - slot) % _N > self.head - bucket:  # type: ignore[operator]
            self.latest[key] = bucket % _N
        return True

    def __contains__(self, key: object) -> bool:
        return key in self.latest

    def __iter__(self) -> Iterator[str]:
        return iter(self.latest)

    def __len__(self) -> int:
        return len(self.latest)

    @property
    def distinct(self) -> int:
        return len(self.latest)

    def _held(self) -> dict[str, int]:
        return self.latest

    def __reduce__(self):
        return (set_window, (self.window_s, "\n".join(self.latest), bytes(self.latest.values()), self.head))


def set_window(window_s: int, keys: str, slots: bytes, head: int | None) -> SlidingSet:
    """A SlidingSet from its snapshot: the keys joined by newlines, a byte (slot) per key."""
    return SlidingSet(window_s, dict(zip(keys.split("\n"), slots, strict=True)) if slots else {}, head)
