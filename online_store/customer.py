"""Per-customer features from payments, enriched with where the jukebox's venue is.

A customer is the opaque hash of a mobile-money or card account. Payments reach
this state keyed by customer id, after the device step added the venue's country
and coordinates (`CustomerPayment`).

>>> from datetime import UTC, datetime
>>> pay = CustomerPayment("e1", "c1", "jb-1", "KE", -1.29, 36.82, False,
...                       datetime(2026, 11, 23, 20, 0, tzinfo=UTC))
>>> state, rows = update_customer(None, pay)
>>> rows[0].values["customer_payments_10m"], rows[0].values["customer_distinct_countries_1h"]
(1, 1)
>>> update_customer(state, pay)[1]   # same event again
[]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from online_store.dedup import SeenEvents
from online_store.definitions import H1, IDLE_RESET_S, M10
from online_store.feature_row import FeatureRow, FeatureValue
from online_store.geo import max_pairwise_km
from online_store.snapshot_form import time_form, time_from, window_as, window_form, window_from
from online_store.windows import SlidingSet, SlidingSum


@dataclass(frozen=True, slots=True)
class CustomerPayment:
    event_id: str
    customer_id: str
    jukebox_id: str
    country: str
    venue_lat: float | None
    venue_lon: float | None
    failed: bool
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class VenueLocated:
    """A jukebox's venue became known (or moved) after this customer paid there.

    Sent by the device step to the customers who paid at the jukebox in the last 24 h,
    so a venue registration arriving after the payments still places them, and the
    customer's values do not depend on which arrived first."""

    customer_id: str
    jukebox_id: str
    venue_lat: float | None
    venue_lon: float | None


@dataclass(slots=True)
class CustomerState:
    customer_id: str
    version: int = 0
    clock: datetime | None = None
    seen: SeenEvents = field(default_factory=lambda: SeenEvents(horizon_s=H1))
    payments_10m: SlidingSum = field(default_factory=lambda: SlidingSum(M10))
    failed_10m: SlidingSum = field(default_factory=lambda: SlidingSum(M10))
    devices_10m: SlidingSet = field(default_factory=lambda: SlidingSet(M10))
    device_places: dict[str, tuple[float, float] | None] = field(default_factory=dict)
    countries_1h: SlidingSet = field(default_factory=lambda: SlidingSet(H1))

    def __reduce__(self):
        # Flat, primitives only (online_store/snapshot_form.py): paid about once per payment.
        return (_customer_state, (
            self.customer_id, self.version, time_form(self.clock), self.seen,
            window_form(self.payments_10m), window_form(self.failed_10m),
            window_form(self.devices_10m), self.device_places, window_form(self.countries_1h)))

    def advance_to(self, event_time: datetime) -> None:
        if self.clock is not None and event_time <= self.clock:
            return
        self.clock = event_time
        clock_s = int(event_time.timestamp())
        for window in (self.payments_10m, self.failed_10m, self.devices_10m, self.countries_1h):
            window.advance(clock_s)
        self.seen.forget_before(clock_s)
        for jukebox_id in [j for j in self.device_places if j not in self.devices_10m]:
            del self.device_places[jukebox_id]


def _customer_state(customer_id: str, version: int, clock_us: int | None, seen: SeenEvents,
                    payments: tuple, failed: tuple, devices: tuple,
                    device_places: dict[str, tuple[float, float] | None], countries: tuple) -> CustomerState:
    return CustomerState(customer_id, version, time_from(clock_us), seen, window_from(payments),
                         window_from(failed), window_as(window_from(devices), SlidingSet), device_places,
                         window_as(window_from(countries), SlidingSet))


def update_customer(
    state: CustomerState | None, item: CustomerPayment | VenueLocated
) -> tuple[CustomerState, list[FeatureRow]]:
    if state is None:
        state = CustomerState(customer_id=item.customer_id)
    if isinstance(item, VenueLocated):
        return state, _place_device(state, item)
    payment = item
    t = int(payment.occurred_at.timestamp())
    if state.clock is not None and t - int(state.clock.timestamp()) > IDLE_RESET_S:
        state = CustomerState(customer_id=state.customer_id)  # see IDLE_RESET_S
    if not state.seen.first_sighting(payment.event_id, t):
        return state, []
    state.advance_to(payment.occurred_at)
    state.version += 1  # distinct payments: the same final version in any order
    if not state.countries_1h.add(t, payment.country):
        return state, [customer_row(state)]
    if state.payments_10m.add(t):
        state.devices_10m.add(t, payment.jukebox_id)
        if payment.failed:
            state.failed_10m.add(t)
        if payment.venue_lat is not None and payment.venue_lon is not None:
            state.device_places[payment.jukebox_id] = (payment.venue_lat, payment.venue_lon)
        else:
            state.device_places.setdefault(payment.jukebox_id, None)
    return state, [customer_row(state)]


def _place_device(state: CustomerState, located: VenueLocated) -> list[FeatureRow]:
    if located.jukebox_id not in state.devices_10m or state.clock is None:
        return []
    place = None if located.venue_lat is None else (located.venue_lat, located.venue_lon)
    if state.device_places.get(located.jukebox_id) == place:
        return []
    state.device_places[located.jukebox_id] = place
    return [customer_row(state)]  # same version: the last write at it wins


def customer_values(state: CustomerState) -> dict[str, FeatureValue]:
    return {
        "customer_payments_10m": state.payments_10m.total,
        "customer_failed_payments_10m": state.failed_10m.total,
        "customer_distinct_devices_10m": state.devices_10m.distinct,
        "customer_distinct_countries_1h": state.countries_1h.distinct,
        "customer_max_venue_distance_km_10m": max_pairwise_km(
            sorted({place for place in state.device_places.values() if place is not None})
        ),
    }


def customer_row(state: CustomerState) -> FeatureRow:
    assert state.clock is not None
    return FeatureRow("customer", state.customer_id, state.version, state.clock, customer_values(state))
