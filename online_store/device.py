"""Per-jukebox ("device") features: pure state in, state and outputs out.

`update_device(state, item)` has the shape of Bytewax's `stateful_map`: it takes
the jukebox's state (or None) and one decoded play, payment, location report or
venue reference, and returns the new state and what to emit: a `FeatureRow` with
every device feature as of the jukebox's clock (its latest event time), and for a
payment the `CustomerPayment` that feeds the paying customer's features.

The final values depend only on the *set* of events, not their order: windows
advance with the clock and are summed incrementally, duplicates (same event id)
are applied once, location features keep the two latest reports by event time,
and the venue is the registration with the latest `updated_at`.

>>> from schemas.events import PlayEvent
>>> state, out = update_device(None, PlayEvent(event_id="p1", jukebox_id="jb-1",
...     venue_id="v1", song_id="s1", played_at="2026-11-23T20:00:00Z", credits_used=2))
>>> row = out[0]
>>> row.values["device_plays_1h"], row.values["device_unpaid_plays_1h"], row.version
(1, 1, 1)
>>> update_device(state, PlayEvent(event_id="p1", jukebox_id="jb-1", venue_id="v1",
...     song_id="s1", played_at="2026-11-23T20:00:00Z", credits_used=2))[1]  # duplicate
[]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from online_store.customer import CustomerPayment, VenueLocated
from online_store.dedup import SeenEvents, event_digest
from online_store.definitions import H1, H6, H24, IDLE_RESET_S, M5
from online_store.feature_row import FeatureRow, FeatureValue
from online_store.geo import haversine_km
from online_store.payments import credits_paid, currency_map_json, revenue_usd
from online_store.snapshot_form import (
    Window,
    time_form,
    time_from,
    window_as,
    window_form,
    window_from,
)
from online_store.text_windows import SlidingTextSet
from online_store.venues import VenueAssignment, VenueRef
from online_store.windows import SlidingCounter, SlidingIdCounter, SlidingSet, SlidingSum
from schemas.countries import CURRENCIES
from schemas.events import DeviceLocationEvent, PaymentEvent, PaymentStatus, PlayEvent

DeviceInput = PlayEvent | PaymentEvent | DeviceLocationEvent | VenueAssignment


_IDLE_RESET = timedelta(seconds=IDLE_RESET_S)


@dataclass(frozen=True, slots=True)
class LocationFix:
    t: datetime  # event time
    lat: float
    lon: float
    accuracy_m: float


@dataclass(slots=True)
class DeviceState:
    jukebox_id: str
    version: int = 0
    clock: datetime | None = None
    venue: VenueRef | None = None
    seen: SeenEvents = field(default_factory=lambda: SeenEvents(horizon_s=H24))
    plays_5m: SlidingSum = field(default_factory=lambda: SlidingSum(M5))
    plays_1h: SlidingSum = field(default_factory=lambda: SlidingSum(H1))
    plays_24h: SlidingSum = field(default_factory=lambda: SlidingSum(H24))
    credits_used_1h: SlidingSum = field(default_factory=lambda: SlidingSum(H1))
    unpaid_plays_1h: SlidingSum = field(default_factory=lambda: SlidingSum(H1))
    after_hours_plays_1h: SlidingSum = field(default_factory=lambda: SlidingSum(H1))
    songs_1h: SlidingIdCounter = field(default_factory=lambda: SlidingIdCounter(H1))  # by song digest
    payments_1h: SlidingSum = field(default_factory=lambda: SlidingSum(H1))
    failed_payments_1h: SlidingSum = field(default_factory=lambda: SlidingSum(H1))
    paid_minor_1h: SlidingCounter = field(default_factory=lambda: SlidingCounter(H1))
    paid_minor_24h: SlidingCounter = field(default_factory=lambda: SlidingCounter(H24))
    # the day's payers, read only when the venue moves (VenueLocated): held as text
    payers_24h: SlidingTextSet = field(default_factory=lambda: SlidingTextSet(H24))
    # credits of the hour's plays by the payment id they name, and the ids paid lately
    credits_by_payment_1h: SlidingCounter = field(default_factory=lambda: SlidingCounter(H1))
    paid_ids_6h: SlidingSet = field(default_factory=lambda: SlidingSet(H6))
    # The clock (s) at which a state from before those two windows resumed: until their
    # horizon has passed it, an id missing from `paid_ids_6h` may have been paid unseen.
    backed_since_s: int | None = None
    latest_fix: LocationFix | None = None
    previous_fix: LocationFix | None = None
    # (latest fix, previous fix, venue, stale, values): location values change only with
    # those, and are read for every event. Not saved in a snapshot.
    location_cache: tuple | None = field(default=None, compare=False, repr=False)

    def __reduce__(self):
        # Flat, primitives only (online_store/snapshot_form.py): paid about once per event.
        return (_device_state, (
            self.jukebox_id, self.version, time_form(self.clock), _venue_form(self.venue),
            self.seen, tuple(window_form(getattr(self, name)) for name in _WINDOWS),
            _fix_form(self.latest_fix), _fix_form(self.previous_fix), self.backed_since_s))

    @property
    def clock_s(self) -> int | None:
        return None if self.clock is None else int(self.clock.timestamp())

    def _windows(self) -> tuple[Window, ...]:
        return (
            self.plays_5m, self.plays_1h, self.plays_24h, self.credits_used_1h,
            self.unpaid_plays_1h, self.after_hours_plays_1h, self.songs_1h, self.payments_1h,
            self.failed_payments_1h, self.paid_minor_1h, self.paid_minor_24h, self.payers_24h,
            self.credits_by_payment_1h, self.paid_ids_6h,
        )

    def advance_to(self, event_time: datetime) -> None:
        if self.clock is not None and event_time <= self.clock:
            return
        self.clock = event_time
        clock_s = int(event_time.timestamp())
        for window in self._windows():
            window.advance(clock_s)
        self.seen.forget_before(clock_s)


def _venue_form(venue: VenueRef | None) -> tuple | None:
    if venue is None:
        return None
    return (venue.venue_id, venue.country, venue.lat, venue.lon, venue.timezone,
            venue.open_intervals, venue.updated_at_s, venue.active)


def _fix_form(fix: LocationFix | None) -> tuple | None:
    return None if fix is None else (time_form(fix.t), fix.lat, fix.lon, fix.accuracy_m)


def _fix_from(form: tuple | None) -> LocationFix | None:
    return None if form is None else LocationFix(time_from(form[0]), *form[1:])


def _device_state(jukebox_id: str, version: int, clock_us: int | None, venue: tuple | None,
                  seen: SeenEvents, windows: tuple, latest: tuple | None,
                  previous: tuple | None, backed_since_s: int | None = None) -> DeviceState:
    restored = {name: window_as(window_from(form), _WINDOW_KINDS[name])
                for name, form in zip(_WINDOWS[:len(windows)], windows, strict=True)}
    if len(windows) < len(_WINDOWS) and clock_us is not None:
        backed_since_s = clock_us // 1_000_000  # a snapshot from before the backing windows
    return DeviceState(jukebox_id, version, time_from(clock_us),
                       None if venue is None else VenueRef(*venue), seen,
                       latest_fix=_fix_from(latest), previous_fix=_fix_from(previous),
                       backed_since_s=backed_since_s, **restored)


_WINDOWS = (  # every window of a DeviceState, as saved in its snapshot (new ones go last)
    "plays_5m", "plays_1h", "plays_24h", "credits_used_1h", "unpaid_plays_1h", "after_hours_plays_1h",
    "songs_1h", "payments_1h", "failed_payments_1h", "paid_minor_1h", "paid_minor_24h", "payers_24h",
    "credits_by_payment_1h", "paid_ids_6h")
_WINDOW_KINDS = {name: type(getattr(DeviceState(""), name)) for name in _WINDOWS}


def update_device(state: DeviceState | None, item: DeviceInput) -> tuple[DeviceState, list]:
    """Apply one input to a jukebox's state; return the state and the outputs to emit."""
    state, changed, extra = applied_device_input(state, item)
    return state, [device_row(state), *extra] if changed else extra


