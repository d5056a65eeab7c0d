"""Live wiring of recommendations: the catalog from its compacted topic (or a file), the
champion model followed in MLflow, and the metrics hooks. Called at the entrypoint.

    config = recs_config(settings, metrics, load_catalog(settings))
    FlowConfig(..., recs=config)
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, TopicPartition

from dataflows.metrics import EngineMetrics
from dataflows.recs_step import RecsConfig
from dataflows.settings import JukeboxSettings
from models.recommender import RECS_MODEL_NAME, RecsChampionWatcher, RecsScorer
from models.recs_catalog import CatalogError, RecsCatalog, read_catalog_jsonl, songs_from_topic
from models.recs_registry import RecsModelRegistry, load_recs_onnx_file
from models.registry import local_tracking_uri
from schemas.topics import Topics
from simulator.catalog import Song


def topic_records(client_config: dict[str, str], topic: str,
                  timeout_s: float = 30.0) -> list[tuple[int, int, bytes | None, bytes | None]]:
    """(partition, offset, key, value) of every record in `topic` up to its high watermarks
    at start, in partition and offset order (explicit assignment: no consumer group)."""
    consumer = Consumer({**client_config, "group.id": "jukebox-recs-reader", "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is None or metadata.error is not None:
            raise CatalogError(f"topic {topic!r} not found")
        ends: dict[int, int] = {}
        starts: list[TopicPartition] = []
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
            if high > low:
                ends[partition] = high
                starts.append(TopicPartition(topic, partition, low))
        records: list[tuple[int, int, bytes | None, bytes | None]] = []
        consumer.assign(starts)
        deadline = time.monotonic() + timeout_s
        waiting = set(ends)
        while waiting:
            if time.monotonic() > deadline:
                raise CatalogError(f"timed out reading {topic!r}: partitions {sorted(waiting)} unfinished")
            for message in consumer.consume(1000, 0.5):
                if message.error() is not None:
                    raise CatalogError(f"reading {topic!r}: {message.error().str()}")
                partition, offset = message.partition(), message.offset()
                records.append((partition, offset, message.key(), message.value()))
                if offset + 1 >= ends[partition]:
                    waiting.discard(partition)
    except KafkaException as exc:
        raise CatalogError(f"reading {topic!r}: {exc}") from exc
    finally:
        consumer.close()
    return sorted(records, key=lambda r: (r[0], r[1]))


def read_song_catalog_topic(client_config: dict[str, str], topic: str, timeout_s: float = 30.0) -> list[Song]:
    """Every song on the compacted catalog topic (per key, the latest offset wins)."""
    records = topic_records(client_config, topic, timeout_s)
    return songs_from_topic((key, value, f"{topic}[{p}]@{o}") for p, o, key, value in records)


def load_catalog(settings: JukeboxSettings, path: Path | None = None) -> RecsCatalog:
    """The catalog from a JSON Lines file when given, else from the song-catalog topic."""
    if path is not None:
        return RecsCatalog(read_catalog_jsonl(path))
    topic = Topics(settings.kafka.topic_prefix).song_catalog
    songs = read_song_catalog_topic(settings.kafka.client_config(), topic)
    if not songs:
        raise CatalogError(f"{topic} holds no songs: publish the catalog (`jukebox simulate --catalog`)")
    return RecsCatalog(songs)


def wall_clock(_event_time: datetime | None = None) -> datetime:
    return datetime.now(UTC)


def recs_config(settings: JukeboxSettings, metrics: EngineMetrics, catalog: RecsCatalog) -> RecsConfig:
    """The champion from MLflow (followed and hot-swapped), or a fixed local ONNX file."""
    uri = settings.models.recs_model_uri
    if uri.startswith("models:/"):
        tracking = settings.models.mlflow_tracking_uri or local_tracking_uri(settings.data_dir)
        watcher = RecsChampionWatcher(RecsModelRegistry(tracking), settings.models.reload_interval_s)

        def scorer(now: datetime) -> RecsScorer | None:
            current = watcher.poll(now)
            metrics.record_champion_poll(RECS_MODEL_NAME, None if current is None else current.version,
                                         watcher.failed_checks)
            return current  # type: ignore[return-value]
    else:
        fixed = RecsScorer.from_model(load_recs_onnx_file(Path(uri)))
        metrics.record_model_loaded(RECS_MODEL_NAME, fixed.version)

        def scorer(now: datetime) -> RecsScorer | None:
            return fixed

    def on_scored(model: str, _version: str, seconds: float, _rows: int) -> None:
        metrics.scoring_duration.labels(scorer=model).observe(seconds)

    def on_delivery(sent: int, suppressed: int) -> None:
        if sent:
            metrics.recommendation_updates.labels(result="sent").inc(sent)
        if suppressed:
            metrics.recommendation_updates.labels(result="suppressed").inc(suppressed)

    return RecsConfig(catalog=catalog, scorer=scorer, now=wall_clock, generated_at=wall_clock,
                      on_scored=on_scored, on_delivery=on_delivery)
