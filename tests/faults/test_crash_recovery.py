"""Promise 1: SIGKILL at any point, restart with the same recovery directory, lose nothing.

Each test crashes the engine at one point of its cycle (read, write Redis, publish,
snapshot), restarts it on the same recovery directory and checks the verifier's
counts: 0 features wrong, 0 events lost or doubled, every dead letter and late
event present (redeliveries allowed), no alert id published with two contents;
and that the restarted engine consumes again within 15 s.
"""

from __future__ import annotations

import random
import time

import pytest
import redis

from tests.faults.conftest import committed_epoch, report
from tests.faults.feed import (
    engine_outputs,
    produce_acknowledged,
    simulated_records,
    topic_messages,
)
from tests.faults.verifier import expectation, verdict
from tests.integration.flow_process import stored_versions, wait_until

pytestmark = pytest.mark.integration

RESUME_WITHIN_S = 15.0
RATES = {"duplicate_rate": 0.01, "out_of_order_rate": 0.02, "clock_skew_rate": 0.002,
         "malformed_rate": 0.005}


def _records(topics, seed: int, jukeboxes: int = 1200, minutes: int = 60):
    records = simulated_records(topics, jukeboxes, minutes, seed, **RATES)
    half = len(records) // 2
    return records[:half], records[half:]


def _restart_and_verify(engines, bootstrap, redis_url, topics, key_prefix, store, expected,
                        crashed, point: str, behind_at_kill: bool = True, **numbers) -> None:
    before = verdict(expected, store, **engine_outputs(bootstrap, topics))
    if behind_at_kill:
        assert not before.clean, f"the crash came too late to prove anything: {before.summary()} {numbers}"
    restarted = engines(bootstrap, redis_url, topics, key_prefix, workdir=crashed.workdir,
                        snapshot_interval_s=1.0)
    resumed = wait_until(lambda: restarted.metric_total("jukebox_events_in_total") > 0,
                         RESUME_WITHIN_S + 5, "the restarted engine to consume",
                         check=restarted.assert_running)
    caught_up = wait_until(lambda: verdict(expected, store, **engine_outputs(bootstrap, topics)).clean,
                           90, "Redis and the output topics to equal the expectation",
                           check=restarted.assert_running)
    after = verdict(expected, store, **engine_outputs(bootstrap, topics))
    report(f"sigkill/{point}", **numbers, resumed_s=round(resumed, 1),
           clean_after_s=round(resumed + caught_up, 1),
           wrong_at_kill=before.features_wrong + before.entities_missing)
    print(f"[faults] sigkill/{point} verdict: {after.summary()}")
    assert after.clean, after.examples
    assert resumed < RESUME_WITHIN_S


@pytest.mark.slow  # the fast profile keeps the two kills around a write
def test_sigkill_before_the_first_snapshot(engines, kafka_bootstrap, redis_url, topics,
                                           redis_key_prefix, store):
    first, second = _records(topics, seed=101)
    acked = produce_acknowledged(kafka_bootstrap, first + second)
    expected = expectation(acked, topics)
    client = redis.Redis.from_url(redis_url)
    engine = engines(kafka_bootstrap, redis_url, topics, redis_key_prefix, snapshot_interval_s=60)
    wait_until(lambda: len(stored_versions(client, redis_key_prefix, "device")) > 50, 60,
               "the first Redis writes", check=engine.assert_running)
    engine.kill()
    epoch = committed_epoch(engine.recovery_dir)
    assert not epoch, f"a snapshot (epoch {epoch}) was taken: not the case under test"
    _restart_and_verify(engines, kafka_bootstrap, redis_url, topics, redis_key_prefix, store,
                        expected, engine, "before_first_snapshot", records=len(acked),
                        committed_epoch=epoch)


@pytest.mark.slow  # the fast profile keeps the two kills around a write
def test_sigkill_mid_epoch_while_input_streams_in(engines, kafka_bootstrap, redis_url, topics,
                                                  redis_key_prefix, store):
    first, second = _records(topics, seed=102)
    acked = produce_acknowledged(kafka_bootstrap, first)
    engine = engines(kafka_bootstrap, redis_url, topics, redis_key_prefix, snapshot_interval_s=0.5)
    wait_until(lambda: (committed_epoch(engine.recovery_dir) or 0) >= 2, 60, "two snapshots",
               check=engine.assert_running)
    acked += produce_acknowledged(kafka_bootstrap, second)
    time.sleep(random.Random(102).uniform(0.1, 0.6))  # anywhere inside a 0.5 s epoch
    engine.kill()
    epoch = committed_epoch(engine.recovery_dir)
    _restart_and_verify(engines, kafka_bootstrap, redis_url, topics, redis_key_prefix, store,
                        expectation(acked, topics), engine, "mid_epoch", records=len(acked),
                        committed_epoch=epoch)


