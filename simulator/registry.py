"""The venue registry's snapshot: one `VenueRegistration` per venue, before the run starts.

Some rows may come wrapped in a Debezium change-event envelope (`op: c`), the way
a CDC pipeline from the registry database would publish them.

>>> import random
>>> from simulator.fleet import Fleet
>>> records = list(venue_records(Fleet(12, seed=1), "abc", 1_795_795_200_000, 0.0, random.Random(1)))
>>> len(records) == Fleet(12, seed=1).venues, records[0].key
(True, b'v-NG-0000000')
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import orjson

from schemas.countries import COUNTRIES
from simulator.catalog import COUNTRY_CODES
from simulator.event_json import debezium_envelope, venue_dict
from simulator.fleet import Fleet
from simulator.records import DEBEZIUM, NO_FLAGS, SimRecord


def venue_records(
    fleet: Fleet, tag: str, start_ms: int, debezium_share: float, rng: random.Random
) -> Iterator[SimRecord]:
    """Registrations updated a minute before `start_ms`, delivered 30 s before it."""
    updated = start_ms - 60_000
    hours = [schedule.as_json() for schedule in fleet.schedules]
    schedule_of = fleet.venue_schedule.tolist()
    first_of = fleet.venue_first.tolist()
    lats, lons = fleet.venue_lat.tolist(), fleet.venue_lon.tolist()
    for venue, (country, size) in enumerate(zip(fleet.venue_country.tolist(), fleet.venue_sizes.tolist())):
        code = COUNTRY_CODES[country]
        venue_id = f"v-{code}-{venue:07d}"
        jukebox_ids = [f"jb-{j:07d}" for j in range(first_of[venue], first_of[venue] + size)]
        row = venue_dict(f"vr-{tag}-{venue:x}", venue_id, jukebox_ids, code, lats[venue], lons[venue],
                         COUNTRIES[code].timezone, hours[schedule_of[venue]], updated)
        flags = NO_FLAGS
        if debezium_share and rng.random() < debezium_share:
            row, flags = debezium_envelope(row, updated), (DEBEZIUM,)
        yield SimRecord("venues", venue_id.encode(), orjson.dumps(row), start_ms - 30_000, flags)
