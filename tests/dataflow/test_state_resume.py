"""Feature states resumed from a recovery snapshot stay pickled until their entity is used."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

from dataflows.flow import CustomerLogic, DeviceLogic
from dataflows.fraud_steps import DecisionState
from dataflows.idle_state import DeviceProbe, IdleSweep
from models.decision import CooldownState
from models.rules import SustainState
from online_store.customer import CustomerPayment
from schemas.events import PlayEvent
from schemas.outputs import FraudReason

START = datetime(2026, 12, 3, 20, 0, tzinfo=UTC)


def play(n: int) -> PlayEvent:
    return PlayEvent(event_id=f"p{n}", jukebox_id="jb-1", venue_id="v1", song_id=f"s{n % 3}",
                     played_at=START + timedelta(seconds=40 * n), credits_used=1)


def test_a_resumed_state_is_unpickled_only_when_its_entity_is_used():
    live = DeviceLogic(None, scoring=False)
    live.on_batch([play(n) for n in range(50)])
    snapshot = live.snapshot()
    assert snapshot[:2] == ("jb-1", int(play(49).event_time.timestamp()))

    counted: list[int] = []
    sweep = IdleSweep(horizon_s=3600, check_every_s=0, clock=lambda: 0.0)
    resumed = DeviceLogic(snapshot, scoring=False, release=sweep, on_count=counted.append)
    assert counted == [1]
    assert resumed.snapshot() is snapshot  # untouched: its snapshot is the one it came from
    sweep.now_s = snapshot[1] + 3601  # the sweep knows its clock without unpickling it
    assert sweep.observe([]) == [DeviceProbe("jb-1")]

    # Used: the same outputs and state as the process that never stopped.
    assert resumed.on_batch([play(50)]) == live.on_batch([play(50)])
    assert resumed.state == live.state
    assert resumed.snapshot()[:2] == live.snapshot()[:2] == ("jb-1", int(play(50).event_time.timestamp()))
    assert pickle.loads(resumed.snapshot()[2]) == live.state


def test_a_probe_reads_a_resumed_state_and_releases_it_when_silent():
    live = DeviceLogic(None, scoring=False)
    live.on_batch([play(1)])
    sweep = IdleSweep(horizon_s=3600, check_every_s=3600, clock=lambda: 0.0)
    resumed = DeviceLogic(live.snapshot(), scoring=False, release=sweep)
    sweep.now_s = live.snapshot()[1] + 3601  # no venue assigned: it may go
    outputs, discard = resumed.on_batch([DeviceProbe("jb-1")])
    assert outputs == [] and discard is DeviceLogic.DISCARD


def test_snapshots_of_only_the_pickled_state_still_resume():
    live = DeviceLogic(None, scoring=False)
    live.on_batch([play(n) for n in range(5)])
    before = DeviceLogic(pickle.dumps(live.state), scoring=False)  # written before 2026-12-03
    assert before.held() == live.snapshot()[:2]
    assert before.on_batch([play(5)]) == live.on_batch([play(5)])

    customer = CustomerLogic(None)
    customer.on_batch([CustomerPayment(event_id="y1", customer_id="c-1", jukebox_id="jb-1", country="KE",
                                       venue_lat=None, venue_lon=None, failed=False, occurred_at=START)])
    assert customer.snapshot()[:2] == ("c-1", int(START.timestamp()))
    assert CustomerLogic(customer.snapshot()).state == customer.state
    assert CustomerLogic(None).snapshot() is None  # nothing held, nothing written


def test_a_jukeboxs_decision_state_resumes_equal_from_its_compact_snapshot():
    features = {"device_plays_5m": 3, "device_speed_kmh_last": None, "device_revenue_usd_1h": 1.25,
                "device_revenue_by_currency_24h": '{"KES":"12.50"}'}
    for state in (DecisionState(), DecisionState(window_start_s=600, window_features={}),
                  DecisionState(SustainState((("unpaid_plays", 60),)),
                                CooldownState(0, frozenset({FraudReason.UNPAID_PLAYS}), (("a1", 2),)),
                                1200, features, "v1", True)):
        resumed = pickle.loads(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
        assert resumed == state and list(resumed.window_features or ()) == list(state.window_features or ())
