"""The feature dataflow, built by one factory for every runner.

The live flow (Kafka in, Redis and Kafka out), a replay (recorded files in, an
isolated namespace out) and the tests (lists in, lists out) all call
`build_flow` with different sources and sinks; the steps and their ids are the
same. Step ids are permanent: Bytewax stores recovery state under them, so
renaming one needs a migration note.

    records ─ route ─┬─ admitted ─ device_inputs ─ key ─ device_features ─┬─ feature rows ─┐
                     │                                                    └─ payments ─ key ─ customer_features ─ feature rows ─┤─ online_store
                     └─ dead letters / late events ───────────────────────────────────── kafka_out
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.outputs import FixedPartitionedSink, Sink

from dataflows.fraud_steps import FraudConfig, PaymentForCustomer, ScoringRequest, fraud_alerts
from dataflows.idle_state import CustomerProbe, DeviceProbe, IdleSweep, IdleTick, ReleasingLogic
from dataflows.kafka_sink import EpochConfirmedKafkaSink
from dataflows.records import Admitted, OutMessage, RawRecord, contracts_by_topic, route_record
from dataflows.recs_step import RecsConfig, recommendation_step
from dataflows.replay_order import (
    EpochStash,
    HistoryOrdered,
    PaymentPending,
    PaymentUnscored,
    Sequenced,
)
from online_store.admission import AdmissionPolicy
from online_store.customer import CustomerPayment, CustomerState, update_customer
from online_store.device import DeviceState, applied_device_input, device_row, device_values
from online_store.feature_row import FeatureRow
from online_store.state_release import releasable, release_horizon_s
from online_store.venues import venue_assignments
from schemas.decoding import DecodeLimits
from schemas.events import VenueRegistration
from schemas.topics import Topics


@dataclass(frozen=True)
class FlowConfig:
    topics: Topics = Topics()
    limits: DecodeLimits = DecodeLimits()
    admission: AdmissionPolicy = AdmissionPolicy()
    fraud: FraudConfig | None = None  # None: features only
    recs: RecsConfig | None = None  # None: no recommendation updates
    # Release the state of entities gone quiet (online_store/state_release.py): how often an
    # idle entity is checked (wall clock; None: never), and the fleet-clock margin for input
    # partitions consumed unevenly.
    state_check_interval_s: float | None = None
    partition_skew_margin_s: int = 24 * 3600
    # A replay (replay_run.py): one source partition stamping history positions, one
    # batch per epoch, no recovery. Steps fed by many keys then apply each batch in
    # history order (replay_order.py), and no state is pickled at the end of an epoch.
    replay_order: bool = False


@dataclass
class FlowObservers:
    """Hooks for metrics; all optional so tests and replays can run without them."""

    on_routed: Callable[[list[tuple[RawRecord, Admitted | OutMessage]]], None] | None = None
    on_entities: Callable[[str, int], None] | None = None  # (entity, +1 held / -1 released)


@dataclass
class FlowOutputs:
    features: Sink[FeatureRow]
    kafka: Sink[OutMessage]
    extra_steps: list[Callable[[Stream[FeatureRow], Stream[OutMessage]], Stream[OutMessage]]] = field(
        default_factory=list
    )


def as_raw_record(item: Any) -> RawRecord:
    """Kafka source messages become RawRecords; recorded/test RawRecords pass through."""
    if isinstance(item, RawRecord):
        return item
    timestamp = item.timestamp[1] if item.timestamp and item.timestamp[0] else None
    if timestamp is None:
        raise ValueError(f"record {item.topic}/{item.partition}@{item.offset} has no timestamp")
    return RawRecord(item.topic, item.key, item.value, item.partition, item.offset, timestamp)


def raw_records(batch: list) -> Iterator[RawRecord]:
    """A source batch's records; an idle source's `IdleTick`s are left out (they only
    give the step that routes records, and runs the release sweep, its turn)."""
    return (as_raw_record(item) for item in batch if type(item) is not IdleTick)


class _PickledStateLogic(op.StatefulBatchLogic):
    """Holds one entity's pure state; snapshots are pickled, so they are immutable.

    A snapshot is `(entity id, clock in s, pickled state)`, and a resumed state stays
    pickled until it is first used: a restart builds every held entity before it reads
    any input, and unpickling a day-old jukebox into ~60 KiB of objects was three
    quarters of that (~440 of ~590 µs, 2026-12-03). An untouched state's snapshot is the
    one it resumed from. Snapshots of only the pickled state (before then) load at once.
    """

    update: Callable = staticmethod(lambda state, item: (state, []))
    keeps_snapshots = True  # False in a replay: nothing would read them

    def __init__(self, resume: tuple[str, int | None, bytes] | bytes | None) -> None:
        self._resumed: tuple[str, int | None, bytes] | None = None
        self._state = None
        if type(resume) is tuple:
            self._resumed = resume
        elif resume is not None:
            self._state = pickle.loads(resume)

    @property
    def state(self) -> Any:
        resumed = self._resumed
        if resumed is not None:
            self._state, self._resumed = pickle.loads(resumed[2]), None
        return self._state

    @state.setter
    def state(self, state: Any) -> None:
        self._state, self._resumed = state, None

    def held(self) -> tuple[str, int | None] | None:
        """(entity id, clock in s) of the state held, without unpickling a resumed one."""
        if self._resumed is not None:
            return self._resumed[0], self._resumed[1]
        state = self._state
        if state is None:
            return None
        return self.entity_id(state), None if state.clock is None else int(state.clock.timestamp())

    @staticmethod
    def entity_id(state: Any) -> str:
        raise NotImplementedError

    def on_batch(self, values: list) -> tuple[list, bool]:
        outputs: list = []
        state = self.state
        for value in values:
            state, emitted = type(self).update(state, value)
            outputs.extend(emitted)
        self.state = state
        return outputs, op.StatefulBatchLogic.RETAIN

    def snapshot(self) -> tuple[str, int | None, bytes] | None:
        if not self.keeps_snapshots:
            return None
        if self._resumed is not None:
            return self._resumed
        held = self.held()
        if held is None:
            return None
        return (*held, pickle.dumps(self._state, protocol=pickle.HIGHEST_PROTOCOL))


class _ReleasingStateLogic(ReleasingLogic, _PickledStateLogic):
    """Counted while held; a state resumed from a snapshot is noted for the idle sweep."""

    def __init__(self, resume: tuple[str, int | None, bytes] | bytes | None, release: IdleSweep | None,
                 on_count: Callable[[int], None] | None) -> None:
        super().__init__(resume)
        self.release, self.on_count = release, on_count
        self.count_entities(1)
        held = self.held()
        if release is not None and held is not None and held[1] is not None:
            release.note_restored(self.probe(), held[1])

    def probe(self) -> DeviceProbe | CustomerProbe:
        raise NotImplementedError

    def releasable(self, fleet_clock_s: int | None, horizon_s: int) -> bool:
        return releasable(self.state, fleet_clock_s, horizon_s)


class DeviceLogic(_ReleasingStateLogic):
    """Device features; with scoring on, also what to score after each event."""

    def __init__(self, resume: bytes | None, scoring: bool, release: IdleSweep | None = None,
                 on_count: Callable[[int], None] | None = None, keeps_snapshots: bool = True) -> None:
        super().__init__(resume, release, on_count)
        self.scoring, self.keeps_snapshots = scoring, keeps_snapshots

    def probe(self) -> DeviceProbe:
        return DeviceProbe(self.held()[0])

    @staticmethod
    def entity_id(state: DeviceState) -> str:
        return state.jukebox_id

    def on_batch(self, values: list) -> tuple[list, bool]:
        """Each input's outputs in order, and the jukebox's feature row once, at the end:
        the store keeps only an entity's latest row of a batch anyway. Scoring still reads
        the features as of each event."""
        outputs: list = []
        state = self.state
        probed = row_due = False
        valued = None  # the features as of the state, when scoring has just read them
        for value in values:
            position = None
            if type(value) is Sequenced:
                position, value = value.position, value.item
            if type(value) is DeviceProbe:
                probed = True
                if self.scoring:
                    outputs.append(value)  # on to the jukebox's fraud decisions
                continue
            state, changed, emitted = applied_device_input(state, value)
            if changed:
                row_due, valued = True, None
            payment = None
            for item in emitted:
                if isinstance(item, CustomerPayment):
                    payment = item
                else:  # a venue move, for the customers who paid here
                    outputs.append(item if position is None or not self.scoring else Sequenced(position, item))
            if not self.scoring or not changed:
                if payment is not None:
                    outputs.append(payment)
                continue
            valued = device_values(state)
            venue = state.venue.venue_id if state.venue is not None else None
            if payment is not None:
                outputs.append(PaymentForCustomer(payment, valued, venue, state.clock, position))
                if position is not None:
                    outputs.append(PaymentPending(state.jukebox_id, position))
            else:
                outputs.append(ScoringRequest(state.jukebox_id, venue, None, state.clock, valued, position))
        if row_due:
            outputs.append(device_row(state, valued))
        self.state = state
        return outputs, self.after_probe() if probed else op.StatefulBatchLogic.RETAIN


class CustomerLogic(HistoryOrdered, _ReleasingStateLogic):
    """Customer features; a payment carrying its device row is scored on both.

    In replay order (scoring on), a batch's payments and venue moves, which come from
    many jukeboxes in no set order, are applied in history order at the end of the
    epoch; their requests leave in the next one."""

    def __init__(self, resume: bytes | None, release: IdleSweep | None = None,
                 on_count: Callable[[int], None] | None = None, replay_order: bool = False,
                 scoring: bool = True) -> None:
        super().__init__(resume, release, on_count)
        self.keeps_snapshots = not replay_order
        self.stash = EpochStash(_history_order) if replay_order and scoring else None

    def probe(self) -> CustomerProbe:
        return CustomerProbe(self.held()[0])

    @staticmethod
    def entity_id(state: CustomerState) -> str:
        return state.customer_id

    def on_batch(self, values: list) -> tuple[list, bool]:
        if self.stash is not None:
            self.stash.add(values)
            return [], op.StatefulBatchLogic.RETAIN
        outputs, probed = self._apply(values)
        return outputs, self.after_probe() if probed else op.StatefulBatchLogic.RETAIN

    def _apply(self, values: list) -> tuple[list, bool]:
        outputs: list = []
        state = self.state
        probed = False
        for value in values:
            if type(value) is Sequenced:
                value = value.item
            if type(value) is CustomerProbe:
                probed = True
            elif isinstance(value, PaymentForCustomer):
                state, rows = update_customer(state, value.payment)
                outputs.extend(rows)
                payment = value.payment
                if rows:
                    outputs.append(ScoringRequest(
                        payment.jukebox_id, value.venue_id, payment.customer_id, value.device_as_of,
                        {**value.device_values, **rows[-1].values}, value.position))
                elif value.position is not None:  # the jukebox's decisions wait for an answer
                    outputs.append(PaymentUnscored(payment.jukebox_id, value.position))
            else:
                state, rows = update_customer(state, value)
                outputs.extend(rows)
        self.state = state
        return outputs, probed

    def apply_in_order(self, items: list) -> list:
        return self._apply(items)[0]

    def snapshot(self) -> bytes | None:
        self.end_epoch()
        return super().snapshot()


def _history_order(item: object) -> tuple[int, str]:
    """A customer's inputs in a replay: by position, then jukebox (one venue registration
    moves several jukeboxes at once)."""
    if type(item) is Sequenced:
        return item.position, item.item.jukebox_id
    return item.position, item.payment.jukebox_id


def _customer_of(item: object) -> str:
    if type(item) is Sequenced:
        item = item.item
    return item.payment.customer_id if isinstance(item, PaymentForCustomer) else item.customer_id


def _jukebox_of(item: object) -> str:
    return item.item.jukebox_id if type(item) is Sequenced else item.jukebox_id


def device_inputs(admitted: Admitted) -> list:
    event = admitted.event
    items = venue_assignments(event) if isinstance(event, VenueRegistration) else [event]
    if admitted.position is None:
        return items
    return [Sequenced(admitted.position, item) for item in items]


def build_flow(
    name: str,
    source: Source,
    outputs: FlowOutputs,
    config: FlowConfig = FlowConfig(),
    observers: FlowObservers | None = None,
) -> Dataflow:
    if observers is None:
        observers = FlowObservers()
    flow = Dataflow(name)
    contracts = contracts_by_topic(config.topics)
    on_routed = observers.on_routed
    release = None if config.state_check_interval_s is None else IdleSweep(
        release_horizon_s(config.admission, config.partition_skew_margin_s), config.state_check_interval_s)

    def route_batch(batch: list) -> list:
        pairs = [(raw, route_record(raw, contracts, config.topics, config.limits, config.admission))
                 for raw in raw_records(batch)]
        if on_routed is not None:
            on_routed(pairs)  # once per batch: metrics cost must not scale per event
        results = [result for _raw, result in pairs]
        if release is not None:
            results.extend(release.observe(results))  # release probes, when a sweep is due
        return results

    on_entities = observers.on_entities

    def count_of(entity: str) -> Callable[[int], None] | None:
        return None if on_entities is None else lambda delta: on_entities(entity, delta)

    records = op.input("records", flow, source)
    routed = op.flat_map_batch("route", records, route_batch)
    probes = op.branch("split_probes", routed, lambda item: type(item) in (DeviceProbe, CustomerProbe))
    probe_kinds = op.branch("split_probe_kinds", probes.trues, lambda item: type(item) is DeviceProbe)
    split = op.branch("split_admitted", probes.falses, lambda item: isinstance(item, Admitted))
    device_items = op.merge("device_items", op.flat_map("device_inputs", split.trues, device_inputs),
                            probe_kinds.trues)
    keyed = op.key_on("key_device", device_items, _jukebox_of)
    scoring = config.fraud is not None
    replay_order = config.replay_order
    device_out = op.key_rm("device_out", op.stateful_batch(
        "device_features", keyed,
        lambda resume: DeviceLogic(resume, scoring, release, count_of("device"),
                                   keeps_snapshots=not replay_order)))
    by_kind = op.branch("split_device_out", device_out, lambda item: isinstance(item, FeatureRow))
    device_rows = by_kind.trues
    to_score = op.branch("split_device_scoring", by_kind.falses,
                         lambda item: isinstance(item, ScoringRequest | DeviceProbe | PaymentPending))
    keyed_payments = op.key_on("key_customer", op.merge("customer_inputs", to_score.falses, probe_kinds.falses),
                               _customer_of)
    customer_out = op.key_rm(
        "customer_out", op.stateful_batch(
            "customer_features", keyed_payments,
            lambda resume: CustomerLogic(resume, release, count_of("customer"), replay_order, scoring)))
    customer_split = op.branch("split_customer_out", customer_out,
                               lambda item: isinstance(item, FeatureRow))
    rows = op.merge("feature_rows", device_rows, customer_split.trues)
    op.output("online_store", rows, outputs.features)
    kafka_streams = [split.falses]
    if config.fraud is not None:
        requests = op.merge("scoring_requests", to_score.trues, customer_split.falses)
        kafka_streams.append(fraud_alerts(requests, config.fraud, config.topics, release, replay_order))
    if config.recs is not None:
        kafka_streams.append(recommendation_step(split.trues, config.recs, config.topics, replay_order))
    for extra in outputs.extra_steps:
        kafka_streams.append(extra(device_rows, split.falses))
    messages = op.merge("kafka_messages", *kafka_streams)
    if isinstance(outputs.kafka, FixedPartitionedSink):  # a partitioned sink takes (key, message)
        messages = op.key_on("key_kafka_out", messages, lambda _message: EpochConfirmedKafkaSink.PART)
    op.output("kafka_out", messages, outputs.kafka)
    return flow
