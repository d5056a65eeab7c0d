"""The flow factory end to end over Bytewax's testing source: features equal the oracle,
bad and late records become dead letters, and nothing else is emitted."""

from __future__ import annotations

import base64
import random
from datetime import timedelta

import orjson
from bytewax.testing import TestingSink, TestingSource, run_main

from dataflows.flow import FlowConfig, FlowOutputs, build_flow
from dataflows.records import RawRecord
from online_store.admission import AdmissionPolicy
from online_store.feature_row import FeatureRow
from schemas.topics import Topics
from tests.dataflow.flow_harness import raw_records, run_flow
from tests.oracle import expected_features, mismatches
from tests.sample_events import VENUE, sample_events

TOPICS = Topics()


def test_features_from_the_flow_equal_the_oracle_with_duplicates_and_disorder():
    rnd = random.Random(11)
    events = sample_events(rnd, 400, 3 * 3600)
    disordered = events + rnd.sample(events, 40)
    rnd.shuffle(disordered)
    records = raw_records([VENUE], TOPICS) + raw_records(disordered, TOPICS, arrival_lag_s=4 * 3600)
    run = run_flow(records)
    expected = expected_features(events, [VENUE])
    for jb, want in expected.device.items():
        assert not mismatches(want, run.values("device", jb)), jb
    for customer, want in expected.customer.items():
        assert not mismatches(want, run.values("customer", customer)), customer
    assert run.messages == []


def test_bad_and_late_records_become_dead_letters_with_reason_and_origin():
    rnd = random.Random(5)
    events = sample_events(rnd, 30, 600)
    good = raw_records(events, TOPICS)
    late = raw_records(events[:3], TOPICS, arrival_lag_s=13 * 3600)
    bad_values = [b"{not json", b'{"a":1,"a":2}', b"[" * 10_000, b'{"schema_version": 2}',
                  orjson.dumps({**orjson.loads(good[0].value), "played_at": "2026-11-20T12:00:00"})]
    bad = [RawRecord(TOPICS.plays, b"jb-0", value, 3, 100 + i, good[0].timestamp_ms)
           for i, value in enumerate(bad_values)]
    run = run_flow(good + bad + late, FlowConfig(admission=AdmissionPolicy(allowed_lateness_s=12 * 3600)))
    dead = [m for m in run.messages if m.topic == TOPICS.dead_letters]
    late_out = [m for m in run.messages if m.topic == TOPICS.late_events]
    reasons = sorted(orjson.loads(m.value)["reason"] for m in dead)
    assert reasons == sorted(["malformed_json", "duplicate_key", "nesting_too_deep",
                              "unknown_schema_version", "naive_datetime"])
    assert [orjson.loads(m.value)["reason"] for m in late_out] == ["too_late"] * 3
    first = orjson.loads(dead[0].value)
    assert base64.b64decode(first["payload_b64"]) in bad_values
    assert dict(dead[0].headers)["jukebox.source.topic"] == TOPICS.plays.encode()
    # late events were not counted: features equal the oracle over the on-time events only
    expected = expected_features(events, [])
    for jb, want in expected.device.items():
        assert not mismatches(want, run.values("device", jb)), jb


def test_one_far_future_event_does_not_make_later_events_late():
    rnd = random.Random(8)
    events = sample_events(rnd, 40, 900)
    future = events[0].model_copy(update={"event_id": "future-1"})
    future_record = raw_records([future], TOPICS)[0]
    future_record = RawRecord(future_record.topic, future_record.key, future_record.value.replace(
        future.event_time.strftime("%Y").encode(), str(future.event_time.year + 1).encode(), 1),
        0, 999, future_record.timestamp_ms)
    records = [future_record] + raw_records(events, TOPICS)
    run = run_flow(records)
    late = [orjson.loads(m.value)["reason"] for m in run.messages if m.topic == TOPICS.late_events]
    assert late == ["future_event_time"]
    expected = expected_features(events, [])
    for jb, want in expected.device.items():
        assert not mismatches(want, run.values("device", jb)), jb
    assert timedelta(0) < timedelta(days=1)


def test_a_jukebox_gets_one_feature_row_per_batch_at_its_latest_version():
    rnd = random.Random(3)
    plays = [event for event in sample_events(rnd, 400, 3600) if event.kind == "play"]
    one = [event for event in plays if event.jukebox_id == plays[0].jukebox_id][:12]
    assert len(one) == 12
    rows: list = []
    outputs = FlowOutputs(features=TestingSink(rows), kafka=TestingSink([]))
    run_main(build_flow("test", TestingSource(raw_records(one, TOPICS), batch_size=6), outputs, FlowConfig()))
    device = [row for row in rows if isinstance(row, FeatureRow) and row.entity == "device"]
    # two batches of six: two rows, not twelve, and the last holds every play
    assert [row.version for row in device] == [6, 12]
    assert device[-1].values["device_plays_24h"] == 12
