"""Fraud rules: each reason fires on its evidence, never on missing values, under policy."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from models.rules import RULES, RulePolicy, rule_hits, sustained_hits
from online_store.definitions import FEATURES
from schemas.outputs import FraudReason as R

POLICY = RulePolicy()

NORMAL_BAR = {
    "device_plays_5m": 1,
    "device_plays_1h": 14,
    "device_plays_24h": 120,
    "device_distinct_songs_1h": 12,
    "device_top_song_share_1h": 2 / 14,
    "device_credits_used_1h": 14,
    "device_unpaid_plays_1h": 0,
    "device_after_hours_plays_1h": 0,
    "device_payments_1h": 6,
    "device_failed_payments_1h": 1,
    "device_payment_failure_ratio_1h": 1 / 6,
    "device_credits_paid_1h": 15.0,
    "device_unpaid_credits_1h": 0.0,
    "device_revenue_usd_1h": 2.3,
    "device_revenue_usd_24h": 20.0,
    "device_venue_distance_km_last": 0.03,
    "device_speed_kmh_last": 0.5,
    "device_location_gap_s_last": 900.0,
    "device_location_accuracy_m_last": 25.0,
    "customer_payments_10m": 1,
    "customer_failed_payments_10m": 0,
    "customer_distinct_devices_10m": 1,
    "customer_distinct_countries_1h": 1,
    "customer_max_venue_distance_km_10m": 0.0,
}

CASES = [
    (R.LOCATION_AWAY_FROM_VENUE, {"device_venue_distance_km_last": 35.0}),
    (R.IMPOSSIBLE_TRAVEL, {"device_speed_kmh_last": 900.0, "device_location_gap_s_last": 600.0}),
    (R.UNPAID_PLAYS, {"device_unpaid_plays_1h": 9}),
    (R.UNPAID_PLAYS, {"device_unpaid_credits_1h": 25.0}),
    (R.SONG_LOOPING, {"device_top_song_share_1h": 0.8, "device_plays_1h": 25}),
    (R.PAYMENT_TESTING, {"customer_failed_payments_10m": 4, "customer_distinct_devices_10m": 3}),
    (R.PAYMENT_TESTING, {"device_failed_payments_1h": 8, "device_payment_failure_ratio_1h": 0.8}),
    (R.AFTER_HOURS_ACTIVITY, {"device_after_hours_plays_1h": 6}),
    (R.ACCOUNT_ON_DISTANT_JUKEBOXES, {"customer_max_venue_distance_km_10m": 800.0}),
    (R.ACCOUNT_ON_DISTANT_JUKEBOXES, {"customer_distinct_countries_1h": 2}),
]


def test_a_normal_bar_fires_nothing():
    assert rule_hits(NORMAL_BAR, POLICY) == ()


@pytest.mark.parametrize(("reason", "change"), CASES)
def test_each_reason_fires_alone_on_its_evidence(reason, change):
    hits = rule_hits({**NORMAL_BAR, **change}, POLICY)
    assert [h.reason for h in hits] == [reason]
    assert set(change) <= set(hits[0].evidence)
    assert all(name in FEATURES for name in hits[0].evidence)


@pytest.mark.parametrize(("reason", "change"), CASES)
def test_missing_values_never_fire(reason, change):
    only_evidence_keys_missing = {k: v for k, v in NORMAL_BAR.items() if k not in change}
    assert rule_hits(only_evidence_keys_missing, POLICY) == ()
    assert rule_hits({k: None for k in change}, POLICY) == ()
    assert rule_hits({k: float("nan") for k in change}, POLICY) == ()


def test_every_rule_reads_only_declared_features_and_reasons_are_unique():
    assert len({reason for reason, _ in RULES}) == len(RULES) == 7
    fired = {h.reason for _, change in CASES for h in rule_hits({**NORMAL_BAR, **change}, POLICY)}
    assert fired == {reason for reason, _ in RULES}


def test_hits_come_in_reason_declaration_order():
    everything = dict(NORMAL_BAR)
    for reason, change in CASES:
        if reason is not R.IMPOSSIBLE_TRAVEL:
            everything.update(change)
    reasons = [h.reason for h in rule_hits(everything, POLICY)]
    assert reasons == [r for r in R if r in reasons] and len(reasons) == 6


def test_a_far_fix_reached_impossibly_fast_is_travel_not_a_moved_jukebox():
    spoofed = {
        "device_venue_distance_km_last": 800.0,
        "device_speed_kmh_last": 3200.0,
        "device_location_gap_s_last": 900.0,
    }
    assert [h.reason for h in rule_hits(spoofed, POLICY)] == [R.IMPOSSIBLE_TRAVEL]
    moved = {**spoofed, "device_speed_kmh_last": 60.0}
    assert [h.reason for h in rule_hits(moved, POLICY)] == [R.LOCATION_AWAY_FROM_VENUE]


def test_location_accuracy_is_slack_and_the_sentinel_is_not_a_distance():
    fuzzy = {"device_venue_distance_km_last": 2.5, "device_location_accuracy_m_last": 800.0}
    assert rule_hits(fuzzy, POLICY) == ()
    assert [
        h.reason for h in rule_hits({**fuzzy, "device_location_accuracy_m_last": 5.0}, POLICY)
    ] == [R.LOCATION_AWAY_FROM_VENUE]
    assert rule_hits({"device_venue_distance_km_last": -1.0}, POLICY) == ()


def test_jitter_between_close_fixes_is_not_travel():
    jitter = {"device_speed_kmh_last": 5000.0, "device_location_gap_s_last": 2.0}
    assert rule_hits(jitter, POLICY) == ()


def test_looping_needs_enough_plays():
    assert rule_hits({"device_top_song_share_1h": 1.0, "device_plays_1h": 3}, POLICY) == ()


def test_payment_testing_by_account_needs_several_jukeboxes():
    one_box = {"customer_failed_payments_10m": 6, "customer_distinct_devices_10m": 1}
    assert rule_hits(one_box, POLICY) == ()


def test_policy_overrides_thresholds_and_is_frozen():
    strict = RulePolicy(max_unpaid_plays_1h=20.0, max_unpaid_credits_1h=50.0)
    features = {"device_unpaid_plays_1h": 9, "device_unpaid_credits_1h": 9.0}
    assert [h.reason for h in rule_hits(features, POLICY)] == [R.UNPAID_PLAYS]
    assert rule_hits(features, strict) == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        strict.max_unpaid_plays_1h = 1.0  # type: ignore[misc]


def test_booleans_and_text_are_not_evidence():
    assert (
        rule_hits({"device_after_hours_plays_1h": True, "device_unpaid_plays_1h": "99"}, POLICY)
        == ()
    )


def test_unpaid_plays_alert_at_once_but_unpaid_credits_must_be_sustained():
    t0 = datetime(2026, 11, 27, 20, 0, tzinfo=UTC)
    plays = rule_hits({"device_unpaid_plays_1h": 9}, POLICY)
    assert sustained_hits(None, plays, t0)[1] == plays
    prepaid = rule_hits({"device_unpaid_credits_1h": 15.0, "device_unpaid_plays_1h": 0}, POLICY)
    assert prepaid[0].sustain_s == POLICY.unpaid_credits_sustain_s
    state, passed = sustained_hits(None, prepaid, t0)
    assert passed == ()
    for minutes in (30, 60, 89):
        state, passed = sustained_hits(state, prepaid, t0 + timedelta(minutes=minutes))
        assert passed == ()
    state, passed = sustained_hits(state, prepaid, t0 + timedelta(minutes=90))
    assert passed == prepaid
    # One row without the condition starts the clock again.
    state, _ = sustained_hits(state, (), t0 + timedelta(minutes=91))
    assert sustained_hits(state, prepaid, t0 + timedelta(minutes=150))[1] == ()


def test_plays_naming_several_payments_never_seen_alert_at_once_and_prepaid_ones_do_not():
    t0 = datetime(2026, 11, 27, 20, 0, tzinfo=UTC)
    invented = rule_hits({"device_unbacked_payments_1h": 3, "device_unbacked_credits_1h": 9,
                          "device_unpaid_credits_1h": 9.0}, POLICY)
    assert [h.reason for h in invented] == [R.UNPAID_PLAYS] and invented[0].sustain_s == 0
    assert invented[0].evidence["device_unbacked_payments_1h"] == 3
    assert sustained_hits(None, invented, t0)[1] == invented
    prepaid = rule_hits({"device_unbacked_payments_1h": 0, "device_unpaid_credits_1h": 15.0}, POLICY)
    assert prepaid[0].sustain_s == POLICY.unpaid_credits_sustain_s
    # one payment record lost on its way, played for an hour
    assert rule_hits({"device_unbacked_payments_1h": 1, "device_unbacked_credits_1h": 10}, POLICY) == ()


def test_sustain_state_is_pure():
    t0 = datetime(2026, 11, 27, 20, 0, tzinfo=UTC)
    prepaid = rule_hits({"device_unpaid_credits_1h": 15.0}, POLICY)
    state, _ = sustained_hits(None, prepaid, t0)
    before = state.since
    sustained_hits(state, (), t0 + timedelta(minutes=5))
    assert state.since == before


def test_unpaid_plays_after_hours_are_named_after_hours():
    closed = {
        "device_after_hours_plays_1h": 12,
        "device_unpaid_plays_1h": 12,
        "device_unpaid_credits_1h": 12.0,
    }
    assert [h.reason for h in rule_hits(closed, POLICY)] == [R.AFTER_HOURS_ACTIVITY]
    also_open = {**closed, "device_unpaid_plays_1h": 20}
    assert [h.reason for h in rule_hits(also_open, POLICY)] == [
        R.UNPAID_PLAYS,
        R.AFTER_HOURS_ACTIVITY,
    ]
