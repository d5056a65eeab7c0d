"""Field types shared by every contract: ids, UTC timestamps, coordinates.

Timestamps are RFC 3339 strings on the wire and timezone-aware UTC datetimes in
memory; a naive timestamp (no offset) is refused, never guessed.

>>> from pydantic import TypeAdapter
>>> TypeAdapter(UtcDatetime).validate_python("2026-11-23T10:00:00+03:00").isoformat()
'2026-11-23T07:00:00+00:00'
>>> TypeAdapter(UtcDatetime).dump_json(TypeAdapter(UtcDatetime).validate_python("2026-11-23T07:00:00Z"))
b'"2026-11-23T07:00:00.000000Z"'
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field, PlainSerializer, StrictStr

SCHEMA_VERSION = 1
"""Version of every contract in this package; bumped together, with new topic names."""

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"

EntityId = Annotated[StrictStr, Field(pattern=ID_PATTERN, min_length=1, max_length=64)]
"""Jukebox, venue, song, payment, customer and event ids: 1-64 safe characters."""


def _require_timestamp_text(value: object) -> object:
    # Lax pydantic would read ints as Unix seconds; the wire format is RFC 3339 text.
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or len(value) > 40:
        raise ValueError("expected an RFC 3339 timestamp string with a UTC offset")
    return value


def _to_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("naive datetime: a UTC offset is required")
    return value.astimezone(UTC)


def format_utc(value: datetime) -> str:
    """RFC 3339 with microseconds and `Z`, the one form we write.

    >>> format_utc(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    '2026-01-02T03:04:05.000000Z'
    """
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


UtcDatetime = Annotated[
    datetime,
    BeforeValidator(_require_timestamp_text),
    AfterValidator(_to_utc),
    PlainSerializer(format_utc, return_type=str, when_used="json"),
]

Latitude = Annotated[float, Field(ge=-90.0, le=90.0, allow_inf_nan=False)]
Longitude = Annotated[float, Field(ge=-180.0, le=180.0, allow_inf_nan=False)]
