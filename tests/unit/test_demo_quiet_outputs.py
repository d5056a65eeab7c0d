"""The demo shows its results once the engine's outputs stop moving, not after a fixed sleep."""

from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry

from dataflows.demo import wait_for_quiet_outputs
from dataflows.local_stack import free_port
from dataflows.metrics import EngineMetrics, start_metrics_server


def test_it_returns_only_once_the_output_counters_have_been_still_for_the_quiet_time():
    registry = CollectorRegistry()
    metrics = EngineMetrics(registry)
    served = start_metrics_server(free_port(), registry, addr="127.0.0.1")
    last_write = [0.0]

    def last_micro_batches() -> None:  # outputs keep coming for ~1.2 s after the last input
        for _ in range(6):
            metrics.redis_write_rows.labels(result="applied").inc(100)
            metrics.alerts.labels(reason="song_looping", severity="medium").inc()
            last_write[0] = time.monotonic()
            time.sleep(0.2)

    writer = threading.Thread(target=last_micro_batches)
    try:
        started = time.monotonic()
        writer.start()
        wait_for_quiet_outputs(f"http://127.0.0.1:{served.port}/metrics", quiet_s=0.6, timeout_s=10)
        returned = time.monotonic()
    finally:
        writer.join()
        served.close()
    assert returned >= last_write[0] + 0.6 - 0.3  # still, for the quiet time (one 0.25 s poll of slack)
    assert returned - started < 5


def test_a_flow_that_is_gone_does_not_hold_it():
    started = time.monotonic()
    wait_for_quiet_outputs(f"http://127.0.0.1:{free_port()}/metrics", quiet_s=5, timeout_s=10)
    assert time.monotonic() - started < 3
