"""Fraud steps inside the flow factory: rule alerts, deterministic ids, cooldown, no duplicates."""

from __future__ import annotations

from datetime import timedelta

import orjson

from dataflows.flow import FlowConfig
from dataflows.fraud_steps import FraudConfig
from schemas.events import PaymentEvent, PlayEvent
from schemas.topics import Topics
from tests.dataflow.flow_harness import raw_records, run_flow
from tests.sample_events import T0, venues_for

TOPICS = Topics()
OPEN = T0 + timedelta(hours=3)  # 18:00 in Nairobi: the sample venue is open 17:00-01:30


def _looping(jukebox: str, plays: int, start=OPEN) -> list[PlayEvent]:
    return [PlayEvent(event_id=f"{jukebox}-{i}", jukebox_id=jukebox, venue_id="v0", song_id="s-same",
                      played_at=start + timedelta(minutes=3 * i), credits_used=1, payment_id=f"pay-{i}")
            for i in range(plays)]


def _paid_for(plays: list[PlayEvent]) -> list[PaymentEvent]:
    """The succeeded payments the plays name, each a minute before its first play."""
    first = {}
    for play in plays:
        first.setdefault(play.payment_id, play)
    return [PaymentEvent(event_id=f"m-{play.event_id}", payment_id=payment_id, jukebox_id=play.jukebox_id,
                         venue_id=play.venue_id, customer_id="c-regular", amount="20", currency="KES",
                         method="mobile_money", status="succeeded",
                         occurred_at=play.played_at - timedelta(minutes=1))
            for payment_id, play in first.items() if payment_id is not None]


def _config() -> FlowConfig:
    fraud = FraudConfig(scorer=lambda _now: None, emitted_at=lambda t: t, now=lambda: T0, anomaly=None)
    return FlowConfig(topics=TOPICS, fraud=fraud)


def _alerts(run) -> list[dict]:
    return [orjson.loads(m.value) for m in run.messages if m.topic == TOPICS.fraud_alerts]


def test_a_looping_jukebox_raises_one_alert_per_cooldown_window_and_a_normal_one_none():
    normal = [PlayEvent(event_id=f"n-{i}", jukebox_id="jb-1", venue_id="v0", song_id=f"s{i % 9}",
                        played_at=OPEN + timedelta(minutes=3 * i), credits_used=1, payment_id=f"p{i}")
              for i in range(30)]
    looping = _looping("jb-0", 60)
    records = raw_records(venues_for(2, per_venue=2), TOPICS) + raw_records(
        _paid_for(looping + normal) + looping + normal, TOPICS)
    alerts = _alerts(run_flow(records, _config()))
    assert {a["jukebox_id"] for a in alerts} == {"jb-0"}
    assert all("song_looping" in a["reasons"] for a in alerts)
    # 60 plays over 3 hours: at most one alert per one-hour cooldown window, never repeated
    assert len(alerts) == len({a["alert_id"] for a in alerts}) <= 4
    assert all(a["features"]["device_top_song_share_1h"] >= 0.6 for a in alerts)


def test_replaying_the_same_records_gives_byte_identical_alerts():
    records = raw_records(venues_for(2, per_venue=2), TOPICS) + raw_records(_looping("jb-0", 60), TOPICS)
    first = [m.value for m in run_flow(records, _config()).messages]
    second = [m.value for m in run_flow(records, _config(), batch_size=7).messages]
    assert first and first == second
