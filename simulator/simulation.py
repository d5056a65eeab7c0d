"""The fleet simulator: seeded, realistic jukebox traffic as Kafka-ready records.

The constructor is the whole configuration (River style); `records()` replays
the same run every time it is called. Same seed and parameters, same bytes in
the same order: nothing reads the clock, the start time is a parameter.

>>> from datetime import timedelta
>>> sim = Simulation(jukeboxes=30, seed=5, duration=timedelta(minutes=30), fraud_rate=0.0)
>>> first = list(sim.records())
>>> first == list(Simulation(jukeboxes=30, seed=5, duration=timedelta(minutes=30), fraud_rate=0.0).records())
True
>>> sorted({r.topic_attr for r in first})
['locations', 'payments', 'plays', 'venues']
>>> all(a.timestamp_ms <= b.timestamp_ms for a, b in zip(first, first[1:]))
True
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

from simulator.activity import FleetActivity
from simulator.catalog import SongCatalog
from simulator.fleet import TASTE_PROFILES_PER_COUNTRY, Fleet
from simulator.fraud import SCENARIOS, FraudPlanner
from simulator.records import SimRecord
from simulator.tastes import TasteProfiles, TasteShift

DEFAULT_START = datetime(2026, 11, 27, 16, 0, tzinfo=UTC)
"""A Friday, 16:00 UTC: early evening from Dakar (16:00) to Addis Ababa (19:00)."""


def _rate(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be within [0, 1], got {value}")
    return value


class Simulation:
    """A fleet of `jukeboxes` and its traffic from `start` (UTC), deterministic from `seed`.

    Bound a run by simulated `duration`, by `max_events` event records (plays,
    payments, locations, venues; labels and songs are not counted), or both; with
    neither, `records()` never ends (a live demo).

    Rates: `fraud_rate` and `late_rate` are the share of jukeboxes with a fraud
    episode / an outage per simulated day; `duplicate_rate`, `out_of_order_rate`,
    `clock_skew_rate` and `malformed_rate` are per record; `debezium_share` is the
    share of venue records wrapped in a Debezium envelope. `activity` scales how
    busy venues are (1.0 = realistic).
    """

    def __init__(
        self,
        jukeboxes: int = 200,
        seed: int = 0,
        start: datetime = DEFAULT_START,
        duration: timedelta | None = None,
        max_events: int | None = None,
        *,
        fraud_rate: float = 0.02,
        scenarios: Sequence[str] = SCENARIOS,
        duplicate_rate: float = 0.002,
        out_of_order_rate: float = 0.01,
        late_rate: float = 0.01,
        clock_skew_rate: float = 0.0,
        malformed_rate: float = 0.001,
        debezium_share: float = 0.0,
        taste_shifts: Sequence[TasteShift] = (),
        activity: float = 1.0,
        songs: int = 2000,
        artists: int = 300,
        include_venues: bool = True,
        include_catalog: bool = False,
        include_labels: bool = True,
    ) -> None:
        if start.tzinfo is None or start.utcoffset() is None:
            raise ValueError("start must be timezone-aware (UTC)")
        if duration is not None and duration <= timedelta(0):
            raise ValueError("duration must be positive")
        if max_events is not None and max_events < 1:
            raise ValueError("max_events must be at least 1")
        if seed < 0:
            raise ValueError("seed must be >= 0")
        if activity < 0:
            raise ValueError("activity must be >= 0")
        self.jukeboxes = jukeboxes
        self.seed = seed
        self.start = start.astimezone(UTC)
        self.duration = duration
        self.max_events = max_events
        self.fraud_rate = _rate("fraud_rate", fraud_rate)
        self.scenarios = tuple(scenarios)
        self.duplicate_rate = _rate("duplicate_rate", duplicate_rate)
        self.out_of_order_rate = _rate("out_of_order_rate", out_of_order_rate)
        self.late_rate = _rate("late_rate", late_rate)
        self.clock_skew_rate = _rate("clock_skew_rate", clock_skew_rate)
        self.malformed_rate = _rate("malformed_rate", malformed_rate)
        self.debezium_share = _rate("debezium_share", debezium_share)
        self.activity = activity
        self.include_venues = include_venues
        self.include_catalog = include_catalog
        self.include_labels = include_labels
        self.fleet = Fleet(jukeboxes, seed)
        self.catalog = SongCatalog(songs, artists, seed)
        self.tastes = TasteProfiles(self.catalog, seed, TASTE_PROFILES_PER_COUNTRY)
        self.planner = FraudPlanner(self.fleet, self.catalog, self.tastes, seed, self.scenarios)
        for shift in taste_shifts:
            venue = Fleet.venue_index(shift.venue_id)
            if not (0 <= venue < self.fleet.venues and self.fleet.venue_id(venue) == shift.venue_id):
                raise ValueError(f"TasteShift names unknown venue {shift.venue_id!r}")
        self.taste_shifts = tuple(taste_shifts)

    @property
    def end(self) -> datetime | None:
        return None if self.duration is None else self.start + self.duration

    def records(self) -> Iterator[SimRecord]:
        """Every record in delivery order: songs (if asked), venues, then the traffic,
        with fraud labels on their own topic as each episode ends."""
        return FleetActivity(self).records()