def applied_device_input(state: DeviceState | None, item: DeviceInput) -> tuple[DeviceState, bool, list]:
    """`update_device` without building the row: (state, whether the jukebox's row is
    due, the other outputs). A caller applying several inputs builds one row at the end."""
    if state is None:
        state = DeviceState(jukebox_id=item.jukebox_id)
    if isinstance(item, VenueAssignment):
        located = _apply_venue(state, item.venue)
        # same version: the last write at it wins
        return state, located is not None and state.clock is not None, located or []
    event_s = int(item.event_time.timestamp())
    if state.clock is not None and event_s - state.clock_s > IDLE_RESET_S:
        state = DeviceState(jukebox_id=state.jukebox_id, venue=state.venue,  # see IDLE_RESET_S
                            latest_fix=state.latest_fix, previous_fix=state.previous_fix)
    if not state.seen.first_sighting(f"{item.kind}:{item.event_id}", event_s):
        return state, False, []
    state.advance_to(item.event_time)
    # The version counts distinct events, whether or not they changed a value, so an
    # entity's final version is the same in any order (the upsert guard relies on it).
    state.version += 1
    if isinstance(item, PlayEvent):
        _apply_play(state, item, event_s)
        return state, True, []
    if isinstance(item, PaymentEvent):
        _apply_payment(state, item, event_s)
        return state, True, [_customer_payment(state, item)]
    _apply_location(state, item)
    return state, True, []


