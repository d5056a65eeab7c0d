"""Malformed variants of good events, each with the reason `decode_event` must give.

A real fleet sends truncated JSON, firmware that writes the wrong type, stale
schema versions, clocks without an offset. Each variant here is built from a
real event, and its reason code is the promise the test suite checks.

>>> import random
>>> from schemas import PlayEvent, decode_event
>>> good = {"schema_version": 1, "event_id": "e-1", "jukebox_id": "jb-1", "venue_id": "v-1",
...         "song_id": "s-1", "played_at": "2026-11-27T20:00:00.000000Z", "credits_used": 1,
...         "payment_id": None}
>>> raw, reason = malformed_value("plays", good, random.Random(4))
>>> decode_event(raw, PlayEvent).reason == reason
True
"""

from __future__ import annotations

import random

import orjson

TIME_FIELDS = {"plays": "played_at", "payments": "occurred_at", "locations": "reported_at"}

# (name, weight, topics it applies to, expected DecodeError reason)
_VARIANTS: tuple[tuple[str, float, tuple[str, ...], str], ...] = (
    ("truncated", 3.0, ("plays", "payments", "locations"), "malformed_json"),
    ("naive_time", 2.0, ("plays", "payments", "locations"), "naive_datetime"),
    ("wrong_type", 2.0, ("plays", "payments", "locations"), "invalid_value"),
    ("old_firmware_version", 1.0, ("plays", "payments", "locations"), "unknown_schema_version"),
    ("missing_field", 1.0, ("plays", "payments", "locations"), "missing_field"),
    ("extra_field", 1.0, ("plays", "payments", "locations"), "unknown_field"),
    ("out_of_range", 1.0, ("plays", "locations"), "out_of_range"),
    ("negative_amount", 1.5, ("payments",), "invalid_value"),
    ("duplicate_key", 0.5, ("plays", "payments", "locations"), "duplicate_key"),
    ("array", 0.5, ("plays", "payments", "locations"), "not_an_object"),
    ("deep_nesting", 0.3, ("plays", "payments", "locations"), "nesting_too_deep"),
    ("oversized", 0.2, ("plays", "payments", "locations"), "message_too_large"),
)
_BY_TOPIC = {
    topic: ([v for v in _VARIANTS if topic in v[2]], [v[1] for v in _VARIANTS if topic in v[2]])
    for topic in TIME_FIELDS
}
_MISSING = {"plays": "song_id", "payments": "currency", "locations": "accuracy_m"}


def _mutated(name: str, topic: str, event: dict, rng: random.Random) -> bytes:
    value = dict(event)
    if name == "truncated":  # any proper prefix of an object is invalid JSON
        raw = orjson.dumps(value)
        return raw[: rng.randint(1, len(raw) - 2)]
    if name == "naive_time":
        value[TIME_FIELDS[topic]] = value[TIME_FIELDS[topic]].rstrip("Z")
    elif name == "wrong_type":
        if topic == "plays":
            value["credits_used"] = str(value["credits_used"])
        elif topic == "payments":
            value["amount"] = float(value["amount"]) + 0.5  # a float: minor units at risk
        else:
            value["lat"] = f"{value['lat']}N"
    elif name == "old_firmware_version":
        value["schema_version"] = rng.choice((0, 2))
    elif name == "missing_field":
        del value[_MISSING[topic]]
    elif name == "extra_field":
        value["firmware"] = "4.2.0-beta"
    elif name == "out_of_range":
        if topic == "plays":
            value["credits_used"] = -1
        else:
            value["lat"] = 90.0 + rng.uniform(0.5, 10.0)
    elif name == "negative_amount":
        value["amount"] = "-" + value["amount"]
    elif name == "duplicate_key":
        return b'{"event_id":"' + value["event_id"].encode() + b'",' + orjson.dumps(value)[1:]
    elif name == "array":
        return orjson.dumps([value])
    elif name == "deep_nesting":
        value["debug"] = orjson.loads(b"[" * 12 + b"]" * 12)
    elif name == "oversized":
        value["debug"] = "x" * (70 * 1024)
    return orjson.dumps(value)


def malformed_value(topic: str, event: dict, rng: random.Random) -> tuple[bytes, str]:
    """Bytes of a broken variant of `event` (a good event dict for `topic`), and the
    DecodeError reason decode_event gives for them."""
    variants, weights = _BY_TOPIC[topic]
    name, _, _, reason = rng.choices(variants, weights=weights)[0]
    return _mutated(name, topic, event, rng), reason
