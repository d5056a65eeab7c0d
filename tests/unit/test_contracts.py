"""Contracts: JSON Schemas are current and agree with the models; decoding limits hold."""

from __future__ import annotations

import json
import random

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.decoding import (
    DecodeError,
    DecodeLimits,
    _key_occurrences,
    decode_event,
    parse_json_object,
)
from schemas.events import PaymentEvent, PlayEvent, VenueRegistration
from schemas.json_schema import JSON_DIR, json_schema_bytes, json_schemas
from tests.sample_events import VENUE, sample_events


def test_committed_json_schemas_are_current():
    stale = [name for name, schema in json_schemas().items()
             if not (JSON_DIR / name).exists() or (JSON_DIR / name).read_bytes() != json_schema_bytes(schema)]
    assert not stale, f"run `jukebox schemas export`: stale {stale}"


def test_every_valid_event_validates_against_its_exported_schema():
    schemas = json_schemas()
    for event in sample_events(random.Random(1), 60, 3600) + [VENUE]:
        document = orjson.loads(event.model_dump_json())
        jsonschema.validate(document, schemas[f"{type(event).__name__}.v1.json"])


PLAY = {"event_id": "e1", "jukebox_id": "jb-1", "venue_id": "v1", "song_id": "s1",
        "played_at": "2026-11-23T20:00:00Z", "credits_used": 1}
PAY = {"event_id": "e2", "payment_id": "p1", "jukebox_id": "jb-1", "venue_id": "v1", "customer_id": "c1",
       "amount": "12.50", "currency": "KES", "method": "card", "status": "succeeded",
       "occurred_at": "2026-11-23T20:00:00+03:00"}


@pytest.mark.parametrize("raw, contract, reason, field", [
    (b"", PlayEvent, "empty_message", None),
    (b"x" * 70_000, PlayEvent, "message_too_large", None),
    (b'{"a": NaN}', PlayEvent, "malformed_json", None),
    (b'{"a": Infinity}', PlayEvent, "malformed_json", None),
    (b'"\\ud800"', PlayEvent, "malformed_json", None),
    (b"[1]", PlayEvent, "not_an_object", None),
    (orjson.dumps({**PLAY, "schema_version": 2}), PlayEvent, "unknown_schema_version", "schema_version"),
    (orjson.dumps({**PLAY, "played_at": "2026-11-23T20:00:00"}), PlayEvent, "naive_datetime", "played_at"),
    (orjson.dumps({**PLAY, "played_at": 1763900000}), PlayEvent, "invalid_value", "played_at"),
    (orjson.dumps(PLAY).replace(b"\"credits_used\":1", b"\"credits_used\":" + b"9" * 40), PlayEvent,
     "invalid_value", "credits_used"),
    (orjson.dumps({**PLAY, "credits_used": -1}), PlayEvent, "out_of_range", "credits_used"),
    (orjson.dumps({**PLAY, "song_id": "x" * 65}), PlayEvent, "out_of_range", "song_id"),
    (orjson.dumps({**PLAY, "extra": 1}), PlayEvent, "unknown_field", "extra"),
    (orjson.dumps({k: v for k, v in PLAY.items() if k != "song_id"}), PlayEvent, "missing_field", "song_id"),
    (orjson.dumps({**PAY, "amount": "-5"}), PaymentEvent, "invalid_value", None),
    (orjson.dumps({**PAY, "amount": 12.5}), PaymentEvent, "invalid_value", "amount"),
    (orjson.dumps({**PAY, "amount": "12.505"}), PaymentEvent, "invalid_value", None),
    (orjson.dumps({**PAY, "currency": "USD"}), PaymentEvent, "invalid_value", "currency"),
    (b'{"event_id":"e1","event_id":"e2"}', PlayEvent, "duplicate_key", None),
    # spaced, and a value starting with ':' makes up the `":` the spaced key lacks
    (b'{"event_id" :"e1", "event_id" :":"}', PlayEvent, "duplicate_key", None),
])
def test_bad_input_is_refused_with_a_precise_reason(raw, contract, reason, field):
    result = decode_event(raw, contract, DecodeLimits())
    assert isinstance(result, DecodeError), result
    assert result.reason == reason, result
    if field is not None:
        assert result.field == field, result


def test_a_duplicate_key_inside_a_string_value_is_not_a_duplicate():
    play = {**PLAY, "song_id": "s1"}
    raw = orjson.dumps(play).replace(b'"s1"', b'"s\\"song_id\\":1"')
    result = decode_event(raw, PlayEvent)
    assert isinstance(result, DecodeError) and result.reason != "duplicate_key"  # bad id chars


def test_debezium_envelopes_unwrap_to_a_registration_or_a_deregistration():
    row = orjson.loads(VENUE.model_dump_json())
    created = decode_event(orjson.dumps({"before": None, "after": row, "op": "c", "ts_ms": 1}), VenueRegistration)
    assert created == VENUE
    wrapped = {"schema": {}, "payload": {"before": row, "after": None, "op": "d", "ts_ms": 2}}
    deleted = decode_event(orjson.dumps(wrapped), VenueRegistration)
    assert isinstance(deleted, VenueRegistration) and deleted.active is False
    bad = decode_event(orjson.dumps({"before": None, "after": None, "op": "x"}), VenueRegistration)
    assert isinstance(bad, DecodeError) and bad.reason == "invalid_envelope"


def test_payment_amount_is_exact_in_minor_units():
    event = decode_event(orjson.dumps(PAY), PaymentEvent)
    assert event.amount_minor == 1250 and event.occurred_at.utcoffset().total_seconds() == 0


_TEXT = st.text(alphabet='ab"\\: \t{}[],\n', max_size=6)
_JSON = st.recursive(st.none() | st.integers(-5, 5) | _TEXT,
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
                     max_leaves=8)


@settings(max_examples=150, deadline=None)
@given(value=st.dictionaries(_TEXT, _JSON, max_size=5), duplicate=st.booleans(),
       separators=st.sampled_from([(",", ":"), (", ", ": "), (",", " : "), (",\n", ":\t")]))
def test_keys_are_counted_exactly_so_only_a_repeated_key_is_refused(value, duplicate, separators):
    """Keys are counted exactly (against json's own pairs) on any object, whatever the
    spacing, escapes and nesting: a repeated key is always refused, and nothing else is."""
    raw = json.dumps(value, separators=separators).encode()
    if duplicate and value:
        key = json.dumps(next(iter(value)))
        raw = raw[:-1] + f"{separators[0]}{key}{separators[1]}1}}".encode()
    pairs: list[int] = []
    json.loads(raw, object_pairs_hook=lambda items: pairs.append(len(items)))
    assert _key_occurrences(raw) == sum(pairs)
    parsed = parse_json_object(raw, DecodeLimits(max_depth=64))
    assert isinstance(parsed, DecodeError) == (duplicate and bool(value)), (raw, parsed)
