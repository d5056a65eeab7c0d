"""The replay engine: recorded history through the live flow factory, into an isolated namespace.

`run_replay` builds the flow with `build_flow` (the very factory the live flow uses),
fed by `HistorySource`: ONE source partition that emits the merged history in
`(timestamp_ms, topic, partition, offset)` order, each record stamped with its position
in it, one batch per epoch (lockstep), with `FlowConfig.replay_order` on: the steps fed
by many keys apply each batch in history order (replay_order.py), so the outputs do
not depend on the batch size, the worker count or timing. The flow keeps the live topic names (so dead letters and
alerts are byte-identical to what the live flow would write); the outputs go to
this run's namespace only:

* feature rows -> `CoalescingFeatureSink`: each entity's rows merged in version order
  (what the version-guarded upsert would leave) and written to an in-memory store, or
  to Redis under the namespace's key prefix, at the end (or when the buffer is full);
* Kafka messages -> collected per worker, then sorted and written to files (and,
  if asked, published to the namespace's topics: never a live one).

Every store write carries one fixed `written_at`, so nothing depends on when a batch
happened to be flushed: same history and config, byte-identical output files.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path

import orjson
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.run import cli_main

from dataflows.flow import FlowConfig, FlowObservers, FlowOutputs, build_flow
from dataflows.records import Admitted, OutMessage, RawRecord
from dataflows.replay_order import MAX_BATCH, history_position
from online_store.feature_row import FeatureRow
from online_store.store import FeatureStore, InMemoryFeatureStore, WriteResult
from schemas.events import PlayEvent
from schemas.topics import Topics
from schemas.types import format_utc
from simulator.fraud import FraudLabel

# One source batch per epoch: Bytewax reads the next batch once the flow has finished
# the last (replay_order.py). A replay keeps no recovery state, so epochs cost no snapshot.
REPLAY_EPOCH = timedelta(0)
OUTPUT_ATTRS = ("fraud_alerts", "recommendations", "dead_letters", "late_events", "model_events")
_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


# --- namespace ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ReplayNamespace:
    """Where a replay may write: `<name>:<live key prefix>` keys, `<name>.<live topic>` topics.

    >>> ns = ReplayNamespace("bt-1", Topics(), "jb")
    >>> ns.key_prefix, ns.output_topic("jukebox.fraud-alerts.v1")
    ('bt-1:jb', 'bt-1.jukebox.fraud-alerts.v1')
    >>> ns.output_topic("jukebox.plays.v1")
    Traceback (most recent call last):
    ...
    ValueError: a replay publishes only outputs, not 'jukebox.plays.v1'
    """

    name: str
    live_topics: Topics
    live_key_prefix: str

    def __post_init__(self) -> None:
        if not _NAMESPACE.fullmatch(self.name):
            raise ValueError(f"namespace {self.name!r}: use 1-64 of [A-Za-z0-9_-], starting alphanumeric")

    @property
    def key_prefix(self) -> str:
        return f"{self.name}:{self.live_key_prefix}"

    @property
    def topics(self) -> Topics:
        return Topics(f"{self.name}.{self.live_topics.prefix}")

    def output_topic(self, live_name: str) -> str:
        """The namespaced name of a live output topic; anything else is refused."""
        for attr in OUTPUT_ATTRS:
            if getattr(self.live_topics, attr) == live_name:
                name = getattr(self.topics, attr)
                if name in {spec.name for spec in self.live_topics.specs()}:
                    raise ValueError(f"{name!r} is a live topic")
                return name
        raise ValueError(f"a replay publishes only outputs, not {live_name!r}")


# --- source ------------------------------------------------------------------------------
class _HistoryPartition(StatefulSourcePartition[RawRecord, int]):
    def __init__(self, records: Iterator[RawRecord], batch_size: int, resume: int | None,
                 on_batch: Callable[[list[RawRecord]], None] | None) -> None:
        if not 0 < batch_size <= MAX_BATCH:
            raise ValueError(f"batch size {batch_size}: 1 to {MAX_BATCH}")
        self._records, self._batch_size, self._on_batch = records, batch_size, on_batch
        self._emitted = resume or 0
        self._batches = 0
        if resume:
            for _ in islice(records, resume):  # a restart resumes after what was emitted
                pass

    def next_batch(self) -> list[RawRecord]:
        batch_no = self._batches
        batch = [RawRecord(r.topic, r.key, r.value, r.partition, r.offset, r.timestamp_ms,
                           history_position(batch_no, i))
                 for i, r in enumerate(islice(self._records, self._batch_size))]
        if not batch:
            raise StopIteration
        self._batches += 1
        self._emitted += len(batch)
        if self._on_batch is not None:
            self._on_batch(batch)
        return batch

    def snapshot(self) -> int:
        return self._emitted


class HistorySource(FixedPartitionedSource[RawRecord, int]):
    """One partition emitting `open_history()` in order (built once per run)."""

    def __init__(self, open_history: Callable[[], Iterator[RawRecord]], batch_size: int = 5000,
                 on_batch: Callable[[list[RawRecord]], None] | None = None) -> None:
        self._open, self._batch_size, self._on_batch = open_history, batch_size, on_batch

    def list_parts(self) -> list[str]:
        return ["history"]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _HistoryPartition:
        return _HistoryPartition(self._open(), self._batch_size, resume_state, self._on_batch)


@dataclass
class InputSplit:
    """What was taken out of the history before the flow: labels, and other topics."""

    labels: list[FraudLabel] = field(default_factory=list)
    ignored: Counter[str] = field(default_factory=Counter)
    events: int = 0
    first_ms: int | None = None
    last_ms: int | None = None


def flow_inputs(history: Iterable[RawRecord], topics: Topics, split: InputSplit) -> Iterator[RawRecord]:
    """The records of the flow's input topics; fraud labels are kept for the report."""
    inputs = frozenset(topics.inputs)
    for raw in history:
        if raw.topic in inputs:
            split.events += 1
            if split.first_ms is None:
                split.first_ms = raw.timestamp_ms
            split.last_ms = raw.timestamp_ms
            yield raw
        elif raw.topic == topics.labels and raw.value is not None:
            try:
                split.labels.append(FraudLabel.from_json(raw.value))
            except (ValueError, TypeError, KeyError):
                split.ignored[f"{raw.topic} (unreadable label)"] += 1
        else:
            split.ignored[raw.topic] += 1


