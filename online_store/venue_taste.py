"""Venue taste profiles and trending songs per country, from plays: pure, event-time driven.

`update_venue_taste(state, item, songs, policy)` has the shape of Bytewax's
`stateful_map`: one venue's state (or None) and one play or venue registration in,
the new state and what to emit out. A venue emits a `TasteSnapshot` (its taste as
of its latest play) at most once per `policy.interval_s` of *event* time, so the
recommender scores venues per interval, never per play, and a replay emits the same
snapshots.

Taste is recency-decayed by event time at two speeds, so it depends on the set of
plays, not on the order they arrive in:

* now: genre weights with a half-life of `now_half_life_s` (2 h): tonight's crowd;
* habit: genre weights per daypart (early, prime, late in the venue's local time)
  and language weights, with a half-life of `habit_half_life_s` (3 days): what the
  venue usually plays at this time of day;
* the plays of the last `memory_s` (song ids and times): the artist mix, the decayed
  song weights and the songs played recently (for the "not played in the last N
  hours" rule) are read from them.

`CountryTrending` counts plays per song over a sliding event-time window.

>>> from schemas.events import PlayEvent, VenueRegistration
>>> songs = {"s1": SongTraits("amapiano", "zu", "Kabza"), "s2": SongTraits("gqom", "zu", "Babes")}
>>> reg = VenueRegistration(event_id="r1", venue_id="v1", jukebox_ids=["jb-1"], country="ZA",
...     lat=-26.2, lon=28.0, timezone="Africa/Johannesburg", opening_hours=[],
...     updated_at="2026-11-27T00:00:00Z")
>>> policy = TastePolicy(interval_s=300)
>>> state, out = update_venue_taste(None, reg, songs, policy)
>>> def play(n, song, at):
...     return PlayEvent(event_id=f"p{n}", jukebox_id="jb-1", venue_id="v1", song_id=song,
...                      played_at=at, credits_used=1)
>>> state, out = update_venue_taste(state, play(1, "s1", "2026-11-27T19:00:00Z"), songs, policy)
>>> snapshot = out[0]
>>> snapshot.daypart, round(snapshot.genres_now["amapiano"], 3), snapshot.played
(1, 1.0, (('s1', 1795806000),))
>>> update_venue_taste(state, play(2, "s2", "2026-11-27T19:04:00Z"), songs, policy)[1]  # within 5 min
[]
>>> state, out = update_venue_taste(state, play(3, "s2", "2026-11-27T19:06:00Z"), songs, policy)
>>> [t for t, _ in out[0].new_plays], round(out[0].genres_now["gqom"], 3)
([1795806240, 1795806360], 1.989)
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from online_store.dedup import SeenEvents
from online_store.venues import local_minute_of_week
from schemas.events import PlayEvent, VenueRegistration
from simulator.tastes import DAYPARTS, daypart_of_hour

REANCHOR_HALF_LIVES = 16  # re-base decayed sums before 2**x grows large
PRUNE_BELOW = 1e-6  # a decayed weight this small is forgotten when re-basing


class SongTraits(NamedTuple):
    """What the taste profile needs to know about a song (from the catalog)."""

    genre: str
    language: str
    artist: str


@dataclass(frozen=True, slots=True)
class TastePolicy:
    """Decay speeds, memory and how often a venue asks to be scored (event time)."""

    interval_s: int = 300
    now_half_life_s: int = 2 * 3600
    habit_half_life_s: int = 3 * 86_400
    memory_s: int = 6 * 3600
    max_recent: int = 256  # plays kept in memory at most (a looping jukebox stays bounded)

    def __post_init__(self) -> None:
        if min(self.interval_s, self.now_half_life_s, self.habit_half_life_s, self.memory_s) <= 0:
            raise ValueError("interval, half-lives and memory must be positive")


@dataclass(slots=True)
class DecayedWeights:
    """Sums of `2 ** -(age / half_life)` per key, kept against an anchor time.

    A play at t adds `2 ** ((t - anchor) / h)`; reading at T multiplies by
    `2 ** -((T - anchor) / h)`. Adding is commutative, so arrival order does not matter.

    >>> w = DecayedWeights(3600)
    >>> w.add("afrobeats", 0); w.add("afrobeats", 3600)
    >>> w.at(3600)
    {'afrobeats': 1.5}
    """

    half_life_s: int
    anchor_s: int | None = None
    raw: dict[str, float] = field(default_factory=dict)

    def __reduce__(self):
        return (DecayedWeights, (self.half_life_s, self.anchor_s, self.raw))

    def add(self, key: str, t_s: int, amount: float = 1.0) -> None:
        if self.anchor_s is None:
            self.anchor_s = t_s
        elif t_s - self.anchor_s > REANCHOR_HALF_LIVES * self.half_life_s:
            self._reanchor(t_s)
        self.raw[key] = self.raw.get(key, 0.0) + amount * 2.0 ** ((t_s - self.anchor_s) / self.half_life_s)

    def _reanchor(self, t_s: int) -> None:
        assert self.anchor_s is not None
        factor = 2.0 ** (-(t_s - self.anchor_s) / self.half_life_s)
        self.raw = {k: v * factor for k, v in self.raw.items() if v * factor >= PRUNE_BELOW}
        self.anchor_s = t_s

    def at(self, t_s: int) -> dict[str, float]:
        """Every key's decayed weight as of `t_s`."""
        if self.anchor_s is None:
            return {}
        factor = 2.0 ** (-(t_s - self.anchor_s) / self.half_life_s)
        return {k: v * factor for k, v in self.raw.items()}


