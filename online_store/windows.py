"""Sliding event-time windows made of buckets, updated incrementally.

A window of `window_s` seconds is `BUCKETS_PER_WINDOW` buckets of
`window_s // BUCKETS_PER_WINDOW` seconds. The window "as of" a clock T holds
the buckets `head - n < b <= head` with `head = T // bucket_s`. Adding and
expiring keep a running total, so reading a value is O(1) and the result
depends only on the set of events, never on their arrival order.

>>> w = SlidingSum(3600)
>>> w.advance(7200); w.add(7100); w.add(7199, 2); w.add(3000)
True
True
False
>>> w.total
3
>>> w.advance(10_680)   # buckets 119..178 now: 7100 (bucket 118) has left
>>> w.total
2
>>> w.advance(10_740)   # and now 7199 (bucket 119) too
>>> w.total
0
"""

from __future__ import annotations

from dataclasses import dataclass, field

from online_store.definitions import BUCKETS_PER_WINDOW


@dataclass(slots=True)
class SlidingSum:
    """Running sum of numbers (ints stay exact) over a bucketed sliding window."""

    window_s: int
    buckets: dict[int, int | float] = field(default_factory=dict)
    total: int | float = 0
    head: int | None = None
    # Derived, never saved: the bucket width, and the oldest bucket held (so moving the
    # window's end scans the buckets only when one of them leaves).
    bucket_s: int = field(init=False, repr=False, compare=False)
    oldest: int | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.bucket_s = self.window_s // BUCKETS_PER_WINDOW
        self.oldest = min(self.buckets) if self.buckets else None

    def advance(self, clock_s: int) -> None:
        """Move the window's end to the bucket of `clock_s` (never backwards)."""
        head = clock_s // self.bucket_s
        if self.head is not None and head <= self.head:
            return
        self.head = head
        oldest_kept = head - BUCKETS_PER_WINDOW + 1
        if self.oldest is None or self.oldest >= oldest_kept:
            return
        buckets = self.buckets
        for bucket in [b for b in buckets if b < oldest_kept]:
            self.total -= buckets.pop(bucket)
        self.oldest = min(buckets) if buckets else None

    def replace_buckets(self, buckets: dict[int, int | float]) -> None:
        """Hold exactly `buckets` (inside the window), total recomputed."""
        self.buckets = buckets
        self.total = sum(buckets.values())
        self.oldest = min(buckets) if buckets else None

    def __reduce__(self):
        # Explicit and flat: snapshots pickle every touched entity each epoch.
        return (SlidingSum, (self.window_s, self.buckets, self.total, self.head))

    def add(self, t_s: int, amount: float = 1) -> bool:
        """Count `amount` at event time `t_s`; False when it is outside the window."""
        bucket = t_s // self.bucket_s
        head = self.head
        if head is None or bucket <= head - BUCKETS_PER_WINDOW or bucket > head:
            return False
        buckets = self.buckets
        buckets[bucket] = buckets.get(bucket, 0) + amount
        self.total += amount
        if self.oldest is None or bucket < self.oldest:
            self.oldest = bucket
        return True


@dataclass(slots=True)
class SlidingCounter:
    """Multiset of keys (songs, devices, countries) over a bucketed sliding window."""

    window_s: int
    buckets: dict[int, dict] = field(default_factory=dict)  # plain dicts: Counter pickles slowly
    totals: dict = field(default_factory=dict)
    head: int | None = None
    bucket_s: int = field(init=False, repr=False, compare=False)  # derived, as in SlidingSum
    oldest: int | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.bucket_s = self.window_s // BUCKETS_PER_WINDOW
        self.oldest = min(self.buckets) if self.buckets else None

    def __reduce__(self):
        return (SlidingCounter, (self.window_s, self.buckets, self.totals, self.head))

    def advance(self, clock_s: int) -> None:
        head = clock_s // self.bucket_s
        if self.head is not None and head <= self.head:
            return
        self.head = head
        oldest_kept = head - BUCKETS_PER_WINDOW + 1
        if self.oldest is None or self.oldest >= oldest_kept:
            return
        totals, buckets = self.totals, self.buckets
        for bucket in [b for b in buckets if b < oldest_kept]:
            for key, amount in buckets.pop(bucket).items():
                left = totals[key] - amount
                if left:
                    totals[key] = left
                else:
                    del totals[key]
        self.oldest = min(buckets) if buckets else None

    def add(self, t_s: int, key: object, amount: int = 1) -> bool:
        bucket = t_s // self.bucket_s
        head = self.head
        if head is None or bucket <= head - BUCKETS_PER_WINDOW or bucket > head:
            return False
        counts = self.buckets.get(bucket)
        if counts is None:
            counts = self.buckets[bucket] = {}
            if self.oldest is None or bucket < self.oldest:
                self.oldest = bucket
        counts[key] = counts.get(key, 0) + amount
        self.totals[key] = self.totals.get(key, 0) + amount
        return True

    @property
    def distinct(self) -> int:
        return len(self.totals)

    def top_count(self) -> int:
        return max(self.totals.values(), default=0)
