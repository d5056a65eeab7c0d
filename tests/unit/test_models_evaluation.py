"""Offline judging: alert replay through rules/decide/cooldown, per-episode precision and recall,
and the alert-level threshold choice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from models.decision import DecisionPolicy
from models.evaluation import episode_metrics, replay_alerts, rule_metrics
from models.rules import RulePolicy
from models.training import AMBIGUOUS, TrainingSet, alert_threshold, fraud_metrics
from simulator.fraud import FraudLabel

T0 = datetime(2026, 11, 27, 18, 0, tzinfo=UTC)
LOOPING = {"device_top_song_share_1h": 0.9, "device_plays_1h": 20}
CLEAN = {"device_top_song_share_1h": 0.1, "device_plays_1h": 12}
PREPAID = {"device_unpaid_credits_1h": 14.0, "device_unpaid_plays_1h": 0}


def ms(minutes: float) -> int:
    return int((T0 + timedelta(minutes=minutes)).timestamp() * 1000)


def rows_of(*items: tuple[str, float, dict]) -> TrainingSet:
    return TrainingSet(
        rows=[row for _, _, row in items],
        labels=np.zeros(len(items), dtype=np.int8),
        scenarios=[None] * len(items),
        event_times_ms=np.array([ms(m) for _, m, _ in items]),
        jukebox_ids=[j for j, _, _ in items],
    )


def label(scenario: str, jukebox: str, start: float, end: float, episode: str) -> FraudLabel:
    return FraudLabel(
        scenario,
        jukebox,
        None,
        "v-1",
        T0 + timedelta(minutes=start),
        T0 + timedelta(minutes=end),
        episode,
    )


def test_replay_applies_rules_cooldown_and_sustain():
    data = rows_of(
        ("jb-1", 0, CLEAN),
        ("jb-1", 5, LOOPING),
        ("jb-1", 9, LOOPING),  # one alert, then cooldown
        ("jb-2", 0, PREPAID),
        ("jb-2", 60, PREPAID),
        ("jb-2", 95, PREPAID),  # sustained 95 min
        ("jb-3", 0, PREPAID),
        ("jb-3", 30, CLEAN),
        ("jb-3", 95, PREPAID),  # interrupted
    )
    alerts = replay_alerts(data, None, RulePolicy(), DecisionPolicy(), {})
    assert [(a.jukebox_id, [r.value for r in a.reasons]) for a in alerts] == [
        ("jb-1", ["song_looping"]),
        ("jb-2", ["unpaid_plays"]),
    ]


def test_replay_names_the_model_version_and_uses_its_scores():
    data = rows_of(("jb-1", 0, CLEAN), ("jb-1", 1, CLEAN))
    alerts = replay_alerts(
        data,
        np.array([0.2, 0.95]),
        RulePolicy(),
        DecisionPolicy(model_threshold=0.9),
        {"jukebox-fraud": "7"},
    )
    assert [(a.reasons[0].value, a.model_versions) for a in alerts] == [
        ("model_score", {"jukebox-fraud": "7"})
    ]


def test_episode_metrics_judge_reason_jukebox_and_time():
    labels = [
        label("song_looping", "jb-1", 0, 60, "ep-1"),
        label("song_looping", "jb-2", 0, 60, "ep-2"),
        label("unpaid_plays", "jb-3", 0, 60, "ep-3"),
    ]
    data = rows_of(
        ("jb-1", 30, LOOPING),  # right
        ("jb-3", 30, LOOPING),  # wrong reason: inside an unpaid-plays episode
        ("jb-4", 30, LOOPING),  # no episode at all
        ("jb-1", 60 + 170, {**LOOPING, "device_plays_1h": 13}),  # within the grace after ep-1
    )
    alerts = replay_alerts(data, None, RulePolicy(), DecisionPolicy(cooldown_s=3600), {})
    result = episode_metrics(alerts, labels, grace_s=3 * 3600)
    looping = result.by_scenario["song_looping"]
    assert (looping.alerts, looping.precision, looping.recall) == (4, 0.5, 0.5)
    assert looping.detected_any_reason == 1
    unpaid = result.by_scenario["unpaid_plays"]
    assert np.isnan(unpaid.precision) and unpaid.recall == 0.0 and unpaid.detected_any_reason == 1
    assert result.precision_any == 0.75
    assert {"alerts.precision_any", "alerts.song_looping.recall"} <= set(result.as_flat())
    assert "alerts.unpaid_plays.precision" not in result.as_flat()  # NaN is not logged


def test_rule_metrics_leave_ambiguous_rows_out():
    data = TrainingSet(
        [LOOPING, LOOPING, LOOPING],
        np.array([1, AMBIGUOUS, 0]),
        ["song_looping", None, None],
        np.array([0, 1, 2]),
        ["a", "a", "b"],
    )
    m = rule_metrics(data, RulePolicy())["song_looping"]
    assert (m.fired, m.precision, m.recall) == (2, 0.5, 1.0)


def test_row_metrics_refuse_ambiguous_labels():
    with pytest.raises(ValueError, match="usable"):
        fraud_metrics(np.array([0.1, 0.9]), np.array([AMBIGUOUS, 1]), [None, "x"], 0.5)


def test_alert_threshold_counts_windows_not_rows():
    # One fraud hour with many high rows against many clean hours with one high row each:
    # row precision at 0.5 is 10/15, alert precision only 1/6.
    scores = np.array([0.9] * 10 + [0.6] * 5 + [0.95])
    labels = np.array([1] * 10 + [0] * 5 + [1])
    jukeboxes = ["fraud"] * 10 + [f"clean-{i}" for i in range(5)] + ["other-fraud"]
    times = np.zeros(16, dtype=np.int64)
    assert alert_threshold(scores, labels, jukeboxes, times, target_precision=0.9) == 0.9
    assert alert_threshold(scores, labels, jukeboxes, times, target_precision=0.2) == 0.6
    unreachable = alert_threshold(
        np.array([0.9, 0.9]), np.array([0, 1]), ["a", "b"], np.zeros(2), target_precision=0.99
    )
    assert unreachable == 0.9  # the most precise threshold available