# --- sinks -------------------------------------------------------------------------------
class _CoalescingPartition(StatelessSinkPartition[FeatureRow]):
    def __init__(self, store: FeatureStore, written_at: datetime, max_entities: int) -> None:
        self.store, self._written_at, self._max = store, written_at, max_entities
        self._pending: dict[tuple[str, str], FeatureRow] = {}
        self.result = WriteResult(0, 0)
        self.rows_in = 0

    def write_batch(self, items: list[FeatureRow]) -> None:
        pending = self._pending
        self.rows_in += len(items)
        for row in items:
            ident = (row.entity, row.entity_id)
            current = pending.get(ident)
            if current is None:
                pending[ident] = row
            elif row.as_of >= current.as_of:  # as the upsert guard: the last row as of a time wins
                if row.values.keys() != current.values.keys():
                    row = FeatureRow(row.entity, row.entity_id, row.version, row.as_of,
                                     {**current.values, **row.values})
                pending[ident] = row
        if len(pending) >= self._max:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            rows, self._pending = list(self._pending.values()), {}
            self.result = self.result + self.store.write(rows, written_at=self._written_at)


class CoalescingFeatureSink(DynamicSink[FeatureRow]):
    """Per worker: each entity's latest row (rows merged in the order they come, the last
    as of a time winning, as the store's guard decides), written to its own store when
    `max_entities` are pending and by `flush()` at the end of the run.

    Rows of one entity all come from the worker that owns its key, in the order its state
    made them, so the store ends exactly as if every row had been upserted one by one. A
    venue registration's row has the version of the jukebox's last event: a rule by
    version kept the row before it (a replay lost venue moves until 2026-12-04).
    """

    def __init__(self, store_factory: Callable[[], FeatureStore], written_at: datetime,
                 max_entities: int = 200_000) -> None:
        self._factory, self._written_at, self._max = store_factory, written_at, max_entities
        self._lock = threading.Lock()
        self.partitions: list[_CoalescingPartition] = []

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CoalescingPartition:
        part = _CoalescingPartition(self._factory(), self._written_at, self._max)
        with self._lock:
            self.partitions.append(part)
        return part

    def flush(self) -> WriteResult:
        total = WriteResult(0, 0)
        for part in self.partitions:
            part.flush()
            total = total + part.result
        return total


class _CollectingPartition(StatelessSinkPartition[OutMessage]):
    def __init__(self) -> None:
        self.messages: list[OutMessage] = []

    def write_batch(self, items: list[OutMessage]) -> None:
        self.messages.extend(items)


