"""An independent, deliberately naive recomputation of every feature from raw events.

Written from the definitions in online_store/definitions.py (not from the
incremental code): for each entity, take its unique events, find its clock T, and
count what falls in each window with plain loops. Tests compare the engine's
values (in Redis, or from the pure logic) with these.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from math import asin, cos, radians, sin, sqrt
from zoneinfo import ZoneInfo

from schemas.countries import CURRENCIES
from schemas.events import DeviceLocationEvent, PaymentEvent, PlayEvent, VenueRegistration


def _km(lat1, lon1, lat2, lon2):
    p1, p2 = radians(lat1), radians(lat2)
    a = sin((p2 - p1) / 2) ** 2 + cos(p1) * cos(p2) * sin(radians(lon2 - lon1) / 2) ** 2
    return 2 * 6371.0088 * asin(min(1.0, sqrt(a)))


def _in_window(t: datetime, clock: datetime, window_s: int) -> bool:
    bucket = window_s // 60
    head = int(clock.timestamp()) // bucket
    b = int(t.timestamp()) // bucket
    return head - 60 < b <= head


def _is_open(venue: VenueRegistration, t: datetime) -> bool:
    minute_start = datetime.fromtimestamp(int(t.timestamp()) // 60 * 60, tz=UTC)
    local = minute_start.astimezone(ZoneInfo(venue.timezone))
    minute = local.weekday() * 1440 + local.hour * 60 + local.minute
    for day in venue.opening_hours:
        oh, om = map(int, day.opens.split(":"))
        ch, cm = map(int, day.closes.split(":"))
        start = day.weekday * 1440 + oh * 60 + om
        end = day.weekday * 1440 + ch * 60 + cm
        if end <= start:
            end += 1440
        for shift in (0, -7 * 1440):
            if start + shift <= minute < end + shift:
                return True
    return False


def _usd(minor_by_currency):
    total = Decimal(0)
    for cur, minor in sorted(minor_by_currency.items()):
        total += Decimal(minor).scaleb(-CURRENCIES[cur].minor_units) * CURRENCIES[cur].usd_per_unit
    return float(total)


def _credits(minor_by_currency):
    total = Decimal(0)
    for cur, minor in sorted(minor_by_currency.items()):
        total += Decimal(minor).scaleb(-CURRENCIES[cur].minor_units) / CURRENCIES[cur].credit_price
    return float(total)


@dataclass
class Expected:
    device: dict[str, dict]
    customer: dict[str, dict]


def expected_features(events, venues: list[VenueRegistration]) -> Expected:
    """Features every entity should end with, given all admitted events (duplicates allowed)."""
    unique = {}
    for e in events:
        unique.setdefault((e.kind, e.event_id), e)
    by_device: dict[str, list] = defaultdict(list)
    for e in unique.values():
        by_device[e.jukebox_id].append(e)
    venue_of: dict[str, VenueRegistration] = {}
    for reg in sorted(venues, key=lambda v: v.updated_at):
        for jb in reg.jukebox_ids:
            venue_of[jb] = reg
            if not reg.active:
                venue_of.pop(jb)
    device = {jb: _device(evts, venue_of.get(jb)) for jb, evts in by_device.items()}
    payments_by_customer: dict[str, list] = defaultdict(list)
    for e in unique.values():
        if isinstance(e, PaymentEvent):
            payments_by_customer[e.customer_id].append(e)
    customer = {c: _customer(pays, venue_of) for c, pays in payments_by_customer.items()}
    return Expected(device, customer)


def _device(events, venue: VenueRegistration | None) -> dict:
    clock = max(e.event_time for e in events)
    plays = [e for e in events if isinstance(e, PlayEvent)]
    pays = [e for e in events if isinstance(e, PaymentEvent)]
    fixes = sorted((e for e in events if isinstance(e, DeviceLocationEvent)), key=lambda e: e.reported_at)
    plays_1h = [p for p in plays if _in_window(p.played_at, clock, 3600)]
    songs = Counter(p.song_id for p in plays_1h)
    pays_1h = [p for p in pays if _in_window(p.occurred_at, clock, 3600)]
    paid_1h: Counter = Counter()
    paid_24h: Counter = Counter()
    for p in pays:
        if p.status == "succeeded":
            if _in_window(p.occurred_at, clock, 3600):
                paid_1h[p.currency] += p.amount_minor
            if _in_window(p.occurred_at, clock, 86400):
                paid_24h[p.currency] += p.amount_minor
    paid_ids_6h = {p.payment_id for p in pays
                   if p.status == "succeeded" and _in_window(p.occurred_at, clock, 6 * 3600)}
    unbacked = [p for p in plays_1h if p.payment_id is not None and p.credits_used
                and p.payment_id not in paid_ids_6h]
    failed = sum(1 for p in pays_1h if p.status == "failed")
    credits_used = sum(p.credits_used for p in plays_1h)
    values = {
        "device_plays_5m": sum(1 for p in plays if _in_window(p.played_at, clock, 300)),
        "device_plays_1h": len(plays_1h),
        "device_plays_24h": sum(1 for p in plays if _in_window(p.played_at, clock, 86400)),
        "device_distinct_songs_1h": len(songs),
        "device_top_song_share_1h": max(songs.values()) / len(plays_1h) if plays_1h else 0.0,
        "device_credits_used_1h": credits_used,
        "device_unpaid_plays_1h": sum(1 for p in plays_1h if p.payment_id is None),
        "device_after_hours_plays_1h": sum(1 for p in plays_1h if venue and not _is_open(venue, p.played_at)),
        "device_payments_1h": len(pays_1h),
        "device_failed_payments_1h": failed,
        "device_payment_failure_ratio_1h": failed / len(pays_1h) if pays_1h else 0.0,
        "device_credits_paid_1h": _credits(paid_1h),
        "device_unpaid_credits_1h": max(0.0, credits_used - _credits(paid_1h)),
        "device_unbacked_credits_1h": sum(p.credits_used for p in unbacked),
        "device_unbacked_payments_1h": len({p.payment_id for p in unbacked}),
        "device_revenue_usd_1h": _usd(paid_1h),
        "device_revenue_usd_24h": _usd(paid_24h),
    }
    latest = fixes[-1] if fixes else None
    previous = fixes[-2] if len(fixes) > 1 else None
    if latest is not None and (clock - latest.reported_at).total_seconds() > 24 * 3600:
        latest = previous = None  # no report within a day of the jukebox's latest event
    values["device_venue_distance_km_last"] = (
        _km(latest.lat, latest.lon, venue.lat, venue.lon) if latest and venue else None
    )
    gap = (latest.reported_at - previous.reported_at).total_seconds() if previous else None
    if gap is not None and gap > 24 * 3600:
        gap = None  # reports a day apart are not "consecutive": no gap, no speed
    values["device_location_gap_s_last"] = gap
    values["device_speed_kmh_last"] = (
        _km(previous.lat, previous.lon, latest.lat, latest.lon) / (gap / 3600) if gap else None
    )
    values["device_location_accuracy_m_last"] = latest.accuracy_m if latest else None
    return values


def _customer(payments, venue_of) -> dict:
    clock = max(p.occurred_at for p in payments)
    in_10m = [p for p in payments if _in_window(p.occurred_at, clock, 600)]
    points = set()
    for p in in_10m:
        venue = venue_of.get(p.jukebox_id)
        if venue is not None:
            points.add((venue.lat, venue.lon))
    points_list = sorted(points)
    far = 0.0
    for i, a in enumerate(points_list):
        for b in points_list[i + 1 :]:
            far = max(far, _km(*a, *b))
    return {
        "customer_payments_10m": len(in_10m),
        "customer_failed_payments_10m": sum(1 for p in in_10m if p.status == "failed"),
        "customer_distinct_devices_10m": len({p.jukebox_id for p in in_10m}),
        "customer_distinct_countries_1h": len(
            {CURRENCIES[p.currency].code for p in payments if _in_window(p.occurred_at, clock, 3600)}
        ),
        "customer_max_venue_distance_km_10m": far,
    }


def mismatches(expected: dict, actual: dict, rel: float = 1e-9) -> list[str]:
    """Feature names whose values differ (floats compared with a tiny relative tolerance)."""
    bad = []
    for name, want in expected.items():
        got = actual.get(name)
        if want is None or got is None:
            if want != got:
                bad.append(f"{name}: want {want!r} got {got!r}")
        elif abs(float(want) - float(got)) > rel * max(1.0, abs(float(want))):
            bad.append(f"{name}: want {want!r} got {got!r}")
    return bad
