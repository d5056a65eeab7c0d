"""What a jukebox needs to know about its venue: where it is and when it is open.

Built from a `VenueRegistration` (reference data); opening hours become intervals of
minute-of-week in the venue's local time zone, so "is the venue open at t?" is a
lookup, not a parse.

>>> from schemas.events import VenueRegistration
>>> reg = VenueRegistration(event_id="v1-1", venue_id="v1", jukebox_ids=["jb-1"], country="KE",
...     lat=-1.29, lon=36.82, timezone="Africa/Nairobi", updated_at="2026-11-01T00:00:00Z",
...     opening_hours=[{"weekday": 0, "opens": "18:00", "closes": "02:00"}])
>>> venue = venue_ref(reg)
>>> from datetime import datetime, UTC
>>> venue.is_open_at(int(datetime(2026, 11, 23, 16, 0, tzinfo=UTC).timestamp()))  # Mon 19:00 EAT
True
>>> venue.is_open_at(int(datetime(2026, 11, 23, 12, 0, tzinfo=UTC).timestamp()))  # Mon 15:00 EAT
False
>>> venue.is_open_at(int(datetime(2026, 11, 23, 22, 30, tzinfo=UTC).timestamp()))  # Tue 01:30
True
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from schemas.events import VenueRegistration

MINUTES_PER_WEEK = 7 * 24 * 60


@dataclass(frozen=True, slots=True)
class VenueRef:
    venue_id: str
    country: str
    lat: float
    lon: float
    timezone: str
    open_intervals: tuple[tuple[int, int], ...]  # [start, end) minute-of-week, local time
    updated_at_s: int
    active: bool = True

    def is_open_at(self, t_s: int) -> bool:
        minute = local_minute_of_week(t_s - t_s % 60, self.timezone)
        return any(start <= minute < end for start, end in self.open_intervals)


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def open_intervals(hours: list) -> tuple[tuple[int, int], ...]:
    """Minute-of-week intervals; a day closing after midnight spills into the next."""
    intervals = []
    for day in hours:
        start = day.weekday * 1440 + _minutes(day.opens)
        end = day.weekday * 1440 + _minutes(day.closes)
        if end <= start:
            end += 1440
        if end > MINUTES_PER_WEEK:  # Sunday night into Monday morning
            intervals.append((start, MINUTES_PER_WEEK))
            intervals.append((0, end - MINUTES_PER_WEEK))
        else:
            intervals.append((start, end))
    return tuple(sorted(intervals))


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@lru_cache(maxsize=65_536)
def local_minute_of_week(t_s: int, timezone: str) -> int:
    """Minute of the week (0 = Monday 00:00) at UTC second `t_s` in `timezone`."""
    local = datetime.fromtimestamp(t_s, tz=UTC).astimezone(_zone(timezone))
    return local.weekday() * 1440 + local.hour * 60 + local.minute


@dataclass(frozen=True, slots=True)
class VenueAssignment:
    """A venue reference addressed to one of its jukeboxes (the device state's key)."""

    jukebox_id: str
    venue: VenueRef


def venue_assignments(registration: VenueRegistration) -> list[VenueAssignment]:
    """One assignment per jukebox the registration lists."""
    venue = venue_ref(registration)
    return [VenueAssignment(jukebox_id, venue) for jukebox_id in registration.jukebox_ids]


def venue_ref(registration: VenueRegistration) -> VenueRef:
    return VenueRef(
        venue_id=registration.venue_id,
        country=registration.country,
        lat=registration.lat,
        lon=registration.lon,
        timezone=registration.timezone,
        open_intervals=open_intervals(registration.opening_hours),
        updated_at_s=int(registration.updated_at.timestamp()),
        active=registration.active,
    )
