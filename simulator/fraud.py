"""Labelled fraud scenarios: episodes planned ahead, ground truth kept apart.

Each scenario is an episode with a start, an end and the entities involved. The
planner decides them from the seed; the simulation acts them out (extra
sessions, moved or spoofed GPS, a looped song) and publishes a `FraudLabel` per
jukebox involved on the labels topic, never inside the events themselves.
Scenario codes are `schemas.outputs.FraudReason` values.

>>> from datetime import UTC, datetime
>>> label = FraudLabel("song_looping", "jb-0000001", None, "v-KE-0000001",
...                    datetime(2026, 11, 27, 19, tzinfo=UTC), datetime(2026, 11, 27, 20, tzinfo=UTC),
...                    "ep-1")
>>> FraudLabel.from_json(label.json_bytes()) == label
True
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime

import orjson

from schemas.countries import COUNTRIES
from schemas.outputs import FraudReason
from schemas.types import format_utc
from simulator.catalog import COUNTRY_CODES, SongCatalog
from simulator.customers import customer_id, one_off_customer_id, pool_size
from simulator.fleet import Fleet
from simulator.geography import displaced, distance_km
from simulator.tastes import PRIME, TasteProfiles

SCENARIOS: tuple[str, ...] = (
    FraudReason.LOCATION_AWAY_FROM_VENUE.value,
    FraudReason.IMPOSSIBLE_TRAVEL.value,
    FraudReason.UNPAID_PLAYS.value,
    FraudReason.SONG_LOOPING.value,
    FraudReason.PAYMENT_TESTING.value,
    FraudReason.AFTER_HOURS_ACTIVITY.value,
    FraudReason.ACCOUNT_ON_DISTANT_JUKEBOXES.value,
)
MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
SLOT_MS = 15 * MINUTE_MS
TRANSPORT_KMH = 70.0  # a jukebox moved by road is unplugged on the way
PLANNING_ATTEMPTS = 40


@dataclass(frozen=True, slots=True)
class FraudLabel:
    scenario: str
    jukebox_id: str
    customer_id: str | None
    venue_id: str
    start: datetime
    end: datetime
    episode_id: str

    def json_bytes(self) -> bytes:
        return orjson.dumps({
            "scenario": self.scenario,
            "episode_id": self.episode_id,
            "jukebox_id": self.jukebox_id,
            "customer_id": self.customer_id,
            "venue_id": self.venue_id,
            "start": format_utc(self.start),
            "end": format_utc(self.end),
        })

    @classmethod
    def from_json(cls, raw: bytes) -> FraudLabel:
        value = orjson.loads(raw)
        for name in ("start", "end"):
            value[name] = datetime.fromisoformat(value[name])
        return cls(**value)


@dataclass(frozen=True, slots=True)
class ScriptedSession:
    """A session the scenario forces, on top of the fleet's normal customers."""

    at_ms: int
    jukebox: int
    customer_id: str | None  # None: credits appear with no payment at all (tampering)
    method: str = "coin"
    credits: int = 1
    status: str = "succeeded"
    fake_payment: bool = False  # plays name a payment id that was never made
    after_hours: bool = False  # the jukebox plays even though the venue is closed


@dataclass(frozen=True, slots=True)
class LocationOverride:
    jukebox: int
    start_ms: int
    end_ms: int
    lat: float
    lon: float
    alternate: bool = False  # every other report only (GPS spoofing), else all reports


@dataclass
class EpisodePlan:
    """Everything one episode changes, in times the planner fixed (epoch ms)."""

    scenario: str
    episode_id: str
    start_ms: int
    end_ms: int
    involved: list[tuple[int, str | None]]  # (jukebox, customer id or None) -> one label each
    sessions: list[ScriptedSession] = field(default_factory=list)
    locations: list[LocationOverride] = field(default_factory=list)
    power_off: list[tuple[int, int, int]] = field(default_factory=list)  # (jukebox, start, end)
    loops: list[tuple[int, int, int, int]] = field(default_factory=list)  # (jukebox, start, end, song)


def _nearest_foreign_country() -> dict[str, str]:
    nearest = {}
    for code, spec in COUNTRIES.items():
        others = [c for c in COUNTRIES if c != code]
        nearest[code] = min(others, key=lambda c: distance_km(*spec.center, *COUNTRIES[c].center))
    return nearest


NEAREST_FOREIGN_COUNTRY = _nearest_foreign_country()


