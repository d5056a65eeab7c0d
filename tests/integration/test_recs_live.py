"""Recommendations against the real broker: the catalog from its compacted topic, the champion
from a real MLflow store, plays read from Kafka, confirmed updates written back to Kafka."""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from bytewax.connectors.kafka import KafkaSource
from bytewax.testing import run_main

from dataflows.kafka_sink import ConfirmedKafkaSink
from dataflows.local_stack import create_topics
from dataflows.records import RawRecord
from dataflows.recs_live import read_song_catalog_topic, topic_records
from dataflows.recs_step import RecsConfig, recs_flow
from models.recommender import RecsChampionWatcher
from models.recs_catalog import RecsCatalog
from models.recs_registry import RecsModelRegistry
from models.registry import local_tracking_uri
from schemas.outputs import RecommendationUpdate
from schemas.topics import Topics
from simulator.simulation import Simulation
from simulator.tastes import TasteShift
from tests.integration.flow_process import produce_records
from tests.recs_models import (
    HOURS,
    JUKEBOXES,
    SEED,
    SHIFT_AFTER,
    START,
    busiest_venue_and_rare_genre,
    raw_records,
    recs_setup,
)

pytestmark = pytest.mark.integration


def test_catalog_loads_from_the_compacted_topic(kafka_bootstrap, topics):
    songs = recs_setup().catalog.songs
    renamed = replace(songs[3], title="Live Version")
    records = [RawRecord(topics.song_catalog, s.song_id.encode(), s.json_bytes(), 0, None, 1_000) for s in songs]
    records.append(RawRecord(topics.song_catalog, renamed.song_id.encode(), renamed.json_bytes(), 0, None, 2_000))
    produce_records(kafka_bootstrap, records)
    # A tombstone removes a song (compaction keeps the latest value per key).
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topics.song_catalog, None, songs[5].song_id.encode())
    assert producer.flush(10) == 0
    loaded = {s.song_id: s for s in read_song_catalog_topic({"bootstrap.servers": kafka_bootstrap},
                                                           topics.song_catalog, timeout_s=20)}
    assert len(loaded) == len(songs) - 1 and songs[5].song_id not in loaded
    assert loaded[renamed.song_id] == renamed and loaded[songs[0].song_id] == songs[0]
    assert len(RecsCatalog(list(loaded.values()))) == len(songs) - 1


@pytest.fixture
def one_partition_topics(kafka_bootstrap: str, test_namespace: str) -> Topics:
    """The topics with one partition each for plays and venues, so the source reads plays in
    the order they arrived, as a live flow at the head of the topics sees them. (A cold
    backfill of several partitions can run one partition hours ahead of the others, and a
    venue's event-time clock with it: its lists then lag until the others catch up.)"""
    names = Topics(prefix=f"{test_namespace}.")
    single = {names.plays, names.venues}
    create_topics({"bootstrap.servers": kafka_bootstrap},
                  [replace(spec, partitions=1) if spec.name in single else spec for spec in names.specs()])
    return names


