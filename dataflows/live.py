"""The live flow: Kafka in, Redis and Kafka out, metrics, recovery. The composition root.

`live_flow(settings)` builds the same dataflow as the tests and replays
(dataflows/flow.py) with real sources and sinks. `python -m bytewax.run
dataflows.cluster:flow` (Kubernetes) or `jukebox run` (everything else) runs it.
"""

from __future__ import annotations

import argparse
import logging
import os
import stat
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig

from dataflows.drift_step import DriftConfig
from dataflows.feature_sink import FeatureStoreSink
from dataflows.flow import FlowConfig, FlowObservers, FlowOutputs, build_flow
from dataflows.fraud_steps import FraudConfig
from dataflows.kafka_sink import EpochConfirmedKafkaSink
from dataflows.kafka_source import ArrivalOrderedKafkaSource, GroupOffsets
from dataflows.metrics import METRICS, EngineMetrics
from dataflows.records import Admitted, OutMessage, RawRecord
from dataflows.recovery_partitions import (
    create_partitions,
    holds_partitions,
    holds_snapshots,
    needs_partitions,
    recorded_processes,
)
from dataflows.recs_live import load_catalog, recs_config
from dataflows.settings import JukeboxSettings
from models.decision import DecisionPolicy
from models.fraud_features import MODEL_NAME
from models.fraud_scorer import ChampionWatcher, FraudScorer
from models.model_drift import DriftPolicy, ModelReference
from models.recs_catalog import CatalogError
from models.registry import FraudModelRegistry, load_onnx_file, local_tracking_uri
from online_store.admission import AdmissionPolicy
from online_store.redis_store import RedisFeatureStore, redis_client_from
from online_store.store import WriteResult
from schemas.countries import CURRENCIES
from schemas.decoding import DecodeLimits
from schemas.events import PaymentEvent, VenueRegistration
from schemas.outputs import FraudAlert
from schemas.topics import Topics

log = logging.getLogger(__name__)


class ConfigurationError(RuntimeError):
    """Settings that cannot work; the message says which and why (never a secret)."""


def flow_config(settings: JukeboxSettings) -> FlowConfig:
    return FlowConfig(
        topics=Topics(settings.kafka.topic_prefix),
        limits=DecodeLimits(max_message_bytes=settings.kafka.max_message_bytes),
        admission=AdmissionPolicy(settings.features.allowed_lateness_s,
                                  settings.features.max_future_skew_s),
        state_check_interval_s=settings.flow.state_check_interval_s,
        partition_skew_margin_s=settings.flow.partition_skew_margin_s,
    )


def _country_of(event: object) -> str | None:
    """Payments name their currency (one per country), venue registrations their country;
    plays and location reports carry none. By type: a pydantic model's missing attribute
    costs a raised AttributeError, and this runs once per event."""
    kind = type(event)
    if kind is PaymentEvent:
        return CURRENCIES[event.currency].code
    if kind is VenueRegistration:
        return event.country
    return None


def metrics_observers(metrics: EngineMetrics) -> FlowObservers:
    def on_routed(pairs: list[tuple[RawRecord, Admitted | OutMessage]]) -> None:
        counts: Counter = Counter()
        countries: Counter = Counter()
        rejected: Counter = Counter()
        latest: dict[str, datetime] = {}
        for raw, result in pairs:
            counts[raw.topic] += 1
            if isinstance(result, Admitted):
                event_time = result.event.event_time
                if raw.topic not in latest or event_time > latest[raw.topic]:
                    latest[raw.topic] = event_time
                country = _country_of(result.event)
                if country is not None:
                    countries[country] += 1
            else:
                reason = dict(result.headers).get("jukebox.reason", b"unknown").decode()
                rejected[(raw.topic, reason, result.topic.endswith("late-events.v1"))] += 1
        for topic, n in counts.items():
            metrics.events_in.labels(topic=topic).inc(n)
        now = datetime.now(UTC)
        for topic, event_time in latest.items():
            metrics.record_event_time_lag(topic, event_time, now)
        for country, n in countries.items():
            metrics.events_by_country.labels(country=country).inc(n)
        for (topic, reason, late), n in rejected.items():
            if late:
                metrics.late_events.labels(topic=topic, reason=reason).inc(n)
            else:
                metrics.decode_failures.labels(topic=topic, reason=reason).inc(n)
                metrics.dead_letters.labels(topic=topic, reason=reason).inc(n)

    held = {}  # entity -> its gauge child: `labels()` costs more than the `inc()`, per key

    def on_entities(entity: str, delta: int) -> None:
        gauge = held.get(entity)
        if gauge is None:
            gauge = held[entity] = metrics.entities_in_state.labels(entity=entity)
        gauge.inc(delta)

    return FlowObservers(on_routed=on_routed, on_entities=on_entities)


