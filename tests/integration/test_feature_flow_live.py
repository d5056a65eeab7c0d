"""The live flow process against the real broker and Redis: exact features, and a SIGKILL."""

from __future__ import annotations

import random

import pytest
import redis

from online_store.redis_store import RedisFeatureStore
from tests.dataflow.flow_harness import raw_records
from tests.integration.flow_process import (
    FlowProcess,
    produce_records,
    read_topic,
    stored_versions,
    wait_until,
)
from tests.oracle import expected_features, mismatches
from tests.sample_events import sample_events, venues_for

pytestmark = pytest.mark.integration

JUKEBOXES = 3000


def _mismatched(store: RedisFeatureStore, expected) -> list[str]:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    bad = []
    for entity, wanted in (("device", expected.device), ("customer", expected.customer)):
        ids = sorted(wanted)
        found = store.read_many(entity, ids, now=now)
        for entity_id, features in zip(ids, found, strict=True):
            if features is None:
                bad.append(f"{entity} {entity_id}: missing")
                continue
            values = {name: reading.value for name, reading in features.readings.items()}
            bad += [f"{entity} {entity_id}: {m}" for m in mismatches(wanted[entity_id], values)]
    return bad


def _history(seed: int):
    rnd = random.Random(seed)
    events = sample_events(rnd, 24_000, 3 * 3600, jukeboxes=JUKEBOXES, customers=800)
    with_duplicates = events + rnd.sample(events, 1500)
    rnd.shuffle(with_duplicates)  # out of order; arrival lags of up to 6 h = late uploads
    return events, with_duplicates


def test_features_in_redis_equal_the_oracle_for_thousands_of_entities(
    kafka_bootstrap, redis_url, topics, redis_key_prefix, tmp_path
):
    events, delivered = _history(seed=21)
    venues = venues_for(JUKEBOXES)
    produce_records(kafka_bootstrap, raw_records(venues, topics))
    produce_records(kafka_bootstrap, raw_records(delivered, topics, arrival_lag_s=6 * 3600))
    store = RedisFeatureStore(redis.Redis.from_url(redis_url), redis_key_prefix)
    expected = expected_features(events, venues)
    flow = FlowProcess(kafka_bootstrap, redis_url, topics, redis_key_prefix, tmp_path).start()
    try:
        wait_until(lambda: not _mismatched(store, expected), 120, "Redis to equal the oracle",
                   check=flow.assert_running)
    finally:
        flow.stop()
    assert len(expected.device) > 2500 and len(expected.customer) > 500
    assert read_topic(kafka_bootstrap, topics.dead_letters, timeout_s=3) == []


def test_sigkill_mid_stream_then_restart_from_snapshot_keeps_every_feature_exact(
    kafka_bootstrap, redis_url, topics, redis_key_prefix, tmp_path
):
    events, delivered = _history(seed=22)
    venues = venues_for(JUKEBOXES)
    half = len(delivered) // 2
    produce_records(kafka_bootstrap, raw_records(venues, topics))
    produce_records(kafka_bootstrap, raw_records(delivered[:half], topics, arrival_lag_s=6 * 3600))
    client = redis.Redis.from_url(redis_url)
    store = RedisFeatureStore(client, redis_key_prefix)
    expected = expected_features(events, venues)

    flow = FlowProcess(kafka_bootstrap, redis_url, topics, redis_key_prefix, tmp_path,
                       snapshot_interval_s=0.5).start()
    wait_until(lambda: len(stored_versions(client, redis_key_prefix, "device")) > 100, 60,
               "the first writes", check=flow.assert_running)
    # keep feeding while it runs, then crash it mid-stream
    produce_records(kafka_bootstrap, raw_records(delivered[half:], topics, arrival_lag_s=6 * 3600))
    flow.kill()
    assert _mismatched(store, expected), "the crash came too late to prove anything"
    assert any(flow.recovery_dir.glob("part-*.sqlite3"))

    restarted = FlowProcess(kafka_bootstrap, redis_url, topics, redis_key_prefix, tmp_path,
                            snapshot_interval_s=0.5).start()
    try:
        waited = wait_until(lambda: not _mismatched(store, expected), 120,
                            "Redis to equal the oracle after the restart", check=restarted.assert_running)
    finally:
        restarted.stop()
    print(f"caught up {waited:.1f}s after restart")
    assert waited < 60
