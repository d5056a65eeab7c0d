"""Point-in-time-correct training rows from a labelled history.

The history (simulator records in delivery order) goes through the same pure
functions as the live flow: `decode_event`, the admission check against arrival
time, `update_device` and `update_customer`. Each admitted play, payment or
location report yields the device row emitted at that event; at a payment the
row also carries the paying customer's row produced by the same payment, which is
exactly what the flow can join at that moment. No row ever sees a later event.

Labels (`FraudLabel`, read from the same record stream) are episodes:

* a label without a customer marks every event of that jukebox in [start, end];
* a label with a customer marks that customer's payments on that jukebox in
  [start, end]; other customers' events on that jukebox meanwhile are neither
  fraud nor clean;
* rows in the `tail_s` after an episode, on the same jukebox (or of the same
  customer), are *ambiguous* too: the windowed features still describe the fraud
  but the episode is over.

Ambiguous rows get label -1 (`training.AMBIGUOUS`, counted in `excluded_tail`):
training and row metrics leave them out, alert replays keep them, since the live
flow sees them too. `tail_s=0` makes post-episode rows clean.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from models.training import AMBIGUOUS, TrainingSet
from online_store.admission import AdmissionPolicy, admission_verdict
from online_store.customer import CustomerPayment, CustomerState, update_customer
from online_store.device import DeviceState, update_device
from online_store.feature_row import FeatureRow
from online_store.venues import venue_assignments
from schemas.decoding import DecodeError, DecodeLimits, decode_event
from schemas.events import PaymentEvent, VenueRegistration
from simulator.fraud import FraudLabel
from simulator.records import EVENT_TOPICS, SimRecord

DEFAULT_TAIL_S = 3 * 3600  # see below: queued credits keep playing after an episode ends


@dataclass
class HistoryStats:
    records: int = 0
    rows: int = 0
    decode_errors: int = 0
    not_admitted: int = 0
    labels: int = 0
    excluded_tail: int = 0
    fraud_labels: list[FraudLabel] = field(default_factory=list)
    by_topic: dict[str, int] = field(default_factory=lambda: defaultdict(int))


@dataclass(frozen=True, slots=True)
class _Episodes:
    """Sorted [start, end] intervals (epoch ms) per key, with their scenario."""

    starts: list[int]
    ends: list[int]
    scenarios: list[str]

    def scenario_at(self, t_ms: int, tail_ms: int) -> tuple[str | None, bool]:
        """(scenario of an episode covering t, whether t is in some episode's tail)."""
        i = bisect.bisect_right(self.starts, t_ms)
        in_tail = False
        for j in range(i - 1, -1, -1):  # episodes per key are few: a short scan is fine
            if self.ends[j] >= t_ms:
                return self.scenarios[j], False
            if self.ends[j] + tail_ms >= t_ms:
                in_tail = True
        return None, in_tail


def _index(labels: Iterable[FraudLabel]) -> dict[str, dict]:
    """Episodes keyed four ways (see `_labelled`)."""
    spans: dict[str, dict] = {
        k: defaultdict(list) for k in ("device", "pair", "customer", "touched")
    }
    for label in labels:
        span = (
            int(label.start.timestamp() * 1000),
            int(label.end.timestamp() * 1000),
            label.scenario,
        )
        if label.customer_id is None:
            spans["device"][label.jukebox_id].append(span)
        else:
            spans["pair"][(label.customer_id, label.jukebox_id)].append(span)
            spans["customer"][label.customer_id].append(span)
            spans["touched"][label.jukebox_id].append(span)
    return {
        kind: {
            key: _Episodes(
                [s for s, _, _ in items], [e for _, e, _ in items], [c for _, _, c in items]
            )
            for key, items in ((k, sorted(v)) for k, v in by_key.items())
        }
        for kind, by_key in spans.items()
    }


def labelled_training_set(
    records: Iterable[SimRecord],
    admission: AdmissionPolicy = AdmissionPolicy(),
    limits: DecodeLimits = DecodeLimits(),
    tail_s: int = DEFAULT_TAIL_S,
    stats: HistoryStats | None = None,
    on_record: Callable[[int], None] | None = None,
) -> TrainingSet:
    """Rows at every admitted event, labelled by the `labels` records of the same history."""
    stats = stats if stats is not None else HistoryStats()
    devices: dict[str, DeviceState] = {}
    customers: dict[str, CustomerState] = {}
    labels: list[FraudLabel] = []
    # Per row: (values, jukebox, customer or None, event time ms)
    pending: list[tuple[dict, str, str | None, int]] = []
    for record in records:
        stats.records += 1
        stats.by_topic[record.topic_attr] += 1
        if on_record is not None:
            on_record(stats.records)
        if record.topic_attr == "labels":
            labels.append(FraudLabel.from_json(record.value))
            continue
        contract = EVENT_TOPICS.get(record.topic_attr)
        if contract is None:
            continue
        event = decode_event(record.value, contract, limits)
        if isinstance(event, DecodeError):
            stats.decode_errors += 1
            continue
        if isinstance(event, VenueRegistration):
            for assignment in venue_assignments(event):
                devices[assignment.jukebox_id], _ = update_device(
                    devices.get(assignment.jukebox_id), assignment
                )
            continue
        event_s = event.event_time.timestamp()
        if admission_verdict(event_s, record.timestamp_ms / 1000, admission) is not None:
            stats.not_admitted += 1
            continue
        devices[event.jukebox_id], outputs = update_device(devices.get(event.jukebox_id), event)
        row = next((o for o in outputs if isinstance(o, FeatureRow)), None)
        if row is None:
            continue  # a duplicate, or too old to change any value
        values = dict(row.values)
        customer = None
        if isinstance(event, PaymentEvent):
            customer = event.customer_id
            for payment in (o for o in outputs if isinstance(o, CustomerPayment)):
                customers[customer], rows = update_customer(customers.get(customer), payment)
                for customer_row in rows:
                    values.update(customer_row.values)
        pending.append((values, event.jukebox_id, customer, int(event_s * 1000)))
    stats.labels = len(labels)
    stats.fraud_labels = labels
    return _labelled(pending, labels, tail_s, stats)


def _labelled(
    pending: list[tuple[dict, str, str | None, int]],
    labels: list[FraudLabel],
    tail_s: int,
    stats: HistoryStats,
) -> TrainingSet:
    episodes = _index(labels)
    tail_ms = tail_s * 1000
    no_episodes = _Episodes([], [], [])
    y = np.zeros(len(pending), dtype=np.int8)
    scenarios: list[str | None] = [None] * len(pending)
    for i, (_, jukebox, customer, t_ms) in enumerate(pending):
        scenario, ambiguous = (
            episodes["device"].get(jukebox, no_episodes).scenario_at(t_ms, tail_ms)
        )
        if scenario is None and customer is not None:
            paid, tail = (
                episodes["pair"].get((customer, jukebox), no_episodes).scenario_at(t_ms, tail_ms)
            )
            scenario, ambiguous = paid, ambiguous or tail
            if paid is None:
                # The account's features still hold its fraud, or it pays elsewhere mid-episode.
                elsewhere, tail = (
                    episodes["customer"].get(customer, no_episodes).scenario_at(t_ms, tail_ms)
                )
                ambiguous = ambiguous or tail or elsewhere is not None
        if scenario is None:
            # Other customers' events on a jukebox an account is abusing: not the fraud, not clean.
            touched, tail = episodes["touched"].get(jukebox, no_episodes).scenario_at(t_ms, tail_ms)
            ambiguous = ambiguous or tail or touched is not None
        if scenario is not None:
            y[i], scenarios[i] = 1, scenario
        elif ambiguous:
            y[i] = AMBIGUOUS
            stats.excluded_tail += 1
    stats.rows = len(pending)
    return TrainingSet(
        rows=[values for values, _, _, _ in pending],
        labels=y,
        scenarios=scenarios,
        event_times_ms=np.array([t for _, _, _, t in pending], dtype=np.int64),
        jukebox_ids=[jukebox for _, jukebox, _, _ in pending],
    )
