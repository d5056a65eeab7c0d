"""Idle entities' state is released by probes, without changing any output."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

from bytewax.testing import TestingSink, TestingSource, run_main

from dataflows.feature_sink import FeatureStoreSink
from dataflows.flow import FlowConfig, FlowObservers, FlowOutputs, build_flow
from dataflows.replay import replay_fraud_config
from models.decision import DecisionPolicy
from models.rules import RulePolicy
from online_store.store import InMemoryFeatureStore
from schemas.events import PlayEvent
from schemas.topics import Topics
from tests.dataflow.flow_harness import raw_records
from tests.sample_events import T0, sample_events


def _held_after(events: list, check_interval_s: float | None) -> tuple[Counter, InMemoryFeatureStore, list]:
    """Run the flow with fraud steps; return the entities still held, the store, the messages."""
    held: Counter = Counter()
    store, messages = InMemoryFeatureStore(), []
    config = FlowConfig(
        fraud=replay_fraud_config(None, RulePolicy(), DecisionPolicy(), anomaly=False,
                                  keep_policy_threshold=False, clock=datetime(2026, 1, 1, tzinfo=UTC)),
        state_check_interval_s=check_interval_s, partition_skew_margin_s=0)
    observers = FlowObservers(on_entities=lambda entity, delta: held.update({entity: delta}))
    outputs = FlowOutputs(features=FeatureStoreSink(lambda: store), kafka=TestingSink(messages))
    source = TestingSource(raw_records(events, Topics()), batch_size=40)
    run_main(build_flow("idle", source, outputs, config, observers))
    return held, store, messages


def test_entities_silent_past_the_horizon_are_released_and_outputs_do_not_change():
    rnd = random.Random(3)
    early = sample_events(rnd, 300, 3600, jukeboxes=40, customers=25)
    # Three days later one jukebox plays on; every other entity has been silent since.
    later = [PlayEvent(event_id=f"later-{i}", jukebox_id="jb-late", venue_id="v1", song_id="s1",
                       played_at=T0 + timedelta(days=3, seconds=i), credits_used=1) for i in range(5)]
    kept, kept_store, kept_messages = _held_after(early + later, check_interval_s=None)
    released, store, messages = _held_after(early + later, check_interval_s=0)
    jukeboxes = {e.jukebox_id for e in early} | {"jb-late"}
    customers = {e.customer_id for e in early if e.kind == "payment"}
    assert kept == Counter(device=len(jukeboxes), customer=len(customers))  # never checked: all held
    assert released == Counter(device=1, customer=0), released  # only the jukebox still playing
    assert messages == kept_messages
    now = datetime.now(UTC)
    for entity, ids in (("device", jukeboxes), ("customer", customers)):
        for entity_id in ids:
            got, want = store.read(entity, entity_id, now), kept_store.read(entity, entity_id, now)
            assert (got.version, got.as_of, got.readings) == (want.version, want.as_of, want.readings)
