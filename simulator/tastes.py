"""Music tastes: what each country, venue and hour of the night plays.

Every country has a genre mix; a venue follows one of a few taste profiles drawn
around its country's mix (so a million venues share ~100 profiles). The mix
moves with the night: energetic genres gain late, mellow ones early. A
`TasteShift` says "from time t, venue V plays mostly genre G", the knob
recommendation tests turn.

>>> from simulator.catalog import SongCatalog
>>> profiles = TasteProfiles(SongCatalog(songs=300, artists=60, seed=3), seed=3)
>>> genre = profiles.genre_index("TZ", profile=0, daypart=PRIME, u=0.5)
>>> GENRES[genre].name in {"bongo_flava", "taarab", "afrobeats", "gospel", "amapiano", "hip_hop"}
True
"""

from __future__ import annotations

import bisect
import itertools
import random
from dataclasses import dataclass
from datetime import datetime

from simulator.catalog import GENRE_INDEX, GENRES, SongCatalog

EARLY, PRIME, LATE = 0, 1, 2  # before 19:00, 19:00-23:00, after 23:00 (local)
DAYPARTS = (EARLY, PRIME, LATE)

COUNTRY_GENRE_MIX: dict[str, dict[str, float]] = {
    "NG": {"afrobeats": 45, "highlife": 8, "hip_hop": 12, "rnb": 10, "gospel": 12, "amapiano": 10, "bongo_flava": 3},
    "GH": {"afrobeats": 30, "highlife": 25, "hip_hop": 10, "gospel": 15, "rnb": 8, "amapiano": 8, "mbalax": 2},
    "KE": {"bongo_flava": 25, "afrobeats": 20, "gospel": 15, "hip_hop": 12, "rnb": 10, "taarab": 5, "amapiano": 10},
    "TZ": {"bongo_flava": 45, "taarab": 12, "afrobeats": 12, "gospel": 12, "amapiano": 8, "hip_hop": 6},
    "UG": {"afrobeats": 30, "bongo_flava": 20, "gospel": 20, "rnb": 10, "hip_hop": 10, "amapiano": 10},
    "ZA": {"amapiano": 40, "gqom": 15, "hip_hop": 15, "gospel": 12, "rnb": 10, "afrobeats": 8},
    "EG": {"mahraganat": 35, "chaabi": 30, "hip_hop": 15, "rnb": 8, "rai": 7, "afrobeats": 5},
    "MA": {"rai": 35, "chaabi": 30, "hip_hop": 15, "rnb": 8, "mahraganat": 7, "afrobeats": 5},
    "SN": {"mbalax": 50, "afrobeats": 15, "hip_hop": 15, "rnb": 8, "gospel": 4, "highlife": 4, "rai": 4},
    "ET": {"ethio_jazz": 40, "gospel": 15, "hip_hop": 12, "rnb": 12, "afrobeats": 12, "bongo_flava": 4, "amapiano": 5},
}


def daypart_of_hour(local_hour: int) -> int:
    """EARLY, PRIME or LATE for a local hour.

    >>> [daypart_of_hour(h) for h in (17, 21, 1)]
    [0, 1, 2]
    """
    if 6 <= local_hour < 19:
        return EARLY
    return PRIME if 19 <= local_hour < 23 else LATE


@dataclass(frozen=True, slots=True)
class TasteShift:
    """From `start`, `share` of the venue's plays pick `genre` (the rest follow its taste)."""

    venue_id: str
    start: datetime
    genre: str
    share: float = 0.8

    def __post_init__(self) -> None:
        if self.genre not in GENRE_INDEX:
            raise ValueError(f"unknown genre {self.genre!r}; one of {sorted(GENRE_INDEX)}")
        if self.start.tzinfo is None:
            raise ValueError("TasteShift.start must be timezone-aware (UTC)")
        if not 0.0 < self.share <= 1.0:
            raise ValueError("share must be in (0, 1]")


class TasteProfiles:
    """`per_country` genre mixes per country, each drawn around the country mix."""

    def __init__(self, catalog: SongCatalog, seed: int = 0, per_country: int = 12) -> None:
        rng = random.Random(f"{seed}:tastes")
        self.per_country = per_country
        self._cumulative: dict[tuple[str, int, int], list[float]] = {}
        for country, mix in COUNTRY_GENRE_MIX.items():
            licensed = catalog.licensed_genres(country)
            for profile in range(per_country):
                # Lognormal noise keeps the country's character but makes venues differ;
                # a small floor lets any licensed genre turn up now and then.
                base = [
                    (mix.get(g.name, 0.0) * rng.lognormvariate(0.0, 0.6) + 0.4) * licensed[i]
                    for i, g in enumerate(GENRES)
                ]
                for daypart in DAYPARTS:
                    weights = [w * self._daypart_factor(g.energy, daypart) for w, g in zip(base, GENRES)]
                    self._cumulative[(country, profile, daypart)] = list(itertools.accumulate(weights))

    @staticmethod
    def _daypart_factor(energy: float, daypart: int) -> float:
        if daypart == EARLY:
            return 1.3 - 0.6 * energy
        return 1.0 if daypart == PRIME else 0.6 + 0.8 * energy

    def genre_weights(self, country: str, profile: int, daypart: int) -> list[float]:
        cumulative = self._cumulative[(country, profile, daypart)]
        return [b - a for a, b in zip([0.0, *cumulative[:-1]], cumulative)]

    def genre_index(self, country: str, profile: int, daypart: int, u: float) -> int:
        """The genre for a uniform draw `u` in [0, 1)."""
        cumulative = self._cumulative[(country, profile, daypart)]
        return min(bisect.bisect_right(cumulative, u * cumulative[-1]), len(GENRES) - 1)
