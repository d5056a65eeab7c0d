"""The bucketed windows against a straightforward model: every accepted add kept in a list,
the window read by filtering it. Also: snapshots (pickle and the flat snapshot form) give
back an equal window, and snapshots written before the ring layout still load."""

from __future__ import annotations

import pickle
from array import array

from hypothesis import given, settings
from hypothesis import strategies as st

from online_store.dedup import event_digest
from online_store.definitions import BUCKETS_PER_WINDOW as N
from online_store.snapshot_form import window_as, window_form, window_from
from online_store.text_windows import SlidingTextSet, text_set_of
from online_store.windows import SlidingCounter, SlidingIdCounter, SlidingSet, SlidingSum

WINDOW_S = 600  # 10 s buckets
KEYS = ("a", "b", "c", "d")

# Clock moves (mostly small, sometimes past the whole window) and adds around the clock;
# amounts mostly small, some summing past a byte in a bucket, some past 32 bits.
amounts = st.one_of(st.integers(1, 5), st.integers(100, 300), st.integers(1, 2**40))
steps = st.lists(st.one_of(
    st.tuples(st.just("advance"), st.integers(0, 700)),
    st.tuples(st.just("add"), st.integers(-700, 20), st.sampled_from(KEYS), amounts),
), max_size=120)


class Model:
    def __init__(self) -> None:
        self.clock: int | None = None
        self.added: list[tuple[int, str, int]] = []  # (bucket, key, amount)

    def head(self) -> int | None:
        return None if self.clock is None else self.clock // (WINDOW_S // N)

    def accepts(self, t: int) -> bool:
        head = self.head()
        return head is not None and head - N < t // (WINDOW_S // N) <= head

    def held(self) -> list[tuple[int, str, int]]:
        head = self.head()
        return [(b, k, a) for b, k, a in self.added if head is not None and head - N < b <= head]


