"""Pure parts of the store: batch coalescing, decoding stored hashes, in-memory expiry,
the retry schedule and redaction. The shared contract is in tests/contract/."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflows.features_cli import age_text
from online_store.feature_row import FeatureRow
from online_store.redis_store import backoff_delays, redacted
from online_store.store import InMemoryFeatureStore, WriteResult, coalesced_rows, entity_features
from online_store.store_format import encoded_row, key_ttl_s

T0 = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
FIELD_SETS = ({"device_plays_5m": 1}, {"device_plays_5m": 1, "device_speed_kmh_last": 2.5},
              {"device_speed_kmh_last": None})


def rows_strategy():
    row = st.builds(
        lambda entity_id, version, shape, n: FeatureRow(
            "device", entity_id, version, T0 + timedelta(seconds=version),
            {k: (None if v is None else type(v)(n)) for k, v in FIELD_SETS[shape].items()}),
        st.sampled_from(["jb-1", "jb-2", "jb-3"]), st.integers(0, 12),
        st.integers(0, len(FIELD_SETS) - 1), st.integers(0, 99))
    return st.lists(row, max_size=25)


@settings(max_examples=300, deadline=None)
@given(before=rows_strategy(), batch=rows_strategy())
def test_a_coalesced_batch_ends_exactly_like_its_rows_applied_one_by_one(before, batch):
    batched, one_by_one = InMemoryFeatureStore(), InMemoryFeatureStore()
    for store in (batched, one_by_one):
        store.write(before, T0)  # whatever was stored already
    result = batched.write(batch, T0)
    for row in batch:
        one_by_one.write([row], T0)
    ids = ["jb-1", "jb-2", "jb-3"]
    assert batched.read_many("device", ids, T0) == one_by_one.read_many("device", ids, T0)
    assert result.applied + result.stale + result.superseded == len(batch)


def test_coalescing_keeps_the_highest_version_and_the_last_on_ties():
    a1 = encoded_row(FeatureRow("device", "jb-1", 4, T0, {"device_plays_5m": 1}))
    a2 = encoded_row(FeatureRow("device", "jb-1", 4, T0, {"device_plays_5m": 2}))
    b = encoded_row(FeatureRow("device", "jb-2", 9, T0, {"device_plays_5m": 3}))
    a3 = encoded_row(FeatureRow("device", "jb-1", 6, T0, {"device_plays_5m": 4}))
    assert coalesced_rows([a1, b, a2]) == [a2, b]
    assert coalesced_rows([a1, b, a2, a3]) == [a3, b]
    other_fields = encoded_row(FeatureRow("device", "jb-1", 7, T0, {"device_plays_1h": 1}))
    assert coalesced_rows([a1, other_fields, a3]) == [a1, other_fields, a3]


def test_in_memory_records_expire_one_key_ttl_after_their_last_write():
    store = InMemoryFeatureStore(ttl_margin_s=60)
    ttl = timedelta(seconds=key_ttl_s("customer", margin_s=60))
    row = FeatureRow("customer", "acct-1", 5, T0, {"customer_payments_10m": 3})
    store.write([row], written_at=T0)
    assert store.read("customer", "acct-1", T0 + ttl - timedelta(milliseconds=1)).version == 5
    assert store.read("customer", "acct-1", T0 + ttl) is None
    # Like an expired Redis key: the guard is gone, an older version is accepted again.
    older = FeatureRow("customer", "acct-1", 2, T0, {"customer_payments_10m": 1})
    assert store.write([row], written_at=T0) == WriteResult(1, 0)
    assert store.write([older], written_at=T0 + ttl) == WriteResult(1, 0)
    assert store.read("customer", "acct-1", T0 + ttl).version == 2


def test_decoding_ignores_unknown_fields_and_accepts_bytes():
    stored = {b"_version": b"3", b"_as_of_ms": b"1795464000000", b"_written_ms": b"1795464000500",
              b"device_plays_5m": b"7", b"device_added_in_a_later_release": b"1",
              b"customer_payments_10m": b"2"}
    found = entity_features("device", "jb-1", stored, now=T0 + timedelta(seconds=30))
    assert set(found.readings) == {"device_plays_5m"}
    assert found.value("device_plays_5m") == 7 and found.version == 3
    assert found.readings["device_plays_5m"].age == timedelta(seconds=30)
    assert found.written_at == T0 + timedelta(milliseconds=500)
    assert entity_features("device", "jb-1", {}, now=T0) is None


@pytest.mark.parametrize("fields", [
    {"_as_of_ms": "1", "_written_ms": "1"},
    {"_version": "x", "_as_of_ms": "1", "_written_ms": "1"},
    {"_version": "1", "_as_of_ms": "1", "_written_ms": "1", "device_plays_5m": "1.5"},
])
def test_corrupt_hashes_fail_loudly(fields):
    with pytest.raises(ValueError, match="jb-1"):
        entity_features("device", "jb-1", fields, now=T0)


def test_write_results_add_up():
    assert WriteResult(1, 2, 3) + WriteResult(10, 20) == WriteResult(11, 22, 3)


def test_the_retry_schedule_doubles_up_to_its_cap():
    assert backoff_delays(1, 0.05, 2.0) == []
    assert backoff_delays(6, 0.05, 0.5) == [0.05, 0.1, 0.2, 0.4, 0.5]


def test_redaction_covers_raw_and_url_quoted_secrets():
    assert redacted("auth p@ss:w/rd failed at redis://u:p%40ss%3Aw%2Frd@h", ["p@ss:w/rd", None]) == (
        "auth *** failed at redis://u:***@h")


@pytest.mark.parametrize(("age", "text"), [
    (timedelta(seconds=1.25), "1.25s"), (timedelta(seconds=42), "42s"),
    (timedelta(minutes=3, seconds=5), "3m 05s"), (timedelta(hours=2), "2h 00m"),
    (timedelta(days=3, hours=4, minutes=59), "3d 04h"), (timedelta(seconds=-90), "-1m 30s"),
])
def test_ages_print_compactly(age, text):
    assert age_text(age) == text
