"""Train on a small simulated history, register in a real local MLflow store, promote only when
better, load the champion back verified, and hot-swap it in a watcher."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from dataflows.train import pending_retraining_request
from models.fraud_features import feature_matrix
from models.fraud_scorer import ChampionWatcher, FraudScorer, ModelIntegrityError
from models.model_drift import REFERENCE_FILE
from models.registry import (
    CHAMPION,
    ONNX_FILE,
    FraudModelRegistry,
    load_onnx_file,
    local_tracking_uri,
)
from models.training import FraudTrainer, TrainedFraudModel
from models.training_set import HistoryStats, labelled_training_set
from schemas.outputs import ModelEvent
from simulator.simulation import Simulation

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def history():
    stats = HistoryStats()
    simulation = Simulation(jukeboxes=120, seed=11, duration=timedelta(hours=12), fraud_rate=0.6)
    data = labelled_training_set(simulation.records(), stats=stats)
    assert stats.labels > 10 and stats.decode_errors > 0  # the history carries its defects
    return data


@pytest.fixture(scope="module")
def weak(history) -> TrainedFraudModel:
    return FraudTrainer(n_estimators=1, max_depth=1, seed=0, n_jobs=1).fit(history)


@pytest.fixture(scope="module")
def strong(history) -> TrainedFraudModel:
    return FraudTrainer(n_estimators=40, seed=0).fit(history)


def artifact_of(registry: FraudModelRegistry, version: str) -> Path:
    source = registry.client.get_model_version(registry.name, version).source
    return Path(source.removeprefix("file://")) / ONNX_FILE


def test_register_promote_only_when_better_and_load_back(tmp_path, history, weak, strong):
    assert strong.metrics.overall.pr_auc > weak.metrics.overall.pr_auc
    registry = FraudModelRegistry(local_tracking_uri(tmp_path))
    assert registry.champion_version() is None

    first = registry.register(weak, params={"sim_seed": 11})
    assert (first.version, first.promoted, first.previous_champion) == ("1", True, None)

    second = registry.register(strong)
    assert (second.version, second.promoted, second.previous_champion) == ("2", True, "1")
    # The old champion was re-scored (through ONNX) on the new run's holdout: the same rows.
    assert second.champion_pr_auc == pytest.approx(weak.metrics.overall.pr_auc, abs=1e-4)

    worse = registry.register(weak)
    same = registry.register(strong)
    assert (worse.version, worse.promoted, same.version, same.promoted) == ("3", False, "4", False)
    assert "does not beat champion v2" in same.reason
    assert registry.champion_version() == "2"
    tags = registry.client.get_model_version(registry.name, "3").tags
    assert tags["promoted"] == "false" and tags["onnx_sha256"] == weak.sha256

    run = registry.client.get_run(second.run_id).data
    assert run.params["data_start"] == history.time_range[0].isoformat()
    assert run.params["n_holdout_rows"] == str(len(strong.holdout))
    assert {"precision", "recall", "pr_auc"} <= set(run.metrics)
    assert any(key.endswith(".pr_auc") for key in run.metrics)
    assert run.tags["onnx_sha256"] == strong.sha256
    assert registry.client.get_run(same.run_id).data.metrics["champion_pr_auc_same_holdout"] == (
        pytest.approx(strong.metrics.overall.pr_auc, abs=1e-4)
    )

    champion = registry.load(f"models:/jukebox-fraud@{CHAMPION}")
    assert (champion.version, champion.sha256) == ("2", strong.sha256)
    assert champion.feature_names == strong.feature_names
    scorer = FraudScorer.from_model(champion)
    rows = strong.holdout.rows[:500]
    expected = strong.classifier.predict_proba(feature_matrix(rows, strong.feature_names))[:, 1]
    assert np.max(np.abs(scorer.score(rows) - expected)) <= 1e-4
    assert registry.load("models:/jukebox-fraud/1").sha256 == weak.sha256

    local = load_onnx_file(artifact_of(registry, "2"))
    assert local.sha256 == strong.sha256 and local.version == f"file-{strong.sha256[:12]}"
    with pytest.raises(LookupError):
        registry.load("models:/jukebox-fraud@challenger")


def test_tampered_artifacts_are_refused(tmp_path, weak, strong):
    registry = FraudModelRegistry(local_tracking_uri(tmp_path))
    registry.register(weak)
    path = artifact_of(registry, "1")
    path.write_bytes(strong.onnx_bytes)  # a valid model, but not the registered bytes
    with pytest.raises(ModelIntegrityError, match="sha256"):
        registry.load("models:/jukebox-fraud@champion")
    registry.client.set_model_version_tag(registry.name, "1", "onnx_sha256", strong.sha256)
    registry.client.set_model_version_tag(
        registry.name, "1", "feature_names", '["device_plays_1h"]'
    )
    with pytest.raises(ModelIntegrityError, match="feature names"):
        registry.load_version("1")
    # A broken champion is replaced by the next registration, whatever its score.
    replaced = registry.register(weak)
    assert replaced.promoted and "cannot be loaded" in replaced.reason


def test_watcher_swaps_to_a_newly_promoted_version(tmp_path, weak, strong):
    registry = FraudModelRegistry(local_tracking_uri(tmp_path))
    registry.register(weak)
    watcher = ChampionWatcher(registry, check_every_s=30)
    assert watcher.poll(T0).version == "1"
    registry.register(strong)
    assert watcher.poll(T0 + timedelta(seconds=10)).version == "1"  # not checked yet
    scorer = watcher.poll(T0 + timedelta(seconds=30))
    assert scorer.version == "2" and scorer.model_versions == {"jukebox-fraud": "2"}

    # Someone points the alias at a version whose artifact was swapped: refused, v2 keeps serving.
    registry.register(weak)
    artifact_of(registry, "3").write_bytes(strong.onnx_bytes)
    registry.client.set_registered_model_alias(registry.name, CHAMPION, "3")
    assert watcher.poll(T0 + timedelta(seconds=60)) is scorer
    assert "3" in watcher.refused_versions and "sha256" in watcher.last_error
    assert [(old, new) for _, old, new in watcher.swaps] == [(None, "1"), ("1", "2")]


def test_the_train_command_end_to_end(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from dataflows.cli import app

    monkeypatch.setenv("JUKEBOX_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("JUKEBOX_MODELS_MLFLOW_TRACKING_URI", raising=False)
    args = [
        "train",
        "fraud",
        "--jukeboxes",
        "80",
        "--days",
        "0.5",
        "--fraud-rate",
        "0.6",
        "--seed",
        "5",
        "--n-estimators",
        "15",
    ]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    text = " ".join(first.output.split())  # rich wraps to the terminal width
    assert "version 1" in text and "promoted to champion" in text
    assert "song_looping" in text and "alert precision" in text
    again = CliRunner().invoke(app, args)  # the same history and model: a tie is not better
    assert again.exit_code == 0, again.output
    text = " ".join(again.output.split())
    assert "version 2" in text and "not promoted" in text and "does not beat" in text
    registry = FraudModelRegistry(local_tracking_uri(tmp_path))
    assert registry.champion_version() == "1"
    metrics = registry.client.get_run(
        registry.client.get_model_version(registry.name, "1").run_id
    ).data.metrics
    assert "alerts.precision_any" in metrics and "pr_auc" in metrics


def test_a_running_flow_switches_to_a_newly_promoted_model_without_restart_or_loss(
    tmp_path, weak, strong, kafka_bootstrap, redis_url, topics, redis_key_prefix
):
    import orjson

    from dataflows.simulate import publish_records
    from tests.integration.flow_metrics import events_in
    from tests.integration.flow_process import FlowProcess, read_topic, wait_until

    uri = local_tracking_uri(tmp_path / "mlruns")
    registry = FraudModelRegistry(uri)
    assert registry.register(weak).promoted
    flow = FlowProcess(kafka_bootstrap, redis_url, topics, redis_key_prefix, tmp_path / "flow",
                       extra_env={"JUKEBOX_MODELS_MLFLOW_TRACKING_URI": uri,
                                  "JUKEBOX_MODELS_RELOAD_INTERVAL_S": "0.5"}).start()

    def versions() -> list[str]:
        return [orjson.loads(v)["model_versions"].get("jukebox-fraud", "-")
                for v in read_topic(kafka_bootstrap, topics.fraud_alerts, timeout_s=3)]

    def send(day: int) -> int:
        sim = Simulation(jukeboxes=150, seed=20 + day, duration=timedelta(hours=4), fraud_rate=0.8,
                         start=T0 + timedelta(days=day))
        report = publish_records({"bootstrap.servers": kafka_bootstrap}, topics, sim.records())
        assert report.ok
        return sum(n for t, n in report.delivered.items() if t in topics.inputs)

    try:
        sent = send(0)
        wait_until(lambda: "1" in versions(), 90, "alerts scored by version 1", check=flow.assert_running)
        assert registry.register(strong).promoted
        time.sleep(2)  # longer than the reload interval: the next batch is scored by v2
        sent += send(1)
        wait_until(lambda: "2" in versions(), 90, "alerts scored by version 2", check=flow.assert_running)
        assert "1" in versions()
        wait_until(lambda: events_in(flow.metrics_port) >= sent, 60, "every event processed",
                   check=flow.assert_running)
        assert events_in(flow.metrics_port) == sent  # nothing lost, nothing processed twice
    finally:
        flow.stop()


def test_the_drift_reference_is_stored_with_the_version_and_loaded_back(tmp_path, weak):
    assert weak.reference is not None and weak.reference.score is not None
    registry = FraudModelRegistry(local_tracking_uri(tmp_path))
    version = registry.register(weak).version
    assert (artifact_of(registry, version).parent / REFERENCE_FILE).is_file()
    loaded = registry.load_reference(version)
    assert loaded == weak.reference
    assert set(loaded.feature_names) <= set(weak.feature_names) and len(loaded.feature_names) > 10
    # A version trained before references were stored: no reference, so no drift checks.
    older = registry.register(replace(weak, reference=None)).version
    assert registry.load_reference(older) is None

    # A retraining request counts only when its window ended after the champion was registered.
    champion = registry.champion_version()
    registered_at = registry.registered_at(champion)

    def request(end) -> bytes:
        return ModelEvent(kind="retraining_requested", model="jukebox-fraud", model_version=champion,
                          feature="score", psi=0.4, js_divergence=0.2, ks_statistic=0.3,
                          window_start=end, window_end=end, window_size=1000,
                          thresholds={}).model_dump_json().encode()

    stale = request(registered_at - timedelta(minutes=1))
    fresh = request(registered_at + timedelta(minutes=1))
    assert pending_retraining_request(registry, [stale, b"not json", None])[0] is None
    found, found_champion, _at = pending_retraining_request(registry, [stale, fresh])
    assert found is not None and found.window_end > registered_at and found_champion == champion
