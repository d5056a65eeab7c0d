"""One simulated play history and one trained recommender, shared by the recs tests of a run,
and the simulated evening the flow tests replay.

Training takes ~10 s, so the unit (offline evaluation), dataflow and integration tests
share it through a process-wide cache instead of each training their own.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from dataflows.records import RawRecord
from models.recs_catalog import RecsCatalog
from models.recs_history import PlayHistory, crowd_shifts, play_history
from models.recs_rules import RecsPolicy
from models.recs_training import RecsTrainer, TrainedRecsModel
from online_store.venue_taste import TastePolicy
from schemas.decoding import DecodeError, decode_event
from schemas.events import PlayEvent, VenueRegistration
from schemas.topics import Topics
from simulator.catalog import SongCatalog
from simulator.fleet import Fleet
from simulator.simulation import DEFAULT_START, Simulation
from simulator.tastes import COUNTRY_GENRE_MIX

SEED = 5
JUKEBOXES = 300
DAYS = 4
SHIFT_SHARE = 0.25
INTERVAL_S = 600  # the flows in the tests score each venue at most every 10 minutes
START = DEFAULT_START + timedelta(days=7)  # the flow tests replay a Friday after the history
HOURS = 8
SHIFT_AFTER = timedelta(hours=2)


@dataclass(frozen=True)
class RecsSetup:
    history: PlayHistory
    catalog: RecsCatalog
    trained: TrainedRecsModel
    shifted_venues: frozenset[str]
    rules: RecsPolicy
    taste: TastePolicy


@lru_cache(maxsize=1)
def recs_setup() -> RecsSetup:
    fleet, songs = Fleet(JUKEBOXES, SEED), SongCatalog(seed=SEED)
    shifts = crowd_shifts(fleet, songs, DEFAULT_START, timedelta(days=DAYS), SHIFT_SHARE, SEED)
    simulation = Simulation(jukeboxes=JUKEBOXES, seed=SEED, duration=timedelta(days=DAYS), fraud_rate=0.0,
                            taste_shifts=shifts, include_labels=False)
    history = play_history(simulation.records())
    catalog = RecsCatalog(simulation.catalog.songs)
    rules, taste = RecsPolicy(interval_s=INTERVAL_S), TastePolicy(interval_s=INTERVAL_S)
    trained = RecsTrainer(rank=16, taste=taste, rules=rules, tune_rounds=1).fit(history, catalog)
    return RecsSetup(history, catalog, trained, frozenset(s.venue_id for s in shifts), rules, taste)


def raw_records(simulation: Simulation, topics: Topics = Topics()) -> list[RawRecord]:
    """The run's plays and venue registrations as a source hands them to the flow."""
    names = {"plays": topics.plays, "venues": topics.venues}
    return [RawRecord(names[r.topic_attr], r.key, r.value, 0, i, r.timestamp_ms)
            for i, r in enumerate(simulation.records()) if r.topic_attr in names]


def decoded(records: list[RawRecord], topics: Topics = Topics()) -> list[tuple[object, datetime]]:
    """The events the flow can use, with their arrival times (the simulated traffic carries
    some malformed records)."""
    events = []
    for r in records:
        event = decode_event(r.value, PlayEvent if r.topic == topics.plays else VenueRegistration)
        if not isinstance(event, DecodeError):
            events.append((event, r.arrival))
    return events


def busiest_venue_and_rare_genre(records: list[RawRecord]) -> tuple[str, str, str]:
    """The venue playing most after the shift time, and a genre it hardly plays but can
    (licensed there, with enough artists to fill a diverse top 10)."""
    setup, shift_at = recs_setup(), START + SHIFT_AFTER
    plays = [e for e, _ in decoded(records) if isinstance(e, PlayEvent)]
    venue = Counter(p.venue_id for p in plays if p.played_at >= shift_at).most_common(1)[0][0]
    country = venue.split("-")[1]
    songs = [s for s in setup.catalog.songs if country in s.licensed_countries]
    candidates = [g for g in {s.genre for s in songs} if len({s.artist for s in songs if s.genre == g}) >= 8]
    genre = min(candidates, key=lambda g: (COUNTRY_GENRE_MIX[country].get(g, 0.0), g))
    return venue, genre, country
