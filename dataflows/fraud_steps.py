"""Fraud scoring in the flow: batch ONNX scoring, per-jukebox decisions, River per window.

    scoring requests ─ fraud_score (stateless, one ONNX call per batch)
                     ─ key by jukebox ─ fraud_decide (rules, sustain, decide, cooldown) ─┬─ alerts
                                                                                          └─ closed 5-min windows
                     ─ key "device" ─ fraud_anomaly (one River detector per entity class) ─ alerts
                     ─ drift_sample ─ key by model ─ fraud_drift (with `FraudConfig.drift`) ─ model events

A scoring request is one feature row after one event: the device row after a play
or location report, or the device row merged with the paying customer's row after
a payment. Every decision runs on event time (windows, cooldowns, sustain), so a
replay reaches the same alerts; only `emitted_at` comes from the injected clock.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import bytewax.operators as op
from bytewax.dataflow import Stream

from dataflows.drift_step import DriftConfig, drift_events
from dataflows.idle_state import DeviceProbe, IdleSweep, ReleasingLogic
from dataflows.records import OutMessage
from dataflows.replay_order import (
    EpochStash,
    HistoryOrdered,
    PaymentOrder,
    PaymentPending,
    PaymentUnscored,
    batch_of,
)
from models.anomaly import DeviceAnomalyDetector
from models.decision import (
    CooldownState,
    DecisionPolicy,
    update_cooldown,
    verdict,
)
from models.fraud_scorer import FraudScorer
from models.rules import RulePolicy, SustainState, rule_hits, sustained_hits
from online_store.definitions import IDLE_RESET_S
from online_store.state_release import silent_past_horizon
from schemas.outputs import FraudAlert
from schemas.topics import Topics

ANOMALY_WINDOW_S = 300


@dataclass(frozen=True, slots=True)
class ScoringRequest:
    jukebox_id: str
    venue_id: str | None
    customer_id: str | None
    event_time: datetime  # the jukebox's clock after the event
    features: Mapping[str, object]
    position: int | None = None  # in a replay: the event's place in the history


@dataclass(frozen=True, slots=True)
class Scored:
    request: ScoringRequest
    model_score: float | None
    model_versions: dict[str, str]
    model_threshold: float | None = None  # chosen at training; overrides the policy's


@dataclass(frozen=True, slots=True)
class PaymentForCustomer:
    """A payment on its way to the customer step, carrying the device row it produced,
    so the payment is scored on device and customer features together."""

    payment: object  # online_store.customer.CustomerPayment
    device_values: Mapping[str, object]
    venue_id: str | None
    device_as_of: datetime
    position: int | None = None  # in a replay: the payment's place in the history


@dataclass(frozen=True, slots=True)
class ClosedWindow:
    """A jukebox's last features in a 5-minute event-time window that has ended."""

    jukebox_id: str
    venue_id: str | None
    window_start_s: int
    features: Mapping[str, object]
    alerted: bool
    position: int | None = None  # in a replay: where the event that closed it is in the history


@dataclass
class FraudConfig:
    """What the fraud steps need; built once per process by the runner.

    `scorer(now)` returns the scorer to use for a batch (a ChampionWatcher's `poll`,
    or a fixed scorer), or None before any model is available (rules still run).
    `emitted_at(event_time)` stamps alerts: the wall clock live, event time in replays.
    """

    scorer: Callable[[datetime], FraudScorer | None]
    emitted_at: Callable[[datetime], datetime]
    now: Callable[[], datetime]
    rules: RulePolicy = field(default_factory=RulePolicy)
    decisions: DecisionPolicy = field(default_factory=DecisionPolicy)
    anomaly: Callable[[], DeviceAnomalyDetector] | None = DeviceAnomalyDetector
    keep_policy_threshold: bool = False  # True: `decisions.model_threshold` beats the model's
    on_alert: Callable[[FraudAlert], None] | None = None
    on_scored: Callable[[FraudScorer, float], None] | None = None  # (scorer, seconds)
    drift: DriftConfig | None = None  # None: no drift checks


def alert_message(alert: FraudAlert, topics: Topics) -> OutMessage:
    return OutMessage(topics.fraud_alerts, alert.jukebox_id.encode(), alert.model_dump_json().encode(),
                      [("jukebox.alert_id", alert.alert_id.encode())])


@dataclass(slots=True)
class DecisionState:
    sustain: SustainState | None = None
    cooldown: CooldownState | None = None
    window_start_s: int | None = None
    window_features: Mapping[str, object] | None = None
    window_venue: str | None = None
    window_alerted: bool = False

    def __reduce__(self):
        # The open window's features as one string of names and a tuple of values: a
        # jukebox's decisions are snapshotted for every epoch it is touched in, and
        # pickling the dict key by key was most of it (4.1 against 1.7 µs, 2026-12-04).
        features = self.window_features
        names = values = None
        if features is not None:
            names, values = "\n".join(features), tuple(features.values())
        return (_decision_state, (self.sustain, self.cooldown, self.window_start_s, names, values,
                                  self.window_venue, self.window_alerted))


