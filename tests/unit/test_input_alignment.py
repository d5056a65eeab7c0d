"""The arrival merge as pure logic: waiting, the head of a log, stalls, and no loss or deadlock."""

from __future__ import annotations

import doctest
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dataflows.input_alignment
import dataflows.live
from dataflows.input_alignment import ArrivalMerge


@pytest.mark.parametrize("module", [dataflows.input_alignment, dataflows.live])
def test_doctests(module):  # live: which share of the input partitions a cluster process reads
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def _merge(lanes: str, **kwargs) -> ArrivalMerge:
    merge = ArrivalMerge(**kwargs)
    for lane in lanes:
        merge.track(lane, now=0.0)
    return merge


def test_the_earliest_record_goes_first_and_a_lane_behind_holds_the_rest():
    merge = _merge("ab", max_lead_ms=1_000)
    merge.add("a", ["a1", "a9"], [1_000, 9_000], now=0.0)
    merge.add("b", ["b2"], [2_000], now=0.0)
    assert merge.take(10, now=0.0, at_head=lambda lane: False) == ["a1", "b2"]
    assert merge.waited_for == "b"  # b may still have records from before 9 s
    assert merge.buffered("a") == 1
    merge.add("b", ["b8"], [8_000], now=0.1)
    assert merge.take(10, now=0.1, at_head=lambda lane: False) == ["b8", "a9"]


def test_a_lane_at_the_head_of_its_log_or_without_any_lead_holds_nothing_back():
    for kwargs, at_head in (({"max_lead_ms": 0}, lambda lane: lane == "b"), ({"max_lead_ms": None}, lambda lane: False)):
        merge = _merge("ab", **kwargs)
        merge.add("a", ["a1", "a2"], [1_000, 60_000], now=0.0)
        assert merge.take(10, now=0.0, at_head=at_head) == ["a1", "a2"]
        assert merge.waited_for is None


def test_a_lane_that_receives_nothing_for_the_stall_time_stops_holding_the_others_back():
    stalled = []
    merge = _merge("ab", max_lead_ms=0, stall_s=10.0, on_stall=stalled.append)
    merge.add("a", ["a1"], [1_000], now=0.0)
    assert merge.take(10, now=9.9, at_head=lambda lane: False) == []
    assert merge.take(10, now=10.0, at_head=lambda lane: False) == ["a1"]
    merge.add("a", ["a2"], [2_000], now=10.0)
    assert merge.take(10, now=11.0, at_head=lambda lane: False) == ["a2"] and stalled == ["b"]  # counted once
    merge.add("b", ["b5"], [5_000], now=12.0)  # it comes back: it holds the others again once empty
    merge.add("a", ["a9"], [9_000], now=12.0)
    assert merge.take(10, now=12.0, at_head=lambda lane: False) == ["b5"]


def test_take_stops_at_the_limit_and_rejects_a_negative_lead():
    merge = _merge("a")
    merge.add("a", list(range(5)), [1, 2, 3, 4, 5], now=0.0)
    assert merge.take(3, now=0.0, at_head=lambda lane: True) == [0, 1, 2]
    with pytest.raises(ValueError):
        ArrivalMerge(max_lead_ms=-1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 600), max_size=40), min_size=1, max_size=5),
       st.integers(0, 30), st.integers(1, 8), st.randoms(use_true_random=False))
def test_any_fetch_order_emits_everything_once_in_lane_order_within_the_lead(gaps, lead, most, rnd: random.Random):
    """Lanes of timestamped records (each in arrival order) fetched in random chunks and
    taken in random amounts: everything comes out once, in its lane's order, never
    overtaken by more than the lead across lanes, and the merge never deadlocks."""
    logs = []
    for lane_gaps in gaps:
        ms, log = 0, []
        for gap in lane_gaps:
            ms += gap
            log.append(ms)
        logs.append(log)
    merge = ArrivalMerge(max_lead_ms=lead, stall_s=1e9)
    for lane in range(len(logs)):
        merge.track(lane, now=0.0)
    fetched = [0] * len(logs)
    emitted: list[tuple[int, int]] = []
    for _ in range(100_000):
        if len(emitted) == sum(map(len, logs)):
            break
        lane = rnd.randrange(len(logs))
        chunk = logs[lane][fetched[lane]:fetched[lane] + rnd.randint(0, most)]
        merge.add(lane, [(lane, ms) for ms in chunk], chunk, now=0.0)
        fetched[lane] += len(chunk)
        emitted.extend(merge.take(rnd.randint(1, most), now=0.0,
                                  at_head=lambda lane: fetched[lane] == len(logs[lane])))
    else:
        pytest.fail("the merge never drained")
    assert sorted(emitted) == sorted((lane, ms) for lane, log in enumerate(logs) for ms in log)
    newest: dict[int, int] = {}
    for lane, ms in emitted:
        assert ms >= newest.get(lane, ms)  # lane order
        assert all(ms >= other - lead for other_lane, other in newest.items() if other_lane != lane)
        newest[lane] = ms


def test_a_cluster_process_finds_its_place_as_bytewax_run_does(tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("engine-0.svc:2101\nengine-1.svc:2101\n\nengine-2.svc:2101\n")
    helm = {"BYTEWAX_POD_NAME": "engine-2", "BYTEWAX_STATEFULSET_NAME": "engine",
            "BYTEWAX_HOSTFILE_PATH": str(hostfile)}
    assert dataflows.live.cluster_member(["dataflows.cluster:flow"], env=helm) == (2, 3)
    assert dataflows.live.cluster_member(["x", "-i", "0"], env=helm) == (0, 3)  # -i wins, as in bytewax.run


@pytest.mark.parametrize(("argv", "env"), [
    (["x", "-a", "a:1;b:1"], {}),  # which of the two is this one?
    (["x", "-i", "1"], {}),  # process 1 of what?
    (["x", "-i", "3", "-a", "a:1;b:1"], {}),
    (["x"], {"BYTEWAX_POD_NAME": "engine-1", "BYTEWAX_STATEFULSET_NAME": "engine"}),
])
def test_a_process_that_cannot_tell_its_share_refuses_to_start(argv, env):
    # Started anyway, it would read every partition next to the other processes.
    with pytest.raises(dataflows.live.ConfigurationError):
        dataflows.live.cluster_member(argv, env=env)
