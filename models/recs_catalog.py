"""The song catalog as the recommender uses it: songs indexed, licensing as a mask.

Songs come from the simulator's `SongCatalog`, a JSON Lines file (one `Song` JSON
per line, the song-catalog topic's value format), or the compacted song-catalog
topic (read in `dataflows/recs_catalog_topic.py`, folded here by `songs_from_topic`:
the last value per key wins, a tombstone deletes). A bad line or record is a clear
error naming where it is, never a silently smaller catalog.

>>> from simulator.catalog import SongCatalog
>>> catalog = RecsCatalog(SongCatalog(songs=300, artists=60, seed=7).songs)
>>> len(catalog), catalog.index["s-000042"]
(300, 42)
>>> bool(catalog.licensed_in("KE")[42]) == ("KE" in catalog.songs[42].licensed_countries)
True
>>> catalog.traits["s-000042"].genre == catalog.songs[42].genre
True
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import orjson

from online_store.venue_taste import SongTraits
from schemas.countries import COUNTRIES
from simulator.catalog import Song


class CatalogError(ValueError):
    """A catalog line or record that is not a valid song."""


class RecsCatalog:
    """Songs in a fixed order, with the lookups ranking and taste profiles need."""

    def __init__(self, songs: Sequence[Song]) -> None:
        if not songs:
            raise CatalogError("the song catalog is empty")
        self.songs: tuple[Song, ...] = tuple(songs)
        self.song_ids: tuple[str, ...] = tuple(s.song_id for s in self.songs)
        self.index: dict[str, int] = {song_id: i for i, song_id in enumerate(self.song_ids)}
        if len(self.index) != len(self.songs):
            raise CatalogError("the song catalog repeats a song_id")
        self.traits: dict[str, SongTraits] = {
            s.song_id: SongTraits(s.genre, s.language, s.artist) for s in self.songs
        }
        self.artists: tuple[str, ...] = tuple(sorted({s.artist for s in self.songs}))
        artist_code = {a: i for i, a in enumerate(self.artists)}
        self.artist_codes = np.array([artist_code[s.artist] for s in self.songs], dtype=np.int64)
        self._licensed = {
            country: np.array([country in s.licensed_countries for s in self.songs], dtype=bool)
            for country in COUNTRIES
        }

    def __len__(self) -> int:
        return len(self.songs)

    def licensed_in(self, country: str) -> np.ndarray:
        """Boolean mask over songs: licensed to play in `country`."""
        try:
            return self._licensed[country]
        except KeyError:
            raise KeyError(f"unknown country {country!r}") from None


def song_from_json(raw: bytes, where: str) -> Song:
    """One catalog value (the song-catalog topic's format), or a CatalogError saying where."""
    try:
        song = Song.from_json(raw)
    except (orjson.JSONDecodeError, TypeError, KeyError, ValueError, AttributeError) as exc:
        raise CatalogError(f"{where}: not a valid song ({type(exc).__name__}: {exc})") from None
    unknown = [c for c in song.licensed_countries if c not in COUNTRIES]
    if unknown or not song.song_id or not song.artist or not song.genre:
        raise CatalogError(f"{where}: song {song.song_id!r} has unknown countries {unknown} "
                           "or an empty id, artist or genre")
    return song


def read_catalog_jsonl(path: Path) -> list[Song]:
    """Songs from a JSON Lines file; blank lines are skipped, a later line wins per song_id."""
    if not path.is_file():
        raise CatalogError(f"{path}: no such catalog file")
    songs: dict[str, Song] = {}
    with path.open("rb") as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                song = song_from_json(line, f"{path}:{number}")
                songs[song.song_id] = song
    if not songs:
        raise CatalogError(f"{path}: no songs")
    return list(songs.values())


def write_catalog_jsonl(path: Path, songs: Iterable[Song]) -> int:
    """Write songs as JSON Lines (what `read_catalog_jsonl` reads); returns the count."""
    count = 0
    with path.open("wb") as out:
        for song in songs:
            out.write(song.json_bytes() + b"\n")
            count += 1
    return count


def songs_from_topic(records: Iterable[tuple[bytes | None, bytes | None, str]]) -> list[Song]:
    """Fold compacted-topic records (key, value, where) in offset order: last value wins,
    a `None` value (tombstone) removes the song.

    >>> s = Song("s-1", "T", "A", "rai", "ar", "MA", 100, 200, __import__("datetime").date(2020, 1, 1), ("MA",))
    >>> [x.song_id for x in songs_from_topic([(b"s-1", s.json_bytes(), "p0@0")])]
    ['s-1']
    >>> songs_from_topic([(b"s-1", s.json_bytes(), "p0@0"), (b"s-1", None, "p0@1")])
    []
    """
    songs: dict[str, Song] = {}
    for key, value, where in records:
        if value is None:
            if key is not None:
                songs.pop(key.decode(errors="replace"), None)
            continue
        song = song_from_json(value, where)
        if key is not None and key.decode(errors="replace") != song.song_id:
            raise CatalogError(f"{where}: key {key!r} differs from song_id {song.song_id!r}")
        songs[song.song_id] = song
    return sorted(songs.values(), key=lambda s: s.song_id)
