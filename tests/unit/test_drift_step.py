"""The drift step's logic without a dataflow: samples from scored batches, monitors per
model version, model events on the wire, and the retraining decision."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson

from dataflows.drift_step import (
    DriftConfig,
    DriftSample,
    _DriftLogic,
    drift_samples,
    model_event_message,
    update_drift,
)
from dataflows.fraud_steps import Scored, ScoringRequest
from models.model_drift import DriftPolicy, ModelReference, retraining_request
from schemas.outputs import ModelEvent
from schemas.topics import Topics

T0 = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
FEATURE = "device_location_accuracy_m_last"
RNG_REFERENCE = np.random.default_rng(0)
REFERENCE = ModelReference.from_training(
    (FEATURE,), RNG_REFERENCE.uniform(3, 50, size=(5000, 1)), RNG_REFERENCE.beta(1, 9, size=2000))


def _sample(rng, n: int, t: datetime, shift: float = 0.0, version: str = "3") -> DriftSample:
    rows = tuple({FEATURE: float(v)} for v in rng.uniform(3, 50, size=n) + shift)
    return DriftSample("jukebox-fraud", version, t, rows, rng.beta(1, 9, size=n))


def _config(lookups: list | None = None, **policy) -> DriftConfig:
    def reference(model: str, version: str) -> ModelReference | None:
        if lookups is not None:
            lookups.append((model, version))
        return REFERENCE if version != "old" else None

    return DriftConfig(reference, DriftPolicy(**({"window_size": 200, "retrain_after": 2} | policy)))


def _kinds(state, samples, config):
    kinds = []
    for sample in samples:
        state, reports = update_drift(state, sample, config)
        kinds.append(sorted((r.feature, e.kind) for r in reports for e in r.events))
    return state, kinds


def test_a_scored_batch_becomes_one_sample_per_model_version_without_unscored_rows():
    def scored(jb, minute, score, version):
        request = ScoringRequest(jb, "v0", None, T0 + timedelta(minutes=minute), {FEATURE: 10.0})
        versions = {"jukebox-fraud": version} if version else {}
        return jb, Scored(request, score, versions)

    batch = [scored("jb-1", 0, 0.1, "3"), scored("jb-2", 5, 0.2, "3"), scored("jb-3", 9, None, None),
             scored("jb-4", 2, 0.3, "4")]
    samples = {s.version: s for _key, s in drift_samples(batch)}
    assert sorted(samples) == ["3", "4"]
    assert samples["3"].event_time == T0 + timedelta(minutes=5)
    assert samples["3"].scores.tolist() == [0.1, 0.2] and len(samples["3"].rows) == 2
    assert [key for key, _s in drift_samples(batch)] == ["jukebox-fraud", "jukebox-fraud"]


def test_same_distribution_stays_quiet_and_a_shift_detects_then_requests_retraining():
    rng = np.random.default_rng(1)
    same = [_sample(rng, 100, T0 + timedelta(minutes=i)) for i in range(10)]
    _state, kinds = _kinds(None, same, _config())
    assert kinds == [[]] * 10

    shifted = [_sample(rng, 100, T0 + timedelta(minutes=i), shift=40.0) for i in range(6)]
    state, kinds = _kinds(None, shifted, _config())
    # Windows of 200 close every 200 values; the score did not move, the input did.
    assert kinds == [[], [(FEATURE, "drift_detected")], [], [(FEATURE, "retraining_requested")], [], []]
    assert state.input_names == (FEATURE,)


def test_a_new_model_version_restarts_the_monitors_and_one_without_reference_is_not_checked(caplog):
    rng = np.random.default_rng(2)
    lookups: list = []
    config = _config(lookups, retrain_after=3)
    state, kinds = _kinds(None, [_sample(rng, 200, T0, shift=40.0)] * 2, config)
    assert kinds == [[(FEATURE, "drift_detected")], []]
    # v4 starts over: its first drifted window is a new run.
    state, kinds = _kinds(state, [_sample(rng, 200, T0, shift=40.0, version="4")], config)
    assert kinds == [[(FEATURE, "drift_detected")]]
    with caplog.at_level(logging.WARNING, logger="dataflows.drift_step"):
        state, kinds = _kinds(state, [_sample(rng, 200, T0, 40.0, "old")] * 3, config)
    assert kinds == [[]] * 3 and not state.checking
    assert [r.getMessage() for r in caplog.records] == [
        "jukebox-fraud vold has no drift reference: drift checks are off for it"]
    assert lookups == [("jukebox-fraud", "3"), ("jukebox-fraud", "4"), ("jukebox-fraud", "old")]


def test_the_step_reports_every_window_for_metrics_and_survives_a_snapshot():
    rng = np.random.default_rng(3)
    seen = []
    config = _config()
    config.on_report = seen.append
    logic = _DriftLogic(None, config, Topics())
    assert logic.on_batch([_sample(rng, 100, T0), _sample(rng, 100, T0)])[0] == []
    resumed = _DriftLogic(logic.snapshot(), config, Topics())
    messages, _retain = resumed.on_batch([_sample(rng, 200, T0, shift=40.0)])
    assert sorted((r.feature, r.drifted) for r in seen) == [
        (FEATURE, False), (FEATURE, True), ("score", False), ("score", False)]
    assert [orjson.loads(m.value)["kind"] for m in messages] == ["drift_detected"]


def test_model_events_are_contract_messages_keyed_by_model():
    rng = np.random.default_rng(4)
    _state, reports = update_drift(None, _sample(rng, 200, T0, shift=40.0), _config())
    (event,) = [e for r in reports for e in r.events]
    message = model_event_message(event, Topics(prefix="x."))
    assert (message.topic, message.key) == ("x.jukebox.model-events.v1", b"jukebox-fraud")
    decoded = ModelEvent.model_validate_json(message.value)
    assert decoded == event
    body = orjson.loads(message.value)
    assert body["schema_version"] == 1 and body["model_version"] == "3"
    assert body["thresholds"] == {"psi": 0.2, "js_divergence": 0.1, "ks_statistic": 0.15}
    assert body["window_size"] == 200 and body["ks_statistic"] > 0.5


def test_the_reference_survives_json_and_leaves_out_columns_without_values():
    X = np.column_stack([np.arange(100.0), np.full(100, np.nan)])
    reference = ModelReference.from_training(("a", "b"), X, np.linspace(0, 1, 50))
    assert reference.feature_names == ("a",) and reference.score.feature == "score"
    assert ModelReference.from_json(reference.to_json()) == reference
    assert ModelReference.from_training(("a", "b"), X).score is None


def test_retraining_request_needs_the_model_and_a_window_after_the_champion():
    def event(model, kind, minute):
        t = T0 + timedelta(minutes=minute)
        return ModelEvent(kind=kind, model=model, model_version="3", feature="score", psi=0.5,
                          js_divergence=0.2, ks_statistic=0.3, window_start=t, window_end=t,
                          window_size=100, thresholds={})

    events = [event("jukebox-recs", "retraining_requested", 30),
              event("jukebox-fraud", "drift_detected", 20),
              event("jukebox-fraud", "retraining_requested", 10),
              event("jukebox-fraud", "retraining_requested", 15)]
    assert retraining_request(events, "jukebox-fraud", T0).window_end == T0 + timedelta(minutes=15)
    assert retraining_request(events, "jukebox-fraud", None) is not None
    assert retraining_request(events, "jukebox-fraud", T0 + timedelta(minutes=15)) is None
    assert retraining_request([], "jukebox-fraud", None) is None
