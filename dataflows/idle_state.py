"""Releasing the in-memory state of entities gone quiet, in any keyed step.

`FleetClock` follows the latest admitted event time of the process; a logic that mixes in
`ReleasingLogic` asks Bytewax to wake it every `check_every` (wall clock) and discards its
state once its `releasable(fleet_clock_s, horizon_s)` says no later event can meet it
(`online_store/state_release.py` has the rule and why it changes no output).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import bytewax.operators as op

from dataflows.records import Admitted
from schemas.events import VenueRegistration


class FleetClock:
    """The latest admitted event time (seconds) this process has seen: how far the fleet's
    time has moved, whichever entity it came from. Shared by the steps of one flow."""

    def __init__(self) -> None:
        self.now_s: int | None = None

    def observe(self, results: list) -> None:
        latest = max((int(r.event.event_time.timestamp()) for r in results
                      if isinstance(r, Admitted) and not isinstance(r.event, VenueRegistration)),
                     default=None)
        if latest is not None and (self.now_s is None or latest > self.now_s):
            self.now_s = latest


@dataclass(frozen=True)
class StateRelease:
    fleet_clock: FleetClock
    horizon_s: int
    check_every: timedelta


class ReleasingLogic:
    """Asks to be woken every `check_every` (wall clock) and discards its state once
    `releasable` says no later event can meet it."""

    release: StateRelease | None = None

    def releasable(self, fleet_clock_s: int | None, horizon_s: int) -> bool:
        raise NotImplementedError

    def notify_at(self) -> datetime | None:
        if self.release is None:
            return None
        return datetime.now(UTC) + self.release.check_every

    def on_notify(self) -> tuple[list, bool]:
        release = self.release
        if release is not None and self.releasable(release.fleet_clock.now_s, release.horizon_s):
            return [], op.StatefulBatchLogic.DISCARD
        return [], op.StatefulBatchLogic.RETAIN
