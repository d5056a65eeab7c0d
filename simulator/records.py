"""What the simulator hands a producer: records in delivery order, with metadata.

`timestamp_ms` is when the record reaches the producer (its Kafka timestamp),
not the event time inside it: a backlog uploaded after an outage carries old
event times and a late `timestamp_ms`. `flags` says which imperfections a record
carries, so tests can account for them; they are never part of the bytes.

>>> record = SimRecord("plays", b"jb-0000001", b"{...}", 1_795_795_200_000, (DUPLICATE,))
>>> record.is_duplicate, record.malformed_reason
(True, None)
>>> SimRecord("plays", b"k", b"{", 0, (malformed_flag("malformed_json"),)).malformed_reason
'malformed_json'
"""

from __future__ import annotations

from typing import NamedTuple

from schemas.events import (
    DeviceLocationEvent,
    InputEvent,
    PaymentEvent,
    PlayEvent,
    VenueRegistration,
)

DUPLICATE = "duplicate"  # the same bytes sent again (at-least-once resend)
OUT_OF_ORDER = "out_of_order"  # delivered after records with later event times
LATE = "late"  # buffered during an outage, uploaded afterwards with its old event time
CLOCK_SKEW = "clock_skew"  # the device clock was far off: event time +24 h or -8 days
DEBEZIUM = "debezium"  # a venue row inside a Debezium change-event envelope
MALFORMED_PREFIX = "malformed:"  # followed by the DecodeError reason decode_event must give

EVENT_TOPICS: dict[str, type[InputEvent]] = {
    "plays": PlayEvent,
    "payments": PaymentEvent,
    "locations": DeviceLocationEvent,
    "venues": VenueRegistration,
}
"""Topic attribute (on schemas.topics.Topics) -> the contract its records decode into."""

NO_FLAGS: tuple[str, ...] = ()


def malformed_flag(reason: str) -> str:
    return MALFORMED_PREFIX + reason


class SimRecord(NamedTuple):
    topic_attr: str  # attribute of schemas.topics.Topics: plays, payments, ..., labels, song_catalog
    key: bytes
    value: bytes
    timestamp_ms: int  # producer (arrival) time
    flags: tuple[str, ...] = NO_FLAGS

    @property
    def malformed_reason(self) -> str | None:
        for flag in self.flags:
            if flag.startswith(MALFORMED_PREFIX):
                return flag[len(MALFORMED_PREFIX):]
        return None

    @property
    def is_duplicate(self) -> bool:
        return DUPLICATE in self.flags

    @property
    def contract(self) -> type[InputEvent] | None:
        """The input contract this record should decode into (None for labels and songs)."""
        return EVENT_TOPICS.get(self.topic_attr)