def _decision_state(sustain: SustainState | None, cooldown: CooldownState | None, window_start_s: int | None,
                    names: str | None, values: tuple | None, venue: str | None, alerted: bool) -> DecisionState:
    features = None if names is None else dict(zip(names.split("\n") if values else (), values, strict=True))
    return DecisionState(sustain, cooldown, window_start_s, features, venue, alerted)


_POLICIES: dict[tuple[int, float | None], DecisionPolicy] = {}


def _policy(config: FraudConfig, model_threshold: float | None) -> DecisionPolicy:
    """The configured policy, with the model's own threshold when it carries one."""
    key = (id(config), model_threshold)
    policy = _POLICIES.get(key)
    if policy is None:
        policy = config.decisions
        if model_threshold is not None and not config.keep_policy_threshold:
            policy = replace(policy, model_threshold=model_threshold)
        _POLICIES[key] = policy
    return policy


def decide_scored(
    state: DecisionState | None, scored: Scored, config: FraudConfig, topics: Topics
) -> tuple[DecisionState, list]:
    """Rules, sustain, decide and cooldown for one scored row of one jukebox."""
    request = scored.request
    outputs: list = []
    t = int(request.event_time.timestamp())
    if state is None or (state.window_start_s is not None and t - state.window_start_s > IDLE_RESET_S):
        # Silent for over a day: sustain, cooldown and the open window start afresh (the
        # window is dropped, not closed), as when the engine released the state.
        state = DecisionState()
    window = t - t % ANOMALY_WINDOW_S
    if state.window_start_s is not None and window > state.window_start_s:
        outputs.append(ClosedWindow(request.jukebox_id, state.window_venue, state.window_start_s,
                                    state.window_features or {}, state.window_alerted, request.position))
        state.window_alerted = False
    if state.window_start_s is None or window >= state.window_start_s:
        state.window_start_s, state.window_features = window, request.features
        state.window_venue = request.venue_id
    hits = rule_hits(request.features, config.rules)
    state.sustain, passed = sustained_hits(state.sustain, hits, request.event_time)
    found = verdict(request.jukebox_id, request.venue_id, request.event_time, request.features,
                    scored.model_score, None, passed, _policy(config, scored.model_threshold),
                    scored.model_versions, config.emitted_at(request.event_time),
                    customer_id=request.customer_id)
    if found is not None:
        state.cooldown, emit = update_cooldown(state.cooldown, found)
        if emit:
            state.window_alerted = window == state.window_start_s
            alert = found.alert()
            outputs.append(alert_message(alert, topics))
            if config.on_alert is not None:
                config.on_alert(alert)
    return state, outputs


def _payment_position(item: object) -> int | None:
    """The position of the payment a scored request is for (it came through the customer
    step); None for the jukebox's other requests."""
    request = item.request
    return request.position if request.customer_id is not None else None


class _DecideLogic(ReleasingLogic, op.StatefulBatchLogic):
    def __init__(self, resume: bytes | None, config: FraudConfig, topics: Topics,
                 release: IdleSweep | None = None, replay_order: bool = False) -> None:
        self.state = pickle.loads(resume) if resume is not None else None
        self.config, self.topics, self.release = config, topics, release
        self.order = PaymentOrder(_payment_position) if replay_order else None

    def releasable(self, fleet_clock_s: int | None, horizon_s: int) -> bool:
        if self.order is not None and self.order.waiting:
            return False
        last = None if self.state is None else self.state.window_start_s
        return silent_past_horizon(last, fleet_clock_s, horizon_s)

    def on_batch(self, values: list) -> tuple[list, bool]:
        outputs: list = []
        probed = False
        order = self.order
        for item in values:
            if type(item) is DeviceProbe:
                probed = True
                continue
            for scored in (item,) if order is None else order.arrange(item):
                if type(scored) is not PaymentUnscored:
                    self.state, emitted = decide_scored(self.state, scored, self.config, self.topics)
                    outputs.extend(emitted)
        return outputs, self.after_probe() if probed else op.StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes | None:
        if self.order is not None:
            return None  # a replay keeps no recovery state
        return pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)


@dataclass(slots=True)
class AnomalyState:
    detector: DeviceAnomalyDetector
    cooldown: dict[str, CooldownState] = field(default_factory=dict)


