"""A sliding set of ids held as text: one string per bucket.

`SlidingSet` keeps a dict of each id's latest bucket: fast to read, ~100 bytes an id. A
jukebox's payers of the last day are written on every payment and read only when its
venue moves, and that dict was a third of a day-old jukebox's memory (36 of 116 KiB at
~400 payers; 6 KiB as text; `bench.state_memory`, 2026-12-04). Here a bucket holds its
ids as one string, `"\\nc1\\nc2\\n"`: about one byte per character of the ids. Reads split
the strings.

Ids are entity ids (`[A-Za-z0-9._:-]`): no newline or tab in them.

>>> payers = SlidingTextSet(3600); payers.advance(7200)
>>> payers.add(7100, "c1"), payers.add(7150, "c2"), payers.add(7160, "c1"), payers.add(3000, "c3")
(True, True, True, False)
>>> sorted(payers), "c1" in payers, "c3" in payers, len(payers)
(['c1', 'c2'], True, False, 2)
>>> payers.advance(10_740)   # buckets 120..179 now: 7100 and 7150 (bucket 119) have left
>>> sorted(payers), payers.slots
([], None)
>>> import pickle; payers.add(10_700, "c4"); pickle.loads(pickle.dumps(payers)) == payers
True
True
"""

from __future__ import annotations

from collections.abc import Iterator

from online_store.windows import _N, SlidingSet, _Window


class SlidingTextSet(_Window):
    """Which ids occurred in a bucketed sliding window (`SlidingSet`'s reads), as text.

    An id added in several buckets is in each of them; reads count it once.
    """

    __slots__ = ("slots",)

    def __init__(self, window_s: int, slots: list | None = None, head: int | None = None) -> None:
        super().__init__(window_s, head)
        self.slots = slots  # n strings "\nid\nid\n" ("": empty), None until the first add

    def _expire(self, passed: int, head: int) -> None:
        slots = self.slots
        if slots is None:
            return
        if head - passed >= _N:
            self.slots = None
            return
        for bucket in range(passed + 1, head + 1):
            slots[bucket % _N] = ""
        if not any(slots):
            self.slots = None  # an idle jukebox's window holds nothing

    def add(self, t_s: int, key: str) -> bool:
        bucket = self._bucket(t_s)
        if bucket is None:
            return False
        slots = self.slots
        if slots is None:
            slots = self.slots = [""] * _N
        at = bucket % _N
        held = slots[at]
        if not held:
            slots[at] = f"\n{key}\n"
        elif f"\n{key}\n" not in held:
            slots[at] = f"{held}{key}\n"
        return True

    def latest(self) -> dict[str, int]:
        """Each id and the slot of its latest bucket (what a `SlidingSet` holds)."""
        latest: dict[str, int] = {}
        slots, head = self.slots, self.head
        if slots is None or head is None:
            return latest
        for bucket in range(head - _N + 1, head + 1):  # oldest first: later buckets win
            held = slots[bucket % _N]
            if held:
                for key in held[1:-1].split("\n"):
                    latest[key] = bucket % _N
        return latest

    def __contains__(self, key: object) -> bool:
        needle = f"\n{key}\n"
        return any(needle in held for held in self.slots or ())

    def __iter__(self) -> Iterator[str]:
        return iter(self.latest())

    def __len__(self) -> int:
        return len(self.latest())

    @property
    def distinct(self) -> int:
        return len(self)

    def _held(self) -> dict[str, int]:
        return self.latest()

    def __reduce__(self):
        slots = self.slots
        return (text_set, (self.window_s, None if slots is None else "\t".join(slots), self.head))


def text_set(window_s: int, held: str | None, head: int | None) -> SlidingTextSet:
    """A SlidingTextSet from its snapshot: its slots' strings joined by tabs."""
    return SlidingTextSet(window_s, None if held is None else held.split("\t"), head)


def text_set_of(window: SlidingSet) -> SlidingTextSet:
    """A SlidingSet's ids in their latest buckets (snapshots from before 2026-12-04)."""
    converted = SlidingTextSet(window.window_s, None, window.head)
    head = window.head
    for key, slot in window.latest.items():
        bucket = head - (head - slot) % _N  # type: ignore[operator]
        converted.add(bucket * window.bucket_s, key)
    return converted
