"""One simulation run: customers, credit queues, songs, GPS fixes, and delivery.

Time advances in 10-second ticks. Each 15-minute slot sets every jukebox's
session rate (venue popularity x hour and weekday of its local time x open);
a tick draws its sessions from the fleet-wide total and a cumulative sum, so a
tick costs O(sessions), not O(jukeboxes). A paying customer buys credits; the
jukebox plays its queue one song at a time. Records go through a delivery heap
ordered by arrival time (network latency, jitter, outages, resends), and a
record leaves the heap once no later tick can produce anything arriving before it.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Iterator
from datetime import timedelta
from hashlib import blake2b
from typing import TYPE_CHECKING

import numpy as np

from schemas.countries import COUNTRIES
from simulator.catalog import COUNTRY_CODES, GENRE_INDEX
from simulator.customers import customer_digest, method_draw, pool_size
from simulator.delivery import DeliveryQueue
from simulator.event_json import (
    DAY_MS,
    epoch_ms,
    location_dict,
    payment_dict,
    play_dict,
    timestamp_text,
    utc_datetime,
)
from simulator.fraud import EpisodePlan, FraudLabel, ScriptedSession
from simulator.geography import KM_PER_DEGREE
from simulator.outages import outage_windows
from simulator.payment_habits import (
    CREDIT_BUNDLE_WEIGHTS,
    CREDIT_BUNDLES,
    CREDITS_PER_PLAY,
    CREDITS_PER_PLAY_WEIGHTS,
    FAILURE_RATE,
    PROMO_SHARE,
    RETRY_AFTER_FAILURE,
    REVERSAL_RATE,
    amount_text,
    preferred_method,
)
from simulator.records import (
    SimRecord,
)
from simulator.registry import venue_records
from simulator.tastes import daypart_of_hour
from simulator.weekly_hours import SLOTS_PER_WEEK, busy_slot_factors, slot_of_week

if TYPE_CHECKING:
    from simulator.simulation import Simulation

TICK_MS = 10_000
SLOT_MS = 900_000
HOUR_MS = 3_600_000
LAST_ORDERS_FACTOR = 0.3  # the slot before closing
NEIGHBOUR_SHARE = 0.12  # customers of the venue next door
QUEUE_CAP_CREDITS = 12  # with ~40 minutes queued, customers stop paying
LOOP_SHARE = 0.85  # share of plays that pick the looped song during a looping episode
PAID, PROMO, UNPAID = 0, 1, 2  # kinds of queued credits


class FleetActivity:
    """The mutable state of one run of a `Simulation`; `records()` yields it."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        fleet = self.fleet = sim.fleet
        self.seed = sim.seed
        self.start_ms = epoch_ms(sim.start)
        self.end_ms = None if sim.duration is None else self.start_ms + sim.duration // timedelta(milliseconds=1)
        self.rng = random.Random(f"{sim.seed}:activity")
        self.np_rng = np.random.default_rng([sim.seed, 0xAC7])
        self.debezium_rng = random.Random(f"{sim.seed}:debezium")
        self.delivery = DeliveryQueue(
            random.Random(f"{sim.seed}:defects"), duplicate_rate=sim.duplicate_rate,
            out_of_order_rate=sim.out_of_order_rate, malformed_rate=sim.malformed_rate,
            clock_skew_rate=sim.clock_skew_rate, include_labels=sim.include_labels,
        )
        self.tag = blake2b(str(sim.seed).encode(), digest_size=3).hexdigest()
        self.ids = itertools.count()
        # Plain lists: indexing them is several times faster than numpy scalars.
        self.jb_venue = fleet.jukebox_venue.tolist()
        self.venue_country = fleet.venue_country.tolist()
        self.venue_size = fleet.venue_sizes.tolist()
        self.venue_taste = fleet.venue_taste.tolist()
        self.venue_lat = fleet.venue_lat.tolist()
        self.venue_lon = fleet.venue_lon.tolist()
        self.country_codes = [COUNTRY_CODES[c] for c in self.venue_country]
        self.song_ids = [s.song_id for s in sim.catalog.songs]
        self.song_ms = [s.duration_s * 1000 for s in sim.catalog.songs]
        self.bundle_cum = list(itertools.accumulate(CREDIT_BUNDLE_WEIGHTS))
        self.per_play_cum = list(itertools.accumulate(CREDITS_PER_PLAY_WEIGHTS))
        self.by_phase = np.argsort(fleet.jukebox_phase_s, kind="stable")  # who reports when
        self.phases = fleet.jukebox_phase_s[self.by_phase]
        self.phase_bounds = np.searchsorted(self.phases, np.arange(901)).tolist()
        self.slot_factor = np.array(busy_slot_factors())
        self.slot_ms = None
        self.open_now: list[bool] = []
        self.open_prev: list[bool] = []
        self.daypart = [0] * len(COUNTRY_CODES)
        self.cum = np.zeros(1)
        self.total = 0.0
        self.next_span = 0
        # Run state: queued credits per jukebox, the play schedule, scripted sessions,
        # episode effects, and records waiting for their arrival time.
        self.queues: dict[int, deque] = {}
        self.playing_until = np.zeros(fleet.jukeboxes, dtype=np.int64)  # end of the last song
        self.plays: list[tuple[int, int]] = []
        self.scripted: list[tuple[int, int, ScriptedSession]] = []
        self.seq = itertools.count()
        self.power_off: dict[int, list[tuple[int, int]]] = {}
        self.offline: dict[int, list[tuple[int, int]]] = {}
        self.location_override: dict[int, list] = {}
        self.loops: dict[int, list[tuple[int, int, int]]] = {}
        self.shifts: dict[int, list[tuple[int, int, float]]] = {}
        for shift in sim.taste_shifts:
            self.shifts.setdefault(fleet.venue_index(shift.venue_id), []).append(
                (epoch_ms(shift.start), GENRE_INDEX[shift.genre], shift.share))

    # --- the run ----------------------------------------------------------------
    def records(self) -> Iterator[SimRecord]:
        sim, limit = self.sim, self.sim.max_events
        if sim.include_catalog:
            for song in sim.catalog.songs:
                yield SimRecord("song_catalog", song.song_id.encode(), song.json_bytes(), self.start_ms - 60_000)
        emitted = 0
        if sim.include_venues:
            for record in venue_records(self.fleet, self.tag, self.start_ms, sim.debezium_share,
                                        self.debezium_rng):
                yield record
                emitted += 1
                if limit is not None and emitted >= limit:
                    return
        t0 = self.start_ms
        while self.end_ms is None or t0 < self.end_ms:
            t1 = (t0 // TICK_MS + 1) * TICK_MS
            if self.end_ms is not None:
                t1 = min(t1, self.end_ms)
            self._advance(t0, t1)
            while self.delivery.due(t1):
                record = self.delivery.pop()
                if record is None:
                    continue
                yield record
                if record.topic_attr != "labels":
                    emitted += 1
                    if limit is not None and emitted >= limit:
                        yield from self.delivery.labels_so_far(record.timestamp_ms)
                        return
            t0 = t1
        while self.delivery:  # the simulated time is over: deliver what is still in flight
            record = self.delivery.pop(self.end_ms)
            if record is not None:
                yield record

    def _advance(self, t0: int, t1: int) -> None:
        slot = t0 - t0 % SLOT_MS
        if slot != self.slot_ms:
            self._enter_slot(slot)
        if t0 >= self.start_ms + self.next_span * DAY_MS:
            self._plan_span(self.next_span)
            self.next_span += 1
        if self.total > 0:
            lam = self.total * (t1 - t0) / HOUR_MS
            count = int(self.np_rng.poisson(lam))
            if count:
                chosen = np.searchsorted(self.cum, self.np_rng.random(count) * self.total, side="right")
                times = t0 + self.np_rng.integers(0, t1 - t0, count)
                for t, jukebox in sorted(zip(times.tolist(), np.minimum(chosen, self.fleet.jukeboxes - 1).tolist())):
                    self._serve_customer(t, jukebox)
        while self.scripted and self.scripted[0][0] < t1:
            self._run_scripted(heapq.heappop(self.scripted)[2])
        while self.plays and self.plays[0][0] < t1:
            t, jukebox = heapq.heappop(self.plays)
            self._play(t, jukebox)
        self._report_locations(t0, t1)

    def _enter_slot(self, slot_ms: int) -> None:
        fleet = self.fleet
        moment = utc_datetime(slot_ms)
        country_slot = np.array([slot_of_week(moment, COUNTRIES[c].timezone) for c in COUNTRY_CODES])
        venue_slot = country_slot[fleet.venue_country]
        is_open = fleet.open_mask[fleet.venue_schedule, venue_slot]
        if self.slot_ms != slot_ms - SLOT_MS:  # first slot: compute the one before too
            self.open_now = fleet.open_mask[fleet.venue_schedule, (venue_slot - 1) % SLOTS_PER_WEEK].tolist()
        opens_next = fleet.open_mask[fleet.venue_schedule, (venue_slot + 1) % SLOTS_PER_WEEK]
        rate = (fleet.venue_rate * self.slot_factor[venue_slot] * is_open
                * np.where(opens_next, 1.0, LAST_ORDERS_FACTOR) * self.sim.activity)
        self.cum = np.cumsum(rate[fleet.jukebox_venue], dtype=np.float64)
        self.total = float(self.cum[-1])
        self.open_prev, self.open_now = self.open_now, is_open.tolist()
        self.daypart = [daypart_of_hour(int(s) % 96 // 4) for s in country_slot]
        self.slot_ms = slot_ms

    # --- planning ----------------------------------------------------------------
    def _span_count(self, rate: float, span: int, span_ms: int) -> int:
        expected = rate * self.fleet.jukeboxes * span_ms / DAY_MS
        draw = random.Random(f"{self.seed}:span-count:{span}:{rate}").random()
        return int(expected) + (draw < expected - int(expected))

    def _plan_span(self, span: int) -> None:
        lo = self.start_ms + span * DAY_MS
        hi = lo + DAY_MS if self.end_ms is None else min(lo + DAY_MS, self.end_ms)
        for windows in (self.power_off, self.offline, self.location_override, self.loops):
            for jukebox in list(windows):  # forget what ended: memory stays bounded on endless runs
                kept = [w for w in windows[jukebox] if w[1] >= lo]
                if kept:
                    windows[jukebox] = kept
                else:
                    del windows[jukebox]
        for jukebox, start, end in outage_windows(self.seed, span, self.fleet.jukeboxes, lo, hi,
                                                  self._span_count(self.sim.late_rate, span, hi - lo)):
            self.offline.setdefault(jukebox, []).append((start, end))
        count = self._span_count(self.sim.fraud_rate, span, hi - lo)
        for plan in self.sim.planner.plan(span, lo, hi, count):
            self._apply(plan)

    def _apply(self, plan: EpisodePlan) -> None:
        for session in plan.sessions:
            heapq.heappush(self.scripted, (session.at_ms, next(self.seq), session))
        for override in plan.locations:
            self.location_override.setdefault(override.jukebox, []).append(
                (override.start_ms, override.end_ms, override.lat, override.lon, override.alternate))
        for jukebox, start, end in plan.power_off:
            self.power_off.setdefault(jukebox, []).append((start, end))
        for jukebox, start, end, song in plan.loops:
            self.loops.setdefault(jukebox, []).append((start, end, song))
        for jukebox, customer in plan.involved:
            self.delivery.add_label(FraudLabel(
                plan.scenario, self._jukebox_id(jukebox), customer, self._venue_id(self.jb_venue[jukebox]),
                utc_datetime(plan.start_ms), utc_datetime(plan.end_ms), plan.episode_id,
            ))

    # --- ids (the Fleet's scheme, from plain lists) -----------------------------------
    @staticmethod
    def _jukebox_id(jukebox: int) -> str:
        return f"jb-{jukebox:07d}"

    def _venue_id(self, venue: int) -> str:
        return f"v-{self.country_codes[venue]}-{venue:07d}"

    def _event_id(self) -> str:
        return f"e-{self.tag}-{next(self.ids):x}"

    # --- sessions and plays --------------------------------------------------------
    @staticmethod
    def _within(windows: list | None, t: int) -> bool:
        return windows is not None and any(w[0] <= t < w[1] for w in windows)

    def _serve_customer(self, t: int, jukebox: int) -> None:
        if self._within(self.power_off.get(jukebox), t):
            return
        queue = self.queues.get(jukebox)
        if queue is not None and sum(entry[1] for entry in queue) >= QUEUE_CAP_CREDITS:
            return  # a long queue: the customer does not pay
        rng = self.rng
        venue = self.jb_venue[jukebox]
        if rng.random() < PROMO_SHARE:  # the bartender puts on a house song
            self._enqueue(t, jukebox, None, rng.randint(1, 2), PROMO, False)
            return
        home, draw = venue, rng.random()
        if draw < NEIGHBOUR_SHARE:
            neighbour = venue - 1 if draw < NEIGHBOUR_SHARE / 2 else venue + 1
            if 0 <= neighbour < self.fleet.venues and self.venue_country[neighbour] == self.venue_country[venue]:
                home = neighbour
        member = int(pool_size(self.venue_size[home]) * rng.random() ** 2)
        digest = customer_digest(self.seed, home, member)
        method = preferred_method(COUNTRY_CODES[self.venue_country[venue]], method_draw(digest))
        if method != "coin" and self._within(self.offline.get(jukebox), t):
            method = "coin"  # no network, no mobile money
        credits = CREDIT_BUNDLES[bisect.bisect_right(self.bundle_cum, rng.random() * self.bundle_cum[-1])]
        self._pay(t, jukebox, "c-" + digest.hex(), method, credits, None, True, False)

    def _run_scripted(self, session: ScriptedSession) -> None:
        if session.customer_id is None:
            payment_id = f"py-{self.tag}-{next(self.ids):x}" if session.fake_payment else None
            self._enqueue(session.at_ms, session.jukebox, payment_id, session.credits, UNPAID, session.after_hours)
        else:
            self._pay(session.at_ms, session.jukebox, session.customer_id, session.method, session.credits,
                      session.status, False, session.after_hours)

    def _pay(self, t: int, jukebox: int, customer: str, method: str, credits: int, status: str | None,
             may_retry: bool, after_hours: bool) -> None:
        rng = self.rng
        if status is None:
            status = "failed" if rng.random() < FAILURE_RATE[method] else "succeeded"
        venue = self.jb_venue[jukebox]
        country = COUNTRY_CODES[self.venue_country[venue]]
        payment_id = f"py-{self.tag}-{next(self.ids):x}"
        event = payment_dict(self._event_id(), payment_id, self._jukebox_id(jukebox),
                             self._venue_id(venue), customer, amount_text(country, credits),
                             COUNTRIES[country].currency, method, status, t)
        self._emit("payments", jukebox, event, t, method == "coin")
        if status == "failed":
            if may_retry and rng.random() < RETRY_AFTER_FAILURE:
                retry = ScriptedSession(t + rng.randint(15_000, 90_000), jukebox, customer, method, credits)
                heapq.heappush(self.scripted, (retry.at_ms, next(self.seq), retry))
            return
        self._enqueue(t, jukebox, payment_id, credits, PAID, after_hours)
        if method != "coin" and rng.random() < REVERSAL_RATE:  # a chargeback, hours later
            later = t + rng.randint(2 * HOUR_MS, 30 * HOUR_MS)
            reversal = dict(event, event_id=self._event_id(), status="reversed",
                            occurred_at=timestamp_text(later))
            self._emit("payments", jukebox, reversal, later, False)

    def _enqueue(self, t: int, jukebox: int, payment_id: str | None, credits: int, kind: int,
                 after_hours: bool) -> None:
        entry = [payment_id, credits, kind, after_hours]
        queue = self.queues.get(jukebox)
        if queue is None:  # an idle jukebox: the customer picks songs, then the current one ends
            self.queues[jukebox] = deque([entry])
            first = max(t + 15_000 + int(self.rng.random() * 45_000), int(self.playing_until[jukebox]) + 1_000)
            heapq.heappush(self.plays, (first, jukebox))
        else:
            queue.append(entry)

    def _play(self, t: int, jukebox: int) -> None:
        queue = self.queues[jukebox]
        payment_id, left, kind, after_hours = entry = queue[0]
        venue = self.jb_venue[jukebox]
        closed = not (self.open_now[venue] or self.open_prev[venue])
        if (closed and not after_hours) or self._within(self.power_off.get(jukebox), t):
            del self.queues[jukebox]  # switched off at closing: queued credits are lost
            return
        rng = self.rng
        if kind == PROMO:
            used = 0
        elif kind == UNPAID:
            used = 1
        else:
            used = min(left, CREDITS_PER_PLAY[bisect.bisect_right(self.per_play_cum, rng.random() * self.per_play_cum[-1])])
        song = self._song(t, jukebox, venue)
        event = play_dict(self._event_id(), self._jukebox_id(jukebox), self._venue_id(venue),
                          self.song_ids[song], t, used, payment_id)
        self._emit("plays", jukebox, event, t, True)
        entry[1] = left - max(used, 1)
        if entry[1] <= 0:
            queue.popleft()
        ends = t + self.song_ms[song]
        if queue:
            heapq.heappush(self.plays, (ends + 1_000 + int(rng.random() * 3_000), jukebox))
        else:
            del self.queues[jukebox]
            self.playing_until[jukebox] = ends

    def _song(self, t: int, jukebox: int, venue: int) -> int:
        rng = self.rng
        loops = self.loops.get(jukebox)
        if loops is not None:
            for start, end, song in loops:
                if start <= t < end and rng.random() < LOOP_SHARE:
                    return song
        country_index = self.venue_country[venue]
        country = COUNTRY_CODES[country_index]
        shifts = self.shifts.get(venue)
        if shifts is not None:
            for start, genre, share in shifts:
                if t >= start and rng.random() < share:
                    return self.sim.catalog.song_index(country, genre, rng.random())
        genre = self.sim.tastes.genre_index(country, self.venue_taste[venue], self.daypart[country_index], rng.random())
        return self.sim.catalog.song_index(country, genre, rng.random())

    # --- locations ------------------------------------------------------------------
    def _report_locations(self, t0: int, t1: int) -> None:
        """Reports due in [t0, t1): each jukebox reports at its phase of every 15 minutes."""
        base = t0 - t0 % SLOT_MS
        while base < t1:
            lo_s = max(0, -(-(t0 - base) // 1000))
            hi_s = min(900, -(-(t1 - base) // 1000))
            first, last = self.phase_bounds[lo_s], self.phase_bounds[hi_s]
            for phase, jukebox in zip(self.phases[first:last].tolist(), self.by_phase[first:last].tolist()):
                self._report_location(base, phase, jukebox)
            base += SLOT_MS

    def _report_location(self, base: int, phase_s: int, jukebox: int) -> None:
        rng = self.rng
        t = base + phase_s * 1000 + int(rng.random() * 3_000)
        if self._within(self.power_off.get(jukebox), t):
            return
        venue = self.jb_venue[jukebox]
        lat, lon = self.venue_lat[venue], self.venue_lon[venue]
        overrides = self.location_override.get(jukebox)
        if overrides is not None:
            for start, end, o_lat, o_lon, alternate in overrides:
                if start <= t < end and (not alternate or (base // SLOT_MS) % 2 == 0):
                    lat, lon = o_lat, o_lon
        # Indoors a fix is sometimes poor; noise follows the reported accuracy.
        accuracy = rng.uniform(80.0, 400.0) if rng.random() < 0.04 else min(80.0, max(3.0, rng.lognormvariate(2.5, 0.5)))
        north, east = rng.gauss(0.0, accuracy * 0.6), rng.gauss(0.0, accuracy * 0.6)
        lat += north / (KM_PER_DEGREE * 1000.0)
        lon += east / (KM_PER_DEGREE * 1000.0 * max(0.01, math.cos(math.radians(lat))))
        event = location_dict(self._event_id(), self._jukebox_id(jukebox),
                              round(lat, 6), round(lon, 6), round(accuracy, 1), t)
        self._emit("locations", jukebox, event, t, True)

    # --- records ----------------------------------------------------------------------
    def _emit(self, topic: str, jukebox: int, event: dict, event_ms: int, from_device: bool) -> None:
        if self.end_ms is None or event_ms < self.end_ms:
            self.delivery.emit(topic, self._jukebox_id(jukebox).encode(), event, event_ms, from_device,
                               self.offline.get(jukebox))
