"""Which event ids an entity has already applied, kept as long as they can matter.

Ids are stored as stable 64-bit digests (not Python's per-process `hash`, which
would change after a restart from a recovery snapshot), grouped by the hour of
their event time. A duplicate carries the same event time as its original, so it
is looked up in one hour's set; hours older than the horizon are dropped, since
an event that old falls outside every window anyway.

>>> seen = SeenEvents(horizon_s=7200)
>>> seen.first_sighting("play:e1", 3600), seen.first_sighting("play:e1", 3600)
(True, False)
>>> seen.forget_before(3600 * 10); len(seen.hours)
0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from hashlib import blake2b


def event_digest(key: str) -> int:
    return int.from_bytes(blake2b(key.encode(), digest_size=8).digest(), "little")


@dataclass(slots=True)
class SeenEvents:
    horizon_s: int
    hours: dict[int, set[int]] = field(default_factory=dict)

    def __reduce__(self):
        return (SeenEvents, (self.horizon_s, self.hours))

    def first_sighting(self, key: str, event_s: int) -> bool:
        """True the first time `key` is seen (and remembers it), False for a repeat."""
        bucket = self.hours.setdefault(event_s // 3600, set())
        digest = event_digest(key)
        if digest in bucket:
            return False
        bucket.add(digest)
        return True

    def forget_before(self, clock_s: int) -> None:
        oldest = (clock_s - self.horizon_s) // 3600 - 1
        for hour in [h for h in self.hours if h < oldest]:
            del self.hours[hour]

    def __len__(self) -> int:
        return sum(len(ids) for ids in self.hours.values())
