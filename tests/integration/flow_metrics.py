"""Helpers to read a running flow's own metrics endpoint."""

from __future__ import annotations

from dataflows.status import metric_sum


def metric_total(port: int, family: str, **labels: str) -> float:
    """The sum of a counter family's samples (those with all of `labels`)."""
    return metric_sum(f"http://127.0.0.1:{port}/metrics", f"{family}_total", **labels)


def events_in(port: int) -> float:
    return metric_total(port, "jukebox_events_in")
