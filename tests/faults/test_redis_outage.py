"""Promise 3: Redis down or slow: bounded retries, then a loud failure or a stall (never a
dropped batch), memory bounded, no lost or doubled update, and the lag drains.

The engine reaches Redis through our proxy; the test reads Redis directly.
"""

from __future__ import annotations

import time

import pytest
import redis

from tests.faults.conftest import keys_under, report
from tests.faults.feed import engine_outputs, produce_acknowledged, simulated_records
from tests.faults.outage import ride_out
from tests.faults.verifier import expectation, verdict
from tests.integration.flow_process import wait_until

pytestmark = pytest.mark.integration

# (outage seconds, engine env): the defaults (5 s socket timeout, 5 attempts with
# backoff: ~26 s of patience) ride out 20 s; 2 attempts of 1 s give up in ~2 s.
BLACKHOLES = [
    pytest.param(20.0, {}, id="20s_default_retries"),
    pytest.param(8.0, {"JUKEBOX_REDIS_RETRY_ATTEMPTS": "2", "JUKEBOX_REDIS_SOCKET_TIMEOUT_S": "1"},
                 id="8s_two_attempts", marks=pytest.mark.slow),
]


def _busy_engine(engines, kafka_bootstrap, redis_proxy, topics, key_prefix, redis_url, seed, env):
    """An engine writing through the proxy, with two thirds of the input still to do."""
    records = simulated_records(topics, 1500, 60, seed, malformed_rate=0.005, duplicate_rate=0.01)
    third = len(records) // 3
    acked = produce_acknowledged(kafka_bootstrap, records[:third])
    proxied_url = f"redis://127.0.0.1:{redis_proxy.port}/0"
    engine = engines(kafka_bootstrap, proxied_url, topics, key_prefix, snapshot_interval_s=1.0,
                     extra_env={"JUKEBOX_FLOW_BATCH_SIZE": "250", **env})
    client = redis.Redis.from_url(redis_url)
    wait_until(lambda: keys_under(client, key_prefix) > 500, 60, "the first writes", check=engine.assert_running)
    # Counted before the rest is produced (the engine may take it in as fast as it comes),
    # and only this test's keys: the server is shared, and other tests' keys expire.
    keys = keys_under(client, key_prefix)
    acked += produce_acknowledged(kafka_bootstrap, records[third:])
    wait_until(lambda: keys_under(client, key_prefix) >= keys + 300, 60, "the rest being written",
               check=engine.assert_running)
    return engine, expectation(acked, topics), proxied_url


@pytest.mark.parametrize(("outage_s", "env"), BLACKHOLES)
def test_redis_blackholed_then_back_nothing_lost_or_doubled(
    outage_s, env, engines, kafka_bootstrap, redis_url, redis_proxy, topics, redis_key_prefix, store
):
    engine, expected, proxied_url = _busy_engine(engines, kafka_bootstrap, redis_proxy, topics,
                                                 redis_key_prefix, redis_url, 301, env)
    outcome = ride_out(
        engine, lambda: engines(kafka_bootstrap, proxied_url, topics, redis_key_prefix,
                                workdir=engine.workdir, snapshot_interval_s=1.0),
        redis_proxy.blackhole, redis_proxy.heal, outage_s, expected, store, kafka_bootstrap, topics)
    name = f"redis_blackhole/{outage_s:.0f}s" + ("_two_attempts" if env else "_default_retries")
    failure = outcome.error_lines("StoreUnavailableError", "StoreError")
    report(name, records=expected.acknowledged, proxy_connections=redis_proxy.stats.connections,
           **outcome.numbers)
    print(f"[faults] {name} message: {failure[-1:]}")
    print(f"[faults] {name} verdict: {outcome.report.summary()}")
    assert outcome.report.clean, outcome.report.examples
    assert outcome.rss_peak_mib < outcome.rss_before_mib + 200, "memory grew during the outage"
    if outcome.behaviour != "stalled":
        assert outcome.logged("unreachable after"), outcome.log[-3000:]
    if env:  # 2 attempts of 1 s: bounded, so it must have given up well within the outage
        assert outcome.exited_after_s is not None and outcome.exited_after_s < 6


@pytest.mark.slow
def test_redis_20ms_slower_per_round_trip_still_drains(
    engines, kafka_bootstrap, redis_url, redis_proxy, topics, redis_key_prefix, store
):
    records = simulated_records(topics, 3000, 60, 302, malformed_rate=0.002, duplicate_rate=0.01)
    acked = produce_acknowledged(kafka_bootstrap, records)
    expected = expectation(acked, topics)
    redis_proxy.delay(0.010)  # each direction: +20 ms per round trip
    engine = engines(kafka_bootstrap, f"redis://127.0.0.1:{redis_proxy.port}/0", topics,
                     redis_key_prefix, snapshot_interval_s=1.0)
    started = time.monotonic()
    wait_until(lambda: engine.metric_total("jukebox_events_in_total") > 0, 30, "consumption",
               check=engine.assert_running)
    drained = wait_until(lambda: verdict(expected, store, **engine_outputs(kafka_bootstrap, topics)).clean,
                         120, "the engine to drain its input over a slow Redis",
                         check=engine.assert_running)
    batches = engine.metric_total("jukebox_redis_write_batches_total")
    seconds = engine.metric_total("jukebox_redis_write_duration_seconds_sum")
    result = verdict(expected, store, **engine_outputs(kafka_bootstrap, topics))
    report("redis_slow/+20ms_rtt", records=len(acked), redis_batches=int(batches),
           mean_batch_write_ms=round(1000 * seconds / max(batches, 1), 1),
           drained_after_s=round(time.monotonic() - started, 1),
           events_per_s=round(len(acked) / max(drained, 0.1)), rss_mib=round(engine.rss_mib()))
    print(f"[faults] redis_slow verdict: {result.summary()}")
    assert result.clean, result.examples
    assert seconds / max(batches, 1) >= 0.020, "the delay was not applied"
