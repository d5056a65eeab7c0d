"""Records crossing the edges of the flow: raw input in, Kafka messages out.

`RawRecord` is what any source (a Kafka partition, a recorded file, a test list)
hands the flow; `OutMessage` is what the Kafka sink produces. Routing a raw record
(decode, admit by lateness, or dead-letter it) is a pure function here, so the
live flow and a replay share it.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

from online_store.admission import AdmissionPolicy, admission_verdict
from schemas.decoding import DecodeError, DecodeLimits, decode_event
from schemas.events import (
    DeviceLocationEvent,
    InputEvent,
    PaymentEvent,
    PlayEvent,
    VenueRegistration,
)
from schemas.outputs import DeadLetter
from schemas.topics import Topics

DEAD_LETTER_PAYLOAD_CAP = 8 * 1024  # bytes of the original kept (base64) in a dead letter


@dataclass(frozen=True, slots=True)
class RawRecord:
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None
    offset: int | None
    timestamp_ms: int  # arrival: the Kafka record timestamp
    position: int | None = None  # in a replay: the place in the history (replay_order.py)

    @property
    def arrival(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, tz=UTC)


@dataclass(frozen=True, slots=True)
class OutMessage:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Admitted:
    """A decoded event allowed into the windows, with when it arrived."""

    event: InputEvent
    arrival_ms: int
    position: int | None = None  # in a replay: the record's place in the history


_TIME_FIELD = {PlayEvent: "played_at", PaymentEvent: "occurred_at", DeviceLocationEvent: "reported_at"}


def contracts_by_topic(topics: Topics) -> dict[str, type[InputEvent]]:
    return {
        topics.plays: PlayEvent,
        topics.payments: PaymentEvent,
        topics.locations: DeviceLocationEvent,
        topics.venues: VenueRegistration,
    }


def dead_letter(
    raw: RawRecord, reason: str, field_name: str | None, detail: str, error_class: str,
    to_topic: str, seen_at: datetime,
) -> OutMessage:
    """A dead-letter (or late-event) message: why, where from, and the bytes (capped)."""
    payload = raw.value or b""
    letter = DeadLetter(
        reason=reason[:64],
        field=field_name[:128] if field_name else None,
        detail=detail[:500],
        error_class=error_class,
        source_topic=raw.topic,
        source_partition=raw.partition,
        source_offset=raw.offset,
        payload_b64=base64.b64encode(payload[:DEAD_LETTER_PAYLOAD_CAP]).decode(),
        payload_truncated=len(payload) > DEAD_LETTER_PAYLOAD_CAP,
        payload_size=len(payload),
        payload_sha256=hashlib.sha256(payload).hexdigest(),
        seen_at=seen_at,
    )
    headers = [
        ("jukebox.reason", reason.encode()),
        ("jukebox.source.topic", raw.topic.encode()),
        ("jukebox.source.partition", str(raw.partition).encode()),
        ("jukebox.source.offset", str(raw.offset).encode()),
    ]
    key = raw.key if raw.key is not None and len(raw.key) <= 256 else None
    return OutMessage(to_topic, key, letter.model_dump_json().encode(), headers)


def route_record(
    raw: RawRecord,
    contracts: dict[str, type[InputEvent]],
    topics: Topics,
    limits: DecodeLimits,
    policy: AdmissionPolicy,
) -> Admitted | OutMessage:
    """Decode and admit one record, or return the dead-letter/late-event message for it.

    Dead letters are stamped with the record's arrival time, not the wall clock, so a
    replay of the same records produces byte-identical dead letters.
    """
    contract = contracts.get(raw.topic)
    if contract is None:
        return dead_letter(raw, "unknown_topic", None, f"no contract for topic {raw.topic!r}",
                           "RoutingError", topics.dead_letters, raw.arrival)
    decoded = decode_event(raw.value or b"", contract, limits)
    if isinstance(decoded, DecodeError):
        return dead_letter(raw, decoded.reason, decoded.field, decoded.detail, "DecodeError",
                           topics.dead_letters, raw.arrival)
    if isinstance(decoded, VenueRegistration):
        return Admitted(decoded, raw.timestamp_ms, raw.position)  # reference data: no lateness applies
    verdict = admission_verdict(decoded.event_time.timestamp(), raw.timestamp_ms / 1000, policy)
    if verdict is not None:
        detail = f"event time {decoded.event_time.isoformat()} vs arrival {raw.arrival.isoformat()}"
        return dead_letter(raw, verdict, _TIME_FIELD[contract], detail, "LateEvent",
                           topics.late_events, raw.arrival)
    return Admitted(decoded, raw.timestamp_ms, raw.position)