class _AnomalyLogic(HistoryOrdered, op.StatefulBatchLogic):
    """One detector for the whole device class: score a closed window, then learn from
    it unless it raised an alert (so fraud does not become normal)."""

    def __init__(self, resume: bytes | None, config: FraudConfig, topics: Topics,
                 replay_order: bool = False) -> None:
        assert config.anomaly is not None
        self.state = pickle.loads(resume) if resume is not None else AnomalyState(config.anomaly())
        self.config, self.topics = config, topics
        # In a replay, windows are learnt in history order. A window may come one batch
        # late (closed by a payment, whose request waited an epoch in the customer step),
        # so at the end of an epoch only the windows of batches before the newest one seen
        # are complete.
        self.stash = EpochStash(_window_order) if replay_order else None
        self.newest_batch = -1

    def on_batch(self, values: list[ClosedWindow]) -> tuple[list, bool]:
        if self.stash is None:
            return self.apply_in_order(values), op.StatefulBatchLogic.RETAIN
        self.stash.add(values)
        self.newest_batch = max(self.newest_batch, max(batch_of(w.position) for w in values))
        return [], op.StatefulBatchLogic.RETAIN

    def held_over(self) -> Callable[[ClosedWindow], bool]:
        newest = self.newest_batch
        return lambda window: batch_of(window.position) >= newest

    def snapshot(self) -> bytes | None:
        if self.stash is not None:
            self.end_epoch()
            return None
        return pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)

    def apply_in_order(self, values: list[ClosedWindow]) -> list:
        outputs: list = []
        detector, policy = self.state.detector, self.config.decisions
        scores = detector.scores_then_learn([(window.features, not window.alerted) for window in values])
        for window, score in zip(values, scores, strict=True):
            if score is None or score < policy.anomaly_threshold:  # None: not warm yet
                continue
            end = datetime.fromtimestamp(window.window_start_s + ANOMALY_WINDOW_S, tz=UTC)
            found = verdict(window.jukebox_id, window.venue_id, end, window.features, None, score, (),
                            policy, {"river-hst": f"{detector.n_trees}x{detector.height}"},
                            self.config.emitted_at(end))
            if found is None:
                continue
            cooldown, emit = update_cooldown(self.state.cooldown.get(window.jukebox_id), found)
            self.state.cooldown[window.jukebox_id] = cooldown
            if emit:
                alert = found.alert()
                outputs.append(alert_message(alert, self.topics))
                if self.config.on_alert is not None:
                    self.config.on_alert(alert)
        self._forget_old_cooldowns()
        return outputs

    def _forget_old_cooldowns(self) -> None:
        if len(self.state.cooldown) > 100_000:  # bounded: keep the most recent windows
            newest = sorted(self.state.cooldown.items(), key=lambda kv: kv[1].window_start_s)
            self.state.cooldown = dict(newest[-50_000:])


def _window_order(window: ClosedWindow) -> tuple[int, str]:
    return window.position, window.jukebox_id  # one venue registration may close several


def fraud_alerts(requests: Stream[ScoringRequest | DeviceProbe], config: FraudConfig, topics: Topics,
                 release: IdleSweep | None = None, replay_order: bool = False) -> Stream[OutMessage]:
    """The fraud steps; returns the stream of alert (and model-event) messages for the Kafka
    sink. Release probes and payment placeholders go around scoring, straight to the
    jukebox's decisions."""

    def score_batch(batch: list) -> list[tuple[str, Scored | PaymentPending | PaymentUnscored]]:
        # Payment placeholders (replay order) pass through in place: they must reach the
        # jukebox's decisions by the same path as its requests, or they could overtake them.
        requests = [r for r in batch if type(r) is ScoringRequest]
        scorer = config.scorer(config.now())
        if scorer is None:
            scored = [Scored(r, None, {}) for r in requests]
        else:
            started = time.perf_counter()
            scores = scorer.score([r.features for r in requests])
            if config.on_scored is not None:
                config.on_scored(scorer, time.perf_counter() - started)
            versions, threshold = scorer.model_versions, scorer.threshold
            scored = [Scored(r, float(s), versions, threshold) for r, s in zip(requests, scores, strict=True)]
        if len(requests) < len(batch):
            answers = iter(scored)
            scored = [next(answers) if type(item) is ScoringRequest else item for item in batch]
        return [(item.jukebox_id if type(item) is not Scored else item.request.jukebox_id, item)
                for item in scored]

    probes = op.branch("split_decide_probes", requests, lambda item: type(item) is DeviceProbe)
    scored = op.flat_map_batch("fraud_score", probes.falses, score_batch)
    decide_inputs = op.merge("decide_inputs", scored,
                             op.key_on("key_decide_probes", probes.trues, lambda probe: probe.jukebox_id))
    decided = op.key_rm("fraud_decided", op.stateful_batch(
        "fraud_decide", decide_inputs,
        lambda resume: _DecideLogic(resume, config, topics, release, replay_order)))
    split = op.branch("split_windows", decided, lambda item: isinstance(item, ClosedWindow))
    messages = [split.falses]
    if config.anomaly is not None:
        windows = op.key_on("key_device_class", split.trues, lambda _w: "device")
        messages.append(op.key_rm("fraud_anomalies", op.stateful_batch(
            "fraud_anomaly", windows, lambda resume: _AnomalyLogic(resume, config, topics, replay_order))))
    if config.drift is not None:
        messages.append(drift_events(scored, config.drift, topics))
    if len(messages) == 1:
        return messages[0]
    return op.merge("fraud_alert_messages", *messages)
