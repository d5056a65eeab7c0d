"""The recommender in a real local MLflow store: promoted only when better than both the
popularity baseline and the champion, loaded back verified, hot-swapped by the watcher."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from dataflows.metrics import EngineMetrics
from dataflows.recs_live import recs_config
from dataflows.settings import JukeboxSettings
from models.fraud_scorer import ModelIntegrityError
from models.onnx_export import sha256_hex
from models.recommender import RecsChampionWatcher, RecsParams, recs_onnx_bytes
from models.recs_registry import ONNX_FILE, RecsModelRegistry, load_recs_onnx_file
from models.registry import CHAMPION, local_tracking_uri
from tests.recs_models import recs_setup

pytestmark = pytest.mark.integration


def untrained(trained):
    p = trained.params
    flat = RecsParams.uniform(p.vocab, p.genre_code, p.artist_code, p.language_code)
    raw = recs_onnx_bytes(flat)
    return replace(trained, params=flat, onnx_bytes=raw, sha256=sha256_hex(raw))


def artifact_of(registry: RecsModelRegistry, version: str) -> Path:
    source = registry.client.get_model_version(registry.name, version).source
    return Path(source.removeprefix("file://")) / ONNX_FILE


def test_register_promote_only_when_better_load_verified_and_hot_swap(tmp_path):
    setup = recs_setup()
    trained, catalog, rules = setup.trained, setup.catalog, setup.rules
    registry = RecsModelRegistry(local_tracking_uri(tmp_path))
    assert registry.champion_version() is None

    weak = registry.register(untrained(trained), catalog, rules)
    assert (weak.version, weak.promoted) == ("1", False) and "popularity baseline" in weak.reason
    first = registry.register(trained, catalog, rules, params={"sim_seed": 5})
    assert (first.version, first.promoted, first.previous_champion) == ("2", True, None)
    assert first.new_ndcg == pytest.approx(trained.test.model.ndcg, abs=1e-6)  # re-scored from MLflow
    again = registry.register(trained, catalog, rules)
    assert (again.version, again.promoted) == ("3", False) and "does not beat champion v2" in again.reason
    assert again.champion_ndcg == pytest.approx(again.new_ndcg)
    assert registry.champion_version() == "2"

    run = registry.client.get_run(first.run_id).data
    assert run.metrics["ndcg_at_10"] > run.metrics["popularity_ndcg_at_10"]
    assert run.metrics["ndcg_lift"] == pytest.approx(trained.test.ndcg_lift)
    assert run.params["data_start"] == trained.data_range[0].isoformat() and run.params["sim_seed"] == "5"
    assert run.tags["onnx_sha256"] == trained.sha256

    champion = registry.load(f"models:/jukebox-recs@{CHAMPION}")
    assert (champion.version, champion.sha256) == ("2", trained.sha256)
    local = load_recs_onnx_file(artifact_of(registry, "2"))
    assert local.sha256 == trained.sha256 and local.version.startswith("file-")
    with pytest.raises(LookupError):
        registry.load("models:/jukebox-recs@challenger")

    watcher = RecsChampionWatcher(registry, check_every_s=30)
    t = datetime(2026, 12, 1, tzinfo=UTC)
    assert watcher.poll(t).version == "2"
    registry.client.set_registered_model_alias(registry.name, CHAMPION, "3")  # a promotion elsewhere
    assert watcher.poll(t + timedelta(seconds=5)).version == "2"  # not checked yet
    assert watcher.poll(t + timedelta(seconds=31)).version == "3"

    artifact_of(registry, "1").write_bytes(trained.onnx_bytes)  # valid bytes, not the registered ones
    with pytest.raises(ModelIntegrityError, match="sha256"):
        registry.load_version("1")
    registry.client.set_registered_model_alias(registry.name, CHAMPION, "1")
    assert watcher.poll(t + timedelta(seconds=62)).version == "3"  # refused: keeps serving v3
    assert "1" in watcher.refused_versions


def test_live_config_follows_the_champion_and_feeds_the_metrics(tmp_path):
    setup = recs_setup()
    settings = JukeboxSettings(data_dir=tmp_path)
    metrics = EngineMetrics(CollectorRegistry())
    config = recs_config(settings, metrics, setup.catalog)
    t = datetime(2026, 12, 1, tzinfo=UTC)
    assert config.scorer(t) is None  # no champion yet: lists come from trending
    assert metrics.registry.get_sample_value("jukebox_model_loaded", {"model": "jukebox-recs"}) == 0
    RecsModelRegistry(local_tracking_uri(tmp_path)).register(setup.trained, setup.catalog, setup.rules)
    assert config.scorer(t + timedelta(seconds=31)).version == "1"  # picked up at the next check
    assert metrics.registry.get_sample_value("jukebox_model_info", {"model": "jukebox-recs", "version": "1"}) == 1
    config.on_delivery(3, 5)
    config.on_scored("jukebox-recs", "1", 0.004, 12)
    sample = metrics.registry.get_sample_value
    assert sample("jukebox_recommendation_updates_total", {"result": "sent"}) == 3
    assert sample("jukebox_recommendation_updates_total", {"result": "suppressed"}) == 5
    assert sample("jukebox_scoring_duration_seconds_count", {"scorer": "jukebox-recs"}) == 1

    path = tmp_path / "recs.onnx"
    path.write_bytes(setup.trained.onnx_bytes)
    fixed = recs_config(JukeboxSettings(data_dir=tmp_path, models={"recs_model_uri": str(path)}),
                        EngineMetrics(CollectorRegistry()), setup.catalog)
    assert fixed.scorer(t).version == f"file-{setup.trained.sha256[:12]}"
