"""Offline checks against labelled history, per scenario: rules per row, alerts per episode.

A reason counts as right only when it names the scenario of the episode it falls
in: a looping rule firing during an unpaid-plays episode is a false positive for
`song_looping`. `replay_alerts` + `episode_metrics` replay the decision path the
flow runs (rules, model score, `decide`, cooldown) over rows in delivery order and
judge the published alerts against the episodes, which is how the engine's
per-scenario precision and recall are measured; they are what tunes `RulePolicy`.

>>> import numpy as np
>>> from models.training import TrainingSet
>>> rows = [{"device_unpaid_plays_1h": n} for n in (9, 0, 7)]
>>> data = TrainingSet(rows, np.array([1, 0, 0]), ["unpaid_plays", None, None],
...                    np.array([0, 1, 2]), ["jb-1", "jb-1", "jb-2"])
>>> m = rule_metrics(data, RulePolicy())["unpaid_plays"]
>>> (m.precision, m.recall, m.fired)
(0.5, 1.0, 2)
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from models.decision import CooldownState, DecisionPolicy, update_cooldown, verdict
from models.fraud_scorer import FraudScorer, loaded_model_from_bytes
from models.rules import RULES, RulePolicy, SustainState, rule_hits, sustained_hits
from models.training import TrainedFraudModel, TrainingSet
from models.training_set import DEFAULT_TAIL_S
from schemas.outputs import FraudAlert
from simulator.fraud import FraudLabel


@dataclass(frozen=True, slots=True)
class RuleMetrics:
    precision: float
    recall: float
    fired: int
    positives: int


def rule_metrics(data: TrainingSet, policy: RulePolicy) -> dict[str, RuleMetrics]:
    """Per reason code: precision and recall of its rule against that scenario's rows
    (ambiguous rows left out)."""
    data = data.usable()
    fired: Counter[str] = Counter()
    hit: Counter[str] = Counter()
    positives = Counter(s for s in data.scenarios if s)
    for row, scenario in zip(data.rows, data.scenarios):
        for h in rule_hits(row, policy):
            fired[h.reason.value] += 1
            hit[h.reason.value] += h.reason.value == scenario
    out = {}
    for reason, _ in RULES:
        code = reason.value
        out[code] = RuleMetrics(
            precision=hit[code] / fired[code] if fired[code] else 0.0,
            recall=hit[code] / positives[code] if positives[code] else float("nan"),
            fired=fired[code],
            positives=positives[code],
        )
    return out


@dataclass(frozen=True, slots=True)
class EpisodeMetrics:
    """Alert-level results for one scenario, judged the way alerts will be."""

    precision: float  # alerts naming this reason that fall in an episode of this scenario
    recall: float  # episodes of this scenario with at least one alert naming it
    alerts: int
    episodes: int
    detected_any_reason: int  # episodes with an alert of any reason in them


@dataclass(frozen=True)
class AlertReplay:
    alerts: list[FraudAlert]
    by_scenario: dict[str, EpisodeMetrics]
    precision_any: float  # alerts inside some episode (any scenario) / all alerts

    def as_flat(self) -> dict[str, float]:
        """MLflow metric names: `alerts.precision_any`, `alerts.song_looping.recall`, ..."""
        out = {"alerts.precision_any": self.precision_any, "alerts.count": float(len(self.alerts))}
        for scenario, m in self.by_scenario.items():
            out[f"alerts.{scenario}.precision"] = m.precision
            out[f"alerts.{scenario}.recall"] = m.recall
        return {k: v for k, v in out.items() if not math.isnan(v)}  # NaN: no alert named it


def replay_alerts(
    data: TrainingSet,
    model_scores: np.ndarray | None,
    rule_policy: RulePolicy,
    decision_policy: DecisionPolicy,
    model_versions: Mapping[str, str],
) -> list[FraudAlert]:
    """The alerts the flow would publish for these rows in this order: rules (sustained
    per jukebox), model score, `decide`, then per-jukebox cooldown (anomaly scores are
    not replayed here)."""
    cooldowns: dict[str, CooldownState] = {}
    sustains: dict[str, SustainState] = {}
    published = []
    for i, (row, jukebox, t_ms) in enumerate(zip(data.rows, data.jukebox_ids, data.event_times_ms)):
        event_time = datetime.fromtimestamp(int(t_ms) / 1000, tz=UTC)
        score = None if model_scores is None else float(model_scores[i])
        sustains[jukebox], hits = sustained_hits(
            sustains.get(jukebox), rule_hits(row, rule_policy), event_time
        )
        found = verdict(
            jukebox,
            None,
            event_time,
            row,
            score,
            None,
            hits,
            decision_policy,
            model_versions,
            emitted_at=event_time,
        )
        if found is None:
            continue
        cooldowns[jukebox], emit = update_cooldown(cooldowns.get(jukebox), found)
        if emit:
            published.append(found.alert())
    return published


def episode_metrics(
    alerts: list[FraudAlert], labels: Sequence[FraudLabel], grace_s: int = DEFAULT_TAIL_S
) -> AlertReplay:
    """Judge alerts against labelled episodes. An alert is in an episode when it is on
    one of the episode's jukeboxes between its start and `grace_s` after its end: windowed
    features lag the fraud by up to their window, and credits queued during an episode keep
    playing after its labelled end (the same allowance as the training tail)."""
    spans: dict[str, list[tuple[float, float, str, str]]] = defaultdict(list)
    episodes: dict[str, set[str]] = defaultdict(set)
    for label in labels:
        spans[label.jukebox_id].append(
            (
                label.start.timestamp(),
                label.end.timestamp() + grace_s,
                label.scenario,
                label.episode_id,
            )
        )
        episodes[label.scenario].add(label.episode_id)
    named: Counter[str] = Counter()
    named_right: Counter[str] = Counter()
    found: dict[str, set[str]] = defaultdict(set)
    found_any: set[str] = set()
    inside_any = 0
    for alert in alerts:
        t = alert.event_time.timestamp()
        inside = [(s, e) for lo, hi, s, e in spans.get(alert.jukebox_id, ()) if lo <= t <= hi]
        inside_any += bool(inside)
        found_any.update(e for _, e in inside)
        for reason in alert.reasons:
            named[reason.value] += 1
            matching = [e for s, e in inside if s == reason.value]
            named_right[reason.value] += bool(matching)
            found[reason.value].update(matching)
    by_scenario = {
        scenario: EpisodeMetrics(
            precision=named_right[scenario] / named[scenario] if named[scenario] else float("nan"),
            recall=len(found[scenario]) / len(ids),
            alerts=named[scenario],
            episodes=len(ids),
            detected_any_reason=len(ids & found_any),
        )
        for scenario, ids in sorted(episodes.items())
    }
    precision_any = inside_any / len(alerts) if alerts else float("nan")
    return AlertReplay(alerts, by_scenario, precision_any)


def holdout_alert_replay(
    trained: TrainedFraudModel,
    labels: Sequence[FraudLabel],
    rule_policy: RulePolicy = RulePolicy(),
    decision_policy: DecisionPolicy | None = None,
) -> AlertReplay:
    """Replay the held-out jukeboxes' rows through the exported ONNX model (the serving
    path, not scikit-learn), the rules and `decide`, and judge the alerts against those
    jukeboxes' episodes. Without a policy, the model's own alert threshold is used."""
    model = loaded_model_from_bytes(trained.onnx_bytes, "candidate", trained.sha256)
    scorer = FraudScorer.from_model(model, expected_features=None)
    policy = decision_policy or DecisionPolicy(model_threshold=trained.threshold)
    holdout = trained.holdout
    alerts = replay_alerts(
        holdout, scorer.score(holdout.rows), rule_policy, policy, scorer.model_versions
    )
    jukeboxes = set(holdout.jukebox_ids)
    return episode_metrics(alerts, [label for label in labels if label.jukebox_id in jukeboxes])
