"""Input events as JSON, built without pydantic in the hot path.

The dicts follow the contracts' field order and formats exactly (`schema_version`
first, RFC 3339 `...000Z` times, amounts as decimal text), so a record's bytes
equal `decode_event(raw, Contract).model_dump_json()`: the tests hold us to it.

>>> timestamp_text(1_795_795_200_123)
'2026-11-27T16:00:00.123000Z'
>>> import orjson
>>> from schemas import PlayEvent, decode_event
>>> raw = orjson.dumps(play_dict("e-1", "jb-0000001", "v-KE-0000001", "s-000007",
...                              1_795_795_200_123, 1, "py-1"))
>>> decode_event(raw, PlayEvent).model_dump_json().encode() == raw
True
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache

DAY_MS = 86_400_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@lru_cache(maxsize=128)
def _day_prefix(day: int) -> str:
    return (_EPOCH + timedelta(days=day)).strftime("%Y-%m-%dT")


_SECOND_PREFIX: dict[int, str] = {}  # epoch second -> "YYYY-MM-DDTHH:MM:SS", recent ones only


def _second_prefix(second: int) -> str:
    if len(_SECOND_PREFIX) > 8192:
        _SECOND_PREFIX.clear()
    day, rest = divmod(second, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    text = _SECOND_PREFIX[second] = f"{_day_prefix(day)}{hours:02d}:{minutes:02d}:{seconds:02d}"
    return text


def timestamp_text(ms: int) -> str:
    """RFC 3339 UTC text for epoch milliseconds, the `format_utc` form."""
    second, milli = divmod(ms, 1000)
    prefix = _SECOND_PREFIX.get(second) or _second_prefix(second)
    return f"{prefix}.{milli:03d}000Z"


def epoch_ms(moment: datetime) -> int:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("naive datetime: a UTC offset is required")
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def utc_datetime(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def play_dict(
    event_id: str, jukebox_id: str, venue_id: str, song_id: str, played_ms: int,
    credits_used: int, payment_id: str | None,
) -> dict:
    return {
        "schema_version": 1,
        "event_id": event_id,
        "jukebox_id": jukebox_id,
        "venue_id": venue_id,
        "song_id": song_id,
        "played_at": timestamp_text(played_ms),
        "credits_used": credits_used,
        "payment_id": payment_id,
    }


def payment_dict(
    event_id: str, payment_id: str, jukebox_id: str, venue_id: str, customer_id: str,
    amount: str, currency: str, method: str, status: str, occurred_ms: int,
) -> dict:
    return {
        "schema_version": 1,
        "event_id": event_id,
        "payment_id": payment_id,
        "jukebox_id": jukebox_id,
        "venue_id": venue_id,
        "customer_id": customer_id,
        "amount": amount,
        "currency": currency,
        "method": method,
        "status": status,
        "occurred_at": timestamp_text(occurred_ms),
    }


def location_dict(
    event_id: str, jukebox_id: str, lat: float, lon: float, accuracy_m: float, reported_ms: int
) -> dict:
    return {
        "schema_version": 1,
        "event_id": event_id,
        "jukebox_id": jukebox_id,
        "lat": lat,
        "lon": lon,
        "accuracy_m": accuracy_m,
        "reported_at": timestamp_text(reported_ms),
    }


def venue_dict(
    event_id: str, venue_id: str, jukebox_ids: list[str], country: str, lat: float, lon: float,
    timezone: str, opening_hours: list[dict], updated_ms: int, active: bool = True,
) -> dict:
    return {
        "schema_version": 1,
        "event_id": event_id,
        "venue_id": venue_id,
        "jukebox_ids": jukebox_ids,
        "country": country,
        "lat": lat,
        "lon": lon,
        "timezone": timezone,
        "opening_hours": opening_hours,
        "updated_at": timestamp_text(updated_ms),
        "active": active,
    }


def debezium_envelope(row: dict, ts_ms: int) -> dict:
    """A registry row as a Debezium create event (`op: c`, no schema)."""
    return {"before": None, "after": row, "op": "c", "ts_ms": ts_ms}
