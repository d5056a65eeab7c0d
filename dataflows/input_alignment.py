"""Input alignment: a process's input partitions merged into arrival order.

A jukebox's plays, payments and location reports come from three topics, and the
features scored after each event are only right if the events are applied in about
the order they arrived. A consumer at the head of every topic sees them that way; a
backlog does not: after an outage or a restart, or in `make demo`, one topic's
partitions can be drained minutes or hours ahead of another's, and every row scored
meanwhile is a state the jukebox was never in. Measured on 2026-12-03 (1,000
jukeboxes, 6 hours, the trained model, arrival order with one topic delayed): payments
30 minutes behind the plays put alerts on 112 unlabelled jukeboxes instead of 18, plays
2 hours behind alerted 96 jukeboxes instead of 129, and 5 seconds changed nothing.

So the source reads all of a process's input partitions with one consumer and emits
their records merged by Kafka timestamp: `ArrivalMerge` holds what was fetched, one
lane per partition, and `take` emits the earliest buffered record while no partition
that may still hold an earlier one is more than `max_lead_ms` behind it. A lane with
nothing buffered holds the merge back at the timestamp it last emitted, unless it is
at the head of its log, or has been empty for `stall_s` (a stuck fetch must not stop
the engine; `on_stall` counts it). This is Flink's watermark alignment done
inside one source, so a backlog still drains in full batches.

Kafka timestamps, not event times: they are what a replay orders history by
(dataflows/record.py's `history_order`), and a jukebox's late upload after hours
offline is placed by when it arrived, as a replay places it.

>>> merge = ArrivalMerge(max_lead_ms=5_000)
>>> for lane in ("plays", "payments"):
...     merge.track(lane, now=0.0)
>>> merge.add("plays", ["play@0", "play@20"], [0, 20_000], now=0.1)
>>> merge.take(10, now=0.1, at_head=lambda lane: False)  # payments not fetched yet: wait
[]
>>> merge.add("payments", ["pay@1"], [1_000], now=0.2)
>>> merge.take(10, now=0.2, at_head=lambda lane: False)  # payments may have more after 1 s
['play@0', 'pay@1']
>>> merge.take(10, now=0.3, at_head=lambda lane: lane == "payments")
['play@20']
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

UNKNOWN_MS = -(1 << 62)  # a lane that has emitted nothing: below every timestamp


@dataclass(slots=True)
class _Lane:
    active_at: float  # when it last received records or ran empty (or was tracked)
    buffer: deque = field(default_factory=deque)  # (timestamp, record), in offset order
    last_ms: int = UNKNOWN_MS  # timestamp of the last record emitted
    stalled: bool = False


class ArrivalMerge:
    """The buffered records of several partitions, released in Kafka-timestamp order.

    Records of one partition keep their offset order; records of equal timestamps go in
    the order their lanes were tracked.
    """

    def __init__(self, max_lead_ms: int | None = 5_000, stall_s: float = 10.0,
                 on_stall: Callable[[Hashable], None] | None = None) -> None:
        if (max_lead_ms is not None and max_lead_ms < 0) or stall_s <= 0:
            raise ValueError("max_lead_ms must be >= 0 (or None: no waiting) and stall_s > 0")
        self.max_lead_ms, self.stall_s, self.on_stall = max_lead_ms, stall_s, on_stall
        self._lanes: dict[Hashable, _Lane] = {}
        self.waited_for: Hashable | None = None  # the lane the last `take` stopped for

    def track(self, lane: Hashable, now: float) -> None:
        self._lanes[lane] = _Lane(active_at=now)

    def add(self, lane: Hashable, records: list, timestamps: list[int], now: float) -> None:
        """Fetched records of `lane`, in offset order, with their timestamps (ms)."""
        state = self._lanes[lane]
        state.buffer.extend(zip(timestamps, records, strict=True))
        if records:
            state.active_at, state.stalled = now, False

    def buffered(self, lane: Hashable) -> int:
        return len(self._lanes[lane].buffer)

    def take(self, limit: int, now: float, at_head: Callable[[Hashable], bool]) -> list:
        """Up to `limit` records in timestamp order; `at_head(lane)`: nothing more to read there."""
        self.waited_for = None
        lead = self.max_lead_ms
        heads: list[tuple[int, int, Hashable]] = []
        wait_ms, wait_lane = None, None  # the earliest lane that is empty but may get more
        for order, (lane, state) in enumerate(self._lanes.items()):
            if state.buffer:
                heads.append((state.buffer[0][0], order, lane))
            elif lead is not None and self._may_get_earlier(lane, state, now, at_head) and (
                    wait_ms is None or state.last_ms < wait_ms):
                wait_ms, wait_lane = state.last_ms, lane
        heapq.heapify(heads)
        out: list = []
        lanes = self._lanes
        while heads and len(out) < limit:
            _, order, lane = heads[0]
            state = lanes[lane]
            stamped, record = state.buffer[0]
            if wait_ms is not None and stamped > wait_ms + lead:
                self.waited_for = wait_lane
                break
            state.buffer.popleft()
            out.append(record)
            state.last_ms = stamped
            if state.buffer:
                heapq.heapreplace(heads, (state.buffer[0][0], order, lane))
            else:
                heapq.heappop(heads)
                state.active_at = now  # empty from now on: its stall time starts
                if lead is not None and self._may_get_earlier(lane, state, now, at_head) and (
                        wait_ms is None or state.last_ms < wait_ms):
                    wait_ms, wait_lane = state.last_ms, lane
        return out

    def _may_get_earlier(self, lane: Hashable, state: _Lane, now: float,
                         at_head: Callable[[Hashable], bool]) -> bool:
        """An empty lane still holds the merge back: behind, and not stalled."""
        if state.stalled or at_head(lane):
            return False
        if now - state.active_at >= self.stall_s:
            state.stalled = True
            if self.on_stall is not None:
                self.on_stall(lane)
            return False
        return True
