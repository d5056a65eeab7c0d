"""Business rules on recommendations, and when a jukebox gets a new list.

Ranking (`SongRanker.rank`), applied to every score row, model or baseline alike:

* only songs in the live catalog and licensed in the venue's country;
* no song the venue played in the last `exclude_played_s` (N hours);
* diversity: at most `max_per_artist` songs by one artist in the top `top_n`.

Delivery (`deliveries`): a jukebox gets a list when it has none yet, or when at least
`interval_s` of event time passed since its last one *and* the list changed
materially (at least `min_changed_share` of its songs are new). Both are judged on
the event time the list is based on, so a replay sends the same updates.

>>> from simulator.catalog import SongCatalog
>>> catalog = RecsCatalog(SongCatalog(songs=300, artists=60, seed=7).songs)
>>> ranker = SongRanker(catalog.song_ids, catalog, RecsPolicy(top_n=5))
>>> scores = np.linspace(1.0, 0.0, len(catalog))  # the model likes s-000000 best
>>> top = ranker.rank(scores, "KE", played=[("s-000000", 1000)], as_of_s=2000)
>>> len(top), "s-000000" in [song for song, _ in top]  # played 1000 s ago: excluded
(5, False)
>>> max(Counter(catalog.traits[s].artist for s, _ in top).values()) <= 2
True
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from models.recs_catalog import RecsCatalog


@dataclass(frozen=True, slots=True)
class RecsPolicy:
    top_n: int = 10
    max_per_artist: int = 2
    exclude_played_s: int = 3 * 3600
    interval_s: int = 300  # per jukebox, event time
    min_changed_share: float = 0.3

    def __post_init__(self) -> None:
        if self.top_n < 1 or self.top_n > 50:  # RecommendationUpdate carries at most 50
            raise ValueError("top_n must be within [1, 50]")
        if self.max_per_artist < 1:
            raise ValueError("max_per_artist must be at least 1")
        if not 0.0 < self.min_changed_share <= 1.0:
            raise ValueError("min_changed_share must be within (0, 1]")


class SongRanker:
    """Turns one row of scores over a model's songs (`song_ids`, its output order) into
    the top list for a venue, under the rules and against the live `catalog`."""

    def __init__(self, song_ids: Sequence[str], catalog: RecsCatalog, policy: RecsPolicy) -> None:
        self.song_ids = tuple(song_ids)
        self.policy = policy
        self.column = {song_id: j for j, song_id in enumerate(self.song_ids)}
        in_catalog = np.array([s in catalog.index for s in self.song_ids], dtype=bool)
        live = np.array([catalog.index.get(s, 0) for s in self.song_ids], dtype=np.int64)
        # Songs the model knows but the catalog dropped are never recommended.
        self._live, self._in_catalog = live, in_catalog
        self._artist = np.where(in_catalog, catalog.artist_codes[live], -1)
        self._catalog = catalog
        self._allowed: dict[str, np.ndarray] = {}

    def allowed_in(self, country: str) -> np.ndarray:
        """Mask over the model's songs: in the catalog and licensed in `country`."""
        mask = self._allowed.get(country)
        if mask is None:
            mask = self._allowed[country] = self._in_catalog & self._catalog.licensed_in(country)[self._live]
        return mask

    def rank(
        self, scores: np.ndarray, country: str, played: Iterable[tuple[str, int]], as_of_s: int
    ) -> list[tuple[str, float]]:
        """The top `top_n` (song_id, score) for one row of scores, best first."""
        return self.rank_batch(scores[None, :], [country], [played], [as_of_s])[0]

    def rank_batch(
        self,
        scores: np.ndarray,
        countries: Sequence[str],
        played: Sequence[Iterable[tuple[str, int]]],
        as_of_s: Sequence[int],
    ) -> list[list[tuple[str, float]]]:
        """Top lists for a batch of score rows [N, songs]; ties are broken by model column
        order, so results are deterministic."""
        return self.rank_rows(scores, self.allowed_rows(countries, played, as_of_s))

    def allowed_rows(
        self, countries: Sequence[str], played: Sequence[Iterable[tuple[str, int]]], as_of_s: Sequence[int]
    ) -> np.ndarray:
        """[N, songs] mask: licensed, in the catalog, not played within the exclusion window."""
        if not countries:
            return np.zeros((0, len(self.song_ids)), dtype=bool)
        allowed = np.stack([self.allowed_in(c) for c in countries])
        column, window = self.column, self.policy.exclude_played_s
        for i, (recent, t0) in enumerate(zip(played, as_of_s, strict=True)):
            for song_id, t in recent:
                j = column.get(song_id)
                if j is not None and t0 - t < window:
                    allowed[i, j] = False
        return allowed

    def rank_rows(self, scores: np.ndarray, allowed: np.ndarray) -> list[list[tuple[str, float]]]:
        """Top lists for score rows under a precomputed `allowed_rows` mask."""
        if scores.shape != allowed.shape or scores.shape[1] != len(self.song_ids):
            raise ValueError(f"scores are {scores.shape}, mask {allowed.shape}, songs {len(self.song_ids)}")
        top_n = self.policy.top_n
        masked = np.where(allowed, scores, -np.inf)
        # Diversity may skip candidates: look well past top_n before sorting a whole row.
        k = min(masked.shape[1], top_n * (top_n // self.policy.max_per_artist + 2))
        everything = np.arange(masked.shape[1])
        kth = -np.partition(-masked, k - 1, axis=1)[:, k - 1] if k < masked.shape[1] else None
        lists = []
        for i in range(len(masked)):
            row = masked[i]
            if kth is None:
                candidates = everything
            else:  # the k best; among equal scores at the cut, the first columns
                above = np.flatnonzero(row > kth[i])
                candidates = np.concatenate([above, np.flatnonzero(row == kth[i])[:k - len(above)]])
            picked = self._diverse(self._ordered(candidates, row), row)
            if len(picked) < top_n and k < len(row):  # rare: too few artists up top
                picked = self._diverse(self._ordered(everything, row), row)
            lists.append([(self.song_ids[j], float(scores[i, j])) for j in picked])
        return lists

    @staticmethod
    def _ordered(columns: np.ndarray, row: np.ndarray) -> np.ndarray:
        return columns[np.lexsort((columns, -row[columns]))]

    def _diverse(self, ordered: np.ndarray, masked: np.ndarray) -> list[int]:
        top_n, limit, artist_of = self.policy.top_n, self.policy.max_per_artist, self._artist
        head = ordered[:top_n]
        full = len(head) == top_n and masked[head[-1]] > -np.inf
        if full and np.bincount(artist_of[head] + 1).max() <= limit:
            return head.tolist()  # the common case: the plain top is diverse enough
        per_artist: Counter[int] = Counter()
        picked: list[int] = []
        for j in ordered.tolist():
            if masked[j] == -np.inf:
                break
            artist = int(artist_of[j])
            if per_artist[artist] >= limit:
                continue
            per_artist[artist] += 1
            picked.append(j)
            if len(picked) == top_n:
                break
        return picked


@dataclass(frozen=True, slots=True)
class RankedList:
    """A venue's ranked songs, for all its jukeboxes."""

    venue_id: str
    jukebox_ids: tuple[str, ...]
    as_of_s: int  # event time the list is based on
    songs: tuple[tuple[str, float], ...]
    model_version: str


def changed_materially(previous: Sequence[str], new: Sequence[str], min_share: float) -> bool:
    """Is at least `min_share` of the new list made of songs the previous one lacked?

    >>> changed_materially(["a", "b", "c"], ["a", "b", "d"], 0.3), changed_materially(["a", "b", "c"], ["c", "b", "a"], 0.3)
    (True, False)
    """
    if not new:
        return False
    if not previous:
        return True
    before = set(previous)
    return sum(song not in before for song in new) / len(new) >= min_share


@dataclass(slots=True)
class JukeboxDelivery:
    sent_s: int  # event time the last sent list was based on
    song_ids: tuple[str, ...]


@dataclass(slots=True)
class DeliveryState:
    """What each jukebox of a venue was last sent."""

    jukeboxes: dict[str, JukeboxDelivery] = field(default_factory=dict)


def deliveries(
    state: DeliveryState | None, ranked: RankedList, policy: RecsPolicy
) -> tuple[DeliveryState, list[str], int]:
    """Which jukeboxes get `ranked` now; returns (state, jukebox ids to send to, suppressed).

    >>> policy = RecsPolicy(interval_s=300)
    >>> first = RankedList("v1", ("jb-1",), 1000, (("a", 0.5), ("b", 0.4)), "1")
    >>> state, send, suppressed = deliveries(None, first, policy); send
    ['jb-1']
    >>> deliveries(state, RankedList("v1", ("jb-1",), 1100, (("c", 0.5), ("d", 0.4)), "1"), policy)[1:]
    ([], 1)
    >>> deliveries(state, RankedList("v1", ("jb-1",), 1300, (("b", 0.5), ("a", 0.4)), "1"), policy)[1:]
    ([], 1)
    >>> deliveries(state, RankedList("v1", ("jb-1",), 1300, (("a", 0.5), ("c", 0.4)), "1"), policy)[1:]
    (['jb-1'], 0)
    """
    state = state or DeliveryState()
    new = tuple(song for song, _ in ranked.songs)
    send: list[str] = []
    suppressed = 0
    for jukebox_id in ranked.jukebox_ids:
        last = state.jukeboxes.get(jukebox_id)
        if last is not None and ranked.as_of_s <= last.sent_s:
            continue  # an older or equal basis: already answered (a replayed list)
        if last is None and new:
            due = True
        elif last is None:
            due = False
        else:
            due = (ranked.as_of_s - last.sent_s >= policy.interval_s
                   and changed_materially(last.song_ids, new, policy.min_changed_share))
        if due:
            state.jukeboxes[jukebox_id] = JukeboxDelivery(ranked.as_of_s, new)
            send.append(jukebox_id)
        else:
            suppressed += 1
    for gone in set(state.jukeboxes) - set(ranked.jukebox_ids):
        del state.jukeboxes[gone]  # moved to another venue or deregistered
    return state, send, suppressed
