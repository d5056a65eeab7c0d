"""The pure feature logic equals the naive oracle, whatever the order and duplicates."""

from __future__ import annotations

import pickle
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from online_store.customer import CustomerPayment, VenueLocated, update_customer
from online_store.device import update_device
from online_store.venues import venue_assignments
from tests.oracle import expected_features, mismatches
from tests.sample_events import sample_events as _events
from tests.sample_events import venues_for

VENUES = venues_for(3, per_venue=1)


def _run(events: list, venue_first: bool) -> tuple[dict, dict]:
    """Feed events through the pure logic; return each entity's last emitted values."""
    assignments = [a for venue in VENUES for a in venue_assignments(venue)]
    feed = (assignments + list(events)) if venue_first else (list(events) + assignments)
    devices: dict = {}
    customers: dict = {}
    device_values: dict = {}
    customer_values: dict = {}
    for item in feed:
        jb = item.jukebox_id
        devices[jb], outputs = update_device(devices.get(jb), item)
        for out in outputs:
            if isinstance(out, CustomerPayment | VenueLocated):
                customers[out.customer_id], rows = update_customer(customers.get(out.customer_id), out)
                for row in rows:
                    customer_values[out.customer_id] = row.values
            else:
                device_values[jb] = out.values
    return device_values, customer_values


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(1, 120), span=st.sampled_from([600, 7200, 2 * 86400]))
def test_features_equal_oracle_in_any_order_with_duplicates(seed, n, span):
    rnd = random.Random(seed)
    events = _events(rnd, n, span)
    with_duplicates = events + rnd.sample(events, k=min(len(events), 10))
    rnd.shuffle(with_duplicates)
    device_values, customer_values = _run(with_duplicates, venue_first=True)
    expected = expected_features(events, VENUES)
    for jb, want in expected.device.items():
        assert not mismatches(want, device_values[jb]), (jb, mismatches(want, device_values[jb]))
    for customer, want in expected.customer.items():
        assert not mismatches(want, customer_values[customer]), mismatches(want, customer_values[customer])


def test_venue_arriving_after_the_events_gives_the_same_values():
    rnd = random.Random(7)
    events = _events(rnd, 300, 6 * 3600)
    late_devices, late_customers = _run(events, venue_first=False)
    expected = expected_features(events, VENUES)
    for jb, want in expected.device.items():
        assert not mismatches(want, late_devices[jb]), mismatches(want, late_devices[jb])
    for customer, want in expected.customer.items():
        assert not mismatches(want, late_customers[customer]), mismatches(want, late_customers[customer])
    assert any(want["customer_max_venue_distance_km_10m"] > 1 for want in expected.customer.values())


def test_oracle_is_not_trivially_equal():
    rnd = random.Random(3)
    events = _events(rnd, 100, 7200)
    device_values, _ = _run(events, venue_first=True)
    expected = expected_features(events[:-20], VENUES)
    assert any(mismatches(expected.device[jb], device_values[jb]) for jb in expected.device)


def test_final_event_time_and_values_are_the_same_whatever_the_order():
    """The upsert guard's premise: the last row of any complete run is as of the latest
    event time, which no partial run (before a crash) can exceed."""
    rnd = random.Random(12)
    events = _events(rnd, 150, 30 * 3600)
    finals = []
    for order_seed in range(3):
        shuffled = events + events[:20]
        random.Random(order_seed).shuffle(shuffled)
        states: dict = {}
        last_rows: dict = {}
        for item in [a for v in VENUES for a in venue_assignments(v)] + shuffled:
            states[item.jukebox_id], out = update_device(states.get(item.jukebox_id), item)
            last_rows.update({r.entity_id: (r.as_of, r.values) for r in out if hasattr(r, "as_of")})
        finals.append(last_rows)
    latest = {}
    for e in events:
        latest[e.jukebox_id] = max(latest.get(e.jukebox_id, e.event_time), e.event_time)
    assert finals[0] == finals[1] == finals[2]
    assert {jb: as_of for jb, (as_of, _values) in finals[0].items()} == latest