@dataclass(frozen=True, slots=True)
class TasteSnapshot:
    """A venue's taste as of its latest play: what the recommender scores."""

    venue_id: str
    country: str
    jukebox_ids: tuple[str, ...]
    as_of_s: int  # event time of the venue's latest play
    daypart: int  # simulator.tastes EARLY / PRIME / LATE, venue local time
    genres_now: dict[str, float]
    genres_habit: dict[str, float]  # this daypart's habit
    languages: dict[str, float]
    artists: dict[str, float]  # over the remembered plays, `now` decay
    songs: dict[str, float]  # over the remembered plays, `now` decay
    played: tuple[tuple[str, int], ...]  # (song_id, last play time) within memory
    new_plays: tuple[tuple[int, str], ...]  # (time, song_id) since the previous snapshot


@dataclass(slots=True)
class VenueTasteState:
    venue_id: str
    genres_now: DecayedWeights
    genres_habit: list[DecayedWeights]  # one per daypart
    languages: DecayedWeights
    seen: SeenEvents
    country: str | None = None
    timezone: str | None = None
    jukebox_ids: tuple[str, ...] = ()
    registered_s: int | None = None  # updated_at of the registration applied
    clock_s: int | None = None  # latest play time
    recent: list[tuple[int, str]] = field(default_factory=list)  # sorted by time
    pending: list[tuple[int, str]] = field(default_factory=list)  # not yet in a snapshot
    last_snapshot_s: int | None = None

    def __reduce__(self):
        # Flat and positional: Bytewax snapshots every touched venue each epoch.
        return (VenueTasteState, tuple(getattr(self, name) for name in self.__slots__))

    @classmethod
    def empty(cls, venue_id: str, policy: TastePolicy) -> VenueTasteState:
        return cls(
            venue_id,
            DecayedWeights(policy.now_half_life_s),
            [DecayedWeights(policy.habit_half_life_s) for _ in DAYPARTS],
            DecayedWeights(policy.habit_half_life_s),
            SeenEvents(horizon_s=policy.memory_s),
        )

    @property
    def servable(self) -> bool:
        """Registered in a country, with jukeboxes to send recommendations to."""
        return self.country is not None and bool(self.jukebox_ids)