def test_a_venue_whose_crowd_shifts_gets_updates_through_the_broker(kafka_bootstrap, one_partition_topics,
                                                                     tmp_path):
    topics = one_partition_topics
    setup = recs_setup()
    registry = RecsModelRegistry(local_tracking_uri(tmp_path))
    outcome = registry.register(setup.trained, setup.catalog, setup.rules)
    assert outcome.promoted and outcome.version == "1"
    watcher = RecsChampionWatcher(registry, check_every_s=30)

    plain = raw_records(Simulation(jukeboxes=JUKEBOXES, seed=SEED, start=START, duration=timedelta(hours=HOURS),
                                   fraud_rate=0.0, include_labels=False))
    venue, genre, _country = busiest_venue_and_rare_genre(plain)
    shift = TasteShift(venue, START + SHIFT_AFTER, genre, share=1.0)
    simulated = raw_records(Simulation(jukeboxes=JUKEBOXES, seed=SEED, start=START,
                                       duration=timedelta(hours=HOURS), fraud_rate=0.0, include_labels=False,
                                       taste_shifts=[shift]))
    names = {"jukebox.plays.v1": topics.plays, "jukebox.venues.v1": topics.venues}
    produce_records(kafka_bootstrap, [replace(r, topic=names[r.topic]) for r in simulated])

    polls: list[str | None] = []

    def champion(now: datetime):
        scorer = watcher.poll(now)
        polls.append(scorer.version if scorer else None)
        return scorer

    config = RecsConfig(catalog=setup.catalog, scorer=champion, now=lambda: datetime.now(UTC),
                        generated_at=lambda _based_on: datetime.now(UTC), taste=setup.taste, rules=setup.rules)
    source = KafkaSource([kafka_bootstrap], [topics.venues, topics.plays], tail=False, batch_size=200)
    sink = ConfirmedKafkaSink({"bootstrap.servers": kafka_bootstrap})
    run_main(recs_flow("recs-live-test", source, sink, config, topics))

    records = topic_records({"bootstrap.servers": kafka_bootstrap}, topics.recommendations, timeout_s=20)
    updates = [RecommendationUpdate.model_validate_json(value) for _p, _o, _key, value in records]
    assert updates and all(key == u.jukebox_id.encode() for (_p, _o, key, _v), u in zip(records, updates, strict=True))
    assert {u.model_version for u in updates} == {"1"} and set(polls) == {"1"}
    genre_of = {s.song_id: s.genre for s in setup.catalog.songs}
    by_jukebox = defaultdict(list)
    for u in updates:
        if u.venue_id == shift.venue_id:
            by_jukebox[u.jukebox_id].append(u)
    assert by_jukebox
    for sent in by_jukebox.values():
        turned = [u for u in sent if sum(genre_of[s.song_id] == shift.genre for s in u.songs) >= 5]
        assert turned, [(u.based_on_event_time, [genre_of[s.song_id] for s in u.songs]) for u in sent]
        print(f"\n{sent[0].jukebox_id}: first list reflecting the shift based on +"
              f"{turned[0].based_on_event_time - shift.start} of plays after it")
        assert turned[0].based_on_event_time - shift.start <= timedelta(minutes=60)
        assert all(sum(genre_of[s.song_id] == shift.genre for s in u.songs) <= 2
                   for u in sent if u.based_on_event_time < shift.start)
        gaps = [b.based_on_event_time - a.based_on_event_time for a, b in itertools.pairwise(sent)]
        assert all(gap >= timedelta(seconds=setup.rules.interval_s) for gap in gaps)


def test_jukebox_run_publishes_recommendations_beside_features_and_alerts(
    kafka_bootstrap, redis_url, topics, redis_key_prefix, tmp_path
):
    """The one live flow (`jukebox run`): catalog from its topic, no recs model yet (lists
    ranked by trending), updates keyed by jukebox on the compacted topic."""
    from dataflows.simulate import publish_records
    from tests.integration.flow_metrics import events_in, metric_total
    from tests.integration.flow_process import FlowProcess, wait_until

    simulation = Simulation(jukeboxes=40, seed=11, start=START, duration=timedelta(hours=4),
                            fraud_rate=0.0, include_catalog=True, include_labels=False)
    report = publish_records({"bootstrap.servers": kafka_bootstrap}, topics, simulation.records())
    assert report.ok, report.failed
    flow = FlowProcess(kafka_bootstrap, redis_url, topics, redis_key_prefix, tmp_path / "flow",
                       extra_env={"JUKEBOX_FLOW_RECOMMENDATIONS": "true"}).start()
    client = {"bootstrap.servers": kafka_bootstrap}
    inputs = sum(n for topic, n in report.delivered.items() if topic in topics.inputs)
    port = flow.metrics_port
    try:
        wait_until(lambda: events_in(port) >= inputs, 90, "every input record", check=flow.assert_running)
        # How many lists are sent (not suppressed as too soon or unchanged) depends on how the
        # source interleaves the topics, so the test waits for all the flow says it sent.
        sent = lambda: metric_total(port, "jukebox_recommendation_updates", result="sent")
        wait_until(lambda: 0 < sent() <= len(topic_records(client, topics.recommendations, 10)),
                   30, "every sent recommendation update", check=flow.assert_running)
    finally:
        flow.stop()
    records = topic_records(client, topics.recommendations, timeout_s=20)
    updates = [RecommendationUpdate.model_validate_json(value) for _p, _o, _key, value in records]
    assert all(key == u.jukebox_id.encode() for (_p, _o, key, _v), u in zip(records, updates, strict=True))
    assert {u.model_version for u in updates} == {"trending"}
    assert all(1 <= len(u.songs) <= 10 for u in updates)
    assert len({u.jukebox_id for u in updates}) >= 20
