"""`jukebox train fraud --on-retraining-request` against the real broker: nothing to do without a
request newer than the champion; trains (and registers a new version) when one is on the topic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Producer
from typer.testing import CliRunner

from dataflows.cli import app
from models.registry import FraudModelRegistry, local_tracking_uri
from schemas.outputs import ModelEvent

pytestmark = pytest.mark.integration

TRAIN = ["train", "fraud", "--on-retraining-request", "--jukeboxes", "60", "--days", "0.5",
         "--fraud-rate", "0.6", "--n-estimators", "5"]


def _publish(bootstrap: str, topic: str, event: ModelEvent) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, key=event.model.encode(), value=event.model_dump_json().encode())
    assert producer.flush(10) == 0


def _request(end: datetime) -> ModelEvent:
    return ModelEvent(kind="retraining_requested", model="jukebox-fraud", model_version="1",
                      feature="device_plays_1h", psi=0.42, js_divergence=0.12, ks_statistic=0.3,
                      window_start=end - timedelta(minutes=10), window_end=end, window_size=1000,
                      thresholds={"psi": 0.2, "js_divergence": 0.1, "ks_statistic": 0.15})


def test_trains_only_on_a_request_newer_than_the_champion(tmp_path, monkeypatch, kafka_bootstrap, topics):
    monkeypatch.setenv("JUKEBOX_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("JUKEBOX_KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("JUKEBOX_KAFKA_TOPIC_PREFIX", topics.prefix)
    monkeypatch.setenv("COLUMNS", "200")
    registry = FraudModelRegistry(local_tracking_uri(tmp_path))

    result = CliRunner().invoke(app, TRAIN)
    assert result.exit_code == 0, result.output
    assert "nothing to do" in result.output and registry.champion_version() is None

    # An old request (before any champion would exist now) still counts with no champion.
    _publish(kafka_bootstrap, topics.model_events, _request(datetime.now(UTC) - timedelta(days=1)))
    result = CliRunner().invoke(app, TRAIN)
    assert result.exit_code == 0, result.output
    assert "retraining requested: device_plays_1h of jukebox-fraud v1" in result.output
    assert registry.champion_version() == "1"

    # The same request is now older than the champion: nothing to do, no new version.
    result = CliRunner().invoke(app, TRAIN)
    assert result.exit_code == 0, result.output
    assert "nothing to do" in result.output and "champion v1" in result.output
    assert [str(v.version) for v in registry.client.search_model_versions("name='jukebox-fraud'")] == ["1"]
