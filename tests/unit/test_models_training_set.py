"""Point-in-time training rows from a hand-written labelled history, through the real
decode, admission and feature functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from models.training import AMBIGUOUS
from models.training_set import HistoryStats, labelled_training_set
from schemas.events import PaymentEvent, PlayEvent, VenueRegistration
from simulator.fraud import FraudLabel
from simulator.records import SimRecord

T0 = datetime(2026, 11, 27, 18, 0, tzinfo=UTC)
ALWAYS_OPEN = [{"weekday": d, "opens": "00:00", "closes": "23:59"} for d in range(7)]


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def venue() -> SimRecord:
    reg = VenueRegistration(
        event_id="v-1-r1",
        venue_id="v-1",
        jukebox_ids=["jb-1", "jb-2"],
        country="KE",
        lat=-1.29,
        lon=36.82,
        timezone="Africa/Nairobi",
        opening_hours=ALWAYS_OPEN,
        updated_at=T0 - timedelta(days=30),
    )
    return SimRecord("venues", b"v-1", reg.model_dump_json().encode(), ms(T0 - timedelta(days=1)))


def play(
    event_id: str, jukebox: str, minutes: float, song: str = "s-1", arrival_delay_s: float = 1
):
    event = PlayEvent(
        event_id=event_id,
        jukebox_id=jukebox,
        venue_id="v-1",
        song_id=song,
        played_at=at(minutes),
        credits_used=1,
        payment_id="pay-x",
    )
    return SimRecord(
        "plays",
        jukebox.encode(),
        event.model_dump_json().encode(),
        ms(at(minutes)) + int(arrival_delay_s * 1000),
    )


def payment(event_id: str, jukebox: str, customer: str, minutes: float, status: str = "failed"):
    event = PaymentEvent(
        event_id=event_id,
        payment_id=f"pay-{event_id}",
        jukebox_id=jukebox,
        venue_id="v-1",
        customer_id=customer,
        amount="20.00",
        currency="KES",
        method="card",
        status=status,
        occurred_at=at(minutes),
    )
    return SimRecord(
        "payments", jukebox.encode(), event.model_dump_json().encode(), ms(at(minutes)) + 500
    )


def label(scenario: str, jukebox: str, customer: str | None, start: float, end: float) -> SimRecord:
    value = FraudLabel(scenario, jukebox, customer, "v-1", at(start), at(end), f"ep-{scenario}")
    return SimRecord("labels", jukebox.encode(), value.json_bytes(), ms(at(end)))


@pytest.fixture(scope="module")
def built():
    records = [
        venue(),
        play("p-1", "jb-1", 0),
        play("p-2", "jb-1", 30),
        payment("y-1", "jb-2", "c-9", 11),
        play("p-3", "jb-2", 12),  # someone else's song on a jukebox the tester is abusing
        payment("y-2", "jb-2", "c-9", 12.5),
        payment("y-3", "jb-2", "c-9", 20),  # after the episode: the account's windows still hold it
        play("p-4", "jb-1", 61, song="s-loop"),
        play("p-4", "jb-1", 61, song="s-loop"),  # a resend: no second row
        play("p-5", "jb-1", 70, song="s-loop"),
        SimRecord("plays", b"jb-1", b'{"event_id": "broken', ms(at(71))),
        play(
            "p-6", "jb-1", 72, song="s-loop", arrival_delay_s=13 * 3600
        ),  # beyond allowed lateness
        play("p-7", "jb-1", 100),
        payment("y-4", "jb-2", "c-5", 400, status="succeeded"),
        play("p-8", "jb-1", 401),
        label("payment_testing", "jb-2", "c-9", 10, 15),
        label("song_looping", "jb-1", None, 60, 90),
    ]
    stats = HistoryStats()
    return labelled_training_set(records, stats=stats), stats


def by_time(data, jukebox: str, minutes: float) -> int:
    matches = [
        i
        for i, (j, t) in enumerate(zip(data.jukebox_ids, data.event_times_ms))
        if j == jukebox and t == ms(at(minutes))
    ]
    assert len(matches) == 1, (jukebox, minutes, matches)
    return matches[0]


def test_counts_and_defects(built):
    data, stats = built
    assert (stats.decode_errors, stats.not_admitted, stats.labels) == (1, 1, 2)
    assert len(data) == stats.rows == 11  # 12 events admitted once each, minus the resend
    assert stats.excluded_tail == int(np.sum(data.labels == AMBIGUOUS))
    assert [lab.scenario for lab in stats.fraud_labels] == ["payment_testing", "song_looping"]


def test_rows_see_only_the_past(built):
    data, _ = built
    first = data.rows[by_time(data, "jb-1", 0)]
    assert first["device_plays_1h"] == 1 and first["device_top_song_share_1h"] == 1.0
    looping = data.rows[by_time(data, "jb-1", 70)]
    # minute 0 has left the hour: plays at 30, 61 and 70, two of them the looped song
    assert looping["device_plays_1h"] == 3 and looping["device_top_song_share_1h"] == 2 / 3


def test_payment_rows_carry_the_customer_row_of_that_payment(built):
    data, _ = built
    second_try = data.rows[by_time(data, "jb-2", 12.5)]
    assert second_try["customer_failed_payments_10m"] == 2
    assert second_try["customer_distinct_devices_10m"] == 1
    assert "customer_payments_10m" not in data.rows[by_time(data, "jb-2", 12)]  # a play


@pytest.mark.parametrize(
    ("jukebox", "minutes", "label", "scenario"),
    [
        ("jb-1", 0, 0, None),
        ("jb-1", 61, 1, "song_looping"),
        ("jb-1", 70, 1, "song_looping"),
        ("jb-1", 100, AMBIGUOUS, None),  # the looping hour still fills the windows
        ("jb-1", 401, 0, None),
        ("jb-2", 11, 1, "payment_testing"),
        ("jb-2", 12.5, 1, "payment_testing"),
        ("jb-2", 12, AMBIGUOUS, None),  # another customer's play during the episode
        ("jb-2", 20, AMBIGUOUS, None),  # the tester's payment after the episode
        ("jb-2", 400, 0, None),
    ],
)
def test_labels_follow_episodes_by_jukebox_or_customer(built, jukebox, minutes, label, scenario):
    data, _ = built
    i = by_time(data, jukebox, minutes)
    assert (int(data.labels[i]), data.scenarios[i]) == (label, scenario)


def test_usable_rows_drop_the_ambiguous(built):
    data, _ = built
    usable = data.usable()
    assert len(usable) == len(data) - 3 and set(usable.labels.tolist()) == {0, 1}


def test_no_tail_makes_post_episode_rows_clean(built):
    records = [
        venue(),
        play("p-1", "jb-1", 61),
        play("p-2", "jb-1", 100),
        label("song_looping", "jb-1", None, 60, 90),
    ]
    data = labelled_training_set(records, tail_s=0)
    assert data.labels.tolist() == [1, 0]
