"""Small seeded event sets for unit and dataflow tests (the simulator makes the big ones)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from schemas.events import DeviceLocationEvent, PaymentEvent, PlayEvent, VenueRegistration

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
VENUE = VenueRegistration(
    event_id="v-1", venue_id="v1", jukebox_ids=["jb-0", "jb-1", "jb-2"], country="KE", lat=-1.29,
    lon=36.82, timezone="Africa/Nairobi", updated_at="2026-11-01T00:00:00Z",
    opening_hours=[{"weekday": d, "opens": "17:00", "closes": "01:30"} for d in range(7)],
)


def sample_events(rnd: random.Random, n: int, span_s: int, jukeboxes: int = 3, customers: int = 3) -> list:
    """`n` random plays, payments and location reports over `span_s` seconds from T0."""
    events = []
    paid_on: dict[str, list[str]] = {}  # a jukebox's payment ids so far (any status, any time)
    for i in range(n):
        jb = f"jb-{rnd.randrange(jukeboxes)}"
        t = T0 + timedelta(seconds=rnd.randrange(span_s), microseconds=rnd.randrange(10**6))
        kind = rnd.random()
        if kind < 0.5:
            events.append(PlayEvent(event_id=f"p{i}", jukebox_id=jb, venue_id="v1",
                                    song_id=f"s{rnd.randrange(6)}", played_at=t,
                                    credits_used=rnd.randrange(4),
                                    payment_id=None if rnd.random() < 0.3 else _named_payment(i, paid_on.get(jb))))
        elif kind < 0.8:
            currency = rnd.choice(["KES", "KES", "UGX", "XOF"])
            amount = rnd.choice(["20", "40", "60.50"] if currency == "KES" else ["1000", "2500"])
            paid_on.setdefault(jb, []).append(f"pay{i}")
            events.append(PaymentEvent(
                event_id=f"m{i}", payment_id=f"pay{i}", jukebox_id=jb, venue_id="v1",
                customer_id=f"c{rnd.randrange(customers)}", amount=amount, currency=currency,
                method="mobile_money", status=rnd.choice(["succeeded", "succeeded", "failed", "reversed"]),
                occurred_at=t))
        else:
            events.append(DeviceLocationEvent(event_id=f"l{i}", jukebox_id=jb,
                                              lat=-1.29 + rnd.uniform(-1, 1), lon=36.82 + rnd.uniform(-1, 1),
                                              accuracy_m=rnd.uniform(3, 50), reported_at=t))
    return events


def _named_payment(i: int, paid: list[str] | None) -> str:
    """One of the jukebox's last few payments (earlier or later in event time, possibly
    failed), or one nobody made: no random draw, so the other values stay as they were."""
    if not paid or i % 5 == 0:
        return f"pay{i}"
    return paid[-1 - i % min(3, len(paid))]



def venues_for(jukeboxes: int, per_venue: int = 50) -> list[VenueRegistration]:
    """Venues listing jukeboxes jb-0 .. jb-(n-1), `per_venue` each (a registration lists <= 64)."""
    return [
        VENUE.model_copy(update={
            "event_id": f"v-{start}", "venue_id": f"v{start}",
            "lat": VENUE.lat + (start // per_venue % 50) / 20,  # venues ~5 km apart
            "jukebox_ids": [f"jb-{i}" for i in range(start, min(jukeboxes, start + per_venue))],
        })
        for start in range(0, jukeboxes, per_venue)
    ]
