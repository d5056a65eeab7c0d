"""The engine's metrics: names, units, bounded labels, exported sample names, one endpoint."""

from __future__ import annotations

import socket
import urllib.request
from datetime import UTC, datetime, timedelta

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dataflows import metrics as metrics_module
from dataflows.metrics import (
    ALLOWED_LABELS,
    METRICS,
    REGISTRY,
    EngineMetrics,
    exported_metric_names,
    start_metrics_server,
)
from models.drift import DriftMonitor, ReferenceProfile
from schemas.countries import COUNTRIES

REQUIRED = {
    "jukebox_events_in_total": ("counter", {"topic"}),
    "jukebox_decode_failures_total": ("counter", {"topic", "reason"}),
    "jukebox_late_events_total": ("counter", {"topic", "reason"}),
    "jukebox_event_time_lag_seconds": ("gauge", {"topic"}),
    "jukebox_kafka_consumer_lag_messages": ("gauge", {"topic", "partition"}),
    "jukebox_redis_write_batches_total": ("counter", set()),
    "jukebox_redis_write_rows_total": ("counter", {"result"}),
    "jukebox_redis_write_duration_seconds": ("histogram", set()),
    "jukebox_entities_in_state": ("gauge", {"entity"}),
    "jukebox_scoring_duration_seconds": ("histogram", {"scorer"}),
    "jukebox_alerts_total": ("counter", {"reason", "severity"}),
    "jukebox_alert_score": ("histogram", set()),
    "jukebox_model_info": ("gauge", {"model", "version"}),
    "jukebox_model_loaded": ("gauge", {"model"}),
    "jukebox_recommendation_updates_total": ("counter", {"result"}),
    "jukebox_dead_letters_total": ("counter", {"topic", "reason"}),
    "jukebox_sink_delivery_failures_total": ("counter", {"topic"}),
    "jukebox_drift_psi": ("gauge", {"model", "feature"}),
    "jukebox_drift_js_divergence": ("gauge", {"model", "feature"}),
    "jukebox_drift_ks_statistic": ("gauge", {"model", "feature"}),
    "jukebox_build_info": ("gauge", {"version"}),
    "jukebox_events_by_country_total": ("counter", {"country"}),
}


def _families(registry: CollectorRegistry) -> dict[str, tuple[str, set[str]]]:
    """Exposed name -> (type, label names), from the metric objects themselves."""
    out = {}
    for collector in list(registry._collector_to_names):
        family_type = collector._type
        name = collector._name + ("_total" if family_type == "counter" else "")
        out[name] = (family_type, set(collector._labelnames))
    return out


def test_every_required_metric_exists_with_its_type_and_labels():
    families = _families(REGISTRY)
    for name, (kind, labels) in REQUIRED.items():
        assert name in families, name
        assert families[name] == (kind, labels), name


def test_names_follow_prometheus_conventions_and_labels_are_bounded():
    for name, (kind, labels) in _families(REGISTRY).items():
        assert name.startswith("jukebox_"), name
        assert name == name.lower() and "__" not in name, name
        assert name.endswith("_total") == (kind == "counter"), name
        if "duration" in name or "lag_seconds" in name:
            assert name.endswith("_seconds"), name
        assert labels <= ALLOWED_LABELS, f"{name} has unbounded or unknown labels {labels - ALLOWED_LABELS}"
        assert not {"jukebox_id", "customer_id", "venue_id", "event_id"} & labels


def test_the_engine_registry_is_our_own_not_the_global_default():
    assert REGISTRY is not prometheus_client.REGISTRY
    assert METRICS.registry is REGISTRY
    assert not any(n.startswith("jukebox_") for n in prometheus_client.REGISTRY._names_to_collectors)


