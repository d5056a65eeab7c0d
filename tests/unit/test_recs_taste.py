"""Venue taste profiles and country trending: event time only, order-independent, bounded."""

from __future__ import annotations

import itertools
import pickle
import random
from datetime import UTC, datetime, timedelta

import pytest

from online_store.venue_taste import (
    CountryTrending,
    SongTraits,
    TastePolicy,
    TrendingPolicy,
    daypart_at,
    update_venue_taste,
)
from schemas.events import PlayEvent, VenueRegistration
from simulator.tastes import LATE, PRIME

T0 = datetime(2026, 11, 27, 18, 0, tzinfo=UTC)  # 21:00 in Nairobi: prime time
SONGS = {
    f"s{i}": SongTraits(genre, lang, f"artist{i % 4}")
    for i, (genre, lang) in enumerate([("bongo_flava", "sw"), ("taarab", "sw"), ("gospel", "en")] * 4)
}


def registration(updated: datetime = T0 - timedelta(days=1), jukeboxes=("jb-1", "jb-2"),
                 active: bool = True, country: str = "KE") -> VenueRegistration:
    return VenueRegistration(event_id=f"r-{updated.timestamp()}", venue_id="v1", jukebox_ids=list(jukeboxes),
                             country=country, lat=-1.29, lon=36.82, timezone="Africa/Nairobi",
                             opening_hours=[], updated_at=updated, active=active)


def play(n: int, song: str, at: datetime) -> PlayEvent:
    return PlayEvent(event_id=f"p{n}", jukebox_id="jb-1", venue_id="v1", song_id=song, played_at=at,
                     credits_used=1)


def run(items, policy=TastePolicy()):
    state, snapshots = None, []
    for item in items:
        state, out = update_venue_taste(state, item, SONGS, policy)
        snapshots += out
    return state, snapshots


def plays_every(minutes: int, count: int, start: datetime = T0, songs=("s0", "s1", "s2")):
    return [play(i, songs[i % len(songs)], start + timedelta(minutes=minutes * i)) for i in range(count)]


def test_snapshots_at_most_once_per_interval_of_event_time():
    plays = plays_every(minutes=2, count=60)  # two hours, a play every 2 minutes
    _, snapshots = run([registration(), *plays], TastePolicy(interval_s=600))
    times = [s.as_of_s for s in snapshots]
    assert len(times) == 12 and all(b - a >= 600 for a, b in itertools.pairwise(times))
    # Every play reaches trending exactly once, through the snapshot that follows it.
    carried = [p for s in snapshots for p in s.new_plays]
    assert len(carried) == len(set(carried)) and len(carried) <= len(plays)
    assert carried == sorted(carried)


def test_taste_depends_on_the_set_of_plays_not_their_order_and_duplicates_count_once():
    plays = plays_every(minutes=7, count=40)
    shuffled = plays[:]
    random.Random(3).shuffle(shuffled)
    a, _ = run([registration(), *plays])
    b, _ = run([registration(), *shuffled, *plays[:5]])  # out of order, plus resends
    for field in ("genres_now", "languages"):
        wa, wb = getattr(a, field).at(a.clock_s), getattr(b, field).at(b.clock_s)
        assert wa.keys() == wb.keys()
        assert all(wa[k] == pytest.approx(wb[k], rel=1e-9) for k in wa)
    assert a.recent == b.recent and a.clock_s == b.clock_s


def test_decay_follows_the_half_life_and_habit_is_per_daypart():
    policy = TastePolicy(now_half_life_s=3600)
    state, _ = run([registration(), play(1, "s1", T0), play(2, "s0", T0 + timedelta(hours=2))], policy)
    now = state.genres_now.at(state.clock_s)
    assert now["taarab"] == pytest.approx(0.25) and now["bongo_flava"] == pytest.approx(1.0)
    assert daypart_at(int(T0.timestamp()), "Africa/Nairobi") == PRIME
    assert daypart_at(int((T0 + timedelta(hours=2)).timestamp()), "Africa/Nairobi") == LATE
    assert set(state.genres_habit[PRIME].raw) == {"taarab"} and set(state.genres_habit[LATE].raw) == {"bongo_flava"}


def test_no_snapshot_before_registration_and_memory_stays_bounded():
    policy = TastePolicy(memory_s=3600, max_recent=50)
    plays = plays_every(minutes=1, count=400)
    state, snapshots = run(plays, policy)
    assert snapshots == [] and not state.servable
    assert len(state.recent) <= 50 and len(state.pending) <= 50
    assert state.recent[0][0] > state.clock_s - 3600
    state, out = update_venue_taste(state, registration(), SONGS, policy)
    assert out == []  # a registration is not a play: the next play is scored
    state, out = update_venue_taste(state, play(999, "s2", T0 + timedelta(hours=8)), SONGS, policy)
    assert len(out) == 1 and out[0].jukebox_ids == ("jb-1", "jb-2")


def test_the_latest_registration_wins_and_deregistration_stops_snapshots():
    newer, older = registration(T0 - timedelta(hours=1), ("jb-9",)), registration(T0 - timedelta(days=3))
    state, _ = run([newer, older])
    assert state.jukebox_ids == ("jb-9",)
    state, out = run([registration(), registration(T0, active=False), *plays_every(5, 10)])
    assert out == [] and state.jukebox_ids == ()


def test_snapshot_lists_recently_played_songs_with_their_last_time():
    plays = [play(1, "s0", T0), play(2, "s1", T0 + timedelta(minutes=5)), play(3, "s0", T0 + timedelta(minutes=20))]
    _, snapshots = run([registration(), *plays], TastePolicy(interval_s=900))
    last = snapshots[-1]
    assert dict(last.played) == {"s0": int(plays[2].played_at.timestamp()), "s1": int(plays[1].played_at.timestamp())}
    assert last.artists["artist0"] > last.artists["artist1"]  # s0 twice, by artist0


def test_state_pickles_small_for_epoch_snapshots():
    state, _ = run([registration(), *plays_every(1, 300)])
    raw = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    assert pickle.loads(raw).recent == state.recent
    assert len(raw) < 16_000


def test_trending_counts_a_sliding_window_whatever_the_order():
    policy = TrendingPolicy(window_s=3600, buckets=12)
    plays = [(1_000_000 + 37 * i, f"s{i % 5}") for i in range(400)]
    forward, backward = CountryTrending(policy), CountryTrending(policy)
    for chunk in range(0, 400, 40):
        forward.add(plays[chunk:chunk + 40])
    backward.add(list(reversed(plays)))
    assert forward.totals == backward.totals
    head_start = (plays[-1][0] // policy.bucket_s - policy.buckets + 1) * policy.bucket_s
    expected = sum(1 for t, _ in plays if t >= head_start)
    assert forward.total == expected and sum(forward.shares().values()) == pytest.approx(1.0)
    forward.advance(plays[-1][0] + 7200)
    assert forward.totals == {} and forward.shares() == {}