def _run(window, key_of, step_list):
    model, t0 = Model(), 1_000_000
    for step in step_list:
        if step[0] == "advance":
            clock = t0 + step[1] if model.clock is None else max(model.clock, model.clock + step[1])
            model.clock = clock
            window.advance(clock)
        else:
            t = (model.clock if model.clock is not None else t0) + step[1]
            accepted = model.accepts(t)
            if accepted:
                model.added.append((t // (WINDOW_S // N), step[2], step[3]))
            if isinstance(window, SlidingSet | SlidingTextSet):
                added = window.add(t, step[2])
            else:
                added = window.add(t, key_of(step[2]), step[3]) if key_of else window.add(t, step[3])
            assert added == accepted
        yield model


@settings(max_examples=150, deadline=None)
@given(steps)
def test_sliding_sum_equals_the_model(step_list: list) -> None:
    window = SlidingSum(WINDOW_S)
    for model in _run(window, None, step_list):
        held = model.held()
        assert window.total == sum(a for _b, _k, a in held)
        assert window.buckets == {b: s for b in {b for b, _k, _a in held}
                                  if (s := sum(a for b2, _k, a in held if b2 == b))}
        assert window_from(window_form(window)) == window  # one byte a slot or eight
    assert pickle.loads(pickle.dumps(window)) == window
    assert window_from(window_form(window)) == window
    assert window_from(window_form(window)).total == window.total


@settings(max_examples=150, deadline=None)
@given(steps)
def test_sliding_counters_equal_the_model(step_list: list) -> None:
    for window, key_of in ((SlidingCounter(WINDOW_S), str), (SlidingIdCounter(WINDOW_S), event_digest)):
        for model in _run(window, key_of, step_list):
            totals: dict = {}
            for _b, k, a in model.held():
                totals[key_of(k)] = totals.get(key_of(k), 0) + a
            assert window.totals == {k: a for k, a in totals.items() if a}
            assert window.top_count() == max(totals.values(), default=0)
        for back in (pickle.loads(pickle.dumps(window)), window_from(window_form(window))):
            assert back == window and back.totals == window.totals and type(back) is type(window)


@settings(max_examples=150, deadline=None)
@given(steps)
def test_sliding_set_equals_the_model(step_list: list) -> None:
    window = SlidingSet(WINDOW_S)
    for model in _run(window, str, step_list):
        assert sorted(window) == sorted({k for _b, k, _a in model.held()})
        assert window.distinct == len({k for _b, k, _a in model.held()})
    for back in (pickle.loads(pickle.dumps(window)), window_from(window_form(window))):
        assert back == window


@settings(max_examples=150, deadline=None)
@given(steps)
def test_sliding_text_set_equals_the_model_and_a_sliding_set(step_list: list) -> None:
    window, same = SlidingTextSet(WINDOW_S), SlidingSet(WINDOW_S)
    for model, _ in zip(_run(window, str, step_list), _run(same, str, step_list), strict=True):
        held = {k for _b, k, _a in model.held()}
        assert sorted(window) == sorted(held) and window.distinct == len(held)
        assert all((key in window) == (key in held) for key in KEYS)
        assert window.latest() == same.latest  # each id's latest bucket
        assert text_set_of(same) == window  # a snapshot's SlidingSet, converted
    for back in (pickle.loads(pickle.dumps(window)), window_from(window_form(window))):
        assert back == window and type(back) is SlidingTextSet


def test_snapshots_written_before_the_rings_still_load() -> None:
    # The flat forms of 2026-12-02: kind 0 {bucket: sum} and kind 1 {bucket: {key: amount}}.
    head = 1_000_000 // 10
    old_sum = (0, WINDOW_S, {head - 3: 2, head: 5}, 7, head)
    old_counter = (1, WINDOW_S, {head - 3: {"s1": 2}, head: {"s1": 1, "s2": 4}}, {"s1": 3, "s2": 4}, head)
    plays = window_from(old_sum)
    assert (plays.total, plays.buckets) == (7, {head - 3: 2, head: 5})
    counts = window_from(old_counter)
    assert counts.totals == {"s1": 3, "s2": 4}
    songs = window_as(counts, SlidingIdCounter)
    assert songs.totals == {event_digest("s1"): 3, event_digest("s2"): 4}
    payers = window_as(window_from(old_counter), SlidingSet)
    assert sorted(payers) == ["s1", "s2"]
    payers.advance((head + N - 3) * 10)  # bucket head - 3 leaves; s1 stays for bucket head
    assert sorted(payers) == ["s1", "s2"]
    payers.advance((head + N) * 10)
    assert len(payers) == 0
    as_text = window_as(window_from(old_counter), SlidingTextSet)
    assert as_text.latest() == window_as(window_from(old_counter), SlidingSet).latest
    # The ring form of 2026-12-03 (stop 14): eight bytes a slot, no width.
    slots = array("q", bytes(8 * N))
    slots[(head - 3) % N], slots[head % N] = 2, 300
    lead = (head - 3) % N
    ring_sum = (2, WINDOW_S, head, lead, slots[lead:head % N + 1].tobytes())
    plays = window_from(ring_sum)
    assert (plays.total, plays.buckets) == (302, {head - 3: 2, head: 300})


def test_a_sum_refuses_what_it_could_not_keep_exact() -> None:
    window = SlidingSum(WINDOW_S)
    window.advance(1_000_000)
    for amount, error in ((-1, ValueError), (0.5, TypeError), (2**63, OverflowError)):
        try:
            window.add(1_000_000, amount)
        except error:
            continue
        raise AssertionError(f"{amount} was accepted")
    assert window.total == 0


def _feed() -> list:
    """The feed both snapshot files were written from: their states are its first half."""
    import random

    from online_store.venues import venue_assignments
    from tests.sample_events import sample_events, venues_for

    events = sample_events(random.Random(11), 400, 3 * 3600, jukeboxes=3, customers=4)
    return [a for v in venues_for(3, per_venue=1) for a in venue_assignments(v)] + events


def _run_feed(items: list, devices: dict, customers: dict) -> dict:
    """The last (version, values) of each entity's rows after applying `items`."""
    from online_store.customer import CustomerPayment, VenueLocated, update_customer
    from online_store.device import update_device

    last = {}
    for item in items:
        devices[item.jukebox_id], out = update_device(devices.get(item.jukebox_id), item)
        for o in out:
            if isinstance(o, CustomerPayment | VenueLocated):
                customers[o.customer_id], rows = update_customer(customers.get(o.customer_id), o)
                out += rows
            else:
                last[(o.entity, o.entity_id)] = (o.version, o.values)
    return last


def _snapshot(name: str) -> tuple[dict, dict]:
    from pathlib import Path

    return pickle.loads((Path(__file__).parent / "snapshots" / name).read_bytes())


def test_states_snapshotted_by_the_dict_windows_resume_with_the_same_values() -> None:
    """tests/unit/snapshots/states_2026-12-02.pickle: the device and customer states after
    the first half of this feed, pickled by the code of 2026-12-02 (dict buckets, songs and
    payers by their strings). Resumed now, the second half gives the values a run of the
    whole feed from nothing gives."""
    feed = _feed()
    devices, customers = _snapshot("states_2026-12-02.pickle")
    assert type(devices["jb-0"].songs_1h) is SlidingIdCounter and type(devices["jb-0"].payers_24h) is SlidingTextSet
    resumed = _run_feed(feed[len(feed) // 2:], devices, customers)
    whole = _run_feed(feed, {}, {})
    # Those states predate the backing windows: the value stays unset until their horizon
    # (7 h of event time) has passed, and the others are as if nothing had stopped.
    unbacked = ("device_unbacked_credits_1h", "device_unbacked_payments_1h")
    assert {values.pop(name, "absent") for key, (_, values) in resumed.items() if key[0] == "device"
            for name in unbacked} == {None}
    for key, (_, values) in whole.items():
        if key[0] == "device":
            assert all(isinstance(values.pop(name), int) for name in unbacked)
    assert resumed and all(whole[key] == value for key, value in resumed.items())


def test_states_snapshotted_with_payers_as_a_set_resume_with_the_same_values() -> None:
    """tests/unit/snapshots/states_2026-12-04.pickle: the same half of the feed, pickled by
    commit 5ec4255 (the day's payers as a SlidingSet). Resumed now, the payers are text,
    and the second half gives the values of a run of the whole feed, the unbacked-payment
    values included."""
    feed = _feed()
    devices, customers = _snapshot("states_2026-12-04.pickle")
    assert all(type(device.payers_24h) is SlidingTextSet for device in devices.values())
    assert any(len(device.payers_24h) for device in devices.values())
    resumed = _run_feed(feed[len(feed) // 2:], devices, customers)
    whole = _run_feed(feed, {}, {})
    assert resumed and all(whole[key] == value for key, value in resumed.items())
    assert any(values["device_unbacked_payments_1h"] for key, (_, values) in whole.items() if key[0] == "device")