def test_exported_names_cover_every_sample_a_scrape_can_contain():
    registry = CollectorRegistry()
    m = EngineMetrics(registry)
    # Touch every labelled metric so each family has samples.
    m.events_in.labels(topic="t").inc()
    m.decode_failures.labels(topic="t", reason="malformed_json").inc()
    m.late_events.labels(topic="t", reason="too_late").inc()
    m.event_time_lag.labels(topic="t").set(1)
    m.consumer_lag.labels(topic="t", partition="0").set(3)
    m.redis_write_batches.inc()
    m.redis_write_duration.observe(0.002)
    m.scoring_duration.labels(scorer="fraud").observe(0.01)
    m.alert_score.observe(0.9)
    m.record_model_loaded("jukebox-fraud", "3")
    m.model_reload_failures.labels(model="jukebox-fraud").inc()
    m.dead_letters.labels(topic="t", reason="malformed_json").inc()
    m.sink_delivery_failures.labels(topic="t").inc()
    m.drift_psi.labels(model="m", feature="f").set(0.1)
    m.drift_js_divergence.labels(model="m", feature="f").set(0.1)
    m.drift_ks_statistic.labels(model="m", feature="f").set(0.1)
    scraped = {
        sample.name
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }
    exported = m.exported_metric_names()
    assert scraped <= exported, scraped - exported
    assert {"jukebox_redis_write_duration_seconds_bucket", "jukebox_alerts_total",
            "jukebox_scoring_duration_seconds_count", "jukebox_alert_score_sum"} <= exported
    assert exported_metric_names() == METRICS.exported_metric_names()


def test_series_that_alerts_need_exist_before_the_first_event():
    registry = CollectorRegistry()
    EngineMetrics(registry)
    text = generate_latest(registry).decode()
    for country in COUNTRIES:
        assert f'jukebox_events_by_country_total{{country="{country}"}} 0.0' in text
    assert 'jukebox_redis_write_rows_total{result="stale"} 0.0' in text
    assert 'jukebox_recommendation_updates_total{result="suppressed"} 0.0' in text
    assert 'jukebox_alerts_total{reason="impossible_travel",severity="critical"} 0.0' in text
    assert 'jukebox_build_info{version="' in text


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_model_versions_keep_exactly_one_series_per_model():
    registry = CollectorRegistry()
    m = EngineMetrics(registry)
    m.record_model_loaded("jukebox-fraud", "3")
    m.record_model_loaded("jukebox-recs", "7")
    m.record_model_loaded("jukebox-fraud", "4")  # hot reload
    assert _value(registry, "jukebox_model_info", model="jukebox-fraud", version="3") is None
    assert _value(registry, "jukebox_model_info", model="jukebox-fraud", version="4") == 1
    assert _value(registry, "jukebox_model_info", model="jukebox-recs", version="7") == 1
    m.record_model_unloaded("jukebox-fraud")
    assert _value(registry, "jukebox_model_info", model="jukebox-fraud", version="4") is None
    assert _value(registry, "jukebox_model_loaded", model="jukebox-fraud") == 0
    assert _value(registry, "jukebox_model_loaded", model="jukebox-recs") == 1


