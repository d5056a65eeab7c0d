"""Every Prometheus metric of the engine, defined once, in a registry of our own.

`METRICS` is the process's set, registered in `REGISTRY` (not prometheus-client's
global default, so tests build their own `EngineMetrics(CollectorRegistry())` and
never see each other's values). One process serves one endpoint:
`start_metrics_server(port)`; Prometheus scrapes it (deploy/prometheus/).

Labels are bounded sets only: topic, partition, reason, severity, model, version,
entity, result, feature, scorer, country. Never a jukebox, venue or customer id
(one series each would be 1M series) and never anything secret.
`ALLOWED_LABELS` is checked by tests/unit/test_metrics.py.

    from dataflows.metrics import METRICS
    METRICS.events_in.labels(topic=topics.plays).inc(len(batch))
    with METRICS.redis_write_duration.time():
        store.write(rows)
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import get_args
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from models.drift import DriftReport
from models.fraud_features import MODEL_NAME
from schemas.countries import COUNTRIES
from schemas.outputs import FraudReason, ModelEventKind, Severity

ALLOWED_LABELS = frozenset(
    {"topic", "partition", "reason", "severity", "model", "version", "entity", "result",
     "feature", "scorer", "country"}
)

# Seconds. A Redis pipeline of ~1,000 rows took ~25 ms (2026-12-04); scoring a batch, tens of ms.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


def package_version() -> str:
    try:
        return version("jukebox-streams")
    except PackageNotFoundError:
        return "unknown"


class EngineMetrics:
    """The engine's metrics, registered in `registry`. Label meanings:

    topic: the Kafka topic a record came from (for dead letters and late events, the
    *source* topic, so ratios against `jukebox_events_in_total` join on it); reason:
    a stable code (decode reason, `FraudReason`, lateness reason); result: a fixed
    outcome set, pre-created at zero so `rate()` is defined from the first scrape.
    """

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self._failed_checks: dict[str, int] = {}  # model -> the watcher's total at the last poll
        r = registry
        # Inputs
        self.events_in = Counter(
            "jukebox_events_in_total", "Records read from an input topic", ["topic"], registry=r)
        self.events_by_country = Counter(
            "jukebox_events_by_country_total", "Decoded events by venue country (ISO 3166-1)",
            ["country"], registry=r)
        self.decode_failures = Counter(
            "jukebox_decode_failures_total", "Records that failed to decode", ["topic", "reason"],
            registry=r)
        self.late_events = Counter(
            "jukebox_late_events_total",
            "Events routed to the late-events topic (too old, or too far in the future)",
            ["topic", "reason"], registry=r)
        self.event_time_lag = Gauge(
            "jukebox_event_time_lag_seconds",
            "Processing time minus event time of the last processed event", ["topic"], registry=r)
        self.consumer_lag = Gauge(
            "jukebox_kafka_consumer_lag_messages",
            "High watermark minus the next offset to emit, per owned partition",
            ["topic", "partition"], registry=r)
        self.input_alignment_waits = Counter(
            "jukebox_input_alignment_waits_total",
            "Polls cut short to wait for a partition behind the others (input_alignment.py), by its topic",
            ["topic"], registry=r)
        self.input_alignment_stalls = Counter(
            "jukebox_input_alignment_stalls_total",
            "Times a partition behind the others stayed empty for the stall time and stopped holding them back",
            ["topic", "partition"], registry=r)
        self.input_offset_commit_failures = Counter(
            "jukebox_input_offset_commit_failures_total",
            "Commits of emitted input offsets to the consumer group that failed (bookkeeping for a "
            "start without a snapshot; the recovery snapshot still holds them)", registry=r)
        # Online store
        self.redis_write_batches = Counter(
            "jukebox_redis_write_batches_total", "Pipelined feature writes sent to Redis",
            registry=r)
        self.redis_write_rows = Counter(
            "jukebox_redis_write_rows_total",
            "Feature rows written: applied, or stale (older than the stored event time)",
            ["result"], registry=r)
        self.redis_write_duration = Histogram(
            "jukebox_redis_write_duration_seconds", "Time to write one batch to Redis",
            buckets=LATENCY_BUCKETS, registry=r)
        self.entities_in_state = Gauge(
            "jukebox_entities_in_state", "Entities with live state in this process",
            ["entity"], registry=r)
        # The recovery volume, read at each scrape (`watch_recovery_dir`; 0 without recovery):
        # Bytewax rewrites every touched entity's snapshot each epoch and keeps superseded
        # ones for the backup interval, so a full volume is a stopped flow (bench.recovery).
        self.recovery_volume_size = Gauge(
            "jukebox_recovery_volume_size_bytes", "Size of the filesystem holding the recovery partitions",
            registry=r)
        self.recovery_volume_free = Gauge(
            "jukebox_recovery_volume_free_bytes", "Bytes free to this process on the recovery filesystem",
            registry=r)
        self.recovery_partition = Gauge(
            "jukebox_recovery_partition_bytes", "Bytes of the recovery directory's files (SQLite partitions)",
            registry=r)
        # Scoring and decisions
        self.scoring_duration = Histogram(
            "jukebox_scoring_duration_seconds", "Time to score one batch", ["scorer"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.alerts = Counter(
            "jukebox_alerts_total", "Fraud alerts published, one count per reason",
            ["reason", "severity"], registry=r)
        self.alert_score = Histogram(
            "jukebox_alert_score", "Score of published fraud alerts", buckets=SCORE_BUCKETS,
            registry=r)
        self.recommendation_updates = Counter(
            "jukebox_recommendation_updates_total",
            "Recommendation updates: sent, or suppressed (unchanged ranking)", ["result"],
            registry=r)
        # Models
        self.model_info = Gauge(
            "jukebox_model_info", "1 for the model version currently loaded", ["model", "version"],
            registry=r)
        self.model_loaded = Gauge(
            "jukebox_model_loaded", "1 if a version of the model is loaded and serving, else 0",
            ["model"], registry=r)
        self.model_reload_failures = Counter(
            "jukebox_model_reload_failures_total",
            "Failed attempts to load a new model version (the previous one keeps serving)",
            ["model"], registry=r)
        self.drift_psi = Gauge(
            "jukebox_drift_psi", "Population stability index of the latest window vs reference",
            ["model", "feature"], registry=r)
        self.drift_js_divergence = Gauge(
            "jukebox_drift_js_divergence", "Jensen-Shannon divergence (bits) of the latest window",
            ["model", "feature"], registry=r)
        self.drift_ks_statistic = Gauge(
            "jukebox_drift_ks_statistic", "Kolmogorov-Smirnov statistic of the latest window",
            ["model", "feature"], registry=r)
        self.model_events = Counter(
            "jukebox_model_events_total",
            "Model events published: reason drift_detected or retraining_requested",
            ["model", "reason"], registry=r)
        # Outputs
        self.dead_letters = Counter(
            "jukebox_dead_letters_total", "Records sent to the dead-letter topic",
            ["topic", "reason"], registry=r)
        self.sink_delivery_failures = Counter(
            "jukebox_sink_delivery_failures_total", "Messages the broker did not acknowledge",
            ["topic"], registry=r)
        self.build_info = Gauge(
            "jukebox_build_info", "1, labelled with the running engine version", ["version"],
            registry=r)
        self._precreate_series()

    def _precreate_series(self) -> None:
        # A series that does not exist yet cannot alert on its absence or rate.
        for country in COUNTRIES:
            self.events_by_country.labels(country=country)
        for result in ("applied", "stale"):
            self.redis_write_rows.labels(result=result)
        for result in ("sent", "suppressed"):
            self.recommendation_updates.labels(result=result)
        for reason in FraudReason:
            for severity in Severity:
                self.alerts.labels(reason=reason.value, severity=severity.value)
        for entity in ("device", "customer"):
            self.entities_in_state.labels(entity=entity)
        for kind in get_args(ModelEventKind):
            self.model_events.labels(model=MODEL_NAME, reason=kind)
        self.build_info.labels(version=package_version()).set(1)

    def record_event_time_lag(self, topic: str, event_time: datetime, now: datetime) -> None:
        """Set the lag gauge from the last processed event; `now` is the caller's clock."""
        self.event_time_lag.labels(topic=topic).set((now - event_time).total_seconds())

    def record_model_loaded(self, model: str, version: str) -> None:
        """Mark `version` as the serving version of `model`, dropping the old version's series."""
        for labels in self._label_sets(self.model_info):
            if labels["model"] == model and labels["version"] != version:
                self.model_info.remove(model, labels["version"])
        self.model_info.labels(model=model, version=version).set(1)
        self.model_loaded.labels(model=model).set(1)

    def record_model_unloaded(self, model: str) -> None:
        for labels in self._label_sets(self.model_info):
            if labels["model"] == model:
                self.model_info.remove(model, labels["version"])
        self.model_loaded.labels(model=model).set(0)

    def record_champion_poll(self, model: str, version: str | None, failed_checks: int) -> None:
        """After a champion watcher's poll: the version serving (None: none loaded), and the
        checks that failed since the last call (`failed_checks` is the watcher's running
        total), so a registry that keeps failing keeps the reload-failure alert firing."""
        if version is None:
            self.record_model_unloaded(model)
        else:
            self.record_model_loaded(model, version)
        new = failed_checks - self._failed_checks.get(model, 0)
        if new > 0:
            self.model_reload_failures.labels(model=model).inc(new)
        self._failed_checks[model] = failed_checks

    def watch_recovery_dir(self, path: Path) -> None:
        """Report the recovery directory's filesystem and files at each scrape."""
        self.recovery_volume_size.set_function(lambda: _volume_bytes(path)[0])
        self.recovery_volume_free.set_function(lambda: _volume_bytes(path)[1])
        self.recovery_partition.set_function(
            lambda: sum(f.stat().st_size for f in path.iterdir() if f.is_file()) if path.is_dir() else 0)

    def record_drift(self, report: DriftReport) -> None:
        labels = {"model": report.model, "feature": report.feature}
        self.drift_psi.labels(**labels).set(report.psi)
        self.drift_js_divergence.labels(**labels).set(report.js_divergence)
        self.drift_ks_statistic.labels(**labels).set(report.ks_statistic)
        for event in report.events:
            self.model_events.labels(model=report.model, reason=event.kind).inc()

    def exported_metric_names(self) -> set[str]:
        """Every sample name a scrape can contain (`_total`, `_bucket`, `_count`, `_sum`, ...)."""
        names: set[str] = set()
        for family in self.registry.collect():
            if family.type == "counter":
                names |= {f"{family.name}_total", f"{family.name}_created"}
            elif family.type == "histogram":
                names |= {f"{family.name}{s}" for s in ("_bucket", "_count", "_sum", "_created")}
            elif family.type == "summary":
                names |= {family.name, f"{family.name}_count", f"{family.name}_sum",
                          f"{family.name}_created"}
            elif family.type == "info":
                names.add(f"{family.name}_info")
            else:
                names.add(family.name)
        return names

    @staticmethod
    def _label_sets(metric: Gauge) -> list[dict[str, str]]:
        return [
            dict(sample.labels)
            for family in metric.collect()
            for sample in family.samples
        ]


