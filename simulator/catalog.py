"""The song catalog: songs, artists and genres, deterministic from a seed.

`Song` is the catalog contract for now (the song-catalog topic carries it as
JSON, keyed by song_id). `SongCatalog` builds the songs and the indexes the
simulator samples plays from: per (country, genre), the songs licensed there
with Zipf-like popularity weights, local artists boosted.

>>> catalog = SongCatalog(songs=300, artists=60, seed=7)
>>> len(catalog.songs), catalog.songs[0].song_id
(300, 's-000000')
>>> catalog.songs == SongCatalog(songs=300, artists=60, seed=7).songs
True
>>> song = catalog.songs[42]
>>> Song.from_json(song.json_bytes()) == song
True
>>> all(s.origin_country in s.licensed_countries for s in catalog.songs)
True
"""

from __future__ import annotations

import bisect
import itertools
import random
from dataclasses import dataclass
from datetime import date, timedelta

import orjson

from schemas.countries import COUNTRIES


@dataclass(frozen=True, slots=True)
class Genre:
    name: str
    languages: tuple[str, ...]  # ISO 639 codes (pcm = Nigerian Pidgin)
    origins: tuple[str, ...]  # countries its artists come from; () = anywhere
    tempo_bpm: tuple[int, int]
    energy: float  # 0..1: how much it gains late at night
    oldest_year: int = 1995


GENRES: tuple[Genre, ...] = (
    Genre("afrobeats", ("en", "yo", "pcm", "ig"), ("NG", "GH"), (95, 115), 0.7, 2005),
    Genre("amapiano", ("zu", "en", "st"), ("ZA",), (108, 116), 0.8, 2014),
    Genre("gqom", ("zu", "xh"), ("ZA",), (120, 130), 0.9, 2011),
    Genre("bongo_flava", ("sw",), ("TZ", "KE"), (90, 110), 0.6, 1998),
    Genre("taarab", ("sw", "ar"), ("TZ", "KE"), (70, 100), 0.2, 1965),
    Genre("highlife", ("tw", "en", "ig"), ("GH", "NG"), (100, 125), 0.5, 1965),
    Genre("mbalax", ("wo", "fr"), ("SN",), (110, 140), 0.7, 1978),
    Genre("rai", ("ar", "fr"), ("MA",), (90, 120), 0.6, 1985),
    Genre("chaabi", ("ar",), ("MA", "EG"), (100, 130), 0.5, 1970),
    Genre("mahraganat", ("ar",), ("EG",), (120, 140), 0.85, 2010),
    Genre("ethio_jazz", ("am",), ("ET",), (80, 110), 0.3, 1968),
    Genre("gospel", ("en", "sw", "yo", "am", "zu", "tw"), (), (70, 110), 0.3, 1990),
    Genre("hip_hop", ("en", "fr", "sw", "ar", "zu"), (), (85, 100), 0.7, 1995),
    Genre("rnb", ("en", "fr"), (), (65, 95), 0.4, 1995),
)
GENRE_NAMES: tuple[str, ...] = tuple(g.name for g in GENRES)
GENRE_INDEX: dict[str, int] = {name: i for i, name in enumerate(GENRE_NAMES)}

LATEST_RELEASE = date(2025, 12, 31)  # fixed, so the catalog never depends on the clock
ZIPF_EXPONENT = 1.0
LOCAL_ARTIST_BOOST = 3.0  # a venue's country over-plays its own artists
COUNTRY_CODES: tuple[str, ...] = tuple(COUNTRIES)

_WORDS = (
    "love", "night", "dance", "money", "fire", "sweet", "baby", "mama", "city", "gold",
    "rain", "sun", "heart", "road", "dream", "shine", "bounce", "zaddy", "sawa", "pole",
    "nakupenda", "jollof", "ayo", "ife", "omo", "sisi", "oluwa", "jiji", "yako", "maisha",
    "habibi", "ya", "leila", "qalbi", "amour", "ndank", "jamm", "yene", "fikir", "tizita",
    "ubuntu", "sgubhu", "jozi", "vibe", "wahala", "enjoyment", "party", "kiss", "ocean", "again",
)
_SYLLABLES = (
    "ba", "da", "ke", "la", "mi", "na", "ko", "ya", "ze", "bu", "sa", "ti", "wa", "lo", "fe",
    "ju", "ra", "mo", "ni", "dy", "ou", "el", "am", "ad", "ha",
)


@dataclass(frozen=True, slots=True)
class Song:
    song_id: str
    title: str
    artist: str
    genre: str
    language: str
    origin_country: str
    tempo_bpm: int
    duration_s: int
    release_date: date
    licensed_countries: tuple[str, ...]

    def json_bytes(self) -> bytes:
        """The record value on the song-catalog topic."""
        return orjson.dumps({
            "schema_version": 1,
            "song_id": self.song_id,
            "title": self.title,
            "artist": self.artist,
            "genre": self.genre,
            "language": self.language,
            "origin_country": self.origin_country,
            "tempo_bpm": self.tempo_bpm,
            "duration_s": self.duration_s,
            "release_date": self.release_date.isoformat(),
            "licensed_countries": list(self.licensed_countries),
        })

    @classmethod
    def from_json(cls, raw: bytes) -> Song:
        value = orjson.loads(raw)
        value.pop("schema_version", None)
        value["release_date"] = date.fromisoformat(value["release_date"])
        value["licensed_countries"] = tuple(value["licensed_countries"])
        return cls(**value)


