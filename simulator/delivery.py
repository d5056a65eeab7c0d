"""Delivery: when each record reaches the producer, and in what shape.

An event happens at its event time; its record arrives later: network latency,
sometimes a jitter that overtakes later events, a resend of the same bytes, a
backlog uploaded when an outage ends. Here too a small share is broken on
purpose (malformed) or stamped by a wrong device clock. Records wait in a heap
ordered by arrival and leave it in that order.

>>> import random
>>> queue = DeliveryQueue(random.Random(1), duplicate_rate=0.0, out_of_order_rate=0.0,
...                       malformed_rate=0.0, clock_skew_rate=0.0)
>>> event = {"schema_version": 1, "event_id": "e-1", "jukebox_id": "jb-0000001", "lat": 1.0,
...          "lon": 2.0, "accuracy_m": 9.0, "reported_at": "2026-11-27T16:00:00.000000Z"}
>>> queue.emit("locations", b"jb-0000001", event, 1_795_795_200_000, True, [(1_795_795_000_000, 1_795_800_000_000)])
>>> record = queue.pop()
>>> record.flags, record.timestamp_ms >= 1_795_800_000_000  # held back until the outage ended
(('late',), True)
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Iterator

import orjson

from simulator.defects import TIME_FIELDS, malformed_value
from simulator.event_json import DAY_MS, epoch_ms, timestamp_text, utc_datetime
from simulator.fraud import FraudLabel
from simulator.records import (
    CLOCK_SKEW,
    DUPLICATE,
    LATE,
    NO_FLAGS,
    OUT_OF_ORDER,
    SimRecord,
    malformed_flag,
)

MAX_LATENCY_MS = 8_000


class DeliveryQueue:
    """Records by arrival time, imperfections applied as they are emitted."""

    def __init__(
        self, rng: random.Random, *, duplicate_rate: float, out_of_order_rate: float,
        malformed_rate: float, clock_skew_rate: float, include_labels: bool = True,
    ) -> None:
        self.rng = rng
        self.duplicate_rate = duplicate_rate
        self.out_of_order_rate = out_of_order_rate
        self.malformed_rate = malformed_rate
        self.clock_skew_rate = clock_skew_rate
        self.include_labels = include_labels
        self._heap: list[tuple] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def due(self, before_ms: int) -> bool:
        return bool(self._heap) and self._heap[0][0] < before_ms

    def emit(self, topic: str, key: bytes, event: dict, event_ms: int, from_device: bool,
             outages: list[tuple[int, int]] | None) -> None:
        """Serialize (or break) an event and schedule its arrival, backlog and resend included.
        `outages` are the jukebox's offline windows; they hold back what the device records."""
        d = self.rng
        arrival = event_ms + 40 + min(MAX_LATENCY_MS, int(d.expovariate(1 / 400.0)))
        flags = NO_FLAGS
        if from_device and outages is not None:
            for start, back in outages:
                if start <= event_ms < back:  # uploaded on reconnect, in recording order
                    arrival, flags = back + (event_ms - start) // 1000, (LATE,)
        if self.malformed_rate and d.random() < self.malformed_rate:
            value, reason = malformed_value(topic, event, d)
            flags = (*flags, malformed_flag(reason))
        else:
            if from_device and self.clock_skew_rate and d.random() < self.clock_skew_rate:
                skew = DAY_MS if d.random() < 0.6 else -8 * DAY_MS
                event[TIME_FIELDS[topic]] = timestamp_text(event_ms + skew)
                flags = (*flags, CLOCK_SKEW)
            value = orjson.dumps(event)
        if self.out_of_order_rate and d.random() < self.out_of_order_rate:
            arrival += 2_000 + int(d.random() * 88_000)
            flags = (*flags, OUT_OF_ORDER)
        heapq.heappush(self._heap, (arrival, next(self._seq), topic, key, value, flags))
        if self.duplicate_rate and d.random() < self.duplicate_rate:  # an at-least-once resend
            resent = arrival + 200 + int(d.random() * 29_800)
            heapq.heappush(self._heap, (resent, next(self._seq), topic, key, value, (*flags, DUPLICATE)))

    def add_label(self, label: FraudLabel) -> None:
        """Ground truth, published once the episode is over."""
        heapq.heappush(self._heap, (epoch_ms(label.end) + 1, next(self._seq), "labels", b"", label, NO_FLAGS))

    def pop(self, clip_ms: int | None = None) -> SimRecord | None:
        """The next record by arrival (None for a label not wanted). With `clip_ms`, the run
        ended then: labels of episodes not yet begun are dropped, others end there."""
        arrival, _, topic, key, value, flags = heapq.heappop(self._heap)
        if topic != "labels":
            return SimRecord(topic, key, value, arrival, flags)
        return self._label_record(value, arrival, clip_ms)

    def labels_so_far(self, now_ms: int) -> Iterator[SimRecord]:
        """Labels of episodes already under way when a run stops at its event count."""
        for entry in sorted(e for e in self._heap if e[2] == "labels"):
            record = self._label_record(entry[4], now_ms, now_ms)
            if record is not None:
                yield record

    def _label_record(self, label: FraudLabel, arrival: int, clip_ms: int | None) -> SimRecord | None:
        if not self.include_labels:
            return None
        if clip_ms is not None:
            if epoch_ms(label.start) >= clip_ms:
                return None
            if epoch_ms(label.end) > clip_ms:
                label = FraudLabel(label.scenario, label.jukebox_id, label.customer_id, label.venue_id,
                                   label.start, utc_datetime(clip_ms), label.episode_id)
        return SimRecord("labels", label.jukebox_id.encode(), label.json_bytes(), arrival)