def test_an_entity_silent_for_over_a_day_starts_afresh_so_releasing_its_state_changes_nothing():
    from datetime import timedelta

    from online_store.definitions import IDLE_RESET_S

    time_field = {"PlayEvent": "played_at", "PaymentEvent": "occurred_at",
                  "DeviceLocationEvent": "reported_at"}
    before = _events(random.Random(5), 200, 7200, jukeboxes=1, customers=1)
    later = [e.model_copy(update={"event_id": f"later-{e.event_id}", time_field[type(e).__name__]:
                                  e.event_time + timedelta(seconds=IDLE_RESET_S + 3 * 3600)})
             for e in _events(random.Random(6), 50, 600, jukeboxes=1, customers=1)]
    later.sort(key=lambda e: e.event_time)
    kept = released = None
    kept_rows, released_rows = [], []
    for event in before:
        kept, _ = update_device(kept, event)
    for event in later:  # one state went on from the old one; the other was released (None)
        kept, out = update_device(kept, event)
        kept_rows += [o for o in out if not isinstance(o, CustomerPayment)]
        released, out = update_device(released, event)
        released_rows += [o for o in out if not isinstance(o, CustomerPayment)]
    assert kept_rows == released_rows and kept_rows
    assert kept_rows[0].version == 1


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(100, 200))
def test_snapshot_round_trip_restores_every_field(seed, n):
    """States come back from their compact snapshot form equal, field for field, and
    go on to give the same outputs (a restart from a snapshot changes nothing)."""
    rnd = random.Random(seed)
    events = _events(rnd, n, 2 * 3600)
    feed = [a for venue in VENUES for a in venue_assignments(venue)] + events
    devices: dict = {}
    customers: dict = {}
    for index, item in enumerate(feed):
        jb = item.jukebox_id
        restored = pickle.loads(pickle.dumps(devices.get(jb), protocol=pickle.HIGHEST_PROTOCOL))
        assert restored == devices.get(jb)
        if index % 2:  # every other event continues from the restored copy
            devices[jb] = restored
        devices[jb], outputs = update_device(devices.get(jb), item)
        for out in outputs:
            if isinstance(out, CustomerPayment | VenueLocated):
                state = customers.get(out.customer_id)
                restored_customer = pickle.loads(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
                assert restored_customer == state
                customers[out.customer_id], _rows = update_customer(restored_customer, out)
    for state in [*devices.values(), *customers.values()]:
        assert pickle.loads(pickle.dumps(state)) == state
    assert any(state.latest_fix is not None and state.venue is not None for state in devices.values())


def test_credits_bought_hours_before_their_plays_are_backed_and_invented_payments_are_not():
    """The honest bar the demo's off-label alerts came from (jb-0000619 on 2026-12-04): two
    payments at 23:35, plays until 00:38. At 00:36 the payments have left the hour, so
    `device_unpaid_credits_1h` counts every credit; `device_unbacked_credits_1h` counts
    only those naming a payment the jukebox never saw succeed, whenever it arrives."""
    from datetime import timedelta

    from schemas.events import PaymentEvent, PlayEvent
    from tests.sample_events import T0

    def pay(i, at, status="succeeded"):
        return PaymentEvent(event_id=f"m{i}", payment_id=f"pay{i}", jukebox_id="jb-0", venue_id="v1",
                            customer_id="c1", amount="40", currency="KES", method="mobile_money",
                            status=status, occurred_at=at)

    def play(i, at, payment_id):
        return PlayEvent(event_id=f"p{i}", jukebox_id="jb-0", venue_id="v1", song_id=f"s{i % 9}",
                         played_at=at, credits_used=1, payment_id=payment_id)

    paid, failed, late = pay(1, T0), pay(2, T0, "failed"), pay(3, T0 + timedelta(minutes=61))
    plays = [play(i, T0 + timedelta(minutes=30 + 4 * i), payment_id)
             for i, payment_id in enumerate(["pay1"] * 9 + ["pay2"] * 2 + ["pay-made-up"] * 3 + ["pay3"] * 2)]
    state, values = None, {}
    for item in [paid, failed, *plays]:  # pay3 arrives last, after the plays it paid for
        state, outputs = update_device(state, item)
        values = outputs[0].values
    # the first play (00:30) has left the hour: 15 plays of a credit, none paid in the hour
    assert values["device_unpaid_credits_1h"] == 15.0 and values["device_credits_paid_1h"] == 0.0
    assert values["device_unbacked_credits_1h"] == 2 + 3 + 2  # failed, made up, not yet seen
    assert values["device_unbacked_payments_1h"] == 3
    state, outputs = update_device(state, late)
    assert outputs[0].values["device_unbacked_credits_1h"] == 2 + 3
    assert outputs[0].values["device_unbacked_payments_1h"] == 2
    _, in_order = _run([paid, failed, late, *plays], venue_first=True)[0].popitem()
    assert in_order["device_unbacked_credits_1h"] == 5


def test_a_state_from_before_the_backing_windows_leaves_the_value_unset_for_their_horizon():
    from datetime import timedelta

    from online_store.device import DeviceState
    from schemas.events import PlayEvent
    from tests.sample_events import T0

    def play(i, at):
        return PlayEvent(event_id=f"p{i}", jukebox_id="jb-0", venue_id="v1", song_id="s1",
                         played_at=at, credits_used=2, payment_id="pay-before-the-upgrade")

    state, _ = update_device(None, play(0, T0))
    func, args = state.__reduce__()
    old = pickle.loads(pickle.dumps(func(*args[:5], args[5][:12], *args[6:8])))  # the 12-window form
    assert isinstance(old, DeviceState) and old.backed_since_s == int(T0.timestamp())
    state, outputs = update_device(old, play(1, T0 + timedelta(hours=6, minutes=59)))
    assert outputs[0].values["device_unbacked_credits_1h"] is None
    state, outputs = update_device(state, play(2, T0 + timedelta(hours=7)))
    assert outputs[0].values["device_unbacked_credits_1h"] == 2 + 2  # both plays are in the hour


def test_every_window_is_advanced_and_snapshotted():
    """`DeviceState._windows()` (advanced with the clock) and `_WINDOWS` (saved in a
    snapshot) name the same windows, and they are every window field of the state: a
    window missing from one would stop expiring, or be lost on restart."""
    import dataclasses

    from online_store.device import _WINDOWS, DeviceState
    from online_store.snapshot_form import Window

    state = DeviceState("jb-1")
    fields = {f.name for f in dataclasses.fields(DeviceState) if isinstance(getattr(state, f.name), Window)}
    assert set(_WINDOWS) == fields and len(_WINDOWS) == len(fields)
    assert {id(window) for window in state._windows()} == {id(getattr(state, name)) for name in _WINDOWS}
    assert len(state._windows()) == len(_WINDOWS)
