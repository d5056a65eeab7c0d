"""What the engine owes for the acknowledged input, and how far its real outputs are off.

The expectation is rebuilt from the input alone: each acknowledged record is
decoded against its topic's contract (the wire contract, schemas/) and judged
late or not by its arrival time; the features the admitted events must produce
are recomputed by tests/oracle.py's deliberately naive loops, not by the
incremental engine code. The verdict then reads the real outputs (Redis through
the store, the dead-letter, late-event and alert topics) and counts:

- features wrong: (entity, feature) values that differ from the oracle, plus
  expected entities missing from Redis and entities in Redis that should not be;
- events lost / doubled: by the counting features (`device_plays_24h`,
  `device_payments_1h`), how many events are missing from, or counted twice in,
  the stored windows (each play and payment is counted in exactly one of them);
- dead letters and late events missing, or unexpected, by origin (source topic,
  partition, offset); redeliveries (the same origin published again after a
  restart) are reported, not failed: the promise is at-least-once;
- alerts: ids published; redeliveries (the same alert again, `emitted_at` aside);
  updates (an id re-published with new content: by design a cooldown window's alert
  is re-sent under its id when it escalates or gains a reason, and consumers upsert
  by id); id mismatches (an id that is not `alert_id_for(jukebox, first reason,
  window start)`: two different conditions sharing an id, or one condition under
  two ids); and against an expected id set when given.

>>> from tests.faults.verifier import FaultReport
>>> FaultReport(acknowledged=3, entities=2).clean
True
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from dataflows.records import RawRecord, contracts_by_topic
from online_store.admission import AdmissionPolicy, admission_verdict
from online_store.store import FeatureStore
from schemas.decoding import DecodeError, DecodeLimits, decode_event
from schemas.events import InputEvent, VenueRegistration
from schemas.outputs import alert_id_for
from schemas.topics import Topics
from tests.oracle import Expected, expected_features, mismatches

Origin = tuple[str, int, int]  # source topic, partition, offset
COUNTING_FEATURES = ("device_plays_24h", "device_payments_1h")


@dataclass(frozen=True)
class Expectation:
    """What the engine owes for one acknowledged input."""

    acknowledged: int
    admitted: list[InputEvent]
    venues: list[VenueRegistration]
    dead_letters: dict[Origin, str]  # origin -> reason code
    late_events: dict[Origin, str]
    features: Expected

    @property
    def unique_admitted(self) -> int:
        return len({(e.kind, e.event_id) for e in self.admitted})


def origin_of(record: RawRecord) -> Origin:
    if record.partition is None or record.offset is None:
        raise ValueError("only acknowledged records (with partition and offset) have an origin")
    return record.topic, record.partition, record.offset


def expectation(
    records: Sequence[RawRecord], topics: Topics, limits: DecodeLimits = DecodeLimits(),
    policy: AdmissionPolicy = AdmissionPolicy(),
) -> Expectation:
    """Decode and admit every acknowledged record the way the contracts say, then
    recompute the features of what was admitted."""
    contracts = contracts_by_topic(topics)
    admitted: list[InputEvent] = []
    venues: list[VenueRegistration] = []
    dead: dict[Origin, str] = {}
    late: dict[Origin, str] = {}
    for record in records:
        decoded = decode_event(record.value or b"", contracts[record.topic], limits)
        if isinstance(decoded, DecodeError):
            dead[origin_of(record)] = decoded.reason
        elif isinstance(decoded, VenueRegistration):
            venues.append(decoded)
        else:
            verdict = admission_verdict(decoded.event_time.timestamp(), record.timestamp_ms / 1000,
                                        policy)
            if verdict is None:
                admitted.append(decoded)
            else:
                late[origin_of(record)] = verdict
    return Expectation(len(records), admitted, venues, dead, late,
                       expected_features(admitted, venues))


@dataclass(frozen=True)
class FaultReport:
    acknowledged: int
    entities: int
    features_wrong: int = 0
    entities_missing: int = 0
    entities_unexpected: int = 0
    events_lost: int = 0
    events_doubled: int = 0
    dead_letters: int = 0
    dead_letters_missing: int = 0
    dead_letters_unexpected: int = 0
    dead_letter_redeliveries: int = 0
    late_events: int = 0
    late_missing: int = 0
    late_unexpected: int = 0
    late_redeliveries: int = 0
    alerts: int = 0
    alert_redeliveries: int = 0
    alert_updates: int = 0
    alert_id_mismatches: int = 0
    alert_ids_missing: int | None = None
    alert_ids_unexpected: int | None = None
    examples: tuple[str, ...] = field(default=(), repr=False)

    @property
    def clean(self) -> bool:
        """Nothing wrong, lost, doubled or missing (redeliveries are allowed)."""
        return not (self.features_wrong or self.entities_missing or self.entities_unexpected
                    or self.events_lost or self.events_doubled or self.dead_letters_missing
                    or self.dead_letters_unexpected or self.late_missing or self.late_unexpected
                    or self.alert_id_mismatches or self.alert_ids_missing)

    def summary(self) -> str:
        alerts = (f"alerts={self.alerts} (redelivered {self.alert_redeliveries}, updated "
                  f"{self.alert_updates}, id mismatches {self.alert_id_mismatches}")
        if self.alert_ids_missing is not None:
            alerts += f", missing {self.alert_ids_missing}, unexpected {self.alert_ids_unexpected}"
        return (
            f"acknowledged={self.acknowledged} entities={self.entities} "
            f"features_wrong={self.features_wrong} entities_missing={self.entities_missing} "
            f"entities_unexpected={self.entities_unexpected} events_lost={self.events_lost} "
            f"events_doubled={self.events_doubled} dead_letters={self.dead_letters} "
            f"(missing {self.dead_letters_missing}, unexpected {self.dead_letters_unexpected}, "
            f"redelivered {self.dead_letter_redeliveries}) late={self.late_events} "
            f"(missing {self.late_missing}, unexpected {self.late_unexpected}, "
            f"redelivered {self.late_redeliveries}) {alerts})"
        )


def _origin_header(message) -> Origin:
    headers = {k: v.decode() for k, v in (message.headers() or [])}
    return (headers["jukebox.source.topic"], int(headers["jukebox.source.partition"]),
            int(headers["jukebox.source.offset"]))


def _compare_origins(expected: dict[Origin, str], messages: Iterable) -> tuple[int, int, int]:
    """(missing, unexpected, redeliveries); a message with the wrong reason is unexpected."""
    seen = Counter()
    unexpected = 0
    for message in messages:
        origin = _origin_header(message)
        reason = dict(message.headers())["jukebox.reason"].decode()
        if expected.get(origin) != reason:
            unexpected += 1
        seen[origin] += 1
    missing = sum(1 for origin in expected if origin not in seen)
    return missing, unexpected, sum(seen.values()) - len(seen)


def alert_ids(messages: Iterable) -> Counter:
    """Alert id -> how many times it was published (consumers dedupe by id)."""
    return Counter(dict(m.headers())["jukebox.alert_id"].decode() for m in messages)


def alert_versions(messages: Iterable) -> tuple[int, int, int]:
    """(redeliveries, updated ids, id mismatches) of the published alerts."""
    versions: dict[str, set[bytes]] = {}
    copies = mismatched = 0
    for message in messages:
        alert = orjson.loads(message.value())
        alert.pop("emitted_at", None)
        start = int(datetime.fromisoformat(alert["window_start"]).timestamp())
        if alert["alert_id"] != alert_id_for(alert["jukebox_id"], alert["reasons"][0], start):
            mismatched += 1
        content = orjson.dumps(alert, option=orjson.OPT_SORT_KEYS)
        seen = versions.setdefault(alert["alert_id"], set())
        copies += content in seen
        seen.add(content)
    return copies, sum(1 for contents in versions.values() if len(contents) > 1), mismatched


def _feature_errors(expected: Expected, store: FeatureStore, now: datetime) -> tuple[int, int, int, int, list[str]]:
    wrong = missing = lost = doubled = 0
    examples: list[str] = []
    for entity, wanted in (("device", expected.device), ("customer", expected.customer)):
        ids = sorted(wanted)
        for start in range(0, len(ids), 5000):
            chunk = ids[start:start + 5000]
            for entity_id, found in zip(chunk, store.read_many(entity, chunk, now), strict=True):
                want = wanted[entity_id]
                if found is None:
                    missing += 1
                    lost += sum(want.get(name) or 0 for name in COUNTING_FEATURES)
                    examples.append(f"{entity} {entity_id}: missing")
                    continue
                values = {name: reading.value for name, reading in found.readings.items()}
                bad = mismatches(want, values)
                wrong += len(bad)
                examples += [f"{entity} {entity_id}: {m}" for m in bad[:2]]
                for name in COUNTING_FEATURES:
                    if name in want:
                        gap = (want[name] or 0) - (values.get(name) or 0)
                        lost, doubled = lost + max(0, gap), doubled + max(0, -gap)
    return wrong, missing, lost, doubled, examples


def verdict(
    expected: Expectation,
    store: FeatureStore,
    dead_letters: Sequence = (),
    late_events: Sequence = (),
    alerts: Sequence = (),
    expected_alert_ids: set[str] | None = None,
    now: datetime | None = None,
) -> FaultReport:
    """Compare the real outputs with the expectation; messages are confluent_kafka Messages."""
    now = now or datetime.now(UTC)
    wrong, missing, lost, doubled, examples = _feature_errors(expected.features, store, now)
    stored = {entity: set(store.scan_entities(entity)) for entity in ("device", "customer")}
    unexpected = (len(stored["device"] - set(expected.features.device))
                  + len(stored["customer"] - set(expected.features.customer)))
    dl_missing, dl_unexpected, dl_again = _compare_origins(expected.dead_letters, dead_letters)
    late_missing, late_unexpected, late_again = _compare_origins(expected.late_events, late_events)
    ids = alert_ids(alerts)
    alert_copies, alert_updates, alert_mismatches = alert_versions(alerts)
    report = FaultReport(
        acknowledged=expected.acknowledged,
        entities=len(expected.features.device) + len(expected.features.customer),
        features_wrong=wrong, entities_missing=missing, entities_unexpected=unexpected,
        events_lost=lost, events_doubled=doubled,
        dead_letters=len(expected.dead_letters), dead_letters_missing=dl_missing,
        dead_letters_unexpected=dl_unexpected, dead_letter_redeliveries=dl_again,
        late_events=len(expected.late_events), late_missing=late_missing,
        late_unexpected=late_unexpected, late_redeliveries=late_again,
        alerts=len(ids), alert_redeliveries=alert_copies, alert_updates=alert_updates,
        alert_id_mismatches=alert_mismatches,
        alert_ids_missing=None if expected_alert_ids is None else len(expected_alert_ids - set(ids)),
        alert_ids_unexpected=None if expected_alert_ids is None else len(set(ids) - expected_alert_ids),
        examples=tuple(examples[:10]),
    )
    return report
