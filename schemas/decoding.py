"""Bytes -> frozen event, or a `DecodeError` value saying precisely what is wrong.

Errors are data (Bytewax's `oks`/`errs` split): the flow routes them to the
dead-letter topic and keeps running. Limits are enforced here, before a parser
or model ever sees the value, because orjson happily parses 100,000-deep nesting
and `json` accepts NaN.

>>> from schemas.events import DeviceLocationEvent, PlayEvent
>>> decode_event(b'{"event_id":"e1","jukebox_id":"jb-1","lat":95,"lon":3,'
...              b'"accuracy_m":5,"reported_at":"2026-11-23T20:00:00Z"}', DeviceLocationEvent)
DecodeError(reason='out_of_range', field='lat', detail='Input should be less than or equal to 90')
>>> decode_event(b'{"a":1,"a":2}', PlayEvent).reason
'duplicate_key'
>>> decode_event(b'[' * 10_000, PlayEvent).reason
'nesting_too_deep'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from schemas.events import InputEvent, VenueRegistration
from schemas.types import SCHEMA_VERSION

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024
DEFAULT_MAX_DEPTH = 8

# A JSON string literal (runs of plain bytes consumed at once, escapes one at a time).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
# Every string literal, in order, and whether a colon follows it (then it is a key).
# Matching strings one after another keeps the scan on string boundaries; a pattern for
# keys alone would restart at a value's closing quote and miscount.
_STRING_OR_KEY = re.compile(_STRING.pattern + rb'(\s*:)?')

_PYDANTIC_REASONS = {
    "missing": "missing_field",
    "extra_forbidden": "unknown_field",
    "greater_than": "out_of_range",
    "greater_than_equal": "out_of_range",
    "less_than": "out_of_range",
    "less_than_equal": "out_of_range",
    "too_long": "out_of_range",
    "too_short": "out_of_range",
    "string_too_long": "out_of_range",
    "string_too_short": "out_of_range",
    "finite_number": "not_finite",
    "timezone_aware": "naive_datetime",
    "literal_error": "invalid_value",
}


@dataclass(frozen=True, slots=True)
class DecodeError:
    """Why a record was refused: a stable reason code, the field, a human detail."""

    reason: str
    field: str | None
    detail: str


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH


def nesting_depth(raw: bytes) -> int:
    """Deepest `[`/`{` nesting outside string literals.

    >>> nesting_depth(b'{"a": [1, {"b": "[[[["}]}')
    3
    """
    depth = deepest = 0
    for ch in _STRING.sub(b'""', raw):
        if ch in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif ch in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


def _count_keys(value: Any) -> int:
    if isinstance(value, dict):
        count = len(value)
        for item in value.values():
            if type(item) in (dict, list):  # most events are flat: skip the recursion
                count += _count_keys(item)
        return count
    if isinstance(value, list):
        return sum(_count_keys(v) for v in value if type(v) in (dict, list))
    return 0


def parse_json_object(raw: bytes, limits: DecodeLimits = DecodeLimits()) -> dict | DecodeError:
    """Parse one JSON object under our limits: size, depth, no duplicate keys."""
    if not raw:
        return DecodeError("empty_message", None, "record value is empty")
    if len(raw) > limits.max_message_bytes:
        return DecodeError(
            "message_too_large", None, f"{len(raw)} bytes > limit {limits.max_message_bytes}"
        )
    # Cheap upper bound first: a message with few brackets cannot nest deeply.
    if raw.count(b"[") + raw.count(b"{") > limits.max_depth and nesting_depth(raw) > limits.max_depth:
        return DecodeError("nesting_too_deep", None, f"nesting deeper than {limits.max_depth}")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return DecodeError("malformed_json", None, str(exc)[:200])
    if not isinstance(value, dict):
        return DecodeError("not_an_object", None, f"top level is {type(value).__name__}")
    if _repeats_a_key(raw, value):
        return DecodeError("duplicate_key", None, "an object repeats a key")
    return value


# A closing quote followed by whitespace: a key may stand apart from its colon.
_QUOTE_SPACE = re.compile(rb'"[ \t\n\r]')


def _repeats_a_key(raw: bytes, value: dict) -> bool:
    """Whether an object in `raw` (parsed as `value`) writes some key twice.

    Every written key ends in `":` unless whitespace follows its closing quote. With no
    quote followed by whitespace, `raw.count(b'":')` is at least the keys written, so if it
    equals the distinct keys parsed, none repeats (~1 µs). Otherwise (spaced JSON, a value
    holding `":`) an exact scan of every string decides (~20 µs).

    >>> _repeats_a_key(b'{"a":1,"b":{"a":"x"}}', {"a": 1, "b": {"a": "x"}})
    False
    >>> _repeats_a_key(b'{"a" :1, "a\\":" : 2}', {"a": 1, 'a":': 2})
    False
    >>> _repeats_a_key(b'{"a":1, "a" :2}', {"a": 2})
    True
    """
    keys = _key_count(raw, value)
    if _QUOTE_SPACE.search(raw) is None and raw.count(b'":') == keys:
        return False
    return _key_occurrences(raw) != keys


def _key_occurrences(raw: bytes) -> int:
    """Keys written in `raw` (a valid JSON object), duplicates included: a scan of every
    string literal, counting those a colon follows.

    >>> _key_occurrences(b'{"a":1,"b":{"a":"x"}}'), _key_occurrences(b'{"a" :1, "a\\":" : 2}')
    (3, 2)
    """
    return sum(1 for match in _STRING_OR_KEY.finditer(raw) if match.group(1))


def _key_count(raw: bytes, value: dict) -> int:
    """Keys in the parsed object, nested ones included. One `{` and no `[` in the bytes
    means a flat object (a nested one would add a `{` or `[`): no recursion needed."""
    if raw.count(b"{") == 1 and b"[" not in raw:
        return len(value)
    return _count_keys(value)


def _unwrap_debezium(value: dict) -> dict | DecodeError:
    """Accept a venue row inside a Debezium change-event envelope."""
    envelope = value.get("payload", value) if "payload" in value and "schema" in value else value
    if not isinstance(envelope, dict) or "op" not in envelope:
        return value
    op = envelope.get("op")
    if op in ("c", "u", "r") and isinstance(envelope.get("after"), dict):
        return envelope["after"]
    if op == "d" and isinstance(envelope.get("before"), dict):
        return {**envelope["before"], "active": False}
    return DecodeError("invalid_envelope", "op", f"unsupported Debezium op {op!r} or missing row")


def decode_event(
    raw: bytes, contract: type[InputEvent], limits: DecodeLimits = DecodeLimits()
) -> InputEvent | DecodeError:
    value = parse_json_object(raw, limits)
    if isinstance(value, DecodeError):
        return value
    if contract is VenueRegistration:
        value = _unwrap_debezium(value)
        if isinstance(value, DecodeError):
            return value
    version = value.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION or isinstance(version, bool):
        return DecodeError(
            "unknown_schema_version", "schema_version", f"got {version!r}, expected {SCHEMA_VERSION}"
        )
    try:
        return contract.model_validate(value)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        reason = _PYDANTIC_REASONS.get(first["type"], "invalid_value")
        if first["type"] == "value_error" and "naive datetime" in first["msg"]:
            reason = "naive_datetime"
        return DecodeError(reason, field, first["msg"][:200])