def observe_redis_write(metrics: EngineMetrics):
    def observe(result: WriteResult, seconds: float) -> None:
        metrics.redis_write_batches.inc()
        metrics.redis_write_rows.labels(result="applied").inc(result.applied)
        metrics.redis_write_rows.labels(result="stale").inc(result.stale)
        metrics.redis_write_duration.observe(seconds)

    return observe


def fraud_config(settings: JukeboxSettings, metrics: EngineMetrics) -> FraudConfig:
    """Rules always; the model from MLflow (`models:/...@champion`, followed and hot-swapped)
    or a local ONNX file; River on closed device windows."""
    uri = settings.models.fraud_model_uri
    drift = None
    if uri.startswith("models:/"):
        tracking = settings.models.mlflow_tracking_uri or local_tracking_uri(settings.data_dir)
        registry = FraudModelRegistry(tracking)
        watcher = ChampionWatcher(registry, settings.models.reload_interval_s)

        def reference(model: str, version: str) -> ModelReference | None:
            if model != registry.name:
                return None
            try:
                return registry.load_reference(version)
            except Exception as exc:  # noqa: BLE001 - a broken reference must not stop scoring
                log.warning("drift reference of %s v%s unreadable: %s", model, version, exc)
                return None

        drift = DriftConfig(reference, DriftPolicy(
            window_size=settings.models.drift_window_size,
            retrain_after=settings.models.drift_retrain_after,
        ), on_report=metrics.record_drift)

        def scorer(now: datetime) -> FraudScorer | None:
            current = watcher.poll(now)
            metrics.record_champion_poll(MODEL_NAME, None if current is None else current.version,
                                         watcher.failed_checks)
            return current
    else:
        fixed = FraudScorer.from_model(load_onnx_file(Path(uri)))
        metrics.record_model_loaded(MODEL_NAME, fixed.version)

        def scorer(now: datetime) -> FraudScorer | None:
            return fixed

    def on_alert(alert: FraudAlert) -> None:
        metrics.alerts.labels(reason=alert.reasons[0].value, severity=alert.severity.value).inc()
        metrics.alert_score.observe(alert.score)

    def on_scored(current: FraudScorer, seconds: float) -> None:
        metrics.scoring_duration.labels(scorer=current.name).observe(seconds)

    def wall_clock(_event_time: datetime | None = None) -> datetime:
        return datetime.now(UTC)

    threshold = settings.models.fraud_alert_threshold
    decisions = DecisionPolicy() if threshold is None else DecisionPolicy(model_threshold=threshold)
    return FraudConfig(scorer=scorer, emitted_at=wall_clock, now=wall_clock, on_alert=on_alert,
                       on_scored=on_scored, decisions=decisions,
                       keep_policy_threshold=threshold is not None, drift=drift)


@dataclass(frozen=True)
class SourceResume:
    """What the input source needs to know about the recovery state it starts over
    (kafka_source.py): how it shares offsets with the consumer group, the process count of
    the cluster before, and whether the state predates that note (an upgrade)."""

    offsets: GroupOffsets | None = None
    previous_members: int | None = None
    legacy_parts: bool = False


def source_resume(settings: JukeboxSettings, recovery_dir: Path | None, backup_interval_s: float = 0.0,
                  creates_partitions: bool = False) -> SourceResume:
    """`creates_partitions`: a directory without partitions gets new ones at this start
    (`jukebox run`), so its state is fresh; otherwise (`bytewax.run`) such a process was
    just added to a cluster whose state lies on the others' volumes.

    >>> import tempfile
    >>> empty = Path(tempfile.mkdtemp())
    >>> source_resume(JukeboxSettings(), empty).offsets.start_committed  # added to a cluster
    True
    >>> source_resume(JukeboxSettings(), empty, creates_partitions=True).offsets.start_committed
    False
    """
    snapshots = holds_snapshots(recovery_dir)
    fresh = not snapshots and (creates_partitions or holds_partitions(recovery_dir))
    previous = recorded_processes(recovery_dir)
    return SourceResume(group_offsets(settings, recovery_dir, backup_interval_s, fresh_state=fresh),
                        previous, legacy_parts=previous is None and snapshots)


