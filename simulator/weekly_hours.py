"""Venue opening hours: weekly schedules in local time, at 15-minute resolution.

A schedule is a list of (weekday, opens, closes) in the venue's local time;
`closes` at or before `opens` means after midnight, a missing weekday means
closed all day (the `OpeningHours` contract's convention). The simulator looks
opening up by slot of the week (0 = Monday 00:00-00:15 local), so a whole fleet
shares a few dozen schedules.

>>> hours = WeeklyHours(((4, "16:00", "02:00"),))  # Fridays 16:00 to Saturday 02:00
>>> mask = hours.open_slots()
>>> mask[4 * 96 + 16 * 4], mask[5 * 96 + 1 * 4], mask[5 * 96 + 2 * 4]
(True, True, False)
>>> from datetime import UTC, datetime
>>> slot_of_week(datetime(2026, 11, 27, 16, 0, tzinfo=UTC), "Africa/Nairobi")  # Fri 19:00 EAT
460
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from schemas.events import OpeningHours

SLOT_MINUTES = 15
SLOTS_PER_DAY = 24 * 60 // SLOT_MINUTES
SLOTS_PER_WEEK = 7 * SLOTS_PER_DAY


def _slot(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 4 + int(minutes) // SLOT_MINUTES


@dataclass(frozen=True, slots=True)
class WeeklyHours:
    days: tuple[tuple[int, str, str], ...]  # (weekday 0 = Monday, "HH:MM", "HH:MM")

    def open_slots(self) -> list[bool]:
        """Open or not, per slot of the week."""
        mask = [False] * SLOTS_PER_WEEK
        for weekday, opens, closes in self.days:
            first = weekday * SLOTS_PER_DAY + _slot(opens)
            length = (_slot(closes) - _slot(opens)) % SLOTS_PER_DAY or SLOTS_PER_DAY
            for offset in range(length):
                mask[(first + offset) % SLOTS_PER_WEEK] = True
        return mask

    def contract(self) -> list[OpeningHours]:
        return [OpeningHours(weekday=d, opens=o, closes=c) for d, o, c in self.days]

    def as_json(self) -> list[dict]:
        return [{"weekday": d, "opens": o, "closes": c} for d, o, c in self.days]


def _evening_bar(rng: random.Random) -> WeeklyHours:
    opens = rng.choice(("15:00", "16:00", "16:00", "17:00", "18:00"))
    closes = rng.choice(("23:00", "00:00", "01:00", "01:00", "02:00"))
    weekend_close = rng.choice(("02:00", "03:00", "03:00", "04:00"))
    closed = {0} if rng.random() < 0.3 else set()
    if rng.random() < 0.1:
        closed.add(1)
    days = []
    for day in range(7):
        if day in closed:
            continue
        if day in (4, 5):  # Friday and Saturday nights run longer
            days.append((day, opens, weekend_close))
        elif day == 6:
            days.append((day, "14:00", rng.choice(("23:00", "00:00"))))
        else:
            days.append((day, opens, closes))
    return WeeklyHours(tuple(days))


def _late_club(rng: random.Random) -> WeeklyHours:
    closes = rng.choice(("04:00", "05:00"))
    return WeeklyHours(tuple((day, rng.choice(("20:00", "21:00")), closes) for day in (2, 3, 4, 5, 6)))


def _restaurant_bar(rng: random.Random) -> WeeklyHours:
    opens = rng.choice(("11:00", "12:00"))
    closes = rng.choice(("23:00", "00:00"))
    return WeeklyHours(tuple((day, opens, "01:00" if day in (4, 5) else closes) for day in range(7)))


def _hotel_bar(rng: random.Random) -> WeeklyHours:
    return WeeklyHours(tuple((day, "10:00", rng.choice(("02:00", "03:00"))) for day in range(7)))


_STYLES = ((_evening_bar, 0.62), (_late_club, 0.13), (_restaurant_bar, 0.2), (_hotel_bar, 0.05))


def weekly_hours_templates(seed: int, count: int = 48) -> tuple[WeeklyHours, ...]:
    """`count` realistic bar schedules drawn from the seed; venues pick one each.

    >>> templates = weekly_hours_templates(seed=1)
    >>> len(templates), templates == weekly_hours_templates(seed=1)
    (48, True)
    """
    rng = random.Random(f"{seed}:opening-hours")
    makers, weights = zip(*_STYLES)
    return tuple(rng.choices(makers, weights=weights)[0](rng) for _ in range(count))


# Paying customers relative to a venue's peak, by local hour and by weekday of the
# "bar night" (Saturday 01:00 still belongs to Friday night).
HOUR_PROFILE = (0.9, 0.75, 0.55, 0.4, 0.3, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2,
                0.25, 0.3, 0.3, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95, 1.0, 1.0)
WEEKDAY_FACTOR = (0.7, 0.75, 0.8, 0.9, 1.15, 1.25, 0.95)


def busy_slot_factors() -> list[float]:
    """How busy bars are in each slot of the week (local time): HOUR_PROFILE x WEEKDAY_FACTOR.

    >>> factors = busy_slot_factors()
    >>> factors[5 * 96 + 22 * 4] > factors[0 * 96 + 22 * 4] > factors[2 * 96 + 10 * 4]  # Sat, Mon, Wed am
    True
    """
    factors = []
    for slot in range(SLOTS_PER_WEEK):
        bar_night = (slot - 6 * 4) % SLOTS_PER_WEEK // SLOTS_PER_DAY  # six hours back
        factors.append(HOUR_PROFILE[slot % SLOTS_PER_DAY // 4] * WEEKDAY_FACTOR[bar_night])
    return factors


@lru_cache(maxsize=16)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def slot_of_week(moment: datetime, timezone: str) -> int:
    """The local slot of the week for a UTC moment in an IANA zone."""
    local = moment.astimezone(_zone(timezone))
    return local.weekday() * SLOTS_PER_DAY + local.hour * 4 + local.minute // SLOT_MINUTES