class CollectingSink(DynamicSink[OutMessage]):
    """Keeps every worker's messages; `messages()` is all of them, unordered."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.partitions: list[_CollectingPartition] = []

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CollectingPartition:
        part = _CollectingPartition()
        with self._lock:
            self.partitions.append(part)
        return part

    def messages(self) -> list[OutMessage]:
        return [m for part in self.partitions for m in part.messages]


# --- plays, for recommendation quality -----------------------------------------------------
@dataclass
class PlayLog:
    """(event second, song) per jukebox, from the admitted plays: what recommendations are judged on."""

    by_jukebox: dict[str, list[tuple[int, str]]] = field(default_factory=lambda: defaultdict(list))

    def observe(self, pairs: list[tuple[RawRecord, Admitted | OutMessage]]) -> None:
        for _raw, result in pairs:
            if isinstance(result, Admitted) and type(result.event) is PlayEvent:
                play = result.event
                self.by_jukebox[play.jukebox_id].append((int(play.played_at.timestamp()), play.song_id))


# --- a run -------------------------------------------------------------------------------
@dataclass
class ReplayRun:
    messages: list[OutMessage]
    feature_stores: list[FeatureStore]
    written_at: datetime
    split: InputSplit
    plays: PlayLog
    wall_s: float
    workers: int
    feature_rows_in: int
    store_result: WriteResult

    @property
    def events_per_s(self) -> float:
        return self.split.events / max(self.wall_s, 1e-9)


def run_replay(
    history: Callable[[], Iterator[RawRecord]],
    config: FlowConfig,
    *,
    workers: int = 1,
    batch_size: int = 5000,
    store_factory: Callable[[], FeatureStore] = InMemoryFeatureStore,
    written_at: datetime | None = None,
    on_batch: Callable[[list[RawRecord]], None] | None = None,
    observe_plays: bool = True,
) -> ReplayRun:
    """Replay `history()` (called once) through `build_flow(config)` and return what it wrote."""
    split, plays = InputSplit(), PlayLog()
    written_at = written_at or datetime.now(UTC).replace(microsecond=0)
    source = HistorySource(lambda: flow_inputs(history(), config.topics, split), batch_size, on_batch)
    features = CoalescingFeatureSink(store_factory, written_at)
    kafka = CollectingSink()
    observers = FlowObservers(on_routed=plays.observe if observe_plays else None)
    config = replace(config, replay_order=True)
    flow = build_flow("replay", source, FlowOutputs(features=features, kafka=kafka), config, observers)
    started = time.perf_counter()
    cli_main(flow, workers_per_process=workers, epoch_interval=REPLAY_EPOCH)
    result = features.flush()
    wall_s = time.perf_counter() - started
    return ReplayRun(kafka.messages(), [p.store for p in features.partitions], written_at, split,
                     plays, wall_s, workers, sum(p.rows_in for p in features.partitions), result)


# --- output files ------------------------------------------------------------------------
_TIME_FIELDS = ("event_time", "based_on_event_time", "seen_at")


def message_order(value: bytes) -> tuple[str, bytes]:
    """Sort key of an output message: its event (or arrival) time, then its bytes."""
    try:
        item = orjson.loads(value)
    except orjson.JSONDecodeError:
        return ("", value)
    when = next((item[f] for f in _TIME_FIELDS if isinstance(item, dict) and isinstance(item.get(f), str)), "")
    return (when, value)


def messages_by_output(messages: Iterable[OutMessage], topics: Topics) -> dict[str, list[bytes]]:
    """Message values per output (`fraud_alerts`, `dead_letters`, ...), each list sorted."""
    attr_of = {getattr(topics, attr): attr for attr in OUTPUT_ATTRS}
    grouped: dict[str, list[bytes]] = {attr: [] for attr in OUTPUT_ATTRS}
    for message in messages:
        attr = attr_of.get(message.topic)
        if attr is None:
            raise ValueError(f"the flow wrote to {message.topic!r}, which is not an output topic")
        grouped[attr].append(message.value)
    return {attr: sorted(values, key=message_order) for attr, values in grouped.items()}


def feature_lines(stores: Iterable[FeatureStore], now: datetime) -> list[bytes]:
    """Every stored entity as one JSON line (values as read back), sorted by entity and id.

    The stored `_version` is left out: it is the upsert guard (events applied so far), and
    its value depends on the order the entity's inputs were processed in; the values and
    `as_of` do not.
    """
    found: dict[tuple[str, str], tuple[int, bytes]] = {}
    for store in stores:
        for entity in ("device", "customer"):
            ids = sorted(set(store.scan_entities(entity)))
            for start in range(0, len(ids), 5000):
                chunk = ids[start:start + 5000]
                for entity_id, features in zip(chunk, store.read_many(entity, chunk, now), strict=True):
                    if features is None:
                        continue
                    line = orjson.dumps({
                        "entity": entity, "id": entity_id, "as_of": format_utc(features.as_of),
                        "values": {name: r.value for name, r in sorted(features.readings.items())},
                    })
                    previous = found.get((entity, entity_id))
                    if previous is None or features.version > previous[0]:
                        found[(entity, entity_id)] = (features.version, line)
    return [found[key][1] for key in sorted(found)]


def write_lines(path: Path, lines: Iterable[bytes]) -> int:
    count = 0
    with path.open("wb") as out:
        for count, line in enumerate(lines, 1):
            out.write(line)
            out.write(b"\n")
    return count
