"""Training, ONNX export and FraudScorer on a synthetic labelled set; ChampionWatcher on a
fake registry."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from models.fraud_features import FRAUD_MODEL_FEATURES, MISSING_DEFAULTS, feature_matrix
from models.fraud_scorer import (
    ChampionWatcher,
    FraudScorer,
    LoadedModel,
    ModelIntegrityError,
    loaded_model_from_bytes,
)
from models.onnx_export import (
    INPUT_NAME,
    ParityError,
    check_parity,
    inference_session,
    onnx_feature_names,
    onnx_metadata,
)
from models.training import FraudTrainer, TrainingSet, fraud_metrics

T0_MS = int(datetime(2026, 11, 2, tzinfo=UTC).timestamp() * 1000)


def synthetic_set(n_jukeboxes: int = 120, rows_each: int = 25, seed: int = 0) -> TrainingSet:
    """Plausible device rows; two scenarios with overlapping, noisy signatures."""
    rng = random.Random(seed)
    rows, labels, scenarios, times, ids = [], [], [], [], []
    for j in range(n_jukeboxes):
        jukebox = f"jb-{j:05d}"
        fraud = {0: None, 1: "unpaid_plays", 2: "song_looping"}.get(j % 6)
        for i in range(rows_each):
            plays = rng.randint(0, 25)
            row: dict[str, object] = {
                "device_plays_1h": plays,
                "device_plays_5m": rng.randint(0, 3),
                "device_unpaid_plays_1h": rng.choice([0, 0, 0, 1, 2, 6]),
                "device_top_song_share_1h": rng.uniform(0.0, 0.6) if plays else 0.0,
                "device_venue_distance_km_last": rng.choice([None, rng.uniform(0, 0.2)]),
            }
            positive = fraud is not None and i >= rows_each // 2 and rng.random() < 0.9
            if positive and fraud == "unpaid_plays":
                row["device_unpaid_plays_1h"] = rng.randint(4, 30)
            if positive and fraud == "song_looping":
                row.update(
                    device_top_song_share_1h=rng.uniform(0.5, 1.0),
                    device_plays_1h=rng.randint(8, 40),
                )
            rows.append(row)
            labels.append(int(positive))
            scenarios.append(fraud if positive else None)
            times.append(T0_MS + (j * rows_each + i) * 60_000)
            ids.append(jukebox)
    return TrainingSet(rows, np.array(labels), scenarios, np.array(times), ids)


@pytest.fixture(scope="module")
def trained():
    return FraudTrainer(n_estimators=25, max_depth=8, seed=3, n_jobs=1).fit(synthetic_set())


# --- training and export ---------------------------------------------------------------------


def test_onnx_matches_sklearn_on_the_holdout(trained):
    X = feature_matrix(trained.holdout.rows, trained.feature_names)
    expected = trained.classifier.predict_proba(X)[:, 1]
    scorer = FraudScorer.from_model(loaded_model_from_bytes(trained.onnx_bytes, "1"))
    assert np.max(np.abs(scorer.score(trained.holdout.rows) - expected)) <= 1e-4
    assert trained.parity_max_abs_diff <= 1e-4


def test_parity_failure_fails_training_checks(trained):
    other = FraudTrainer(n_estimators=5, max_depth=2, seed=9, n_jobs=1).fit(synthetic_set(seed=4))
    X = feature_matrix(trained.holdout.rows, trained.feature_names)
    with pytest.raises(ParityError):
        check_parity(other.onnx_bytes, trained.classifier, X)


def test_export_stores_its_contract(trained):
    meta = onnx_metadata(trained.onnx_bytes)
    assert onnx_feature_names(trained.onnx_bytes) == FRAUD_MODEL_FEATURES
    assert json.loads(meta["feature_defaults"]) == MISSING_DEFAULTS
    assert float(meta["decision_threshold"]) == trained.threshold
    assert FraudScorer.from_model(loaded_model_from_bytes(trained.onnx_bytes, "1")).threshold == (
        trained.threshold
    )
    assert meta["data_start"].startswith("2026-11-02T00:00:00")
    session = inference_session(trained.onnx_bytes)
    assert [i.name for i in session.get_inputs()] == [INPUT_NAME]
    assert [o.name for o in session.get_outputs()] == ["fraud_probability"]


def test_split_holds_out_whole_jukeboxes_and_training_is_reproducible(trained):
    data = synthetic_set()
    train, holdout = FraudTrainer().split(data)
    assert not set(train.jukebox_ids) & set(holdout.jukebox_ids)
    assert 0.15 < len(holdout) / len(data) < 0.35
    again = FraudTrainer(n_estimators=25, max_depth=8, seed=3, n_jobs=2).fit(data)
    assert again.sha256 == trained.sha256


def test_metrics_overall_and_per_scenario(trained):
    m = trained.metrics
    assert set(m.by_scenario) == {"unpaid_plays", "song_looping"}
    assert m.overall.pr_auc > 0.8 and m.overall.recall > 0.7
    flat = m.as_flat()
    assert {"precision", "recall", "pr_auc", "song_looping.pr_auc", "unpaid_plays.recall"} <= set(
        flat
    )
    assert all(math.isfinite(v) for v in flat.values())


def test_metric_arithmetic_on_a_known_case():
    scores = np.array([0.9, 0.8, 0.3, 0.7, 0.1, 0.2])
    labels = np.array([1, 1, 1, 0, 0, 0])
    m = fraud_metrics(scores, labels, ["a", "b", "b", None, None, None], threshold=0.5)
    assert (m.overall.precision, m.overall.recall) == (2 / 3, 2 / 3)
    assert (m.by_scenario["a"].precision, m.by_scenario["a"].recall) == (0.5, 1.0)
    assert m.by_scenario["b"].recall == 0.5 and m.by_scenario["b"].positives == 2


def test_training_refuses_a_history_without_fraud():
    data = synthetic_set(n_jukeboxes=30)
    clean = TrainingSet(
        data.rows,
        np.zeros(len(data), dtype=int),
        [None] * len(data),
        data.event_times_ms,
        data.jukebox_ids,
    )
    with pytest.raises(ValueError, match="both fraud and clean"):
        FraudTrainer(n_estimators=5).fit(clean)


# --- scorer ----------------------------------------------------------------------------------


class RecordingSession:
    """A real onnxruntime session that refuses non-finite input and keeps what it was fed."""

    def __init__(self, onnx_bytes: bytes) -> None:
        self.inner = inference_session(onnx_bytes)
        self.fed: list[np.ndarray] = []

    def get_inputs(self):
        return self.inner.get_inputs()

    def get_outputs(self):
        return self.inner.get_outputs()

    def get_modelmeta(self):
        return self.inner.get_modelmeta()

    def run(self, output_names, feed):
        (X,) = feed.values()
        assert X.dtype == np.float32 and np.isfinite(X).all(), "non-finite input reached the model"
        self.fed.append(X.copy())
        return self.inner.run(output_names, feed)


def test_nan_none_inf_and_absent_never_reach_the_session(trained):
    session = RecordingSession(trained.onnx_bytes)
    scorer = FraudScorer(session, "1", trained.feature_names)
    rows = [
        {"device_plays_1h": float("nan"), "device_venue_distance_km_last": None},
        {"device_speed_kmh_last": float("inf"), "device_unpaid_plays_1h": -float("inf")},
        {},
        {"device_plays_1h": 12, "customer_payments_10m": np.int64(2), "unrelated": "ignored"},
    ]
    scores = scorer.score(rows)
    assert scores.shape == (4,) and np.all((0 <= scores) & (scores <= 1))
    (X,) = session.fed  # the whole batch went in as one matrix
    assert X.shape == (4, len(FRAUD_MODEL_FEATURES))
    col = {n: i for i, n in enumerate(trained.feature_names)}
    assert X[0, col["device_plays_1h"]] == 0.0
    assert X[0, col["device_venue_distance_km_last"]] == -1.0  # "no location yet"
    assert X[1, col["device_speed_kmh_last"]] == np.finfo(np.float32).max
    assert X[3, col["customer_payments_10m"]] == 2.0


def test_text_values_are_refused_not_guessed(trained):
    scorer = FraudScorer.from_model(loaded_model_from_bytes(trained.onnx_bytes, "1"))
    with pytest.raises(ValueError, match="device_plays_1h"):
        scorer.score([{"device_plays_1h": "12"}])
    assert scorer.score([]).shape == (0,)


def test_feature_name_mismatches_are_refused(trained):
    session = inference_session(trained.onnx_bytes)
    reordered = list(trained.feature_names[::-1])
    with pytest.raises(ModelIntegrityError, match="differ"):
        FraudScorer(session, "1", reordered, expected_features=None)
    with pytest.raises(ModelIntegrityError, match="differ"):
        FraudScorer(session, "1", reordered)  # names in another order than the model's own
    renamed = ["device_plays_per_hour", *trained.feature_names[1:]]
    with pytest.raises(ModelIntegrityError, match="not declared"):
        FraudScorer(session, "1", renamed, expected_features=None)
    with pytest.raises(ModelIntegrityError, match="wide"):
        FraudScorer(session, "1", trained.feature_names[:-1], expected_features=None)


def test_a_model_on_some_of_the_columns_serves_and_one_on_others_is_refused():
    """A model trained before a feature was added keeps serving after the upgrade; one
    on a column the flow does not supply is refused."""
    data = synthetic_set(n_jukeboxes=60)
    subset = ("device_plays_1h", "device_unpaid_plays_1h", "device_top_song_share_1h")
    small = FraudTrainer(n_estimators=5, feature_names=subset, n_jobs=1).fit(data)
    model = loaded_model_from_bytes(small.onnx_bytes, "2")
    assert FraudScorer.from_model(model).score([{}]).shape == (1,)
    with pytest.raises(ModelIntegrityError, match="device_top_song_share_1h"):
        FraudScorer.from_model(model, expected_features=subset[:2])


def test_hash_mismatch_is_refused(trained):
    with pytest.raises(ModelIntegrityError, match="sha256"):
        loaded_model_from_bytes(trained.onnx_bytes, "1", expected_sha256="0" * 64)
    assert loaded_model_from_bytes(trained.onnx_bytes, "1", trained.sha256).sha256 == trained.sha256


# --- watcher ---------------------------------------------------------------------------------


class InMemoryRegistry:
    """A ChampionSource: versions, an alias, and an outage switch."""

    def __init__(self) -> None:
        self.versions: dict[str, tuple[bytes, str]] = {}
        self.champion: str | None = None
        self.down = False

    def add(self, version: str, onnx_bytes: bytes, registered_sha: str) -> None:
        self.versions[version] = (onnx_bytes, registered_sha)

    def champion_version(self) -> str | None:
        if self.down:
            raise ConnectionError("registry unreachable")
        return self.champion

    def load_version(self, version: str) -> LoadedModel:
        onnx_bytes, sha = self.versions[version]
        return loaded_model_from_bytes(onnx_bytes, version, sha)


def test_watcher_follows_the_champion_without_restart(trained):
    other = FraudTrainer(n_estimators=10, max_depth=4, seed=5, n_jobs=1).fit(synthetic_set(seed=1))
    registry = InMemoryRegistry()
    registry.add("1", trained.onnx_bytes, trained.sha256)
    registry.add("2", other.onnx_bytes, other.sha256)
    registry.add("3", other.onnx_bytes, "f" * 64)  # bytes that are not the registered ones
    watcher = ChampionWatcher(registry, check_every_s=30)
    t = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
    assert watcher.poll(t) is None  # nothing promoted yet
    registry.champion = "1"
    assert watcher.poll(t + timedelta(seconds=10)) is None  # not time to check again
    first = watcher.poll(t + timedelta(seconds=30))
    assert first.version == "1" and first.model_versions == {"jukebox-fraud": "1"}
    row = [{"device_unpaid_plays_1h": 20, "device_plays_1h": 22}]
    registry.champion = "2"
    assert watcher.poll(t + timedelta(seconds=45)) is first
    second = watcher.poll(t + timedelta(seconds=61))
    assert second.version == "2"
    assert second.score(row)[0] == pytest.approx(
        other.classifier.predict_proba(feature_matrix(row, FRAUD_MODEL_FEATURES))[0, 1], abs=1e-4
    )
    registry.champion = "3"
    assert watcher.poll(t + timedelta(seconds=100)) is second
    assert "sha256" in watcher.last_error and watcher.refused_versions == {"3"}
    assert watcher.failed_checks == 1
    registry.down = True
    assert watcher.poll(t + timedelta(seconds=200)) is second
    assert "unreachable" in watcher.last_error
    watcher.poll(t + timedelta(seconds=210))  # not due: no check, nothing counted
    watcher.poll(t + timedelta(seconds=230))  # due, and still down: counted again
    assert watcher.failed_checks == 3
    registry.down, registry.champion = False, "1"
    assert watcher.poll(t + timedelta(seconds=300)).version == "1"
    assert watcher.last_error is None and watcher.failed_checks == 3
    assert [(old, new) for _, old, new in watcher.swaps] == [(None, "1"), ("1", "2"), ("2", "1")]