def test_sigkill_after_redis_writes_before_their_snapshot(engines, kafka_bootstrap, redis_url,
                                                          topics, redis_key_prefix, store):
    first, second = _records(topics, seed=103)
    acked = produce_acknowledged(kafka_bootstrap, first)
    half = expectation(acked, topics)
    engine = engines(kafka_bootstrap, redis_url, topics, redis_key_prefix, snapshot_interval_s=8)
    wait_until(lambda: verdict(half, store, **engine_outputs(kafka_bootstrap, topics)).clean, 60,
               "the first half to be processed", check=engine.assert_running)
    wait_until(lambda: (committed_epoch(engine.recovery_dir) or 0) >= 1, 30,
               "a snapshot covering the first half", check=engine.assert_running)
    epoch = committed_epoch(engine.recovery_dir)
    client = redis.Redis.from_url(redis_url)
    versions = stored_versions(client, redis_key_prefix, "device")
    acked += produce_acknowledged(kafka_bootstrap, second)

    def second_half_written() -> bool:
        now = stored_versions(client, redis_key_prefix, "device")
        return sum(1 for k, v in now.items() if v != versions.get(k)) > 200

    wait_until(second_half_written, 30, "writes of the second half", check=engine.assert_running)
    engine.kill()
    assert committed_epoch(engine.recovery_dir) == epoch, "a snapshot followed the writes"
    # What this point proves is Redis ahead of the last snapshot: the restart replays
    # the second half over keys that already hold it, and must not count it twice. The
    # engine may have finished the whole half before the kill (it drains ~6,800 records
    # in well under a second), so Redis and the topics may already be clean here.
    _restart_and_verify(engines, kafka_bootstrap, redis_url, topics, redis_key_prefix, store,
                        expectation(acked, topics), engine, "after_redis_write_before_snapshot",
                        behind_at_kill=False, records=len(acked), committed_epoch=epoch)


def test_sigkill_while_outputs_await_the_brokers_acknowledgement(
    engines, proxied_broker, proxied_topics, redis_url, redis_key_prefix, store
):
    """The engine has published outputs the broker never acknowledged (once new input
    reaches Redis, the proxy holds every byte): the crash loses them in flight, and
    the restart must publish them again."""
    bootstrap, topics, proxy = proxied_broker.kafka_bootstrap, proxied_topics, proxied_broker.proxy
    records = simulated_records(topics, 1500, 60, 104, **{**RATES, "malformed_rate": 0.03})
    third = len(records) // 3
    acked = produce_acknowledged(bootstrap, records[:third])
    engine = engines(bootstrap, redis_url, topics, redis_key_prefix, snapshot_interval_s=0.5,
                     extra_env={"JUKEBOX_FLOW_BATCH_SIZE": "250"})
    first = expectation(acked, topics)
    wait_until(lambda: verdict(first, store, **engine_outputs(bootstrap, topics)).clean, 60,
               "the first third to be processed and published", check=engine.assert_running)
    client = redis.Redis.from_url(redis_url)
    keys_before = client.dbsize()
    acked += produce_acknowledged(bootstrap, records[third:])
    expected = expectation(acked, topics)
    deadline = time.monotonic() + 30
    while client.dbsize() < keys_before + 300:  # tight poll: new batches reach Redis
        engine.assert_running()
        assert time.monotonic() < deadline, "the rest was not written to Redis within 30 s"
        time.sleep(0.005)
    proxy.blackhole()
    time.sleep(1.5)  # the sink now waits for acknowledgements that cannot come
    engine.kill()
    proxy.cut()  # what the dead process sent and the broker never received is gone
    proxy.heal()
    total = len(expected.dead_letters)
    published = len(topic_messages(bootstrap, topics.dead_letters))
    assert published < total, "every output was acknowledged before the crash"
    _restart_and_verify(engines, bootstrap, redis_url, topics, redis_key_prefix, store, expected,
                        engine, "awaiting_broker_ack", records=len(acked),
                        dead_letters_before_crash=f"{published}/{total}",
                        committed_epoch=committed_epoch(engine.recovery_dir))
