"""Every online feature, declared once: name, entity, window, type, unit, TTL, meaning.

The name is the Redis hash field and the model's input column, character for
character. Names follow `<entity>_<measure>_<window>`; units are in the measure
(`_km`, `_kmh`, `_usd`, `_s`) or given by `unit`.

Windows are bucketed sliding windows over event time: a window of width W with
bucket width b holds the W/b buckets ending with the bucket that contains the
entity's clock T (its latest event time). An event at t counts when
`T//b - W//b < t//b <= T//b`. `last` features hold the latest value by event time.

>>> FEATURES["device_plays_1h"].window_s, FEATURES["device_plays_1h"].bucket_s
(3600, 60)
>>> [f.name for f in features_of("customer")][:2]
['customer_payments_10m', 'customer_failed_payments_10m']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Entity = Literal["device", "customer"]
ValueType = Literal["int", "float", "currency_map"]

BUCKETS_PER_WINDOW = 60


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    entity: Entity
    window_s: int | None  # None: the latest value by event time ("last")
    value_type: ValueType
    unit: str
    ttl_s: int  # a value older than this (event-time age) is stale
    description: str

    @property
    def bucket_s(self) -> int | None:
        return None if self.window_s is None else self.window_s // BUCKETS_PER_WINDOW


M5, M10, H1, H6, H24 = 300, 600, 3600, 21_600, 86_400

# An entity silent for longer than this (event time) starts afresh at its next event: every
# window and the dedup horizon have emptied by then. A device keeps its venue and its last two
# location fixes (a late report may still pair with them; the location features ignore fixes
# over a day apart). Releasing an idle entity's state from memory then changes no output
# (`online_store.state_release`, which waits longer: lateness, skew and a partition margin).
IDLE_RESET_S = H24


def _f(name: str, window: int | None, value_type: ValueType, unit: str, ttl: int, text: str) -> Feature:
    entity = name.split("_", 1)[0]
    assert entity in ("device", "customer"), name
    return Feature(name, entity, window, value_type, unit, ttl, text)  # type: ignore[arg-type]


FEATURE_LIST: tuple[Feature, ...] = (
    # plays
    _f("device_plays_5m", M5, "int", "plays", M5, "Plays in the last 5 minutes"),
    _f("device_plays_1h", H1, "int", "plays", H1, "Plays in the last hour"),
    _f("device_plays_24h", H24, "int", "plays", H24, "Plays in the last 24 hours"),
    _f("device_distinct_songs_1h", H1, "int", "songs", H1, "Distinct songs played in the last hour"),
    _f("device_top_song_share_1h", H1, "float", "ratio", H1,
       "Share of the last hour's plays taken by its most played song (looping)"),
    _f("device_credits_used_1h", H1, "int", "credits", H1, "Credits spent on plays in the last hour"),
    _f("device_unpaid_plays_1h", H1, "int", "plays", H1,
       "Plays in the last hour that name no payment (free or tampered)"),
    _f("device_after_hours_plays_1h", H1, "int", "plays", H1,
       "Plays in the last hour in minutes when the venue is closed (venue local time)"),
    # payments (by jukebox)
    _f("device_payments_1h", H1, "int", "payments", H1, "Payment attempts in the last hour"),
    _f("device_failed_payments_1h", H1, "int", "payments", H1, "Failed payments in the last hour"),
    _f("device_payment_failure_ratio_1h", H1, "float", "ratio", H1,
       "Failed / all payment attempts in the last hour (0 when none)"),
    _f("device_credits_paid_1h", H1, "float", "credits", H1,
       "Credits bought by succeeded payments in the last hour, at the country's credit price"),
    _f("device_unpaid_credits_1h", H1, "float", "credits", H1,
       "Credits used minus credits paid in the last hour, floored at 0"),
    _f("device_unbacked_credits_1h", H1, "int", "credits", H1,
       "Credits used in the last hour by plays naming a payment id that no succeeded payment on "
       "this jukebox in the last 6 hours carries (invented or failed payments; credits bought "
       "earlier and played now are backed). Unset for 7 hours after a state from before "
       "this feature resumes"),
    _f("device_unbacked_payments_1h", H1, "int", "payments", H1,
       "Distinct payment ids behind device_unbacked_credits_1h: one for a payment record lost on "
       "its way, one per session for a box inventing them"),
    _f("device_revenue_usd_1h", H1, "float", "usd", H1, "Succeeded payments in the last hour, in USD"),
    _f("device_revenue_usd_24h", H24, "float", "usd", H24, "Succeeded payments in the last 24 hours, in USD"),
    _f("device_revenue_by_currency_24h", H24, "currency_map", "major units", H24,
       "Succeeded payments in the last 24 hours per currency, exact decimal text (JSON object)"),
    # location (latest by event time)
    _f("device_venue_distance_km_last", None, "float", "km", H24,
       "Distance of the latest location report (within a day of the latest event) from the venue"),
    _f("device_speed_kmh_last", None, "float", "km/h", H24,
       "Speed implied by the two latest location reports (unset when over 24 h apart)"),
    _f("device_location_gap_s_last", None, "float", "s", H24,
       "Time between the two latest location reports (unset when over 24 h apart)"),
    _f("device_location_accuracy_m_last", None, "float", "m", H24,
       "Reported accuracy of the latest location report (within a day of the latest event)"),
    # customers (the opaque payment account)
    _f("customer_payments_10m", M10, "int", "payments", M10, "Payment attempts in the last 10 minutes"),
    _f("customer_failed_payments_10m", M10, "int", "payments", M10, "Failed payments in the last 10 minutes"),
    _f("customer_distinct_devices_10m", M10, "int", "jukeboxes", M10,
       "Distinct jukeboxes paid on in the last 10 minutes"),
    _f("customer_distinct_countries_1h", H1, "int", "countries", H1,
       "Distinct venue countries paid in during the last hour"),
    _f("customer_max_venue_distance_km_10m", M10, "float", "km", M10,
       "Largest distance between venues paid at in the last 10 minutes"),
)

FEATURES: dict[str, Feature] = {f.name: f for f in FEATURE_LIST}
assert len(FEATURES) == len(FEATURE_LIST), "duplicate feature name"


def features_of(entity: Entity) -> tuple[Feature, ...]:
    return tuple(f for f in FEATURE_LIST if f.entity == entity)


NUMERIC_DEVICE_FEATURES: tuple[str, ...] = tuple(
    f.name for f in features_of("device") if f.value_type != "currency_map"
)
"""Device features a model may take as input columns, in a fixed order."""
