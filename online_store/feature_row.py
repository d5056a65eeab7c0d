"""What the feature logic emits and the store writes: one entity's values as of a time.

>>> from datetime import UTC, datetime
>>> row = FeatureRow("device", "jb-1", 3, datetime(2026, 1, 1, tzinfo=UTC), {"device_plays_5m": 2})
>>> row.as_of_ms
1767225600000
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

FeatureValue = float | int | str | None


@dataclass(frozen=True, slots=True)
class FeatureRow:
    entity: str  # "device" | "customer" (online_store.definitions.Entity)
    entity_id: str
    version: int  # monotonic per entity: unique events applied so far; the upsert guard
    as_of: datetime  # the entity's clock: event time the values are as of (UTC)
    values: dict[str, FeatureValue]

    @property
    def as_of_ms(self) -> int:
        return ms_since_epoch(self.as_of)


def ms_since_epoch(moment: datetime) -> int:
    """Exact milliseconds since the Unix epoch of an aware datetime, floored (integer
    maths: no float rounding, and a third of the cost of `// timedelta(milliseconds=1)`)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