def _apply_play(state: DeviceState, play: PlayEvent, t: int) -> None:
    if not state.plays_24h.add(t):
        return  # older than every window: it can no longer change a value
    state.plays_5m.add(t)
    if state.plays_1h.add(t):
        state.credits_used_1h.add(t, play.credits_used)
        state.songs_1h.add(t, event_digest(play.song_id))
        if play.payment_id is None:
            state.unpaid_plays_1h.add(t)
        elif play.credits_used:
            state.credits_by_payment_1h.add(t, play.payment_id, play.credits_used)
        if state.venue is not None and not state.venue.is_open_at(t):
            state.after_hours_plays_1h.add(t)


def _apply_payment(state: DeviceState, payment: PaymentEvent, t: int) -> None:
    state.payers_24h.add(t, payment.customer_id)
    if state.payments_1h.add(t) and payment.status is PaymentStatus.FAILED:
        state.failed_payments_1h.add(t)
    if payment.status is PaymentStatus.SUCCEEDED:
        state.paid_ids_6h.add(t, payment.payment_id)
        minor = payment.amount_minor
        state.paid_minor_1h.add(t, payment.currency, minor)
        state.paid_minor_24h.add(t, payment.currency, minor)


def _apply_location(state: DeviceState, report: DeviceLocationEvent) -> None:
    fix = LocationFix(report.reported_at, report.lat, report.lon, report.accuracy_m)
    latest, previous = state.latest_fix, state.previous_fix
    if latest is None or fix.t > latest.t:
        state.latest_fix, state.previous_fix = fix, latest
    elif fix.t < latest.t and (previous is None or fix.t > previous.t):
        state.previous_fix = fix


def _apply_venue(state: DeviceState, venue: VenueRef) -> list | None:
    """What the registration moves (customers to relocate); None when it is older than
    the one held."""
    current = state.venue
    if current is not None and venue.updated_at_s < current.updated_at_s:
        return None
    state.venue = venue if venue.active else None
    place = (state.venue.lat, state.venue.lon) if state.venue else None
    moved = place != ((current.lat, current.lon) if current else None)
    located = [
        VenueLocated(customer, state.jukebox_id, *(place or (None, None)))
        for customer in sorted(state.payers_24h)
    ] if moved else []
    # Re-classify the hour's plays under the new opening hours, so the value does not
    # depend on whether the registration arrived before or after the plays.
    venue, bucket_s = state.venue, state.after_hours_plays_1h.bucket_s
    state.after_hours_plays_1h.replace_buckets({} if venue is None else {
        bucket: plays for bucket, plays in state.plays_1h.bucket_items()
        if not venue.is_open_at(bucket * bucket_s)})
    return located


def _customer_payment(state: DeviceState, payment: PaymentEvent) -> CustomerPayment:
    venue = state.venue
    return CustomerPayment(
        event_id=payment.event_id,
        customer_id=payment.customer_id,
        jukebox_id=payment.jukebox_id,
        country=CURRENCIES[payment.currency].code,
        venue_lat=venue.lat if venue else None,
        venue_lon=venue.lon if venue else None,
        failed=payment.status is PaymentStatus.FAILED,
        occurred_at=payment.occurred_at,
    )