def test_event_time_lag_and_drift_reports_land_in_their_gauges():
    registry = CollectorRegistry()
    m = EngineMetrics(registry)
    now = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
    m.record_event_time_lag("jukebox.plays.v1", now - timedelta(seconds=42.5), now)
    assert _value(registry, "jukebox_event_time_lag_seconds", topic="jukebox.plays.v1") == 42.5
    reference = ReferenceProfile.from_sample("device_plays_1h", list(range(100)), bins=5)
    report = DriftMonitor("jukebox-fraud", reference, window_size=10).update([500.0] * 10, now)
    m.record_drift(report)
    labels = {"model": "jukebox-fraud", "feature": "device_plays_1h"}
    assert _value(registry, "jukebox_drift_psi", **labels) == report.psi > 0.2
    assert _value(registry, "jukebox_drift_js_divergence", **labels) == report.js_divergence
    assert _value(registry, "jukebox_drift_ks_statistic", **labels) == 1.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_metrics_endpoint_per_process():
    registry = CollectorRegistry()
    m = EngineMetrics(registry)
    m.events_in.labels(topic="jukebox.plays.v1").inc(5)
    port = _free_port()
    endpoint = start_metrics_server(port, registry, addr="127.0.0.1")
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert 'jukebox_events_in_total{topic="jukebox.plays.v1"} 5.0' in body
        assert start_metrics_server(port, registry, addr="127.0.0.1") is endpoint  # idempotent
        with pytest.raises(RuntimeError, match="one per process"):
            start_metrics_server(_free_port(), registry, addr="127.0.0.1")
    finally:
        endpoint.close()
    assert metrics_module._endpoint is None
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_routed_events_count_by_topic_and_country_and_entities_by_kind():
    from dataflows.live import metrics_observers
    from dataflows.records import Admitted, OutMessage, RawRecord
    from schemas.events import PaymentEvent, PlayEvent, VenueRegistration

    registry = CollectorRegistry()
    observers = metrics_observers(EngineMetrics(registry))
    at = datetime(2026, 12, 2, 20, tzinfo=UTC)
    play = PlayEvent(event_id="p1", jukebox_id="jb-1", venue_id="v1", song_id="s1", played_at=at,
                     credits_used=1)
    payment = PaymentEvent(event_id="m1", payment_id="pay1", jukebox_id="jb-1", venue_id="v1",
                           customer_id="c1", amount="20", currency="KES", method="mobile_money",
                           status="succeeded", occurred_at=at)
    venue = VenueRegistration(event_id="r1", venue_id="v1", jukebox_ids=["jb-1"], country="NG", lat=6.5,
                              lon=3.4, timezone="Africa/Lagos", opening_hours=[], updated_at=at)
    routed = [(RawRecord(topic, None, b"{}", 0, n, 0), result) for n, (topic, result) in enumerate([
        ("plays", Admitted(play, 0)), ("payments", Admitted(payment, 0)), ("payments", Admitted(payment, 0)),
        ("venues", Admitted(venue, 0)),
        ("plays", OutMessage("dead-letters.v1", None, b"{}", [("jukebox.reason", b"malformed_json")]))])]
    observers.on_routed(routed)
    observers.on_entities("device", 1)
    observers.on_entities("device", 1)
    observers.on_entities("device", -1)

    assert _value(registry, "jukebox_events_in_total", topic="plays") == 2
    assert _value(registry, "jukebox_events_in_total", topic="payments") == 2
    assert _value(registry, "jukebox_events_by_country_total", country="KE") == 2  # by currency
    assert _value(registry, "jukebox_events_by_country_total", country="NG") == 1  # by registration
    assert sum(_value(registry, "jukebox_events_by_country_total", country=c) for c in COUNTRIES) == 3
    assert _value(registry, "jukebox_dead_letters_total", topic="plays", reason="malformed_json") == 1
    assert _value(registry, "jukebox_entities_in_state", entity="device") == 1


def test_a_champion_poll_records_the_serving_version_and_counts_every_failed_check():
    registry = CollectorRegistry()
    m = EngineMetrics(registry)

    def failures() -> float:
        return registry.get_sample_value("jukebox_model_reload_failures_total", {"model": "jukebox-fraud"}) or 0

    m.record_champion_poll("jukebox-fraud", None, 0)
    assert registry.get_sample_value("jukebox_model_loaded", {"model": "jukebox-fraud"}) == 0
    m.record_champion_poll("jukebox-fraud", "3", 0)
    assert registry.get_sample_value("jukebox_model_info", {"model": "jukebox-fraud", "version": "3"}) == 1
    m.record_champion_poll("jukebox-fraud", "3", 1)  # the same error twice is still two failures
    m.record_champion_poll("jukebox-fraud", "3", 3)
    m.record_champion_poll("jukebox-fraud", "3", 3)
    assert failures() == 3
    m.record_champion_poll("jukebox-recs", "1", 2)  # each model's watcher has its own total
    assert failures() == 3
    assert registry.get_sample_value("jukebox_model_reload_failures_total", {"model": "jukebox-recs"}) == 2


def test_the_recovery_volume_is_read_at_each_scrape(tmp_path):
    registry = CollectorRegistry()
    m = EngineMetrics(registry)
    assert registry.get_sample_value("jukebox_recovery_volume_size_bytes") == 0  # no recovery: no alert
    m.watch_recovery_dir(tmp_path)
    (tmp_path / "part-0.sqlite3").write_bytes(bytes(1000))
    (tmp_path / "part-0.sqlite3-wal").write_bytes(bytes(24))
    assert registry.get_sample_value("jukebox_recovery_partition_bytes") == 1024
    size = registry.get_sample_value("jukebox_recovery_volume_size_bytes")
    free = registry.get_sample_value("jukebox_recovery_volume_free_bytes")
    assert 0 < free <= size
    (tmp_path / "part-0.sqlite3").write_bytes(bytes(5000))  # read again, not cached
    assert registry.get_sample_value("jukebox_recovery_partition_bytes") == 5024
    m.watch_recovery_dir(tmp_path / "gone")
    assert registry.get_sample_value("jukebox_recovery_partition_bytes") == 0
    assert registry.get_sample_value("jukebox_recovery_volume_size_bytes") == 0
