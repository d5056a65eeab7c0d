"""Releasing the in-memory state of entities gone quiet, in any keyed step.

Bytewax 0.21's keyed steps scan every key with a pending timer (`notify_at`) on every
activation, twice. With a timer per entity that cost grows with the fleet and with the
number of activations (measured at 20,000 keys: ~4 % of a backlog drain; a million keys
scan 50 times as much). So release is driven by the input:
`IdleSweep` notes each entity's latest event time as records are routed (a dict write per
event) and, every `check_every_s` of wall clock, sends a release probe for each entity
silent for longer than the horizon, by the fleet clock (an idle live source sends
`IdleTick`s, so the last events before a quiet spell are swept too). The probe travels the entity's
keyed steps like an event; each discards its state if `releasable`
(`online_store/state_release.py` has the rule and why it changes no output).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import bytewax.operators as op

from dataflows.records import Admitted
from online_store.state_release import silent_past_horizon
from schemas.events import PaymentEvent, VenueRegistration


@dataclass(frozen=True, slots=True)
class IdleTick:
    """A live source partition's "nothing new" (at most one per `IDLE_TICK_S`): a sweep
    falls due by the wall clock, but runs where records are routed, so a quiet input must
    still reach that step. Dropped there."""


IDLE_TICK_S = 1.0


@dataclass(frozen=True, slots=True)
class DeviceProbe:
    """May this jukebox's state go? (device features, then its fraud decisions)"""

    jukebox_id: str


@dataclass(frozen=True, slots=True)
class CustomerProbe:
    """May this customer's state go?"""

    customer_id: str


class IdleSweep:
    """The fleet clock (the latest admitted event time this process has routed) and the
    latest event time of each entity, swept for idle ones. Shared by the workers of a
    process (hence the lock: one acquisition per micro-batch)."""

    def __init__(self, horizon_s: int, check_every_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.horizon_s = horizon_s
        self.now_s: int | None = None
        self._check_every_s = check_every_s
        self._clock = clock
        self._next_sweep = clock() + check_every_s
        self._devices: dict[str, int] = {}
        self._customers: dict[str, int] = {}
        self._lock = threading.Lock()

    def observe(self, results: list) -> list[DeviceProbe | CustomerProbe]:
        """Note a routed batch; return the probes of a sweep, when one is due."""
        devices, customers = self._devices, self._customers
        with self._lock:
            latest = self.now_s
            for result in results:
                if type(result) is not Admitted or isinstance(result.event, VenueRegistration):
                    continue
                event = result.event
                t = int(event.event_time.timestamp())
                if devices.get(event.jukebox_id, t) <= t:
                    devices[event.jukebox_id] = t
                if isinstance(event, PaymentEvent) and customers.get(event.customer_id, t) <= t:
                    customers[event.customer_id] = t
                if latest is None or t > latest:
                    latest = t
            self.now_s = latest
            if self._clock() < self._next_sweep:
                return []
            self._next_sweep = self._clock() + self._check_every_s
            return self._sweep()

    def note_restored(self, probe: DeviceProbe | CustomerProbe, last_s: int) -> None:
        """A state resumed from a snapshot: probe it too, though no event of it may come."""
        seen = self._devices if isinstance(probe, DeviceProbe) else self._customers
        entity_id = probe.jukebox_id if isinstance(probe, DeviceProbe) else probe.customer_id
        with self._lock:
            seen[entity_id] = max(seen.get(entity_id, last_s), last_s)

    def _sweep(self) -> list[DeviceProbe | CustomerProbe]:
        if self.now_s is None:
            return []
        probes: list[DeviceProbe | CustomerProbe] = []
        for seen, probe in ((self._devices, DeviceProbe), (self._customers, CustomerProbe)):
            idle = [entity_id for entity_id, last_s in seen.items()
                    if silent_past_horizon(last_s, self.now_s, self.horizon_s)]
            for entity_id in idle:
                del seen[entity_id]
            probes.extend(probe(entity_id) for entity_id in idle)
        return probes


class ReleasingLogic:
    """A keyed logic that discards its state when a probe finds it releasable."""

    release: IdleSweep | None = None
    on_count: Callable[[int], None] | None = None  # +1 when a state is held, -1 when released
    state: object  # set by every subclass (a property in the feature steps)

    def releasable(self, fleet_clock_s: int | None, horizon_s: int) -> bool:
        raise NotImplementedError

    def after_probe(self) -> bool:
        """Whether to discard the state, asked after a batch that carried a probe (a probe
        for a key that held nothing built an empty logic: it goes at once)."""
        release = self.release
        if self.state is not None and (
                release is None or not self.releasable(release.now_s, release.horizon_s)):
            return op.StatefulBatchLogic.RETAIN
        self.count_entities(-1)
        return op.StatefulBatchLogic.DISCARD

    def count_entities(self, delta: int) -> None:
        if self.on_count is not None:
            self.on_count(delta)