class FraudPlanner:
    """Plans `count` episodes in a span, cycling through `scenarios` in seeded order."""

    def __init__(
        self, fleet: Fleet, catalog: SongCatalog, tastes: TasteProfiles, seed: int = 0,
        scenarios: tuple[str, ...] = SCENARIOS,
    ) -> None:
        unknown = set(scenarios) - set(SCENARIOS)
        if unknown or not scenarios:
            raise ValueError(f"unknown scenarios {sorted(unknown)}; choose from {SCENARIOS}")
        self.fleet, self.catalog, self.tastes = fleet, catalog, tastes
        self.seed = seed
        self.scenarios = scenarios

    def plan(self, span: int, start_ms: int, end_ms: int, count: int) -> list[EpisodePlan]:
        rng = random.Random(f"{self.seed}:fraud:{span}")
        taken: set[int] = set()  # one episode per jukebox per span: the truth stays unambiguous
        plans: list[EpisodePlan] = []
        order: list[str] = []
        for n in range(count):
            if not order:
                order = list(self.scenarios)
                rng.shuffle(order)
            scenario = order.pop()
            make = getattr(self, "_" + scenario)
            for _ in range(PLANNING_ATTEMPTS):
                plan = make(rng, f"ep-{self.seed}-{span}-{n}", start_ms, end_ms)
                if plan is not None and not {j for j, _ in plan.involved} & taken:
                    taken.update(j for j, _ in plan.involved)
                    plans.append(plan)
                    break
        return plans

    # --- helpers --------------------------------------------------------------
    def _jukebox(self, rng: random.Random) -> tuple[int, int]:
        jukebox = rng.randrange(self.fleet.jukeboxes)
        return jukebox, self.fleet.venue_of(jukebox)

    def _open_throughout(self, venue: int, start_ms: int, end_ms: int, want_open: bool = True) -> bool:
        moments = [*range(start_ms, end_ms, SLOT_MS), end_ms]
        return all(self.fleet.open_at(venue, t) is want_open for t in moments)

    def _regular(self, rng: random.Random, venue: int) -> str:
        members = pool_size(int(self.fleet.venue_sizes[venue]))
        return customer_id(self.seed, venue, int(members * rng.random() ** 2))

    def _song_of(self, rng: random.Random, venue: int) -> int:
        country = COUNTRY_CODES[self.fleet.venue_country[venue]]
        genre = self.tastes.genre_index(country, int(self.fleet.venue_taste[venue]), PRIME, rng.random())
        return self.catalog.song_index(country, genre, rng.random() * 0.3)  # a popular song

    @staticmethod
    def _every(rng: random.Random, start_ms: int, end_ms: int, low_min: float, high_min: float) -> list[int]:
        times, t = [], start_ms + int(rng.uniform(0, low_min) * MINUTE_MS)
        while t < end_ms:
            times.append(t)
            t += int(rng.uniform(low_min, high_min) * MINUTE_MS)
        return times

    # --- scenarios (one method per code) --------------------------------------
    def _location_away_from_venue(self, rng, episode, lo, hi):
        jukebox, venue = self._jukebox(rng)
        away_km = math.exp(rng.uniform(math.log(30.0), math.log(300.0)))
        travel_ms = int(away_km / TRANSPORT_KMH * HOUR_MS) + 10 * MINUTE_MS
        depart = rng.randrange(lo, max(lo + 1, hi - travel_ms - HOUR_MS))
        arrive = depart + travel_ms
        leave = arrive + int(rng.uniform(3, 8) * HOUR_MS)
        lat, lon = displaced(float(self.fleet.venue_lat[venue]), float(self.fleet.venue_lon[venue]),
                             away_km, rng.uniform(0, 360))
        return EpisodePlan(
            FraudReason.LOCATION_AWAY_FROM_VENUE.value, episode, arrive, leave, [(jukebox, None)],
            locations=[LocationOverride(jukebox, arrive, leave, round(lat, 6), round(lon, 6))],
            power_off=[(jukebox, depart, arrive), (jukebox, leave, leave + travel_ms)],
        )

    def _impossible_travel(self, rng, episode, lo, hi):
        jukebox, venue = self._jukebox(rng)
        start = rng.randrange(lo, max(lo + 1, hi - HOUR_MS))
        end = start + int(rng.uniform(60, 120) * MINUTE_MS)
        # 200+ km between reports 15 minutes apart: at least 800 km/h.
        lat, lon = displaced(float(self.fleet.venue_lat[venue]), float(self.fleet.venue_lon[venue]),
                             rng.uniform(200.0, 1500.0), rng.uniform(0, 360))
        return EpisodePlan(
            FraudReason.IMPOSSIBLE_TRAVEL.value, episode, start, end, [(jukebox, None)],
            locations=[LocationOverride(jukebox, start, end, round(lat, 6), round(lon, 6), alternate=True)],
        )

    def _open_window(self, rng, venue, lo, hi, low_min, high_min) -> tuple[int, int] | None:
        length = int(rng.uniform(low_min, high_min) * MINUTE_MS)
        start = rng.randrange(lo, max(lo + 1, hi - length // 2))
        if not self._open_throughout(venue, start, start + length):
            return None
        return start, start + length

    def _unpaid_plays(self, rng, episode, lo, hi):
        jukebox, venue = self._jukebox(rng)
        window = self._open_window(rng, venue, lo, hi, 60, 180)
        if window is None:
            return None
        fake = rng.random() < 0.3  # a tampered box that invents payment ids
        sessions = [
            ScriptedSession(t, jukebox, None, credits=rng.randint(2, 4), fake_payment=fake)
            for t in self._every(rng, *window, 3, 6)
        ]
        return EpisodePlan(FraudReason.UNPAID_PLAYS.value, episode, *window, [(jukebox, None)],
                           sessions=sessions)

    def _song_looping(self, rng, episode, lo, hi):
        jukebox, venue = self._jukebox(rng)
        window = self._open_window(rng, venue, lo, hi, 60, 120)
        if window is None:
            return None
        looper = self._regular(rng, venue)
        sessions = [
            ScriptedSession(t, jukebox, looper, method="coin", credits=rng.randint(2, 4))
            for t in self._every(rng, *window, 4, 7)
        ]
        return EpisodePlan(FraudReason.SONG_LOOPING.value, episode, *window, [(jukebox, None)],
                           sessions=sessions, loops=[(jukebox, *window, self._song_of(rng, venue))])

    def _payment_testing(self, rng, episode, lo, hi):
        jukebox, venue = self._jukebox(rng)
        window = self._open_window(rng, venue, lo, hi, 4, 12)
        if window is None:
            return None
        start, end = window
        country = COUNTRY_CODES[self.fleet.venue_country[venue]]
        devices = [jukebox]
        candidates = self.fleet.venues_in(country)
        for _ in range(rng.randint(2, 5)):
            other = int(candidates[rng.randrange(len(candidates))])
            if self._open_throughout(other, start, end):
                devices.append(self.fleet.jukeboxes_of(other)[0])
        devices = sorted(set(devices))
        if len(devices) < 3:
            return None
        tester = one_off_customer_id(self.seed, episode)
        method = rng.choice(("card", "mobile_money"))
        times = sorted(rng.randrange(start, end) for _ in range(rng.randint(12, 30)))
        sessions = [
            ScriptedSession(t, devices[i % len(devices)] if i < len(devices) else rng.choice(devices),
                            tester, method=method, credits=1,
                            status="failed" if rng.random() < 0.85 else "succeeded")
            for i, t in enumerate(times)
        ]
        return EpisodePlan(FraudReason.PAYMENT_TESTING.value, episode, times[0], times[-1],
                           [(d, tester) for d in devices], sessions=sessions)

    def _after_hours_activity(self, rng, episode, lo, hi):
        jukebox, venue = self._jukebox(rng)
        length = int(rng.uniform(45, 120) * MINUTE_MS)
        start = rng.randrange(lo, max(lo + 1, hi - length // 2))
        # Closed since well before (no queue left over from closing time) and throughout.
        if not self._open_throughout(venue, start - 45 * MINUTE_MS, start + length, want_open=False):
            return None
        staff = self._regular(rng, venue) if rng.random() < 0.5 else None
        sessions = [
            ScriptedSession(t, jukebox, staff, method="coin", credits=rng.randint(2, 5), after_hours=True)
            for t in self._every(rng, start, start + length, 4, 8)
        ]
        return EpisodePlan(FraudReason.AFTER_HOURS_ACTIVITY.value, episode, start, start + length,
                           [(jukebox, None)], sessions=sessions)

    def _account_on_distant_jukeboxes(self, rng, episode, lo, hi):
        jukebox, venue = self._jukebox(rng)
        start = rng.randrange(lo, max(lo + 1, hi - HOUR_MS))
        hop = int(rng.uniform(2, 15) * MINUTE_MS)
        home_country = COUNTRY_CODES[self.fleet.venue_country[venue]]
        far = self.fleet.venues_in(NEAREST_FOREIGN_COUNTRY[home_country])
        if not len(far):
            return None
        other_venue = int(far[rng.randrange(len(far))])
        other = self.fleet.jukeboxes_of(other_venue)[0]
        if not (self._open_throughout(venue, start, start + 2 * hop)
                and self._open_throughout(other_venue, start + hop, start + hop)):
            return None
        victim = self._regular(rng, venue)
        method = "card" if rng.random() < 0.6 else "mobile_money"
        sessions = [
            ScriptedSession(start, jukebox, victim, method=method, credits=rng.choice((2, 3, 5))),
            ScriptedSession(start + hop, other, victim, method=method, credits=rng.choice((3, 5, 10))),
        ]
        if rng.random() < 0.5:
            sessions.append(ScriptedSession(start + 2 * hop, jukebox, victim, method=method, credits=2))
        end = sessions[-1].at_ms
        return EpisodePlan(FraudReason.ACCOUNT_ON_DISTANT_JUKEBOXES.value, episode, start, end,
                           [(jukebox, victim), (other, victim)], sessions=sessions)
