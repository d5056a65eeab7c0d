"""The catalog, the fleet, tastes and opening hours: the simulator's reference data."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime

from schemas import OpeningHours
from schemas.countries import COUNTRIES
from simulator.catalog import GENRE_NAMES, GENRES, LATEST_RELEASE, Song, SongCatalog
from simulator.fleet import Fleet
from simulator.tastes import COUNTRY_GENRE_MIX, EARLY, LATE, PRIME, TasteProfiles
from simulator.weekly_hours import SLOTS_PER_WEEK, WeeklyHours, slot_of_week, weekly_hours_templates


def test_default_catalog_size_and_spread():
    catalog = SongCatalog(seed=3)
    songs = catalog.songs
    assert len(songs) == 2000 and len({s.artist for s in songs}) == 300
    assert len({s.song_id for s in songs}) == 2000
    assert {s.genre for s in songs} == set(GENRE_NAMES) and len(GENRE_NAMES) >= 12
    assert {s.origin_country for s in songs} == set(COUNTRIES)
    for song in songs:
        genre = GENRES[GENRE_NAMES.index(song.genre)]
        assert song.language in genre.languages
        assert genre.tempo_bpm[0] <= song.tempo_bpm <= genre.tempo_bpm[1]
        assert date(genre.oldest_year, 1, 1) <= song.release_date <= LATEST_RELEASE
        assert song.origin_country in song.licensed_countries and set(song.licensed_countries) <= set(COUNTRIES)
        assert 140 <= song.duration_s <= 420
    artists_genres = Counter((s.artist, s.genre) for s in songs)
    assert len(artists_genres) == 300  # an artist sticks to one genre


def test_catalog_is_deterministic_and_round_trips():
    first, again, other = SongCatalog(seed=1).songs, SongCatalog(seed=1).songs, SongCatalog(seed=2).songs
    assert first == again and first != other
    assert all(Song.from_json(song.json_bytes()) == song for song in first)


def test_popular_and_local_songs_are_played_more():
    catalog = SongCatalog(seed=5)
    genre = GENRE_NAMES.index("afrobeats")
    draws = Counter(catalog.song_index("NG", genre, i / 10_000) for i in range(10_000))
    ranked = [count for _, count in draws.most_common()]
    assert ranked[0] > 10 * ranked[len(ranked) // 2]  # Zipf-like: a head and a long tail
    for index in draws:
        song = catalog.songs[index]
        assert song.genre == "afrobeats" and "NG" in song.licensed_countries


def test_country_tastes_differ_and_move_with_the_night():
    tastes = TasteProfiles(SongCatalog(seed=2), seed=2)
    for country, mix in COUNTRY_GENRE_MIX.items():
        favourite = max(mix, key=mix.get)
        totals = Counter()
        for profile in range(tastes.per_country):
            weights = tastes.genre_weights(country, profile, PRIME)
            totals.update(dict(zip(GENRE_NAMES, weights)))
        assert favourite in [genre for genre, _ in totals.most_common(2)], country
    early = tastes.genre_weights("ZA", 0, EARLY)
    late = tastes.genre_weights("ZA", 0, LATE)
    gqom, gospel = GENRE_NAMES.index("gqom"), GENRE_NAMES.index("gospel")
    assert late[gqom] / sum(late) > early[gqom] / sum(early)
    assert late[gospel] / sum(late) < early[gospel] / sum(early)


def test_weekly_hours_follow_the_contract_convention():
    friday_late = WeeklyHours(((4, "16:00", "02:00"), (5, "12:00", "12:00")))
    mask = friday_late.open_slots()
    assert len(mask) == SLOTS_PER_WEEK
    assert not mask[4 * 96 + 15 * 4 + 3] and mask[4 * 96 + 16 * 4] and mask[5 * 96 + 7]
    assert sum(mask[5 * 96 + 12 * 4:6 * 96 + 12 * 4]) == 96  # opens == closes: round the clock
    assert all(isinstance(h, OpeningHours) for h in friday_late.contract())
    templates = weekly_hours_templates(seed=4)
    share_closed_monday = sum(0 not in {d for d, _, _ in t.days} for t in templates) / len(templates)
    assert 0.1 < share_closed_monday < 0.6
    for template in templates:
        assert all(OpeningHours(weekday=d, opens=o, closes=c) for d, o, c in template.days)


def test_slot_of_week_uses_the_local_zone():
    moment = datetime(2026, 11, 27, 22, 30, tzinfo=UTC)  # Friday
    assert slot_of_week(moment, "Africa/Dakar") == 4 * 96 + 22 * 4 + 2
    assert slot_of_week(moment, "Africa/Addis_Ababa") == 5 * 96 + 1 * 4 + 2  # Saturday 01:30


def test_fleet_is_deterministic_and_consistent():
    fleet, again = Fleet(5000, seed=2), Fleet(5000, seed=2)
    assert (fleet.jukebox_venue == again.jukebox_venue).all() and (fleet.venue_lat == again.venue_lat).all()
    assert (Fleet(5000, seed=3).venue_lat[:50] != fleet.venue_lat[:50]).any()
    sizes = Counter(int(s) for s in fleet.venue_sizes)
    assert set(sizes) <= {1, 2, 3, 4} and sizes[1] > sizes[2] > sizes[3] > sizes[4]
    assert sum(fleet.venue_sizes) == 5000
    for venue in (0, 17, fleet.venues - 1):
        view = fleet.venue(venue)
        assert [fleet.venue_of(Fleet.jukebox_index(j)) for j in view.jukebox_ids] == [venue] * len(view.jukebox_ids)
        assert Fleet.venue_index(view.venue_id) == venue
    countries = Counter(fleet.country_of(v).code for v in range(fleet.venues))
    assert countries.most_common(1)[0][0] == "NG" and set(countries) == set(COUNTRIES)
    assert sum(len(fleet.venues_in(code)) for code in COUNTRIES) == fleet.venues