def live_flow(settings: JukeboxSettings, metrics: EngineMetrics = METRICS, member: int = 0,
              members: int = 1, resume: SourceResume = SourceResume()) -> Dataflow:
    """The live flow of process `member` of `members`: it reads its share of the input
    partitions (kafka_source.py), over the recovery state `resume` describes."""
    if not settings.kafka.bootstrap:
        raise ConfigurationError("JUKEBOX_KAFKA_BOOTSTRAP is not set (or run `jukebox demo`)")
    redis_url(settings)  # fail before anything is built
    recs = None
    if settings.flow.recommendations:
        try:
            catalog = load_catalog(settings, settings.models.recs_catalog_path)
        except (CatalogError, OSError) as exc:
            raise ConfigurationError(
                f"recommendations need the song catalog: {exc} "
                "(or set JUKEBOX_FLOW_RECOMMENDATIONS=false)") from exc
        recs = recs_config(settings, metrics, catalog)
    config = replace(flow_config(settings), fraud=fraud_config(settings, metrics), recs=recs)
    kafka_config = settings.kafka.client_config()
    consumer_config = {k: v for k, v in kafka_config.items() if k != "bootstrap.servers"}
    flow_settings = settings.flow
    source = ArrivalOrderedKafkaSource(
        [settings.kafka.bootstrap], list(config.topics.inputs), add_config=consumer_config,
        batch_size=flow_settings.batch_size, metrics=metrics, member=member, members=members,
        max_lead_ms=round(flow_settings.input_max_lead_s * 1000) if flow_settings.input_alignment else None,
        stall_s=flow_settings.input_stall_s, group=resume.offsets,
        previous_members=resume.previous_members, legacy_parts=resume.legacy_parts,
    )
    outputs = FlowOutputs(
        features=FeatureStoreSink(lambda: feature_store(settings), observe_redis_write(metrics)),
        kafka=EpochConfirmedKafkaSink(
            kafka_config,
            on_failure=lambda topic: metrics.sink_delivery_failures.labels(topic=topic).inc(),
        ),
    )
    return build_flow("jukebox", source, outputs, config, metrics_observers(metrics))


def cluster_member(argv: list[str], env: Mapping[str, str] = os.environ) -> tuple[int, int]:
    """(process id, process count) as `bytewax.run` resolves them: `-i/-a`, else the
    environment variables it reads (`BYTEWAX_PROCESS_ID`, `BYTEWAX_ADDRESSES`, the Helm
    chart's `BYTEWAX_POD_NAME` + `BYTEWAX_STATEFULSET_NAME` and `BYTEWAX_HOSTFILE_PATH`).
    Each process reads its share of the input partitions, so a process that cannot tell
    its place must not start: it would read every partition next to the others.

    >>> cluster_member(["dataflows.cluster:flow", "-i", "1", "-a", "a:1;b:1;c:1", "-w", "1"], env={})
    (1, 3)
    >>> cluster_member(["dataflows.cluster:flow"], env={"BYTEWAX_PROCESS_ID": "1", "BYTEWAX_ADDRESSES": "a:1;b:1"})
    (1, 2)
    >>> cluster_member(["dataflows.cluster:flow", "-a", "a:1;b:1"],
    ...                env={"BYTEWAX_POD_NAME": "engine-1", "BYTEWAX_STATEFULSET_NAME": "engine"})
    (1, 2)
    >>> cluster_member(["dataflows.cluster:flow"], env={})
    (0, 1)
    >>> cluster_member(["dataflows.cluster:flow", "-i", "2", "-a", "a:1;b:1"], env={})
    Traceback (most recent call last):
    ...
    dataflows.live.ConfigurationError: process id 2 is not below the process count 2 (-a lists 2 addresses)
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-i", "--process-id", type=int, default=None)
    parser.add_argument("-a", "--addresses", default=None)
    known, _ = parser.parse_known_args(argv)
    process_id, addresses = known.process_id, known.addresses
    if process_id is None and env.get("BYTEWAX_PROCESS_ID"):
        process_id = int(env["BYTEWAX_PROCESS_ID"])
    if process_id is None and "BYTEWAX_POD_NAME" in env and "BYTEWAX_STATEFULSET_NAME" in env:
        process_id = int(env["BYTEWAX_POD_NAME"].removeprefix(env["BYTEWAX_STATEFULSET_NAME"] + "-"))
    if addresses is None and env.get("BYTEWAX_ADDRESSES"):
        addresses = env["BYTEWAX_ADDRESSES"]
    if addresses is None and process_id is not None and "BYTEWAX_HOSTFILE_PATH" in env:
        addresses = ";".join(line.strip() for line in Path(env["BYTEWAX_HOSTFILE_PATH"]).read_text().splitlines())
    return cluster_place(process_id, addresses)


def cluster_place(process_id: int | None, addresses: str | None) -> tuple[int, int]:
    """(process id, process count) of `-i/-a`, checked: neither alone, the id in range.

    >>> cluster_place(None, None), cluster_place(1, "a:1;b:1")
    ((0, 1), (1, 2))
    """
    members = len([a for a in (addresses or "").split(";") if a.strip()])
    if members == 0:
        if process_id not in (None, 0):
            raise ConfigurationError(f"process id {process_id} given without the cluster's addresses (-a)")
        return 0, 1
    if process_id is None:
        raise ConfigurationError(f"-a lists {members} addresses but no process id (-i) says which one this is")
    if not 0 <= process_id < members:
        raise ConfigurationError(
            f"process id {process_id} is not below the process count {members} (-a lists {members} addresses)")
    return process_id, members


def group_offsets(settings: JukeboxSettings, recovery_dir: Path | None,
                  backup_interval_s: float = 0.0, fresh_state: bool = False) -> GroupOffsets | None:
    """How the input offsets are shared with the consumer group: only with recovery on
    (without it every start reads from the beginning and rebuilds the windows). A snapshot's
    offsets wait until Bytewax can no longer resume from an older one: the backup interval
    (volumes restored from a backup) plus ten snapshot intervals (epochs in flight). Over
    `fresh_state` (this process's recovery partitions hold no snapshot: a first start, or
    a volume lost and re-created) partitions start from the beginning, whatever the group
    says, so the windows are rebuilt rather than started mid-stream.

    >>> group_offsets(JukeboxSettings(), Path("/recovery"), backup_interval_s=600)
    GroupOffsets(group_id='jukebox-engine', commit_delay_s=650.0, start_committed=True)
    >>> group_offsets(JukeboxSettings(), Path("/recovery"), fresh_state=True).start_committed
    False
    >>> group_offsets(JukeboxSettings(), None) is None
    True
    """
    if recovery_dir is None:
        return None
    flow = settings.flow
    delay = backup_interval_s + 10 * flow.snapshot_interval_s
    return GroupOffsets(settings.kafka.group_id, delay, flow.input_start == "committed" and not fresh_state)


def recovery_arguments(argv: list[str], env: Mapping[str, str] = os.environ) -> tuple[Path | None, float]:
    """(recovery directory, backup interval in s) as `bytewax.run` reads them.

    >>> recovery_arguments(["x", "-r", "/rec", "-s", "5", "-b", "600"], env={})
    (PosixPath('/rec'), 600.0)
    >>> recovery_arguments(["x"], env={})
    (None, 0.0)
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-r", "--recovery-directory", default=env.get("BYTEWAX_RECOVERY_DIRECTORY"))
    parser.add_argument("-b", "--backup-interval", type=float,
                        default=float(env.get("BYTEWAX_RECOVERY_BACKUP_INTERVAL") or 0))
    known, _ = parser.parse_known_args(argv)
    return (None if not known.recovery_directory else Path(known.recovery_directory)), known.backup_interval


