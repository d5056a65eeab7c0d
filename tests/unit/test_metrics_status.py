"""`jukebox status` against a real metrics endpoint served from this process."""

from __future__ import annotations

import doctest
import socket
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from rich.console import Console
from typer.testing import CliRunner

from dataflows import status as status_module
from dataflows.cli import app
from dataflows.metrics import EngineMetrics, MetricsEndpoint, start_metrics_server
from dataflows.status import (
    ScrapeFailed,
    StatusView,
    histogram_buckets,
    histogram_quantile,
    metric_sum,
    parsed_scrape,
    per_second,
    scraped,
    watch_status,
)

PLAYS, PAYMENTS = "jukebox.plays.v1", "jukebox.payments.v1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _populate(m: EngineMetrics) -> None:
    m.events_in.labels(topic=PLAYS).inc(12_000)
    m.events_in.labels(topic=PAYMENTS).inc(3_000)
    m.event_time_lag.labels(topic=PLAYS).set(2.5)
    m.event_time_lag.labels(topic=PAYMENTS).set(19_512.3)  # a replayed backlog, or a stalled input
    m.consumer_lag.labels(topic=PLAYS, partition="0").set(100)
    m.consumer_lag.labels(topic=PLAYS, partition="1").set(250)
    m.decode_failures.labels(topic=PLAYS, reason="malformed_json").inc(7)
    m.dead_letters.labels(topic=PLAYS, reason="malformed_json").inc(7)
    m.late_events.labels(topic=PAYMENTS, reason="too_late").inc(4)
    m.alerts.labels(reason="impossible_travel", severity="high").inc(9)
    m.alert_score.observe(0.97)
    m.record_model_loaded("jukebox-fraud", "12")
    m.model_loaded.labels(model="jukebox-recs").set(0)
    m.drift_psi.labels(model="jukebox-fraud", feature="device_plays_1h").set(0.31)
    m.drift_psi.labels(model="jukebox-fraud", feature="device_speed_kmh_last").set(0.02)
    m.redis_write_batches.inc(40)
    m.redis_write_rows.labels(result="applied").inc(39_000)
    m.redis_write_rows.labels(result="stale").inc(12)
    for _ in range(40):
        m.redis_write_duration.observe(0.003)
    m.scoring_duration.labels(scorer="fraud-onnx").observe(0.02)
    m.entities_in_state.labels(entity="device").set(52_000)
    m.recommendation_updates.labels(result="sent").inc(300)
    m.recommendation_updates.labels(result="suppressed").inc(1_200)


@pytest.fixture
def endpoint() -> Iterator[MetricsEndpoint]:
    registry = CollectorRegistry()
    _populate(EngineMetrics(registry))
    served = start_metrics_server(_free_port(), registry, addr="127.0.0.1")
    try:
        yield served
    finally:
        served.close()


def _url(endpoint: MetricsEndpoint) -> str:
    return f"http://127.0.0.1:{endpoint.port}/metrics"


