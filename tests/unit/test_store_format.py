"""The storage format in code: keys, value encoding, row validation, TTLs."""

from __future__ import annotations

import math
import random
import struct
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
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
    row_plan,
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


def _reference_row(row: FeatureRow) -> tuple[tuple, tuple] | type[ValueError]:
    """Field by field with `encoded_value`: what `encoded_row` must equal (or ValueError)."""
    sets, deletes = [], []
    for name, value in row.values.items():
        if value is None:
            deletes.append(name)
            continue
        try:
            sets.append((name, encoded_value(FEATURES[name], value)))
        except (TypeError, ValueError):
            return ValueError
    return tuple(sets), tuple(deletes)


def _assert_encodes_as_reference(row: FeatureRow) -> None:
    expected = _reference_row(row)
    if expected is ValueError:
        with pytest.raises(ValueError, match=row.entity_id):
            encoded_row(row)
        return
    encoded = encoded_row(row)
    assert (encoded.sets, encoded.deletes) == expected
    assert encoded.field_names == set(row.values)


_VALUES = {
    "int": st.one_of(st.none(), st.integers(), st.integers(-10, 10**6), st.booleans(), st.floats()),
    "float": st.one_of(st.none(), st.floats(), st.floats(-1e6, 1e6), st.integers(), st.booleans()),
    "currency_map": st.one_of(
        st.none(), st.just("{}"), st.just('{"KES":"12.50","XOF":"1500"}'), st.just('{"KES":"1e3"}'),
        st.dictionaries(st.sampled_from(["KES", "XOF", "kes", "US"]),
                        st.one_of(st.integers(), st.from_regex(r"-?[0-9]{1,4}(\.[0-9]{1,2})?", fullmatch=True)),
                        max_size=3).map(lambda d: orjson.dumps(d).decode())),
}


# Its nested strategies can be slow to draw on a loaded machine (the health check failed
# once with the unit tests on two workers, 2026-12-04); the examples and assertions are
# unchanged.
@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["device", "customer"]).flatmap(lambda entity: st.tuples(
    st.just(entity),
    st.lists(st.sampled_from([f for f in FEATURE_LIST if f.entity == entity]), unique=True).flatmap(
        lambda features: st.fixed_dictionaries({f.name: _VALUES[f.value_type] for f in features})))))
def test_rows_encode_as_their_fields_do_one_by_one(entity_values):
    # encoded_row encodes a row's numbers in one call when it can (store_format.RowPlan);
    # whatever the values, the result (or the refusal) is that of each field on its own.
    entity, values = entity_values
    _assert_encodes_as_reference(FeatureRow(entity, "jb-7", 1, T0, values))


@pytest.mark.parametrize("odd", [
    math.nan, math.inf, -math.inf, 1e-05, -2.5e-07, 5e-324, 1.5e16, -0.0, 2**70, -(2**64), True, 3,
])
def test_a_row_with_one_odd_number_among_plain_ones_encodes_as_its_fields(odd):
    values = {"device_plays_1h": 4, "device_top_song_share_1h": 0.25, "device_speed_kmh_last": odd,
              "device_revenue_by_currency_24h": '{"KES":"12.50"}', "device_venue_distance_km_last": None}
    _assert_encodes_as_reference(FeatureRow("device", "jb-6", 1, T0, values))
    _assert_encodes_as_reference(FeatureRow("device", "jb-6", 1, T0, {**values, "device_plays_5m": odd}))


def test_floats_of_every_magnitude_encode_as_repr():
    # The one-call path must print every double as `repr` does (FORMAT.md). Even rows hold
    # magnitudes that print without an exponent (most take the one-call path, checked),
    # odd rows random bit patterns (exponents, subnormals: handed back field by field).
    draw = random.Random(20261203)
    floats = [f.name for f in FEATURE_LIST if f.entity == "device" and f.value_type == "float"]
    planned = 0
    for i in range(4000):
        if i % 2:
            values = [struct.unpack("d", struct.pack("Q", draw.getrandbits(64)))[0] for _ in floats]
        else:
            values = [draw.random() * 10.0 ** draw.randint(-3, 15) * draw.choice([1, -1]) for _ in floats]
        row = FeatureRow("device", "jb-8", 1, T0, dict(zip(floats, values, strict=True)))
        _assert_encodes_as_reference(row)
        plan = row_plan("device", tuple(row.values), tuple(map(type, row.values.values())))
        planned += plan.texts(row.values) is not None
    assert planned > 1500, planned


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