def redis_url(settings: JukeboxSettings) -> str:
    if settings.redis.url is None:
        raise ConfigurationError("JUKEBOX_REDIS_URL is not set (or run `jukebox demo`)")
    return settings.redis.url.get_secret_value()


def feature_store(settings: JukeboxSettings, key_prefix: str | None = None) -> RedisFeatureStore:
    """The Redis store the settings describe (the client connects lazily); `key_prefix`
    overrides the configured one (a replay's namespace)."""
    redis = settings.redis
    client = redis_client_from(
        redis_url(settings), username=redis.username,
        password=redis.password.get_secret_value() if redis.password else None,
        ssl_ca_certs=redis.ssl_ca_certs, ssl_certfile=redis.ssl_certfile,
        ssl_keyfile=redis.ssl_keyfile, socket_timeout_s=redis.socket_timeout_s,
    )
    return RedisFeatureStore(client, key_prefix or redis.key_prefix, attempts=redis.retry_attempts)


def recovery_partition_count(per_process: int, workers: int, processes: int) -> int:
    """Partitions a new recovery directory gets: `per_process` a process, at least one a
    worker. Bytewax resumes a partition's snapshots in pages that each re-read the rest of
    the partition, so small partitions keep a restart linear in the keys held
    (bench.restart).

    >>> recovery_partition_count(8, 1, 1), recovery_partition_count(8, 2, 3), recovery_partition_count(1, 4, 2)
    (8, 24, 8)
    """
    return processes * max(workers, per_process)


def recovery_config(directory: Path | None, partitions: int) -> RecoveryConfig | None:
    """Recovery in a private directory (0700), created and initialised on first use."""
    if directory is None:
        return None
    if directory.exists():
        mode = directory.stat().st_mode
        if mode & stat.S_IWOTH:
            raise ConfigurationError(f"recovery directory {directory} is world-writable; refusing")
    else:
        directory.mkdir(parents=True, mode=0o700)
        os.chmod(directory, 0o700)
    if needs_partitions(directory):
        create_partitions(directory, partitions)
    return RecoveryConfig(directory)


def epoch_interval(settings: JukeboxSettings) -> timedelta:
    return timedelta(seconds=settings.flow.snapshot_interval_s)