def test_status_command_shows_a_running_engine(endpoint):
    result = CliRunner().invoke(
        app, ["status", "--metrics-url", _url(endpoint), "--sample-seconds", "0"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    out = result.output
    plays_row = next(line for line in out.splitlines() if PLAYS in line and "12,000" in line)
    assert "2.5 s" in plays_row and "350" in plays_row and "7" in plays_row  # lag, consumer lag, failures
    assert "5h 25m" in next(line for line in out.splitlines() if PAYMENTS in line and "3,000" in line)
    assert "recommendation updates: 300 sent, 1,200 suppressed (ranking unchanged)" in out
    assert "malformed_json" in out
    assert "impossible_travel" in out and "high" in out
    assert "jukebox-fraud" in out and "12" in out and "0.310 (device_plays_1h)" in out
    recs_row = next(line for line in out.splitlines() if "jukebox-recs" in line)
    assert "no" in recs_row
    redis_row = next(line for line in out.splitlines() if "redis write" in line)
    assert "3.0 ms" in redis_row  # mean of 40 writes of 3 ms
    assert "39,000 rows applied, 12 stale" in out
    assert "device 52,000" in out
    assert "totals only" in out


def test_metric_sum_adds_matching_samples_and_is_zero_without_a_page(endpoint):
    assert metric_sum(_url(endpoint), "jukebox_events_in_total") == 15_000
    assert metric_sum(_url(endpoint), "jukebox_events_in_total", topic=PAYMENTS) == 3_000
    assert metric_sum(_url(endpoint), "jukebox_redis_write_rows_total", result="stale") == 12
    assert metric_sum(f"http://127.0.0.1:{_free_port()}/metrics", "jukebox_events_in_total") == 0


def test_status_command_fails_clearly_without_an_engine():
    url = f"http://127.0.0.1:{_free_port()}/metrics"
    result = CliRunner().invoke(app, ["status", "--metrics-url", url, "--sample-seconds", "0"])
    assert result.exit_code == 1
    assert "cannot scrape" in result.output


def test_rates_come_from_two_scrapes():
    registry = CollectorRegistry()
    m = EngineMetrics(registry)
    m.events_in.labels(topic=PLAYS).inc(1_000)
    m.alerts.labels(reason="song_looping", severity="medium").inc(2)
    first = parsed_scrape(generate_latest(registry).decode(), taken_at=100.0)
    m.events_in.labels(topic=PLAYS).inc(4_000)
    m.alerts.labels(reason="song_looping", severity="medium").inc(1)
    for _ in range(10):
        m.redis_write_duration.observe(0.2)
    second = parsed_scrape(generate_latest(registry).decode(), taken_at=102.0)
    console = Console(width=200, record=True)
    console.print(StatusView("u", second, first).renderable())
    text = console.export_text()
    plays_row = next(line for line in text.splitlines() if PLAYS in line)
    assert "5,000" in plays_row and "2,000.0" in plays_row  # total, and 4,000 over 2 s
    looping_row = next(line for line in text.splitlines() if "song_looping" in line)
    assert "30.0" in looping_row  # 1 alert in 2 s = 30 per minute
    assert "rates over 2.0s" in text
    assert "recommendation updates: 0 sent (0.0/s), 0 suppressed" in text
    # Latency over the interval only: all ten writes fell in the (0.1, 0.25] bucket.
    assert histogram_quantile(0.5, histogram_buckets(second, "jukebox_redis_write_duration_seconds", first)) \
        == pytest.approx(0.175)


def test_a_restarted_engine_does_not_show_negative_rates():
    assert per_second({"t": 10.0}, {"t": 500.0}, 2.0) == {"t": 5.0}
    assert per_second({"t": 10.0}, None, 2.0) == {"t": None}


def test_histogram_quantile_follows_prometheus_interpolation():
    buckets = [(0.01, 10.0), (0.1, 90.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.01 + 0.09 * (50 - 10) / 80)
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.1 + 0.9 * 0.5)
    assert histogram_quantile(1.0, [(0.5, 1.0), (float("inf"), 2.0)]) == 0.5  # in +Inf: highest bound


def test_watch_survives_a_failed_scrape(endpoint):
    url = _url(endpoint)
    calls = {"n": 0}

    def flaky(u: str):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ScrapeFailed("cannot scrape: engine restarting")
        return scraped(u)

    console = Console(width=200, record=True)
    watch_status(url, console, interval_s=0.01, refreshes=1, scrape=flaky)
    text = console.export_text()  # the last frame: the error, over the last good scrape
    assert "engine restarting" in text and PLAYS in text and "12,000" in text
    calls["n"] = 0
    console = Console(width=200, record=True)
    watch_status(url, console, interval_s=0.01, refreshes=2, scrape=flaky)
    text = console.export_text()  # recovered on the next refresh
    assert calls["n"] == 3 and "engine restarting" not in text and "rates over" in text


def test_status_doctests():
    assert doctest.testmod(status_module).failed == 0
