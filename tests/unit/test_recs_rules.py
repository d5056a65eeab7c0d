"""Business rules on every ranked list, and when a jukebox is sent a new one."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from models.recs_catalog import RecsCatalog
from models.recs_rules import (
    DeliveryState,
    RankedList,
    RecsPolicy,
    SongRanker,
    changed_materially,
    deliveries,
)
from simulator.catalog import Song, SongCatalog

CATALOG = RecsCatalog(SongCatalog(songs=400, artists=50, seed=11).songs)


@pytest.mark.parametrize("country", ["KE", "MA", "SN", "ET"])
def test_every_list_obeys_licensing_exclusion_and_diversity(country):
    policy = RecsPolicy(top_n=10, max_per_artist=2, exclude_played_s=3 * 3600)
    ranker = SongRanker(CATALOG.song_ids, CATALOG, policy)
    rng = np.random.default_rng(1)
    rows = rng.random((200, len(CATALOG)))
    rows[:, :40] += 5.0  # the model loves a few songs, some by the same artists
    now = 100_000
    played = [[(CATALOG.song_ids[j], now - int(rng.integers(0, 5 * 3600))) for j in rng.choice(60, 8)]
              for _ in rows]
    lists = ranker.rank_batch(rows, [country] * len(rows), played, [now] * len(rows))
    licensed = CATALOG.licensed_in(country)
    for ranked, recent, row in zip(lists, played, rows, strict=True):
        songs = [song for song, _ in ranked]
        assert len(songs) == 10 == len(set(songs))
        assert all(licensed[CATALOG.index[s]] for s in songs)
        excluded = {s for s, t in recent if now - t < policy.exclude_played_s}
        assert not excluded & set(songs)
        assert max(Counter(CATALOG.traits[s].artist for s in songs).values()) <= 2
        scores = [score for _, score in ranked]
        assert scores == sorted(scores, reverse=True)
        assert scores == [row[CATALOG.index[s]] for s in songs]
        # Nothing allowed was skipped except for diversity: the best allowed song leads.
        allowed = licensed.copy()
        allowed[[CATALOG.index[s] for s in excluded]] = False
        assert ranked[0][1] == row[allowed].max()


def test_too_few_artists_at_the_top_falls_back_to_the_rest_of_the_catalog():
    policy = RecsPolicy(top_n=10, max_per_artist=1)
    ranker = SongRanker(CATALOG.song_ids, CATALOG, policy)
    row = np.zeros(len(CATALOG))
    first_artist = CATALOG.traits[CATALOG.song_ids[0]].artist
    by_one = [j for j, s in enumerate(CATALOG.song_ids) if CATALOG.traits[s].artist == first_artist]
    row[by_one] = 10.0  # every top candidate is by one artist
    songs = [s for s, _ in ranker.rank(row, "KE", [], 0)]
    assert len(songs) == 10 and len({CATALOG.traits[s].artist for s in songs}) == 10


def test_ties_are_broken_by_column_order_and_unknown_songs_are_never_ranked():
    dropped = CATALOG.song_ids[:5]
    live = RecsCatalog([s for s in CATALOG.songs if s.song_id not in dropped])
    ranker = SongRanker(CATALOG.song_ids, live, RecsPolicy(top_n=5, max_per_artist=5))
    songs = [s for s, _ in ranker.rank(np.ones(len(CATALOG)), "KE", [], 0)]
    expected = [s for s in CATALOG.song_ids if s not in dropped and "KE" in live.songs[live.index[s]].licensed_countries]
    assert songs == expected[:5]


def test_a_country_with_nothing_licensed_gets_an_empty_list():
    only_ma = [Song(s.song_id, s.title, s.artist, s.genre, s.language, "MA", s.tempo_bpm, s.duration_s,
                    s.release_date, ("MA",)) for s in CATALOG.songs[:30]]
    ranker = SongRanker([s.song_id for s in only_ma], RecsCatalog(only_ma), RecsPolicy())
    assert ranker.rank(np.ones(30), "KE", [], 0) == []
    assert len(ranker.rank(np.ones(30), "MA", [], 0)) == 10


def _ranked(at: int, songs: str, jukeboxes=("jb-1", "jb-2")) -> RankedList:
    return RankedList("v1", jukeboxes, at, tuple((s, 1.0) for s in songs), "7")


def test_deliveries_respect_the_interval_and_material_change_per_jukebox():
    policy = RecsPolicy(interval_s=600, min_changed_share=0.3)
    state, send, suppressed = deliveries(None, _ranked(1000, "abcdefghij"), policy)
    assert send == ["jb-1", "jb-2"] and suppressed == 0
    # Changed materially, but too soon; then due, but only two of ten songs are new.
    assert deliveries(state, _ranked(1500, "klmnopqrst"), policy)[1:] == ([], 2)
    assert deliveries(state, _ranked(1600, "abcdefghkl"), policy)[1:] == ([], 2)
    state, send, _ = deliveries(state, _ranked(1600, "abcdefgklm"), policy)
    assert send == ["jb-1", "jb-2"]
    # A replayed, older list is ignored; a new jukebox gets the list at once; a removed one is forgotten.
    assert deliveries(state, _ranked(1000, "zyxwvutsrq"), policy)[1:] == ([], 0)
    state, send, suppressed = deliveries(state, _ranked(1700, "abcdefgklm", ("jb-2", "jb-3")), policy)
    assert send == ["jb-3"] and suppressed == 1 and set(state.jukeboxes) == {"jb-2", "jb-3"}


def test_material_change_is_about_new_songs_not_order():
    assert changed_materially([], ["a"], 0.5)
    assert not changed_materially(["a", "b"], [], 0.5)
    assert not changed_materially(list("abcdefghij"), list("jihgfedcba"), 0.1)
    assert changed_materially(list("abcdefghij"), list("abcdefgxyz"), 0.3)
    assert not changed_materially(list("abcdefghij"), list("abcdefghxy"), 0.3)


def test_policy_refuses_settings_the_contract_cannot_carry():
    with pytest.raises(ValueError):
        RecsPolicy(top_n=51)
    with pytest.raises(ValueError):
        RecsPolicy(min_changed_share=0.0)
    assert DeliveryState().jukeboxes == {}
