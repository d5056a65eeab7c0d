"""The recommender's input contract: taste snapshots -> the model's four input tensors.

Training, evaluation and serving all build inputs with `input_tensors`, so they
cannot disagree about column order or normalisation. A model's vocabulary (genres,
languages, artists, songs) is fixed when it is trained and travels in its ONNX file;
taste values outside it (a genre added to the catalog later) are ignored.

* `taste` [N, 2G + L + C*D]: decayed genre weights now, the daypart's genre habit,
  language habit, and a one-hot of (country, daypart); its column names are the
  model's `feature_names`.
* `artists` [N, A]: decayed artist weights over the remembered plays.
* `songs` [N, S]: decayed song weights over the remembered plays (collaborative input).
* `trending` [N, S] or [1, S]: the country's trending shares (one row broadcasts).

>>> vocab = RecsVocabulary(genres=("rai", "chaabi"), languages=("ar",), artists=("A", "B"),
...                        song_ids=("s1", "s2", "s3"))
>>> vocab.feature_names[:5]
('genre_now:rai', 'genre_now:chaabi', 'genre_habit:rai', 'genre_habit:chaabi', 'language:ar')
>>> RecsVocabulary.from_names(vocab.feature_names, vocab.artists, vocab.song_ids) == vocab
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from online_store.venue_taste import TasteSnapshot
from simulator.catalog import COUNTRY_CODES
from simulator.tastes import DAYPARTS

DAYPART_NAMES = ("early", "prime", "late")
INPUTS = ("taste", "artists", "songs", "trending")
CONTEXTS: tuple[tuple[str, int], ...] = tuple((c, d) for c in COUNTRY_CODES for d in DAYPARTS)


@dataclass(frozen=True)
class RecsVocabulary:
    genres: tuple[str, ...]
    languages: tuple[str, ...]
    artists: tuple[str, ...]
    song_ids: tuple[str, ...]

    @property
    def feature_names(self) -> tuple[str, ...]:
        return (
            *(f"genre_now:{g}" for g in self.genres),
            *(f"genre_habit:{g}" for g in self.genres),
            *(f"language:{lang}" for lang in self.languages),
            *(f"context:{c}:{DAYPART_NAMES[d]}" for c, d in CONTEXTS),
        )

    @property
    def context_offset(self) -> int:
        return 2 * len(self.genres) + len(self.languages)

    @classmethod
    def from_names(
        cls, feature_names: Sequence[str], artists: Sequence[str], song_ids: Sequence[str]
    ) -> RecsVocabulary:
        """The vocabulary of a model file, from its stored names; refuses a different layout."""
        genres = tuple(n.split(":", 1)[1] for n in feature_names if n.startswith("genre_now:"))
        languages = tuple(n.split(":", 1)[1] for n in feature_names if n.startswith("language:"))
        vocab = cls(genres, languages, tuple(artists), tuple(song_ids))
        if vocab.feature_names != tuple(feature_names):
            raise ValueError("the model's taste columns are not in the recommender's layout")
        return vocab

    def indexes(self) -> tuple[dict[str, int], dict[str, int], dict[str, int], dict[str, int]]:
        return tuple(  # type: ignore[return-value]
            {name: i for i, name in enumerate(names)}
            for names in (self.genres, self.languages, self.artists, self.song_ids)
        )


class InputBuilder:
    """Builds input tensors for one vocabulary (index dictionaries built once)."""

    def __init__(self, vocab: RecsVocabulary) -> None:
        self.vocab = vocab
        self._genre, self._language, self._artist, self._song = vocab.indexes()
        offset = vocab.context_offset
        self._context = {key: offset + i for i, key in enumerate(CONTEXTS)}

    def tensors(
        self, snapshots: Sequence[TasteSnapshot], trending: Sequence[Mapping[str, float]]
    ) -> dict[str, np.ndarray]:
        """The four inputs for `snapshots`; `trending[i]` is row i's country shares
        (one mapping may be given for all rows)."""
        vocab, n = self.vocab, len(snapshots)
        if len(trending) not in (1, n):
            raise ValueError("give one trending mapping, or one per snapshot")
        G = len(vocab.genres)
        taste = np.zeros((n, len(vocab.feature_names)), dtype=np.float32)
        artists = np.zeros((n, len(vocab.artists)), dtype=np.float32)
        songs = np.zeros((n, len(vocab.song_ids)), dtype=np.float32)
        genre, language, artist, song = self._genre, self._language, self._artist, self._song
        for i, snap in enumerate(snapshots):
            row = taste[i]
            for name, w in snap.genres_now.items():
                j = genre.get(name)
                if j is not None:
                    row[j] = w
            for name, w in snap.genres_habit.items():
                j = genre.get(name)
                if j is not None:
                    row[G + j] = w
            for name, w in snap.languages.items():
                j = language.get(name)
                if j is not None:
                    row[2 * G + j] = w
            j = self._context.get((snap.country, snap.daypart))
            if j is not None:
                row[j] = 1.0
            for name, w in snap.artists.items():
                j = artist.get(name)
                if j is not None:
                    artists[i, j] = w
            for name, w in snap.songs.items():
                j = song.get(name)
                if j is not None:
                    songs[i, j] = w
        trend = np.zeros((len(trending), len(vocab.song_ids)), dtype=np.float32)
        for i, shares in enumerate(trending):
            for name, share in shares.items():
                j = song.get(name)
                if j is not None:
                    trend[i, j] = share
        return {"taste": taste, "artists": artists, "songs": songs, "trending": trend}
