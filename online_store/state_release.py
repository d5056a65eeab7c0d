"""When an entity's in-memory state can be released without changing any output.

Entities restart afresh after `IDLE_RESET_S` of silence (event time), so a state idle for
longer than that, plus the allowed lateness and future skew (no admissible event can
reach back past it), plus a margin for input partitions consumed unevenly, holds nothing
a later event could meet. The fleet clock is the latest admitted event time the engine
has seen. A device assigned to a venue keeps its state: the assignment is reference data
that arrives once (the registry is compacted), and the registry bounds their number.

>>> from datetime import UTC, datetime
>>> from online_store.customer import CustomerState
>>> horizon = release_horizon_s(AdmissionPolicy(allowed_lateness_s=3600, max_future_skew_s=300), 0)
>>> horizon
90300
>>> state = CustomerState("c-1", clock=datetime(2026, 11, 1, tzinfo=UTC))
>>> releasable(state, int(state.clock.timestamp()) + horizon, horizon)
False
>>> releasable(state, int(state.clock.timestamp()) + horizon + 1, horizon)
True
"""

from __future__ import annotations

from online_store.admission import AdmissionPolicy
from online_store.customer import CustomerState
from online_store.definitions import IDLE_RESET_S
from online_store.device import DeviceState


def release_horizon_s(policy: AdmissionPolicy, partition_skew_margin_s: int) -> int:
    """Fleet-clock seconds an entity must be silent before its state can go."""
    return IDLE_RESET_S + policy.allowed_lateness_s + policy.max_future_skew_s + partition_skew_margin_s


def silent_past_horizon(last_s: int | None, fleet_clock_s: int | None, horizon_s: int) -> bool:
    """True when the fleet clock is more than `horizon_s` past an entity's last event time
    (any keyed state with an event-time clock: features, fraud decisions)."""
    return last_s is not None and fleet_clock_s is not None and fleet_clock_s - last_s > horizon_s


def releasable(state: DeviceState | CustomerState | None, fleet_clock_s: int | None, horizon_s: int) -> bool:
    if state is None or state.clock is None:
        return False
    if isinstance(state, DeviceState) and state.venue is not None:
        return False
    return silent_past_horizon(int(state.clock.timestamp()), fleet_clock_s, horizon_s)