def _artist_name(rng: random.Random) -> str:
    first = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
    if rng.random() < 0.4:
        return first  # a mononym
    return f"{first} {''.join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()}"


def _title(rng: random.Random) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 3))).title()


class SongCatalog:
    """`songs` songs by `artists` artists across GENRES, with sampling indexes.

    Popularity is Zipf-like within a genre (rank r has weight 1/r), drawn from the
    seed; songs by artists of the venue's country get LOCAL_ARTIST_BOOST.
    """

    def __init__(self, songs: int = 2000, artists: int = 300, seed: int = 0) -> None:
        if songs < len(GENRES) or artists < len(GENRES):
            raise ValueError(f"need at least {len(GENRES)} songs and artists (one per genre)")
        self.seed = seed
        rng = random.Random(f"{seed}:catalog")
        # Every genre gets at least one artist; the rest follow a rough market share.
        shares = [3, 3, 1, 3, 1, 2, 1, 2, 2, 1, 1, 2, 3, 2]
        artist_genres = list(range(len(GENRES))) + rng.choices(
            range(len(GENRES)), weights=shares, k=artists - len(GENRES)
        )
        roster = []
        names: set[str] = set()
        for genre_index in artist_genres:
            genre = GENRES[genre_index]
            origin = rng.choice(genre.origins or COUNTRY_CODES)
            name = _artist_name(rng)
            while name in names:
                name = _artist_name(rng)
            names.add(name)
            roster.append((name, genre_index, origin, min(20.0, rng.paretovariate(1.2))))
        # Prolific artists release more songs; every artist has at least one.
        counts = [1] * artists
        productivity = [a[3] for a in roster]
        for extra in rng.choices(range(artists), weights=productivity, k=songs - artists):
            counts[extra] += 1
        song_list: list[Song] = []
        for artist_index, (name, genre_index, origin, _) in enumerate(roster):
            genre = GENRES[genre_index]
            for _ in range(counts[artist_index]):
                song_list.append(self._song(rng, len(song_list), name, genre, origin))
        self.songs: tuple[Song, ...] = tuple(song_list)
        # Popularity rank inside each genre, from the seed.
        order = list(range(len(self.songs)))
        rng.shuffle(order)
        self._popularity = [0.0] * len(self.songs)
        rank_in_genre = [0] * len(GENRES)
        for i in order:
            g = GENRE_INDEX[self.songs[i].genre]
            rank_in_genre[g] += 1
            self._popularity[i] = 1.0 / rank_in_genre[g] ** ZIPF_EXPONENT
        self._index = self._sampling_index()

    @staticmethod
    def _song(rng: random.Random, n: int, artist: str, genre: Genre, origin: str) -> Song:
        year_span = (LATEST_RELEASE - date(genre.oldest_year, 1, 1)).days
        # Recent releases dominate a jukebox catalog: skew toward the end of the span.
        released = LATEST_RELEASE - timedelta(days=int(year_span * rng.random() ** 2.5))
        if rng.random() < 0.75:
            licensed = COUNTRY_CODES
        else:
            others = rng.sample([c for c in COUNTRY_CODES if c != origin], rng.randint(1, 5))
            licensed = tuple(c for c in COUNTRY_CODES if c == origin or c in others)
        return Song(
            song_id=f"s-{n:06d}",
            title=_title(rng),
            artist=artist,
            genre=genre.name,
            language=rng.choice(genre.languages),
            origin_country=origin,
            tempo_bpm=rng.randint(*genre.tempo_bpm),
            duration_s=int(min(420, max(140, rng.gauss(225, 40)))),
            release_date=released,
            licensed_countries=licensed,
        )

    def _sampling_index(self) -> dict[tuple[str, int], tuple[list[int], list[float]]]:
        """(country, genre index) -> (song indexes, cumulative weights)."""
        by_genre: list[list[int]] = [[] for _ in GENRES]
        for i, song in enumerate(self.songs):
            by_genre[GENRE_INDEX[song.genre]].append(i)
        index: dict[tuple[str, int], tuple[list[int], list[float]]] = {}
        for country in COUNTRY_CODES:
            for g in range(len(GENRES)):
                ids = [i for i in by_genre[g] if country in self.songs[i].licensed_countries]
                weights = [
                    self._popularity[i] * (LOCAL_ARTIST_BOOST if self.songs[i].origin_country == country else 1.0)
                    for i in ids
                ]
                index[(country, g)] = (ids, list(itertools.accumulate(weights)))
        return index

    def licensed_genres(self, country: str) -> list[bool]:
        """Per genre index: does `country` have at least one licensed song of it?"""
        return [bool(self._index[(country, g)][0]) for g in range(len(GENRES))]

    def song_index(self, country: str, genre_index: int, u: float) -> int:
        """The song played for a uniform draw `u` in [0, 1): popularity-weighted.

        >>> catalog = SongCatalog(songs=300, artists=60, seed=7)
        >>> catalog.songs[catalog.song_index("KE", GENRE_INDEX["bongo_flava"], 0.0)].genre
        'bongo_flava'
        """
        ids, cumulative = self._index[(country, genre_index)]
        return ids[min(bisect.bisect_right(cumulative, u * cumulative[-1]), len(ids) - 1)]
