"""Fraud rules with reason codes: what a model could miss, and what an alert must explain.

Each rule reads a few features by their declared names and, when it fires, says
which `FraudReason` and which feature values made it fire. A missing value
(absent or None) never fires a rule: no evidence is not evidence of fraud.
Thresholds live in a frozen `RulePolicy` (its constructor is its config), so a
replay can run the same rules under different thresholds. A condition that normal
traffic also shows briefly must be *sustained* before it alerts: `sustained_hits`
keeps a tiny per-jukebox state (`SustainState`) of since when each has held.

>>> hits = rule_hits({"device_top_song_share_1h": 0.9, "device_plays_1h": 20,
...                   "device_unpaid_plays_1h": 1}, RulePolicy())
>>> [h.reason.value for h in hits]
['song_looping']
>>> hits[0].evidence
{'device_top_song_share_1h': 0.9, 'device_plays_1h': 20.0}
>>> rule_hits({"device_top_song_share_1h": 0.9, "device_plays_1h": 20},
...           RulePolicy(looping_min_plays_1h=30))
()
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from schemas.outputs import FraudReason


@dataclass(frozen=True, slots=True)
class RulePolicy:
    """Thresholds of every rule. A jukebox is bolted to a bar: it should not move."""

    # location_away_from_venue: the latest fix, less its reported accuracy, is this far away
    max_venue_distance_km: float = 2.0
    # impossible_travel: implied speed between two fixes at least this far apart in time
    max_speed_kmh: float = 200.0
    min_speed_gap_s: float = 60.0
    # unpaid_plays: plays naming no payment; or credits used beyond credits paid, which a
    # prepaid bundle also causes (for up to ~40 minutes, and for ~2 h after a looping spree),
    # so that condition must be sustained
    max_unpaid_plays_1h: float = 5.0
    max_unpaid_credits_1h: float = 10.0
    unpaid_credits_sustain_s: float = 90 * 60.0
    # ...or plays naming several payment ids the jukebox never saw succeed (a box inventing
    # one a session); a payment record lost on its way leaves one id, and up to ~10 credits
    max_unbacked_payments_1h: float = 2.0
    # song_looping: one song takes this share of an hour with at least this many plays
    # (regulars replaying a favourite reach 0.5 of 10 plays)
    looping_top_song_share: float = 0.6
    looping_min_plays_1h: float = 12.0
    # payment_testing: an account failing on several jukeboxes, or a jukebox seeing many fails
    testing_customer_failed_10m: float = 3.0
    testing_customer_devices_10m: float = 2.0
    testing_device_failed_1h: float = 5.0
    testing_device_failure_ratio_1h: float = 0.5
    # after_hours_activity: plays while the venue is closed (its local time); the queue
    # left at closing time plays out a few songs late
    max_after_hours_plays_1h: float = 5.0
    # account_on_distant_jukeboxes: one account paying at venues far apart, or across borders
    max_customer_venue_distance_km_10m: float = 100.0
    max_customer_countries_1h: float = 1.0


@dataclass(frozen=True, slots=True)
class RuleHit:
    reason: FraudReason
    evidence: dict[str, float]  # the feature values that made the rule fire
    sustain_s: float = 0.0  # alert only once the condition has held on every row this long


def _number(features: Mapping[str, object], name: str) -> float | None:
    value = features.get(name)
    kind = type(value)  # exact types first: read ~20 times per event
    if kind is float:
        return value if value == value else None  # noqa: PLR0124 (False only for NaN)
    if kind is int:
        return float(value)
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def _evidence(features: Mapping[str, object], *names: str) -> dict[str, float]:
    return {n: v for n in names if (v := _number(features, n)) is not None}


def _impossible_travel(f: Mapping[str, object], p: RulePolicy) -> dict[str, float] | None:
    speed, gap = _number(f, "device_speed_kmh_last"), _number(f, "device_location_gap_s_last")
    # Two fixes seconds apart turn GPS jitter into absurd speeds: require a real gap.
    if speed is None or gap is None or gap < p.min_speed_gap_s:
        return None
    if speed > p.max_speed_kmh:
        return _evidence(f, "device_speed_kmh_last", "device_location_gap_s_last")
    return None


def _away_from_venue(f: Mapping[str, object], p: RulePolicy) -> dict[str, float] | None:
    distance = _number(f, "device_venue_distance_km_last")
    if distance is None or distance < 0:  # negative: the "no location yet" sentinel
        return None
    if _impossible_travel(f, p) is not None:
        return None  # a far fix reached impossibly fast is a spoofed position, not a moved box
    slack_km = max(0.0, _number(f, "device_location_accuracy_m_last") or 0.0) / 1000.0
    if distance - slack_km > p.max_venue_distance_km:
        return _evidence(f, "device_venue_distance_km_last", "device_location_accuracy_m_last")
    return None


def _after_hours(f: Mapping[str, object], p: RulePolicy) -> dict[str, float] | None:
    plays = _number(f, "device_after_hours_plays_1h")
    if plays is not None and plays > p.max_after_hours_plays_1h:
        return _evidence(f, "device_after_hours_plays_1h")
    return None


def _unpaid_plays(f: Mapping[str, object], p: RulePolicy) -> RuleHit | None:
    plays = _number(f, "device_unpaid_plays_1h")
    credits = _number(f, "device_unpaid_credits_1h")
    if _after_hours(f, p) is not None and (plays or 0.0) <= (
        _number(f, "device_after_hours_plays_1h") or 0.0
    ):
        return None  # every unpaid play was after hours: that is the fraud to name
    if plays is not None and plays > p.max_unpaid_plays_1h:
        return RuleHit(FraudReason.UNPAID_PLAYS, _unpaid_evidence(f))
    unbacked = _number(f, "device_unbacked_payments_1h")
    if unbacked is not None and unbacked > p.max_unbacked_payments_1h:
        return RuleHit(FraudReason.UNPAID_PLAYS, _unpaid_evidence(f))
    if credits is not None and credits > p.max_unpaid_credits_1h:
        # Until a state resumed from before the unbacked count has its 7 h of history
        # (and for rules run on rows without it), the sustained excess stands in.
        return RuleHit(FraudReason.UNPAID_PLAYS, _unpaid_evidence(f), p.unpaid_credits_sustain_s)
    return None


def _unpaid_evidence(f: Mapping[str, object]) -> dict[str, float]:
    return _evidence(f, "device_unpaid_plays_1h", "device_unbacked_payments_1h", "device_unbacked_credits_1h",
                     "device_unpaid_credits_1h", "device_credits_paid_1h")


def _song_looping(f: Mapping[str, object], p: RulePolicy) -> dict[str, float] | None:
    share, plays = _number(f, "device_top_song_share_1h"), _number(f, "device_plays_1h")
    if share is None or plays is None:
        return None
    if share >= p.looping_top_song_share and plays >= p.looping_min_plays_1h:
        return _evidence(f, "device_top_song_share_1h", "device_plays_1h")
    return None


def _payment_testing(f: Mapping[str, object], p: RulePolicy) -> dict[str, float] | None:
    failed = _number(f, "customer_failed_payments_10m")
    devices = _number(f, "customer_distinct_devices_10m")
    by_account = (
        failed is not None
        and devices is not None
        and failed >= p.testing_customer_failed_10m
        and devices >= p.testing_customer_devices_10m
    )
    device_failed = _number(f, "device_failed_payments_1h")
    ratio = _number(f, "device_payment_failure_ratio_1h")
    by_device = (
        device_failed is not None
        and ratio is not None
        and device_failed >= p.testing_device_failed_1h
        and ratio >= p.testing_device_failure_ratio_1h
    )
    if by_account or by_device:
        return _evidence(
            f,
            "customer_failed_payments_10m",
            "customer_distinct_devices_10m",
            "device_failed_payments_1h",
            "device_payment_failure_ratio_1h",
        )
    return None


def _distant_jukeboxes(f: Mapping[str, object], p: RulePolicy) -> dict[str, float] | None:
    distance = _number(f, "customer_max_venue_distance_km_10m")
    countries = _number(f, "customer_distinct_countries_1h")
    if (distance is not None and distance > p.max_customer_venue_distance_km_10m) or (
        countries is not None and countries > p.max_customer_countries_1h
    ):
        return _evidence(f, "customer_max_venue_distance_km_10m", "customer_distinct_countries_1h")
    return None


Rule = Callable[[Mapping[str, object], RulePolicy], "dict[str, float] | RuleHit | None"]

RULES: tuple[tuple[FraudReason, Rule], ...] = (
    (FraudReason.LOCATION_AWAY_FROM_VENUE, _away_from_venue),
    (FraudReason.IMPOSSIBLE_TRAVEL, _impossible_travel),
    (FraudReason.UNPAID_PLAYS, _unpaid_plays),
    (FraudReason.SONG_LOOPING, _song_looping),
    (FraudReason.PAYMENT_TESTING, _payment_testing),
    (FraudReason.AFTER_HOURS_ACTIVITY, _after_hours),
    (FraudReason.ACCOUNT_ON_DISTANT_JUKEBOXES, _distant_jukeboxes),
)
"""Every rule, in `FraudReason` declaration order (the order hits are returned in)."""


def rule_hits(features: Mapping[str, object], policy: RulePolicy) -> tuple[RuleHit, ...]:
    """The rules that fire on one feature row (device values, plus customer values
    when the triggering event was a payment)."""
    hits = []
    for reason, rule in RULES:
        found = rule(features, policy)
        if isinstance(found, RuleHit):
            hits.append(found)
        elif found is not None:
            hits.append(RuleHit(reason, found))
    return tuple(hits)


@dataclass(frozen=True, slots=True)
class SustainState:
    """Per jukebox: since when (epoch s, event time) each sustained condition has held."""

    since: tuple[tuple[str, int], ...] = ()

    def __reduce__(self):
        return (SustainState, (self.since,))  # positional: the default form names each field


_NOTHING_SUSTAINED = SustainState()


def sustained_hits(
    state: SustainState | None, hits: tuple[RuleHit, ...], event_time: datetime
) -> tuple[SustainState, tuple[RuleHit, ...]]:
    """The hits that may alert now. A hit with `sustain_s` passes only once its condition
    has fired on every row of this jukebox for that long; a row without it starts over.

    >>> from datetime import UTC, datetime, timedelta
    >>> t0 = datetime(2026, 11, 27, 20, 0, tzinfo=UTC)
    >>> hit = RuleHit(FraudReason.UNPAID_PLAYS, {"device_unpaid_credits_1h": 14.0}, sustain_s=1800)
    >>> state, passed = sustained_hits(None, (hit,), t0)
    >>> passed
    ()
    >>> state, passed = sustained_hits(state, (hit,), t0 + timedelta(minutes=30))
    >>> [h.reason.value for h in passed]
    ['unpaid_plays']
    >>> sustained_hits(state, (), t0 + timedelta(minutes=31))[0].since    # condition gone: reset
    ()
    """
    if not hits and (state is None or not state.since):
        return _NOTHING_SUSTAINED, ()  # most rows: no rule fires, nothing held
    now = int(event_time.timestamp())
    before = dict(state.since) if state is not None else {}
    since: dict[str, int] = {}
    passed = []
    for hit in hits:
        if hit.sustain_s <= 0:
            passed.append(hit)
            continue
        key = hit.reason.value
        since[key] = min(before.get(key, now), now)
        if now - since[key] >= hit.sustain_s:
            passed.append(hit)
    return SustainState(tuple(sorted(since.items()))), tuple(passed)
