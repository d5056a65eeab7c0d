"""Helpers to read a running flow's own metrics endpoint."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def metric_total(port: int, family: str, **labels: str) -> float:
    """The sum of a counter family's samples (those with all of `labels`)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return 0.0
    return sum(s.value for f in text_string_to_metric_families(text) if f.name == family
               for s in f.samples if s.name.endswith("_total")
               and all(s.labels.get(k) == v for k, v in labels.items()))


def events_in(port: int) -> float:
    return metric_total(port, "jukebox_events_in")
