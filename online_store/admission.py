"""Which events may enter the windows: lateness and clock-skew checks against arrival.

Judged per record against its *arrival* time (the Kafka record timestamp), not
against other events, so the verdict never depends on processing order, a replay
reaches the same verdicts, and one far-future event cannot make later on-time
events late.

>>> policy = AdmissionPolicy(allowed_lateness_s=3600, max_future_skew_s=300)
>>> admission_verdict(10_000, 10_100, policy) is None
True
>>> admission_verdict(10_000, 10_000 + 3601, policy)
'too_late'
>>> admission_verdict(10_000 + 301, 10_000, policy)
'future_event_time'
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AdmissionPolicy:
    allowed_lateness_s: int = 12 * 3600
    max_future_skew_s: int = 300


def admission_verdict(event_s: float, arrival_s: float, policy: AdmissionPolicy) -> str | None:
    """None when the event may be used; otherwise the quarantine reason code."""
    if event_s - arrival_s > policy.max_future_skew_s:
        return "future_event_time"
    if arrival_s - event_s > policy.allowed_lateness_s:
        return "too_late"
    return None
