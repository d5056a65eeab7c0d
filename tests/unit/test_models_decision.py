"""decide(): deterministic alert ids by event-time window; Cooldown: per-jukebox suppression."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

import pytest

from models.decision import (
    CooldownState,
    DecisionPolicy,
    combined_score,
    cooldown_window_start,
    decide,
    update_cooldown,
    verdict,
)
from models.rules import RulePolicy, rule_hits
from schemas.outputs import FraudAlert, Severity, alert_id_for
from schemas.outputs import FraudReason as R

T0 = datetime(2026, 11, 23, 21, 5, 30, tzinfo=UTC)
POLICY = DecisionPolicy(cooldown_s=3600)
VERSIONS = {"jukebox-fraud": "4"}
LOOPING = {"device_top_song_share_1h": 0.9, "device_plays_1h": 30, "device_unpaid_plays_1h": 0}
UNPAID = {"device_unpaid_plays_1h": 12, "device_unpaid_credits_1h": 14.0}


def alert_at(event_time, features=LOOPING, model=0.2, anomaly=None, emitted=None, policy=POLICY):
    return decide(
        "jb-7",
        "v-3",
        event_time,
        features,
        model,
        anomaly,
        rule_hits(features, RulePolicy()),
        policy,
        VERSIONS,
        emitted or event_time + timedelta(seconds=2),
    )


def test_same_condition_same_window_same_id_whatever_the_wall_clock():
    a = alert_at(T0, emitted=T0 + timedelta(seconds=1))
    b = alert_at(T0 + timedelta(minutes=40), emitted=T0 + timedelta(days=3))
    assert a.alert_id == b.alert_id
    window = int(datetime(2026, 11, 23, 21, 0, tzinfo=UTC).timestamp())
    assert a.alert_id == alert_id_for("jb-7", "song_looping", window)
    assert a.window_start == datetime(2026, 11, 23, 21, 0, tzinfo=UTC)
    assert a.emitted_at != b.emitted_at


def test_next_window_or_other_condition_or_jukebox_gets_another_id():
    a = alert_at(T0)
    assert alert_at(T0 + timedelta(hours=1)).alert_id != a.alert_id
    assert alert_at(T0, features=UNPAID).alert_id != a.alert_id
    other = decide(
        "jb-8",
        "v-3",
        T0,
        LOOPING,
        0.2,
        None,
        rule_hits(LOOPING, RulePolicy()),
        POLICY,
        VERSIONS,
        T0,
    )
    assert other.alert_id != a.alert_id


def test_window_follows_the_policy_cooldown():
    assert cooldown_window_start(T0, 600) == int(
        datetime(2026, 11, 23, 21, 0, tzinfo=UTC).timestamp()
    )
    ten_min = DecisionPolicy(cooldown_s=600)
    assert (
        alert_at(T0, policy=ten_min).alert_id
        != alert_at(T0 + timedelta(minutes=10), policy=ten_min).alert_id
    )


def test_nothing_wrong_gives_no_alert():
    assert (
        decide("jb-7", "v-3", T0, {"device_plays_1h": 12}, 0.1, 0.3, (), POLICY, VERSIONS, T0)
        is None
    )
    assert decide("jb-7", None, T0, {}, None, None, (), POLICY, VERSIONS, T0) is None


def test_model_and_anomaly_reasons_and_sorted_reasons():
    alert = alert_at(T0, features={**LOOPING, **UNPAID}, model=0.93, anomaly=0.97)
    assert alert.reasons == [R.UNPAID_PLAYS, R.SONG_LOOPING, R.MODEL_SCORE, R.ANOMALY]
    assert alert.alert_id == alert_id_for("jb-7", "unpaid_plays", cooldown_window_start(T0, 3600))
    model_only = alert_at(T0, features={"device_plays_1h": 40}, model=0.7)
    assert model_only.reasons == [R.MODEL_SCORE]
    assert model_only.features == {"device_plays_1h": 40.0}
    assert model_only.model_versions == VERSIONS


def test_score_and_severity_grow_with_evidence():
    one_rule = alert_at(T0, model=0.0)
    two_rules = alert_at(T0, features={**LOOPING, **UNPAID}, model=0.0)
    everything = alert_at(T0, features={**LOOPING, **UNPAID}, model=0.95, anomaly=0.99)
    assert 0.0 < one_rule.score < two_rules.score < everything.score <= 1.0
    assert one_rule.severity is Severity.MEDIUM
    assert everything.severity is Severity.CRITICAL
    assert combined_score(None, 0, 0.95, POLICY) == pytest.approx(0.475)
    assert combined_score(None, 0, 0.5, POLICY) == 0.0  # below the anomaly threshold


def test_alert_is_a_valid_contract_with_finite_features_only():
    features = {**LOOPING, "device_speed_kmh_last": float("inf"), "note": "x", "flag": True}
    alert = alert_at(T0, features=features, model=0.99)
    assert "device_speed_kmh_last" not in alert.features and "note" not in alert.features
    assert FraudAlert.model_validate_json(alert.model_dump_json()) == alert


def test_naive_times_are_refused():
    with pytest.raises(ValueError):
        alert_at(T0.replace(tzinfo=None))


def test_bare_reasons_record_their_features():
    alert = decide("jb-7", "v-3", T0, LOOPING, None, None, [R.SONG_LOOPING], POLICY, {}, T0)
    assert alert.features == {"device_top_song_share_1h": 0.9, "device_plays_1h": 30.0}


def test_cooldown_suppresses_repeats_but_not_news_or_escalations():
    first = alert_at(T0)
    state, emit = update_cooldown(None, first)
    assert emit and isinstance(state, CooldownState)
    state, emit = update_cooldown(state, alert_at(T0 + timedelta(minutes=5)))
    assert not emit
    # The model joins in: a new reason, the same primary condition (so the same id), more severe.
    joined = alert_at(T0 + timedelta(minutes=6), model=0.9)
    assert joined.alert_id == first.alert_id
    state, emit = update_cooldown(state, joined)
    assert emit
    # Model-only afterwards brings nothing new in this window.
    state, emit = update_cooldown(
        state, alert_at(T0 + timedelta(minutes=7), features={}, model=0.9)
    )
    assert not emit
    state, emit = update_cooldown(state, alert_at(T0 + timedelta(minutes=8), features=UNPAID))
    assert emit
    # A new window starts fresh; an alert for an older window is stale.
    state, emit = update_cooldown(state, alert_at(T0 + timedelta(hours=1)))
    assert emit
    state, emit = update_cooldown(state, alert_at(T0 + timedelta(minutes=9), features=UNPAID))
    assert not emit


def test_escalation_of_the_same_alert_is_published_again():
    medium = alert_at(T0, model=0.0)
    high = alert_at(
        T0 + timedelta(minutes=1), model=0.4
    )  # below the model threshold: no new reason
    assert (medium.severity, high.severity) == (Severity.MEDIUM, Severity.HIGH)
    assert high.alert_id == medium.alert_id and high.reasons == medium.reasons
    state, _ = update_cooldown(None, medium)
    state, emit = update_cooldown(state, high)
    assert emit
    assert not update_cooldown(state, high)[1]
    assert not update_cooldown(state, medium)[1]


def test_cooldown_is_pure():
    first = alert_at(T0)
    state, _ = update_cooldown(None, first)
    snapshot = (state.window_start_s, state.reasons, state.severities)
    update_cooldown(state, alert_at(T0, features=UNPAID))
    assert (state.window_start_s, state.reasons, state.severities) == snapshot
    replayed = [update_cooldown(state, a)[1] for a in (first, alert_at(T0, features=UNPAID))]
    assert replayed == [
        update_cooldown(state, a)[1] for a in (first, alert_at(T0, features=UNPAID))
    ]


def verdict_at(event_time, features=LOOPING, model=0.2, anomaly=None):
    return verdict("jb-7", "v-3", event_time, features, model, anomaly, rule_hits(features, RulePolicy()),
                   POLICY, VERSIONS, event_time + timedelta(seconds=2))


def test_a_verdict_builds_the_alert_decide_returns_and_cools_down_the_same():
    rows = [(T0, LOOPING, 0.2), (T0 + timedelta(minutes=5), LOOPING, 0.2), (T0 + timedelta(minutes=6), LOOPING, 0.9),
            (T0 + timedelta(minutes=7), {}, 0.9), (T0 + timedelta(minutes=8), UNPAID, 0.2),
            (T0 + timedelta(hours=1), LOOPING, 0.2), (T0 + timedelta(minutes=9), UNPAID, 0.2),
            (T0 + timedelta(hours=1, minutes=1), LOOPING, 0.4)]
    by_alert = by_verdict = None
    emitted = []
    for at, features, model in rows:
        alert, found = alert_at(at, features, model), verdict_at(at, features, model)
        assert found.alert() == alert
        assert (found.alert_id, found.reasons, found.severity) == (alert.alert_id, tuple(alert.reasons), alert.severity)
        by_alert, emit = update_cooldown(by_alert, alert)
        by_verdict, emit_too = update_cooldown(by_verdict, found)
        assert (by_verdict, emit_too) == (by_alert, emit)
        emitted.append(emit)
    assert emitted == [True, False, True, False, True, True, False, True]
    assert verdict("jb-7", None, T0, {}, None, None, (), POLICY, VERSIONS, T0) is None


def test_cooldown_and_sustain_states_pickle_compactly_and_old_snapshots_load():
    from dataflows.fraud_steps import DecisionState
    from models.rules import SustainState

    cooldown = update_cooldown(update_cooldown(None, alert_at(T0))[0], alert_at(T0, UNPAID))[0]
    assert len(cooldown.reasons) == 2
    state = DecisionState(SustainState((("unpaid_plays", 1795467000),)), cooldown, 1795467600, LOOPING, "v-3")
    assert pickle.loads(pickle.dumps(state)) == state
    empty = CooldownState(1795467600, frozenset(), ())
    assert pickle.loads(pickle.dumps(empty)) == empty
    # A decision state pickled before 2026-12-04 (fields by name, reasons by reference).
    old = pickle.loads(OLD_DECISION_STATE)
    assert old.cooldown == CooldownState(1795467600, frozenset({R.UNPAID_PLAYS}), (("fa-0123456789abcdef0123", 2),))
    assert old.sustain == SustainState((("unpaid_plays", 1795467000),))
    assert pickle.loads(pickle.dumps(old)) == old


OLD_DECISION_STATE = (
    b'\x80\x05\x95\x0e\x01\x00\x00\x00\x00\x00\x00\x8c\x15dataflows.fraud_steps\x94\x8c\x0f_de'
    b'cision_state\x94\x93\x94(\x8c\x0cmodels.rules\x94\x8c\x0cSustain'
    b'State\x94\x93\x94)\x81\x94]\x94\x8c\x0cunpaid_plays\x94J\xf8\xa6\x04k\x86\x94\x85\x94ab\x8c'
    b'\x0fmodels.decision\x94\x8c\rCooldownState\x94\x93\x94)\x81\x94]\x94'
    b'(JP\xa9\x04k(\x8c\x0fschemas.outputs\x94\x8c\x0bFraudReason\x94\x93'
    b'\x94h\x08\x85\x94R\x94\x91\x94\x8c\x17fa-0123456789abcdef0123\x94K\x02\x86\x94\x85'
    b'\x94ebJP\xa9\x04k\x8c\x0fdevice_plays_1h\x94K\x03\x85\x94\x8c\x02v1\x94\x88t\x94R\x94'
    b'.'
)