def daypart_at(t_s: int, timezone: str) -> int:
    """EARLY, PRIME or LATE at UTC second `t_s` in the venue's time zone.

    >>> daypart_at(1795806000, "Africa/Nairobi")  # 19:00 UTC = 22:00 EAT
    1
    """
    return daypart_of_hour(local_minute_of_week(t_s - t_s % 60, timezone) % 1440 // 60)


def update_venue_taste(
    state: VenueTasteState | None,
    item: PlayEvent | VenueRegistration,
    songs: Mapping[str, SongTraits],
    policy: TastePolicy,
) -> tuple[VenueTasteState, list[TasteSnapshot]]:
    """Apply one play or registration; emit a snapshot when the venue is due for scoring."""
    if state is None:
        state = VenueTasteState.empty(item.venue_id, policy)
    if isinstance(item, VenueRegistration):
        _register(state, item)
        return state, []
    t = int(item.played_at.timestamp())
    if not state.seen.first_sighting(item.event_id, t):
        return state, []
    traits = songs.get(item.song_id)
    if traits is not None:
        state.genres_now.add(traits.genre, t)
        if state.timezone is not None:
            state.genres_habit[daypart_at(t, state.timezone)].add(traits.genre, t)
        state.languages.add(traits.language, t)
    clock = t if state.clock_s is None else max(state.clock_s, t)
    state.clock_s = clock
    horizon = clock - policy.memory_s
    if t > horizon:
        bisect.insort(state.recent, (t, item.song_id))
        state.pending.append((t, item.song_id))
    if state.recent and (state.recent[0][0] <= horizon or len(state.recent) > policy.max_recent):
        start = max(bisect.bisect_right(state.recent, (horizon, "\uffff")),
                    len(state.recent) - policy.max_recent)
        del state.recent[:start]
        state.seen.forget_before(clock)
    if len(state.pending) > policy.max_recent:  # an unregistered venue never flushes: stay bounded
        state.pending = [p for p in state.pending if p[0] > horizon][-policy.max_recent:]
    due = state.last_snapshot_s is None or clock - state.last_snapshot_s >= policy.interval_s
    if not (due and state.servable):
        return state, []
    state.last_snapshot_s = clock
    snapshot = taste_snapshot(state, songs, policy)
    state.pending = []
    return state, [snapshot]


def _register(state: VenueTasteState, registration: VenueRegistration) -> None:
    updated = int(registration.updated_at.timestamp())
    if state.registered_s is not None and updated < state.registered_s:
        return  # an older registration arriving late: the newer one stands
    state.registered_s = updated
    state.country = registration.country
    state.timezone = registration.timezone
    state.jukebox_ids = tuple(registration.jukebox_ids) if registration.active else ()


def taste_snapshot(state: VenueTasteState, songs: Mapping[str, SongTraits], policy: TastePolicy) -> TasteSnapshot:
    """The venue's taste as of its clock (it must be registered and have played)."""
    assert state.clock_s is not None and state.country is not None and state.timezone is not None
    clock = state.clock_s
    daypart = daypart_at(clock, state.timezone)
    song_weights: dict[str, float] = {}
    artists: dict[str, float] = {}
    last_played: dict[str, int] = {}
    half_life = policy.now_half_life_s
    for t, song_id in state.recent:
        weight = 2.0 ** (-(clock - t) / half_life)
        song_weights[song_id] = song_weights.get(song_id, 0.0) + weight
        last_played[song_id] = t
        traits = songs.get(song_id)
        if traits is not None:
            artists[traits.artist] = artists.get(traits.artist, 0.0) + weight
    return TasteSnapshot(
        venue_id=state.venue_id,
        country=state.country,
        jukebox_ids=state.jukebox_ids,
        as_of_s=clock,
        daypart=daypart,
        genres_now=state.genres_now.at(clock),
        genres_habit=state.genres_habit[daypart].at(clock),
        languages=state.languages.at(clock),
        artists=artists,
        songs=song_weights,
        played=tuple(sorted(last_played.items())),
        new_plays=tuple(state.pending),
    )


@dataclass(frozen=True, slots=True)
class TrendingPolicy:
    window_s: int = 3600
    buckets: int = 12  # coarse on purpose: a country's state is snapshotted every epoch

    @property
    def bucket_s(self) -> int:
        return self.window_s // self.buckets


@dataclass(slots=True)
class CountryTrending:
    """Plays per song in a country over a sliding event-time window of `buckets` buckets.

    The window ends with the bucket of the latest play seen (the country's clock);
    plays older than the window are not counted.

    >>> trending = CountryTrending(TrendingPolicy(window_s=600, buckets=2))
    >>> trending.add([(0, "s1"), (10, "s2"), (400, "s2")])
    >>> sorted(trending.totals.items()), trending.total
    ([('s1', 1), ('s2', 2)], 3)
    >>> trending.add([(700, "s3")]); sorted(trending.totals.items())  # bucket 0 has left
    [('s2', 1), ('s3', 1)]
    """

    policy: TrendingPolicy
    buckets: dict[int, dict[str, int]] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    head: int | None = None

    def __reduce__(self):
        return (CountryTrending, (self.policy, self.buckets, self.totals, self.head))

    @property
    def total(self) -> int:
        return sum(self.totals.values())

    def add(self, plays: list[tuple[int, str]] | tuple[tuple[int, str], ...]) -> None:
        """Count plays (time, song_id); the window first moves to the latest of them."""
        if not plays:
            return
        bucket_s = self.policy.bucket_s
        self.advance(max(t for t, _ in plays))
        oldest = self.head - self.policy.buckets + 1  # type: ignore[operator]
        for t, song_id in plays:
            bucket = t // bucket_s
            if bucket < oldest:
                continue
            counts = self.buckets.setdefault(bucket, {})
            counts[song_id] = counts.get(song_id, 0) + 1
            self.totals[song_id] = self.totals.get(song_id, 0) + 1

    def advance(self, t_s: int) -> None:
        """Move the window's end to the bucket of `t_s` (never backwards)."""
        head = t_s // self.policy.bucket_s
        if self.head is not None and head <= self.head:
            return
        self.head = head
        oldest = head - self.policy.buckets + 1
        for bucket in [b for b in self.buckets if b < oldest]:
            for song_id, count in self.buckets.pop(bucket).items():
                left = self.totals[song_id] - count
                if left:
                    self.totals[song_id] = left
                else:
                    del self.totals[song_id]

    def shares(self) -> dict[str, float]:
        """Each song's share of the window's plays (empty before any play)."""
        total = self.total
        return {song: count / total for song, count in self.totals.items()} if total else {}
