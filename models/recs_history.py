"""Play history for the recommender: decoded plays, and point-in-time evaluation samples.

`play_history` decodes a run's records (the simulator's, or a recorded JSON Lines run)
with the same decoder as the flow, keeps plays and the latest registration per venue,
and drops duplicates by event id. `evaluation_samples` replays the plays in event-time
order through the *online* taste logic (`update_venue_taste`) and country trending,
and at each cut time takes, for every venue that plays in the next `horizon_s`, the
snapshot the flow would score and the songs it then played: features never see the
future, and training cannot drift from serving.
"""

from __future__ import annotations

import bisect
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from online_store.venue_taste import (
    CountryTrending,
    SongTraits,
    TastePolicy,
    TasteSnapshot,
    TrendingPolicy,
    VenueTasteState,
    taste_snapshot,
    update_venue_taste,
)
from schemas.decoding import DecodeError, decode_event
from schemas.events import PlayEvent, VenueRegistration
from simulator.catalog import GENRE_NAMES, SongCatalog
from simulator.fleet import Fleet
from simulator.records import SimRecord
from simulator.tastes import TasteShift

NEVER = 2**62  # an interval no clock reaches


@dataclass(frozen=True)
class PlayHistory:
    plays: list[PlayEvent]  # unique, by event time then id
    venues: dict[str, VenueRegistration]  # the latest registration per venue
    decode_errors: int = 0
    duplicates: int = 0

    def __post_init__(self) -> None:
        if not self.plays:
            raise ValueError("the history has no plays")

    @property
    def start_s(self) -> int:
        return int(self.plays[0].played_at.timestamp())

    @property
    def end_s(self) -> int:
        return int(self.plays[-1].played_at.timestamp())

    def countries(self) -> dict[str, str]:
        """venue_id -> country, for registered venues."""
        return {venue_id: reg.country for venue_id, reg in self.venues.items()}


def play_history(records: Iterable[SimRecord], on_record: Callable[[int], None] | None = None) -> PlayHistory:
    """Plays and venue registrations from simulator records (other topics are skipped)."""
    plays: dict[str, PlayEvent] = {}
    venues: dict[str, VenueRegistration] = {}
    errors = duplicates = 0
    for n, record in enumerate(records, 1):
        if on_record is not None:
            on_record(n)
        if record.topic_attr not in ("plays", "venues"):
            continue
        event = decode_event(record.value, PlayEvent if record.topic_attr == "plays" else VenueRegistration)
        if isinstance(event, DecodeError):
            errors += 1
        elif isinstance(event, VenueRegistration):
            known = venues.get(event.venue_id)
            if known is None or event.updated_at >= known.updated_at:
                venues[event.venue_id] = event
        elif event.event_id in plays:
            duplicates += 1
        else:
            plays[event.event_id] = event
    ordered = sorted(plays.values(), key=lambda p: (p.played_at, p.event_id))
    return PlayHistory(ordered, venues, errors, duplicates)


@dataclass(frozen=True, slots=True)
class EvalSample:
    snapshot: TasteSnapshot
    trending: Mapping[str, float]  # the venue's country, as of the cut
    targets: frozenset[str]  # songs the venue played in [cut, cut + horizon)
    cut_s: int


def evaluation_samples(
    history: PlayHistory,
    songs: Mapping[str, SongTraits],
    cuts: Sequence[int],
    horizon_s: int = 3600,
    taste: TastePolicy = TastePolicy(),
    trending: TrendingPolicy = TrendingPolicy(),
) -> list[EvalSample]:
    """One sample per (cut, venue that plays within `horizon_s` after it and before)."""
    future: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for play in history.plays:
        future[play.venue_id].append((int(play.played_at.timestamp()), play.song_id))
    # The replay takes its own snapshots at the cuts and feeds trending itself.
    replay = replace(taste, interval_s=NEVER)
    states: dict[str, VenueTasteState] = {}
    for venue_id, registration in history.venues.items():
        states[venue_id], _ = update_venue_taste(None, registration, songs, replay)
    countries = history.countries()
    by_country = {c: CountryTrending(trending) for c in set(countries.values())}
    samples: list[EvalSample] = []
    plays, position = history.plays, 0
    for cut in sorted(cuts):
        batch: dict[str, list[tuple[int, str]]] = defaultdict(list)
        while position < len(plays) and plays[position].played_at.timestamp() < cut:
            play = plays[position]
            position += 1
            state, _ = update_venue_taste(states.get(play.venue_id), play, songs, replay)
            state.pending.clear()
            states[play.venue_id] = state
            country = countries.get(play.venue_id)
            if country is not None:
                batch[country].append((int(play.played_at.timestamp()), play.song_id))
        for country, new in batch.items():
            by_country[country].add(new)
        for counts in by_country.values():
            counts.advance(cut - 1)
        shares = {country: t.shares() for country, t in by_country.items()}
        for venue_id, state in states.items():
            if not state.servable or state.clock_s is None:
                continue
            times = future[venue_id]
            lo = bisect.bisect_left(times, (cut, ""))
            hi = bisect.bisect_left(times, (cut + horizon_s, ""))
            if lo == hi:
                continue
            snapshot = taste_snapshot(state, songs, replay)
            targets = frozenset(song for _, song in times[lo:hi])
            samples.append(EvalSample(snapshot, shares[snapshot.country], targets, cut))
    return samples


def crowd_shifts(fleet: Fleet, catalog: SongCatalog, start: datetime, duration: timedelta,
                 share: float, seed: int = 0, after: float = 0.3) -> list[TasteShift]:
    """Crowds that change: `share` of the venues turn to a random genre licensed in their
    country at a random time in the last `1 - after` of the run (a new owner, a theme
    night that stuck). Without them simulated venues only ever play their profile.

    >>> from simulator.simulation import Simulation
    >>> sim = Simulation(jukeboxes=50, seed=2)
    >>> shifts = crowd_shifts(sim.fleet, sim.catalog, sim.start, timedelta(days=1), share=0.5, seed=1)
    >>> 0 < len(shifts) < sim.fleet.venues, all(s.start >= sim.start for s in shifts)
    (True, True)
    """
    rng = random.Random(f"{seed}:crowd-shifts")
    shifts = []
    for venue in range(fleet.venues):
        if rng.random() >= share:
            continue
        licensed = catalog.licensed_genres(fleet.country_of(venue).code)
        genre = rng.choice([g for g, ok in zip(GENRE_NAMES, licensed, strict=True) if ok])
        at = start + duration * rng.uniform(after, 1.0)
        shifts.append(TasteShift(fleet.venue_id(venue), at, genre))
    return shifts
