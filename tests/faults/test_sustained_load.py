"""Promise 7 (long profile): at 80% of the measured maximum rate for 10 minutes, the
consumer lag does not grow, p99 latency stays bounded and memory stays flat.

First the maximum rate is measured by draining a backlog; then a paced producer
sends live events (event time = now) at 80% of it. Every 10 s the test samples the
consumer lag (metrics page), the engine's RSS, and the end-to-end latency of
recently written jukeboxes (`_written_ms - _as_of_ms` of their Redis hash: when the
engine wrote minus the event time of the latest event). The figures are printed.

    pytest tests/faults/test_sustained_load.py -m slow -s
    JUKEBOX_FAULTS_SUSTAIN_S=120 pytest ... -m slow -s   # a shorter run
"""

from __future__ import annotations

import os
import random
import threading
import time
from datetime import UTC, datetime

import pytest
import redis
from confluent_kafka import Producer

from tests.faults.conftest import report
from tests.faults.feed import produce_acknowledged, simulated_records
from tests.integration.flow_process import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]

SUSTAIN_S = float(os.environ.get("JUKEBOX_FAULTS_SUSTAIN_S", "600"))
LOAD_SHARE = 0.8
JUKEBOXES = 20_000
SAMPLE_EVERY_S = 10.0


def live_value(kind: str, i: int, jukebox: str, now: datetime) -> bytes:
    t = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if kind == "play":
        return (f'{{"event_id":"live-{i}","jukebox_id":"{jukebox}","venue_id":"v1",'
                f'"song_id":"s{i % 50}","played_at":"{t}","credits_used":1}}').encode()
    if kind == "payment":
        return (f'{{"event_id":"live-{i}","payment_id":"lp-{i}","jukebox_id":"{jukebox}",'
                f'"venue_id":"v1","customer_id":"c{i % 5000}","amount":"20","currency":"KES",'
                f'"method":"mobile_money","status":"succeeded","occurred_at":"{t}"}}').encode()
    return (f'{{"event_id":"live-{i}","jukebox_id":"{jukebox}","lat":-1.29,"lon":36.82,'
            f'"accuracy_m":9.5,"reported_at":"{t}"}}').encode()


class PacedProducer(threading.Thread):
    """Live events at `rate` per second (plays 60%, payments 25%, locations 15%)."""

    def __init__(self, bootstrap: str, topics, rate: float, seconds: float) -> None:
        super().__init__(daemon=True)
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                                  "compression.type": "lz4", "log_level": 0})
        self.topics, self.rate, self.seconds = topics, rate, seconds
        self.sent = self.failed = 0

    def _delivered(self, err, _msg) -> None:
        if err is not None:
            self.failed += 1

    def run(self) -> None:
        rnd = random.Random(7)
        started = time.monotonic()
        kinds = [("play", self.topics.plays)] * 12 + [("payment", self.topics.payments)] * 5 + \
                [("location", self.topics.locations)] * 3
        while (elapsed := time.monotonic() - started) < self.seconds:
            due = int(elapsed * self.rate)
            now = datetime.now(UTC)
            while self.sent < due:
                kind, topic = kinds[rnd.randrange(len(kinds))]
                jukebox = f"jb-{rnd.randrange(JUKEBOXES)}"
                try:
                    self.producer.produce(topic, live_value(kind, self.sent, jukebox, now),
                                          jukebox.encode(), on_delivery=self._delivered)
                except BufferError:
                    self.producer.poll(0.05)
                    continue
                self.sent += 1
            self.producer.poll(0)
            time.sleep(0.01)
        self.producer.flush(60)


def _consumer_lag(engine) -> float:
    return engine.metric_total("jukebox_kafka_consumer_lag_messages")


def _latencies_ms(client: redis.Redis, key_prefix: str, sample: int = 300) -> list[int]:
    keys = [f"{key_prefix}:device:v1:jb-{random.randrange(JUKEBOXES)}" for _ in range(sample)]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hmget(key, "_written_ms", "_as_of_ms")
    now_ms = int(time.time() * 1000)
    found = []
    for written, as_of in pipe.execute():
        if written and as_of and now_ms - int(written) < SAMPLE_EVERY_S * 1000:
            found.append(int(written) - int(as_of))  # written recently: a live sample
    return found


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def test_80_percent_of_max_rate_for_10_minutes(engines, kafka_bootstrap, redis_url, topics,
                                              redis_key_prefix):
    backlog = simulated_records(topics, 5000, 60, 701, malformed_rate=0.001)
    produce_acknowledged(kafka_bootstrap, backlog)
    engine = engines(kafka_bootstrap, redis_url, topics, redis_key_prefix, snapshot_interval_s=5.0)
    wait_until(lambda: engine.metric_total("jukebox_events_in_total") > 0, 60, "consumption",
               check=engine.assert_running)
    started = time.monotonic()
    wait_until(lambda: engine.metric_total("jukebox_events_in_total") >= len(backlog), 600,
               "the backlog to drain", check=engine.assert_running)
    max_rate = len(backlog) / (time.monotonic() - started)
    rate = LOAD_SHARE * max_rate

    client = redis.Redis.from_url(redis_url)
    producer = PacedProducer(kafka_bootstrap, topics, rate, SUSTAIN_S)
    producer.start()
    samples = []  # (t, lag, rss, latencies)
    t0 = time.monotonic()
    while producer.is_alive():
        time.sleep(SAMPLE_EVERY_S)
        engine.assert_running()
        samples.append((time.monotonic() - t0, _consumer_lag(engine), engine.rss_mib(),
                        _latencies_ms(client, redis_key_prefix)))
    producer.join()
    first = [s for s in samples if s[0] <= 60] or samples[:1]
    last = [s for s in samples if s[0] >= samples[-1][0] - 60]
    latencies = [v for s in samples[1:] for v in s[3]]
    lag_first, lag_last = max(s[1] for s in first), max(s[1] for s in last)
    rss_first, rss_last = max(s[2] for s in first), max(s[2] for s in last)
    report("sustained_load", seconds=round(SUSTAIN_S), max_rate_eps=round(max_rate),
           offered_eps=round(rate), sent=producer.sent, failed=producer.failed,
           lag_first_min=round(lag_first), lag_last_min=round(lag_last),
           rss_first_min_mib=round(rss_first), rss_last_min_mib=round(rss_last),
           latency_p50_ms=_p(latencies, 0.5), latency_p99_ms=_p(latencies, 0.99),
           latency_max_ms=max(latencies, default=None), latency_samples=len(latencies))
    assert producer.failed == 0
    assert lag_last <= max(2 * lag_first, rate * 10), "consumer lag grows"
    assert rss_last <= rss_first + 300, "memory is not flat"
    assert _p(latencies, 0.99) < 15_000
