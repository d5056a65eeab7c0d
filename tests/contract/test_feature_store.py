"""The FeatureStore contract, run against every implementation.

The Redis store runs against the real server from the session fixture (marked
integration); the in-memory store needs nothing. Times are injected: rows are as
of a fixed event time and reads pass their own `now`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from online_store.definitions import FEATURES, features_of
from online_store.feature_row import FeatureRow
from online_store.redis_store import RedisFeatureStore, redis_client_from
from online_store.store import FeatureStore, InMemoryFeatureStore, WriteResult

T0 = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
WRITTEN = T0 + timedelta(seconds=2)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
def store(request) -> Iterator[FeatureStore]:
    if request.param == "memory":
        yield InMemoryFeatureStore()
        return
    client = redis_client_from(request.getfixturevalue("redis_url"))
    yield RedisFeatureStore(client, request.getfixturevalue("redis_key_prefix"))
    client.close()


def device_values(n: int) -> dict:
    """Every device feature, each value a function of n (so rows differ by version)."""
    values: dict = {}
    for feature in features_of("device"):
        if feature.value_type == "int":
            values[feature.name] = n
        elif feature.value_type == "float":
            values[feature.name] = n / 7
        else:
            values[feature.name] = f'{{"KES":"{n}.50","XOF":"{n}"}}'
    return values


def device_row(entity_id: str, version: int, as_of: datetime | None = None, **values) -> FeatureRow:
    """A row whose event time grows with its version (the guard compares event times)."""
    as_of = T0 + timedelta(milliseconds=version) if as_of is None else as_of
    return FeatureRow("device", entity_id, version, as_of, values or device_values(version))


def stored_values(store: FeatureStore, entity: str, entity_id: str, now: datetime = T0) -> dict | None:
    found = store.read(entity, entity_id, now)
    return None if found is None else {name: r.value for name, r in found.readings.items()}


def test_both_implementations_satisfy_the_protocol(store):
    assert isinstance(store, FeatureStore)


def test_newer_version_wins_older_is_ignored_and_equal_overwrites(store):
    assert store.write([device_row("jb-1", 5)], WRITTEN) == WriteResult(applied=1, stale=0)
    assert store.write([device_row("jb-1", 4)], WRITTEN) == WriteResult(applied=0, stale=1)
    found = store.read("device", "jb-1", T0)
    assert found.version == 5 and stored_values(store, "device", "jb-1") == device_values(5)
    assert store.write([device_row("jb-1", 5, device_plays_5m=999)], WRITTEN) == WriteResult(1, 0)
    assert stored_values(store, "device", "jb-1")["device_plays_5m"] == 999
    assert store.write([device_row("jb-1", 6)], WRITTEN) == WriteResult(applied=1, stale=0)
    assert store.read("device", "jb-1", T0).version == 6
    assert stored_values(store, "device", "jb-1") == device_values(6)


def test_rewriting_a_batch_changes_nothing(store):
    batch = [device_row(f"jb-{i}", i + 1) for i in range(50)]
    ids = [row.entity_id for row in batch]
    assert store.write(batch, WRITTEN) == WriteResult(applied=50, stale=0)
    before = store.read_many("device", ids, T0)
    assert store.write(batch, WRITTEN) == WriteResult(applied=50, stale=0)
    assert store.read_many("device", ids, T0) == before


def test_none_deletes_a_field_and_unnamed_fields_keep_their_values(store):
    store.write([device_row("jb-1", 1, device_speed_kmh_last=12.5, device_plays_5m=3)], WRITTEN)
    store.write([device_row("jb-1", 2, device_speed_kmh_last=None, device_plays_1h=4)], WRITTEN)
    found = store.read("device", "jb-1", T0)
    assert "device_speed_kmh_last" not in found.readings
    assert found.value("device_speed_kmh_last") is None
    assert stored_values(store, "device", "jb-1") == {"device_plays_5m": 3, "device_plays_1h": 4}


def test_values_round_trip_exactly(store):
    floats = {"device_top_song_share_1h": 0.1, "device_revenue_usd_1h": 1 / 3,
              "device_revenue_usd_24h": 1e-300, "device_venue_distance_km_last": 2.0**53,
              "device_speed_kmh_last": 3600}  # an int given for a float feature reads back as float
    values = {"device_plays_24h": 10**15, "device_plays_5m": 0,
              "device_revenue_by_currency_24h": {"XOF": "1500", "KES": "12.50"}, **floats}
    store.write([device_row("jb-1", 1, **values)], WRITTEN)
    found = stored_values(store, "device", "jb-1")
    assert found == {**values, "device_revenue_by_currency_24h": '{"KES":"12.50","XOF":"1500"}'}
    assert type(found["device_speed_kmh_last"]) is float and type(found["device_plays_24h"]) is int


def test_reads_carry_event_time_age_and_staleness(store):
    as_of = T0 - timedelta(minutes=5)
    store.write([device_row("jb-1", 1, as_of)], WRITTEN)
    store.write([FeatureRow("customer", "acct-1", 1, as_of, {"customer_payments_10m": 2})], WRITTEN)

    at_ttl = store.read("device", "jb-1", now=T0)  # age = 300 s = ttl of the 5-minute window
    plays_5m = at_ttl.readings["device_plays_5m"]
    assert (plays_5m.as_of, plays_5m.age, plays_5m.stale, plays_5m.unit) == (as_of, timedelta(minutes=5), False, "plays")
    assert at_ttl.as_of == as_of and at_ttl.written_at == WRITTEN and at_ttl.stale_features == ()

    later = store.read("device", "jb-1", now=T0 + timedelta(minutes=30))
    assert later.readings["device_plays_5m"].age == timedelta(minutes=35)
    assert set(later.stale_features) == {"device_plays_5m"}  # 1 h and 24 h windows still fresh
    day = store.read("device", "jb-1", now=as_of + timedelta(hours=24, milliseconds=1))
    assert set(day.stale_features) == {f.name for f in features_of("device")}

    customer = store.read("customer", "acct-1", now=T0 + timedelta(minutes=6))
    assert customer.readings["customer_payments_10m"].stale  # 11 min > 10 min ttl
    before = store.read("device", "jb-1", now=as_of - timedelta(seconds=3))  # reader behind the event
    assert before.readings["device_plays_5m"].age == timedelta(seconds=-3)
    assert not before.readings["device_plays_5m"].stale


def test_read_many_keeps_the_order_and_returns_none_for_absent_entities(store):
    store.write([device_row("jb-a", 1), device_row("jb-b", 2)], WRITTEN)
    found = store.read_many("device", ["jb-b", "jb-missing", "jb-a"], T0)
    assert [f and (f.entity_id, f.version) for f in found] == [("jb-b", 2), None, ("jb-a", 1)]
    assert store.read_many("device", [], T0) == []
    assert store.read("customer", "jb-a", T0) is None  # entities are separate namespaces


@pytest.mark.parametrize("bad_row", [
    FeatureRow("device", "jb-2", 1, T0, {"device_plays_5m_typo": 1}),
    FeatureRow("device", "jb-2", 1, T0, {"customer_payments_10m": 1}),
    FeatureRow("device", "jb-2", 1, T0, {"device_plays_5m": 1.5}),
    FeatureRow("device", "jb-2", 1, T0, {"device_plays_5m": True}),
    FeatureRow("device", "jb-2", 1, T0, {"device_speed_kmh_last": float("nan")}),
    FeatureRow("device", "jb-2", 1, T0, {"device_speed_kmh_last": float("inf")}),
    FeatureRow("device", "jb-2", 1, T0, {"device_revenue_by_currency_24h": "{not json"}),
    FeatureRow("device", "jb-2", 1, T0, {"device_revenue_by_currency_24h": '{"kes":"1"}'}),
    FeatureRow("device", "jb-2", 1, T0, {"device_revenue_by_currency_24h": '{"KES":1.5}'}),
    FeatureRow("device", "jb-2", -1, T0, {"device_plays_5m": 1}),
    FeatureRow("device", "jb-2", 2**53, T0, {"device_plays_5m": 1}),
    FeatureRow("device", "jb-2", 1, T0.replace(tzinfo=None), {"device_plays_5m": 1}),
    FeatureRow("venue", "jb-2", 1, T0, {}),
    FeatureRow("device", "bad id", 1, T0, {"device_plays_5m": 1}),
], ids=lambda row: str(row.values or row.entity)[:40])
def test_an_invalid_row_fails_the_batch_before_anything_is_written(store, bad_row):
    with pytest.raises(ValueError):
        store.write([device_row("jb-1", 1), bad_row], WRITTEN)
    assert store.read("device", "jb-1", T0) is None


def test_naive_times_are_refused(store):
    with pytest.raises(ValueError, match="naive"):
        store.write([device_row("jb-1", 1)], WRITTEN.replace(tzinfo=None))
    store.write([device_row("jb-1", 1)], WRITTEN)
    with pytest.raises(ValueError, match="naive"):
        store.read("device", "jb-1", T0.replace(tzinfo=None))


def test_scan_lists_every_stored_entity_of_a_kind(store):
    devices = {f"jb-{i}" for i in range(2500)} | {"jb:with:colons"}
    store.write([device_row(i, 1) for i in sorted(devices)], WRITTEN)
    store.write([FeatureRow("customer", "acct-1", 1, T0, {"customer_payments_10m": 1})], WRITTEN)
    assert set(store.scan_entities("device")) == devices
    assert list(store.scan_entities("customer")) == ["acct-1"]


def test_rows_of_one_entity_in_a_batch_end_as_if_applied_one_by_one(store):
    only_plays = {"device_plays_5m": 1}
    rows = [device_row("jb-1", 5), device_row("jb-2", 1), device_row("jb-1", 3), device_row("jb-1", 7),
            device_row("jb-1", 6, **only_plays), device_row("jb-1", 8, **only_plays),
            device_row("jb-1", 4), device_row("jb-2", 1, device_plays_5m=99)]
    result = store.write(rows, WRITTEN)
    reference = InMemoryFeatureStore()
    for row in rows:
        reference.write([row], WRITTEN)
    for entity_id in ("jb-1", "jb-2"):
        assert store.read("device", entity_id, T0) == reference.read("device", entity_id, T0)
    assert result.applied + result.stale + result.superseded == len(rows)
    assert result.superseded > 0  # jb-1's 5, 3, 7 collapse; so do 6 and 8


def test_a_10k_row_batch_is_written_in_one_call_quickly(store):
    rows = [device_row(f"jb-{i:05d}", 1) for i in range(10_000)]
    started = time.perf_counter()
    assert store.write(rows, WRITTEN) == WriteResult(applied=10_000, stale=0)
    elapsed = time.perf_counter() - started
    assert elapsed < 5.0, f"10k rows took {elapsed:.2f}s"
    sample = [f"jb-{i:05d}" for i in range(0, 10_000, 97)]
    assert all(f.version == 1 and f.value("device_plays_1h") == 1
               for f in store.read_many("device", sample, T0))


def test_unknown_entities_and_feature_typos_are_refused_on_read(store):
    store.write([device_row("jb-1", 1)], WRITTEN)
    with pytest.raises(ValueError, match="unknown entity"):
        store.read("venue", "jb-1", T0)
    with pytest.raises(KeyError):
        store.read("device", "jb-1", T0).value("device_plays_5mins")
    assert FEATURES["device_plays_5m"].entity == "device"