def location_values(state: DeviceState) -> dict[str, FeatureValue]:
    latest, previous, venue = state.latest_fix, state.previous_fix, state.venue
    # no report within a day of the jukebox's latest event: no location values
    stale = latest is not None and state.clock is not None and state.clock - latest.t > _IDLE_RESET
    cached = state.location_cache
    if (cached is not None and cached[0] is latest and cached[1] is previous and cached[2] is venue
            and cached[3] == stale):
        return cached[4]
    values = _location_values(None if stale else latest, None if stale else previous, venue)
    state.location_cache = (latest, previous, venue, stale, values)
    return values


def _location_values(latest: LocationFix | None, previous: LocationFix | None,
                     venue: VenueRef | None) -> dict[str, FeatureValue]:
    distance = speed = gap = None
    if latest is not None and venue is not None:
        distance = haversine_km(latest.lat, latest.lon, venue.lat, venue.lon)
    if latest is not None and previous is not None and (latest.t - previous.t).total_seconds() <= IDLE_RESET_S:
        gap = (latest.t - previous.t).total_seconds()
        km = haversine_km(previous.lat, previous.lon, latest.lat, latest.lon)
        speed = km / (gap / 3600.0) if gap > 0 else None
    return {
        "device_venue_distance_km_last": distance,
        "device_speed_kmh_last": speed,
        "device_location_gap_s_last": gap,
        "device_location_accuracy_m_last": latest.accuracy_m if latest else None,
    }


def device_values(state: DeviceState) -> dict[str, FeatureValue]:
    """Every device feature as of the state's clock (names from definitions.py)."""
    plays_1h = state.plays_1h.total
    payments = state.payments_1h.total
    credits_used = state.credits_used_1h.total
    paid_1h = dict(state.paid_minor_1h.totals)
    credits_in = credits_paid(paid_1h)
    return {
        "device_plays_5m": state.plays_5m.total,
        "device_plays_1h": plays_1h,
        "device_plays_24h": state.plays_24h.total,
        "device_distinct_songs_1h": state.songs_1h.distinct,
        "device_top_song_share_1h": state.songs_1h.top_count() / plays_1h if plays_1h else 0.0,
        "device_credits_used_1h": credits_used,
        "device_unpaid_plays_1h": state.unpaid_plays_1h.total,
        "device_after_hours_plays_1h": state.after_hours_plays_1h.total,
        "device_payments_1h": payments,
        "device_failed_payments_1h": state.failed_payments_1h.total,
        "device_payment_failure_ratio_1h": state.failed_payments_1h.total / payments if payments else 0.0,
        "device_credits_paid_1h": credits_in,
        "device_unpaid_credits_1h": max(0.0, credits_used - credits_in),
        **unbacked_values(state),
        "device_revenue_usd_1h": revenue_usd(paid_1h),
        "device_revenue_usd_24h": revenue_usd(dict(state.paid_minor_24h.totals)),
        "device_revenue_by_currency_24h": currency_map_json(dict(state.paid_minor_24h.totals)),
        **location_values(state),
    }


def unbacked_values(state: DeviceState) -> dict[str, int | None]:
    """The credits of the hour's plays whose payment id no succeeded payment of the last 6
    hours carries, and how many such ids. A late payment backs its plays when it arrives,
    so the values do not depend on the order of events; None while a resumed state's
    backing is incomplete."""
    since = state.backed_since_s
    if since is not None and state.clock_s < since + H6 + H1:  # type: ignore[operator]
        return {"device_unbacked_credits_1h": None, "device_unbacked_payments_1h": None}
    used = state.credits_by_payment_1h.totals
    # set.difference(dict) looks each of ours up in C, and does not walk the 6 h of paid ids
    unbacked = set(used).difference(state.paid_ids_6h.latest) if used else ()
    return {"device_unbacked_credits_1h": sum(map(used.__getitem__, unbacked)),
            "device_unbacked_payments_1h": len(unbacked)}


def device_row(state: DeviceState, values: dict[str, FeatureValue] | None = None) -> FeatureRow:
    """The jukebox's row; `values` when the caller has just read `device_values(state)`."""
    assert state.clock is not None
    return FeatureRow("device", state.jukebox_id, state.version, state.clock,
                      device_values(state) if values is None else values)
