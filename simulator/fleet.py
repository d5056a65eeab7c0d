"""The fleet: venues across the ten countries and the 1-4 jukeboxes in each.

Held as a handful of numpy columns (a few bytes per jukebox), so a million
jukeboxes cost tens of megabytes; `venue()` builds a readable view of one venue
on demand. Ids are positional and stable: jukebox `j` is `jb-{j:07d}`, venue `v`
is `v-{country}-{v:07d}`.

>>> fleet = Fleet(jukeboxes=200, seed=1)
>>> fleet.jukeboxes, fleet.jukebox_id(0)
(200, 'jb-0000000')
>>> venue = fleet.venue(fleet.venue_of(199))
>>> fleet.jukebox_id(199) in venue.jukebox_ids and 1 <= len(venue.jukebox_ids) <= 4
True
>>> sorted({fleet.venue(v).country.code for v in range(fleet.venues)}) == sorted(COUNTRIES)
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from schemas.countries import COUNTRIES, Country
from simulator.catalog import COUNTRY_CODES
from simulator.event_json import utc_datetime
from simulator.geography import KM_PER_DEGREE
from simulator.weekly_hours import WeeklyHours, slot_of_week, weekly_hours_templates

# Share of venues per country (a rough market size).
COUNTRY_WEIGHTS = {
    "NG": 0.20, "KE": 0.12, "ZA": 0.12, "GH": 0.10, "EG": 0.10,
    "MA": 0.08, "SN": 0.06, "UG": 0.08, "TZ": 0.08, "ET": 0.06,
}
JUKEBOXES_PER_VENUE = (1, 2, 3, 4)
JUKEBOXES_PER_VENUE_WEIGHTS = (0.55, 0.28, 0.12, 0.05)
VENUE_SCATTER_KM = 18.0  # venues cluster around the country's main city
MAX_VENUE_DISTANCE_KM = 90.0
SCHEDULE_TEMPLATES = 48
TASTE_PROFILES_PER_COUNTRY = 12


@dataclass(frozen=True, slots=True)
class Venue:
    index: int
    venue_id: str
    country: Country
    lat: float
    lon: float
    hours: WeeklyHours
    jukebox_ids: tuple[str, ...]
    taste_profile: int
    peak_sessions_per_hour: float  # paying customers per jukebox per hour at the busiest time

    @property
    def timezone(self) -> str:
        return self.country.timezone


class Fleet:
    """`jukeboxes` jukeboxes in venues, deterministic from `seed`."""

    def __init__(self, jukeboxes: int = 200, seed: int = 0) -> None:
        if jukeboxes < 1:
            raise ValueError("a fleet needs at least one jukebox")
        if jukeboxes > 9_999_999:
            raise ValueError("jukebox ids have 7 digits: at most 9,999,999 jukeboxes")
        self.jukeboxes = jukeboxes
        self.seed = seed
        rng = np.random.default_rng([seed, 0xF1EE7])
        # At most one venue per jukebox; draw that many sizes and keep what fits.
        sizes = rng.choice(JUKEBOXES_PER_VENUE, size=jukeboxes, p=JUKEBOXES_PER_VENUE_WEIGHTS)
        ends = np.cumsum(sizes)
        venues = int(np.searchsorted(ends, jukeboxes)) + 1
        sizes = sizes[:venues].astype(np.int32)
        sizes[-1] -= int(ends[venues - 1]) - jukeboxes  # trim the last venue to fit exactly
        self.venues = venues
        self.venue_sizes = sizes
        self.venue_first = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
        self.jukebox_venue = np.repeat(np.arange(venues, dtype=np.int32), sizes)

        # The first ten venues cover every country, the rest follow market size.
        weights = np.array([COUNTRY_WEIGHTS[c] for c in COUNTRY_CODES])
        country = rng.choice(len(COUNTRY_CODES), size=venues, p=weights / weights.sum())
        country[: min(venues, len(COUNTRY_CODES))] = np.arange(min(venues, len(COUNTRY_CODES)))
        self.venue_country = country.astype(np.int8)

        centers = np.array([COUNTRIES[c].center for c in COUNTRY_CODES])
        distance = np.minimum(np.abs(rng.normal(0.0, VENUE_SCATTER_KM, venues)) + 0.3, MAX_VENUE_DISTANCE_KM)
        bearing = rng.uniform(0.0, 2 * math.pi, venues)
        lat0 = centers[country, 0]
        self.venue_lat = np.round(lat0 + distance * np.cos(bearing) / KM_PER_DEGREE, 6)
        self.venue_lon = np.round(
            centers[country, 1] + distance * np.sin(bearing) / (KM_PER_DEGREE * np.cos(np.radians(lat0))), 6
        )
        self.venue_schedule = rng.integers(0, SCHEDULE_TEMPLATES, venues).astype(np.int16)
        self.venue_taste = rng.integers(0, TASTE_PROFILES_PER_COUNTRY, venues).astype(np.int16)
        self.venue_rate = np.minimum(rng.lognormal(math.log(3.0), 0.5, venues), 9.0).astype(np.float32)
        # Each jukebox reports its location every 15 minutes at its own second of the slot.
        self.jukebox_phase_s = rng.integers(0, 900, jukeboxes).astype(np.int32)
        self.schedules = weekly_hours_templates(seed, SCHEDULE_TEMPLATES)
        self.open_mask = np.array([s.open_slots() for s in self.schedules], dtype=bool)
        self._by_country: list[np.ndarray] | None = None

    # --- ids ------------------------------------------------------------------
    @staticmethod
    def jukebox_id(jukebox: int) -> str:
        return f"jb-{jukebox:07d}"

    def venue_id(self, venue: int) -> str:
        return f"v-{COUNTRY_CODES[self.venue_country[venue]]}-{venue:07d}"

    @staticmethod
    def jukebox_index(jukebox_id: str) -> int:
        """Position of a jukebox id.

        >>> Fleet.jukebox_index("jb-0000042")
        42
        """
        return int(jukebox_id[3:])

    @staticmethod
    def venue_index(venue_id: str) -> int:
        return int(venue_id[-7:])

    # --- lookups --------------------------------------------------------------
    def venue_of(self, jukebox: int) -> int:
        return int(self.jukebox_venue[jukebox])

    def country_of(self, venue: int) -> Country:
        return COUNTRIES[COUNTRY_CODES[self.venue_country[venue]]]

    def jukeboxes_of(self, venue: int) -> range:
        first = int(self.venue_first[venue])
        return range(first, first + int(self.venue_sizes[venue]))

    def venues_in(self, country: str) -> np.ndarray:
        """Indexes of the venues in a country (computed once, then shared)."""
        if self._by_country is None:
            order = np.argsort(self.venue_country, kind="stable")
            bounds = np.searchsorted(self.venue_country[order], np.arange(len(COUNTRY_CODES) + 1))
            self._by_country = [order[bounds[i]:bounds[i + 1]] for i in range(len(COUNTRY_CODES))]
        return self._by_country[COUNTRY_CODES.index(country)]

    def open_at(self, venue: int, moment_ms: int) -> bool:
        """Is the venue open at this moment (its local time, its weekly schedule)?"""
        slot = slot_of_week(utc_datetime(moment_ms), self.country_of(venue).timezone)
        return bool(self.open_mask[self.venue_schedule[venue], slot])

    def venue(self, venue: int) -> Venue:
        return Venue(
            index=venue,
            venue_id=self.venue_id(venue),
            country=self.country_of(venue),
            lat=float(self.venue_lat[venue]),
            lon=float(self.venue_lon[venue]),
            hours=self.schedules[self.venue_schedule[venue]],
            jukebox_ids=tuple(self.jukebox_id(j) for j in self.jukeboxes_of(venue)),
            taste_profile=int(self.venue_taste[venue]),
            peak_sessions_per_hour=float(self.venue_rate[venue]),
        )
