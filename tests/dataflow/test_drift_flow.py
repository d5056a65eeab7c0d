"""Drift checks inside the flow factory: a shifted scored stream emits `drift_detected`, then
`retraining_requested`, on the model-events topic; a stream like the reference emits nothing."""

from __future__ import annotations

import random
from datetime import timedelta

import numpy as np
import orjson

from dataflows.drift_step import DriftConfig
from dataflows.flow import FlowConfig
from dataflows.fraud_steps import FraudConfig
from models.fraud_features import feature_matrix
from models.model_drift import DriftPolicy, ModelReference
from schemas.events import DeviceLocationEvent
from schemas.topics import Topics
from tests.dataflow.flow_harness import raw_records, run_flow
from tests.sample_events import T0, VENUE, venues_for

TOPICS = Topics()
WATCHED = ("device_location_accuracy_m_last", "device_venue_distance_km_last")


class AccuracyScorer:
    """A stand-in model: the score follows the reported GPS accuracy; it records what it saw."""

    name = "jukebox-fraud"
    threshold = None
    def __init__(self) -> None:
        self.model_versions = {"jukebox-fraud": "7"}
        self.rows: list = []

    def score(self, rows):
        self.rows.extend(rows)
        return np.array([min(float(r.get("device_location_accuracy_m_last") or 0.0) / 1000, 1.0)
                         for r in rows])


def _locations(seed: int, accuracy=(3.0, 50.0), away_deg: float = 0.0) -> list[DeviceLocationEvent]:
    rnd = random.Random(seed)
    return [
        DeviceLocationEvent(
            event_id=f"l{seed}-{jb}-{i}", jukebox_id=f"jb-{jb}",
            lat=VENUE.lat + away_deg + rnd.uniform(-0.002, 0.002), lon=VENUE.lon + rnd.uniform(-0.002, 0.002),
            accuracy_m=rnd.uniform(*accuracy), reported_at=T0 + timedelta(minutes=i, seconds=jb))
        for i in range(60) for jb in range(10)
    ]


def _config(scorer, drift: DriftConfig | None) -> FlowConfig:
    fraud = FraudConfig(scorer=lambda _now: scorer, emitted_at=lambda t: t, now=lambda: T0,
                        anomaly=None, drift=drift)
    return FlowConfig(topics=TOPICS, fraud=fraud)


def _records(events):
    return raw_records(venues_for(10), TOPICS) + raw_records(events, TOPICS)


def _reference() -> ModelReference:
    """What training stores: the inputs of the reference rows, and the scores on them."""
    scorer = AccuracyScorer()
    run_flow(_records(_locations(seed=1)), _config(scorer, None))
    X = feature_matrix(scorer.rows, WATCHED)
    return ModelReference.from_training(WATCHED, X, scorer.score(scorer.rows))


def _model_events(events, reference: ModelReference) -> tuple[list[dict], list]:
    reports = []
    drift = DriftConfig(lambda model, version: reference if (model, version) == ("jukebox-fraud", "7") else None,
                        DriftPolicy(window_size=200, retrain_after=2), on_report=reports.append)
    run = run_flow(_records(events), _config(AccuracyScorer(), drift))
    messages = [m for m in run.messages if m.topic == TOPICS.model_events]
    assert all(m.key == b"jukebox-fraud" for m in messages)
    return [orjson.loads(m.value) for m in messages], reports


def test_a_shifted_stream_detects_drift_then_requests_retraining_and_a_like_stream_emits_nothing():
    reference = _reference()
    assert reference.feature_names == WATCHED and reference.score is not None

    events, reports = _model_events(_locations(seed=2), reference)
    assert events == []
    # 600 rows in batches: at least two windows of 200 for each input and the score, none drifted.
    assert len(reports) >= 2 * 3 and not any(r.drifted for r in reports)

    events, reports = _model_events(_locations(seed=3, accuracy=(300.0, 900.0), away_deg=0.5), reference)
    by_feature: dict[str, list[str]] = {}
    for event in events:
        by_feature.setdefault(event["feature"], []).append(event["kind"])
    assert by_feature == {name: ["drift_detected", "retraining_requested"]
                          for name in (*WATCHED, "score")}
    assert all(e["model"] == "jukebox-fraud" and e["model_version"] == "7" and e["window_size"] == 200
               for e in events)
    first = events[0]
    assert first["window_start"] <= first["window_end"]
    assert any(r.drifted for r in reports)