REGISTRY = CollectorRegistry(auto_describe=True)
METRICS = EngineMetrics(REGISTRY)


def _volume_bytes(path: Path) -> tuple[int, int]:
    """(size, free to unprivileged writers) of the filesystem holding `path`; (0, 0) if absent."""
    try:
        stat = os.statvfs(path)
    except OSError:
        return (0, 0)
    return (stat.f_blocks * stat.f_frsize, stat.f_bavail * stat.f_frsize)


def exported_metric_names() -> set[str]:
    """Sample names of the process registry; alert rules and dashboards may use only these."""
    return METRICS.exported_metric_names()


@dataclass
class MetricsEndpoint:
    port: int
    registry: CollectorRegistry
    server: WSGIServer
    thread: threading.Thread

    def close(self) -> None:
        """Stop serving (tests, orderly shutdown); a new endpoint may then be started."""
        global _endpoint
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
        with _endpoint_lock:
            if _endpoint is self:
                _endpoint = None


_endpoint: MetricsEndpoint | None = None
_endpoint_lock = threading.Lock()


def start_metrics_server(
    port: int, registry: CollectorRegistry = REGISTRY, addr: str = "0.0.0.0"
) -> MetricsEndpoint:
    """Serve `registry` at http://addr:port/metrics from a daemon thread; once per process.

    Calling again with the same port and registry returns the running endpoint (Bytewax
    may build the flow more than once in a process); anything else is an error.
    """
    global _endpoint
    with _endpoint_lock:
        if _endpoint is not None:
            if _endpoint.port == port and _endpoint.registry is registry:
                return _endpoint
            raise RuntimeError(
                f"a metrics endpoint is already serving on port {_endpoint.port}: one per process"
            )
        server, thread = start_http_server(port, addr=addr, registry=registry)
        _endpoint = MetricsEndpoint(server.server_port, registry, server, thread)
        return _endpoint
