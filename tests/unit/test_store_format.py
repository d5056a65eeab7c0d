"""The storage format in code: keys, value encoding, row validation, TTLs."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from online_store.definitions import FEATURE_LIST, FEATURES
from online_store.feature_row import FeatureRow
from online_store.store_format import (
    METADATA_FIELDS,
    decoded_value,
    encoded_row,
    encoded_value,
    entity_id_of,
    entity_key,
    entity_key_pattern,
    key_ttl_s,
    utc_from_ms,
    utc_ms,
)

T0 = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
FLOAT = FEATURES["device_speed_kmh_last"]
INT = FEATURES["device_plays_1h"]
CURRENCY = FEATURES["device_revenue_by_currency_24h"]


def test_keys_follow_the_v1_layout_and_ids_round_trip():
    assert entity_key("jb", "device", "jb-004217") == "jb:device:v1:jb-004217"
    key = entity_key("t1:jb", "customer", "acct:7f.3_a")
    assert key == "t1:jb:customer:v1:acct:7f.3_a"
    assert entity_id_of(key, "t1:jb", "customer") == "acct:7f.3_a"
    with pytest.raises(ValueError, match="not a device key"):
        entity_id_of(key, "t1:jb", "device")


@pytest.mark.parametrize("bad_id", ["", "-leading-dash", "has space", "x" * 65, "é", "a\nb", 7])
def test_ids_outside_the_contract_are_refused(bad_id):
    with pytest.raises(ValueError, match="invalid device id"):
        entity_key("jb", "device", bad_id)


def test_unknown_entities_are_refused():
    with pytest.raises(ValueError, match="unknown entity 'venue'"):
        entity_key("jb", "venue", "v-1")
    with pytest.raises(ValueError, match="unknown entity"):
        key_ttl_s("song")


def test_scan_patterns_escape_the_prefix():
    assert entity_key_pattern("jb", "device") == "jb:device:v1:*"
    assert entity_key_pattern("a*b?[c]\\", "customer") == "a\\*b\\?\\[c\\]\\\\:customer:v1:*"


def test_key_ttls_cover_the_longest_feature_plus_the_margin():
    assert key_ttl_s("device", margin_s=0) == max(f.ttl_s for f in FEATURE_LIST if f.entity == "device")
    assert key_ttl_s("device") == 86_400 + 3600 and key_ttl_s("customer") == 3600 + 3600
    with pytest.raises(ValueError):
        key_ttl_s("device", margin_s=-1)


def test_times_are_exact_utc_milliseconds():
    assert utc_ms(datetime(1970, 1, 1, tzinfo=UTC)) == 0
    assert utc_ms(datetime(2026, 1, 1, 3, tzinfo=timezone(timedelta(hours=3)))) == utc_ms(
        datetime(2026, 1, 1, tzinfo=UTC))
    assert utc_ms(datetime(1969, 12, 31, 23, 59, 59, 999_500, tzinfo=UTC)) == -1  # floored
    assert utc_from_ms(utc_ms(T0)) == T0
    with pytest.raises(ValueError, match="naive"):
        utc_ms(datetime(2026, 1, 1))


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_round_trip_bit_for_bit(number):
    text = encoded_value(FLOAT, number)
    back = decoded_value(FLOAT, text)
    assert back == number and math.copysign(1, back) == math.copysign(1, number)
    assert text.isascii() and float(text) == number


@given(st.integers(min_value=-(2**63), max_value=2**63))
def test_ints_round_trip(number):
    assert decoded_value(INT, encoded_value(INT, number)) == number


def test_encodings_are_the_documented_texts():
    assert [encoded_value(FLOAT, v) for v in (0.1, 3600, 1e-05, 1.5e16, -0.0)] == [
        "0.1", "3600.0", "1e-05", "1.5e+16", "-0.0"]
    assert encoded_value(INT, 42) == "42"
    assert encoded_value(CURRENCY, '{ "XOF": "1500",  "KES": "12.50" }') == '{"KES":"12.50","XOF":"1500"}'
    assert encoded_value(CURRENCY, {"NGN": 125_000}) == '{"NGN":125000}'
    assert encoded_value(CURRENCY, "{}") == "{}"


@pytest.mark.parametrize(("feature", "value", "error"), [
    (INT, 1.0, TypeError), (INT, True, TypeError), (INT, "3", TypeError),
    (FLOAT, "0.5", TypeError), (FLOAT, False, TypeError), (FLOAT, math.nan, ValueError),
    (FLOAT, -math.inf, ValueError), (CURRENCY, "[1]", TypeError),
    (CURRENCY, '{"KES":"1e3"}', ValueError), (CURRENCY, '{"KES":true}', ValueError),
    (CURRENCY, '{"KES":"١٢"}', ValueError), (CURRENCY, {"KES": 2**70}, ValueError),
    (CURRENCY, 5, TypeError),
])
def test_values_of_the_wrong_shape_are_refused(feature, value, error):
    with pytest.raises(error, match=feature.name):
        encoded_value(feature, value)


def test_a_row_names_fields_to_set_and_fields_to_delete():
    row = encoded_row(FeatureRow("device", "jb-1", 3, T0, {
        "device_plays_1h": 2, "device_speed_kmh_last": None, "device_top_song_share_1h": 0.5}))
    assert row.sets == (("device_plays_1h", "2"), ("device_top_song_share_1h", "0.5"))
    assert row.deletes == ("device_speed_kmh_last",)
    assert row.field_names == {"device_plays_1h", "device_speed_kmh_last", "device_top_song_share_1h"}
    assert (row.version, row.as_of_ms) == (3, utc_ms(T0))


def test_bad_rows_say_which_entity_and_what_is_wrong():
    with pytest.raises(ValueError, match=r"jb:device:v1:jb-9: 'customer_payments_10m' is not a declared"):
        encoded_row(FeatureRow("device", "jb-9", 1, T0, {"customer_payments_10m": 1}))
    with pytest.raises(ValueError, match=r"jb-9: device_plays_1h is an int feature"):
        encoded_row(FeatureRow("device", "jb-9", 1, T0, {"device_plays_1h": 0.5}))
    with pytest.raises(ValueError, match="version must be an int"):
        encoded_row(FeatureRow("device", "jb-9", True, T0, {}))


def test_metadata_fields_cannot_collide_with_feature_names():
    assert not set(METADATA_FIELDS) & set(FEATURES)
    assert all(name.startswith("_") for name in METADATA_FIELDS)
    assert not any(name.startswith("_") for name in FEATURES)
