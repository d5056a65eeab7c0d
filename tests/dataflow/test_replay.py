"""Replays through the flow factory: one deterministic order, byte-identical outputs, isolation."""

from __future__ import annotations

import doctest
import random
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import orjson
import pytest

import dataflows.backtest_html
import dataflows.backtest_report
import dataflows.record
import dataflows.replay
import dataflows.replay_order
import dataflows.replay_run
from dataflows.flow import FlowConfig
from dataflows.record import (
    HistoryError,
    file_history,
    history_order,
    merged_history,
    recorded_line,
)
from dataflows.records import RawRecord
from dataflows.replay import policy_with, replay_fraud_config
from dataflows.replay_run import (
    CoalescingFeatureSink,
    ReplayNamespace,
    feature_lines,
    messages_by_output,
    run_replay,
)
from models.decision import DecisionPolicy
from models.rules import RulePolicy
from online_store.admission import AdmissionPolicy
from online_store.feature_row import FeatureRow
from online_store.store import InMemoryFeatureStore
from schemas.topics import Topics
from simulator.simulation import Simulation
from tests.dataflow.flow_harness import raw_records
from tests.oracle import expected_features, mismatches
from tests.sample_events import VENUE, sample_events

TOPICS = Topics()
CLOCK = datetime(2026, 12, 1, tzinfo=UTC)
START = datetime(2026, 11, 27, 16, 0, tzinfo=UTC)


@cache
def history(payments: bool = True) -> tuple[RawRecord, ...]:
    """A labelled fleet with every fraud scenario, duplicates, disorder, late uploads, bad records."""
    sim = Simulation(jukeboxes=400, seed=11, start=START, duration=timedelta(hours=2), fraud_rate=0.6,
                     malformed_rate=0.003, late_rate=0.2)
    return tuple(RawRecord(getattr(TOPICS, r.topic_attr), r.key, r.value, None, None, r.timestamp_ms)
                 for r in sim.records() if payments or r.topic_attr != "payments")


def fraud_config(anomaly: bool = True, rules: RulePolicy | None = None,
                 admission: AdmissionPolicy | None = None) -> FlowConfig:
    fraud = replay_fraud_config(None, rules or RulePolicy(), DecisionPolicy(), anomaly, False, CLOCK)
    return FlowConfig(topics=TOPICS, admission=admission or AdmissionPolicy(), fraud=fraud)


def outputs_of(records, config: FlowConfig, **kwargs) -> dict[str, list[bytes]]:
    run = run_replay(lambda: merged_history([records]), config, written_at=CLOCK, **kwargs)
    outputs = messages_by_output(run.messages, config.topics)
    outputs["features"] = feature_lines(run.feature_stores, CLOCK)
    outputs["labels"] = [label.json_bytes() for label in run.split.labels]
    return outputs


@pytest.mark.parametrize("module", [dataflows.record, dataflows.replay_run, dataflows.replay,
                                    dataflows.replay_order, dataflows.backtest_report,
                                    dataflows.backtest_html])
