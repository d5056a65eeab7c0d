"""Run the real flow factory over in-memory records, capturing what it writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from bytewax.testing import TestingSink, TestingSource, run_main

from dataflows.feature_sink import FeatureStoreSink
from dataflows.flow import FlowConfig, FlowOutputs, build_flow
from dataflows.records import OutMessage, RawRecord
from online_store.store import InMemoryFeatureStore
from schemas.events import InputEvent
from schemas.topics import Topics


def raw_records(events: list[InputEvent], topics: Topics, arrival_lag_s: float = 1.0) -> list[RawRecord]:
    """Serialize events as a producer would; arrival = event time + a small lag."""
    by_kind = {"play": topics.plays, "payment": topics.payments, "location": topics.locations,
               "venue": topics.venues}
    records = []
    for offset, event in enumerate(events):
        arrival_ms = int((event.event_time.timestamp() + arrival_lag_s) * 1000)
        records.append(RawRecord(by_kind[event.kind], event.entity_id.encode(),
                                 event.model_dump_json().encode(), 0, offset, arrival_ms))
    return records


@dataclass
class FlowRun:
    store: InMemoryFeatureStore = field(default_factory=InMemoryFeatureStore)
    messages: list[OutMessage] = field(default_factory=list)

    def values(self, entity: str, entity_id: str) -> dict:
        found = self.store.read(entity, entity_id, now=datetime.now(UTC))
        assert found is not None, f"{entity} {entity_id} missing"
        return {name: reading.value for name, reading in found.readings.items()}


def run_flow(items: list, config: FlowConfig | None = None, batch_size: int = 50) -> FlowRun:
    if config is None:
        config = FlowConfig()
    run = FlowRun()
    outputs = FlowOutputs(features=FeatureStoreSink(lambda: run.store),
                          kafka=TestingSink(run.messages))
    run_main(build_flow("test", TestingSource(items, batch_size=batch_size), outputs, config))
    return run