def test_doctests_of_the_replay_modules(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_merged_history_is_in_replay_order_whatever_the_order_of_the_streams():
    rnd = random.Random(3)
    records = [RawRecord(rnd.choice(TOPICS.inputs), b"k", b"v", rnd.randrange(4), offset,
                         1_000 + rnd.randrange(50)) for offset in range(400)]
    streams = {}
    for raw in records:  # one stream per partition, each in offset order, like Kafka
        streams.setdefault((raw.topic, raw.partition), []).append(raw)
    per_stream = [sorted(s, key=history_order) for s in streams.values()]
    merged = list(merged_history(per_stream))
    assert merged == sorted(records, key=history_order)
    rnd.shuffle(per_stream)
    assert list(merged_history(per_stream)) == merged


def test_history_files_read_recorded_and_simulator_lines_and_name_a_bad_line(tmp_path: Path):
    raw = RawRecord(TOPICS.payments, None, b"\x00\xff", 2, 9, 1_795_795_200_000)
    path = tmp_path / "h.jsonl"
    path.write_bytes(recorded_line(raw) + b'{"topic":"plays","key":"jb-1","timestamp_ms":7,"value":"{}"}\n')
    assert list(file_history(path, TOPICS)) == [raw, RawRecord(TOPICS.plays, b"jb-1", b"{}", None, None, 7)]
    path.write_bytes(recorded_line(raw) + b'{"topic":"nope","key":"k","timestamp_ms":1,"value":"x"}\n')
    with pytest.raises(HistoryError, match=r"h.jsonl:2"):
        list(file_history(path, TOPICS))


def test_replaying_twice_gives_byte_identical_alerts_dead_letters_and_features():
    config = fraud_config(admission=AdmissionPolicy(allowed_lateness_s=3600))
    first, second = outputs_of(history(), config), outputs_of(history(), config)
    assert first == second
    assert len(first["fraud_alerts"]) > 20 and len(first["dead_letters"]) > 5
    assert len(first["late_events"]) > 0 and len(first["features"]) > 400 and first["labels"]
    alerts = [orjson.loads(v) for v in first["fraud_alerts"]]
    assert all(a["emitted_at"] == a["event_time"] for a in alerts)  # event time, not the wall clock
    assert {"anomaly", "song_looping", "payment_testing"} <= {r for a in alerts for r in a["reasons"]}


@cache
def reference_outputs() -> dict[str, list[bytes]]:
    return outputs_of(history(), fraud_config())


@pytest.mark.parametrize("kwargs", [{"batch_size": 1}, {"batch_size": 137}, {"batch_size": 1000},
                                    {"workers": 2, "batch_size": 300}], ids=str)
def test_every_output_is_byte_identical_whatever_the_batch_size_or_worker_count(kwargs):
    # Payments are scored on customer features (a customer's payments come from many
    # jukeboxes), and the anomaly detector learns from every jukebox's windows: both
    # follow the history order, not the order the workers deliver in (replay_order.py).
    reference = reference_outputs()
    assert len(reference["fraud_alerts"]) > 20 and len(reference["features"]) > 400
    assert "anomaly" in {r for v in reference["fraud_alerts"] for r in orjson.loads(v)["reasons"]}
    assert any(orjson.loads(v)["customer_id"] for v in reference["fraud_alerts"])  # payments alerted on
    other = outputs_of(history(), fraud_config(), **kwargs)
    for output in reference:
        assert other[output] == reference[output], output


def test_overrides_change_what_the_replay_raises():
    base = outputs_of(history(), fraud_config(anomaly=False))
    strict = policy_with(RulePolicy(), ["looping_min_plays_1h=1000", "max_venue_distance_km=10000"], "--rule")
    fewer = outputs_of(history(), fraud_config(anomaly=False, rules=strict))
    reasons = [r for v in fewer["fraud_alerts"] for r in orjson.loads(v)["reasons"]]
    assert "song_looping" not in reasons and "location_away_from_venue" not in reasons
    assert len(fewer["fraud_alerts"]) < len(base["fraud_alerts"])
    impatient = outputs_of(history(), fraud_config(anomaly=False, admission=AdmissionPolicy(allowed_lateness_s=600)))
    assert len(impatient["late_events"]) > len(base["late_events"])
    assert impatient["features"] != base["features"]


def test_a_bad_override_is_a_clear_error():
    import typer

    with pytest.raises(typer.BadParameter, match="not one of"):
        policy_with(RulePolicy(), ["looping_share=0.3"], "--rule")
    with pytest.raises(typer.BadParameter, match="not a float"):
        policy_with(RulePolicy(), ["max_speed_kmh=fast"], "--rule")
    with pytest.raises(typer.BadParameter, match="cut-offs"):
        policy_with(DecisionPolicy(), ["medium_at=0.99"], "--decision")


def test_coalesced_writes_leave_the_store_as_row_by_row_upserts_would():
    rnd = random.Random(4)
    names = ["device_plays_5m", "device_plays_1h", "device_speed_kmh_last"]
    rows = []
    for version in range(1, 400):
        entity_id = f"jb-{rnd.randrange(12)}"
        values = {n: (None if rnd.random() < 0.2 else rnd.randrange(50)) for n in rnd.sample(names, rnd.randint(1, 3))}
        rows.append(FeatureRow("device", entity_id, version + rnd.choice([0, 0, -5]), START, values))
    one_by_one = InMemoryFeatureStore()
    for row in rows:
        one_by_one.write([row], written_at=CLOCK)
    sink = CoalescingFeatureSink(InMemoryFeatureStore, CLOCK, max_entities=5)
    part = sink.build("online_store", 0, 1)
    for start in range(0, len(rows), 17):
        part.write_batch(rows[start:start + 17])
    sink.flush()
    assert feature_lines([part.store], CLOCK) == feature_lines([one_by_one], CLOCK)


def test_a_namespace_never_names_a_live_key_or_topic():
    space = ReplayNamespace("bt", Topics("prod."), "jb")
    assert space.key_prefix == "bt:jb" and space.output_topic("prod.jukebox.dead-letters.v1") == \
        "bt.prod.jukebox.dead-letters.v1"
    live = {spec.name for spec in Topics("prod.").specs()}
    assert not live & {spec.name for spec in space.topics.specs()}
    for bad in ("", "a:b", "../x", "-x"):
        with pytest.raises(ValueError):
            ReplayNamespace(bad, Topics(), "jb")
    with pytest.raises(ValueError):
        space.output_topic("prod.jukebox.plays.v1")


@pytest.mark.parametrize("batch_size", [1, 5000])
def test_a_venue_moved_after_a_jukeboxs_last_event_moves_its_replayed_features(batch_size):
    """The move's row has the version of the jukebox's last event (a registration is not
    an event of the jukebox): the store keeps the last row as of a time, so must a replay."""
    events = [e for e in sample_events(random.Random(8), 80, 1800) if e.jukebox_id == "jb-0"]
    assert any(e.kind == "location" for e in events)
    last = max(e.event_time for e in events)
    moved = VENUE.model_copy(update={"event_id": "v-2", "lat": 0.5, "lon": 35.0,
                                     "updated_at": last + timedelta(minutes=1)})
    records = raw_records([VENUE], TOPICS) + raw_records(events, TOPICS) + raw_records([moved], TOPICS)
    run = run_replay(lambda: merged_history([records]), FlowConfig(topics=TOPICS), written_at=CLOCK,
                     batch_size=batch_size)
    found = [f for store in run.feature_stores if (f := store.read("device", "jb-0", now=CLOCK))]
    values = {name: reading.value for name, reading in found[0].readings.items()}
    want = expected_features(events, [VENUE, moved]).device["jb-0"]
    assert not mismatches(want, values)
    assert want["device_venue_distance_km_last"] != expected_features(events, [VENUE]).device["jb-0"][
        "device_venue_distance_km_last"]
