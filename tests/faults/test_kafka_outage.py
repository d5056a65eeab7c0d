"""Promise 2: Kafka unreachable never loses an output silently; the engine stalls or
exits non-zero with a clear message, and resumes without loss.

The canary shows why we have our own sink: Bytewax 0.21.1's stock `KafkaSink`
registers no delivery callback, so when the broker is unreachable for longer than
the delivery timeout its output is dropped and the flow completes as if all went
well. `ConfirmedKafkaSink` raises `DeliveryFailed` instead, so the epoch is never
committed and a rerun publishes everything.
"""

from __future__ import annotations

import time

import bytewax.operators as op
import pytest
import redis
from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage
from bytewax.dataflow import Dataflow
from bytewax.outputs import FixedPartitionedSink
from bytewax.testing import TestingSource, run_main

from dataflows.kafka_sink import ConfirmedKafkaSink, DeliveryFailed, EpochConfirmedKafkaSink
from dataflows.records import OutMessage
from tests.faults.conftest import keys_under, report
from tests.faults.feed import produce_acknowledged, simulated_records, topic_messages
from tests.faults.outage import ride_out
from tests.faults.verifier import expectation
from tests.integration.flow_process import wait_until

pytestmark = pytest.mark.integration

OUTAGE_S = 20.0
CANARY_MESSAGES = 500
CANARY_TIMEOUT_S = 3.0  # the stock sink drops after librdkafka's message.timeout.ms (default 300 s)


def _chain(exc: BaseException | None) -> list[BaseException]:
    """The exception and its causes (Bytewax wraps a sink's error in its own)."""
    found = []
    while exc is not None and exc not in found:
        found.append(exc)
        exc = exc.__cause__ or exc.__context__
    return found


def _publish_with(sink, items) -> None:
    flow = Dataflow("canary")
    stream = op.input("in", flow, TestingSource(items, batch_size=100))
    if isinstance(sink, FixedPartitionedSink):  # the live flow's sink takes (key, message)
        stream = op.key_on("key", stream, lambda _m: "out")
    op.output("out", stream, sink)
    run_main(flow)


def test_canary_stock_kafka_sink_drops_output_silently_ours_raises_and_rerun_delivers(
    proxied_broker, proxied_topics
):
    bootstrap, proxy = proxied_broker.kafka_bootstrap, proxied_broker.proxy
    stock_topic, ours_topic = proxied_topics.dead_letters, proxied_topics.late_events
    config = {"bootstrap.servers": bootstrap, "log_level": "0",
              "message.timeout.ms": str(int(CANARY_TIMEOUT_S * 1000))}
    proxy.cut()

    started = time.monotonic()
    _publish_with(KafkaSink([bootstrap], stock_topic, add_config=config),
                  [KafkaSinkMessage(None, f"stock-{i}".encode()) for i in range(CANARY_MESSAGES)])
    stock_s = time.monotonic() - started  # returned normally: nothing told anyone

    ours = [OutMessage(ours_topic, None, f"ours-{i}".encode()) for i in range(CANARY_MESSAGES)]
    raised_after = {}
    for sink in (ConfirmedKafkaSink(config, delivery_timeout_s=CANARY_TIMEOUT_S),  # per batch
                 EpochConfirmedKafkaSink(config, delivery_timeout_s=CANARY_TIMEOUT_S)):  # per epoch
        started = time.monotonic()
        with pytest.raises(Exception) as raised:
            _publish_with(sink, ours)
        raised_after[type(sink).__name__] = round(time.monotonic() - started, 1)
        causes = _chain(raised.value)
        assert any(isinstance(cause, DeliveryFailed) for cause in causes), (sink, causes)

    proxy.heal()
    stock_delivered = len(topic_messages(bootstrap, stock_topic))
    _publish_with(EpochConfirmedKafkaSink(config, delivery_timeout_s=30), ours)  # the restart's replay
    ours_delivered = len({m.value() for m in topic_messages(bootstrap, ours_topic)})
    report("kafka_outage/canary", messages=CANARY_MESSAGES,
           stock_delivered=stock_delivered, stock_returned_ok_after_s=round(stock_s, 1),
           ours_raised_after_s=raised_after, ours_delivered_after_rerun=ours_delivered)
    assert stock_delivered == 0, "the canary died: the stock sink no longer drops silently"
    assert ours_delivered == CANARY_MESSAGES


# (fault, engine's delivery timeout): a 20 s outage within the default 60 s delivery
# timeout is ridden out (the sink waits); past it, the sink raises and the engine exits.
OUTAGES = [
    pytest.param("cut", None, id="cut"),
    pytest.param("blackhole", None, id="blackhole", marks=pytest.mark.slow),
    pytest.param("cut", 5000, id="cut_past_delivery_timeout", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("fault", "delivery_timeout_ms"), OUTAGES)
def test_engine_survives_kafka_unreachable_for_20s_without_loss(
    fault, delivery_timeout_ms, engines, proxied_broker, proxied_topics, redis_url,
    redis_key_prefix, store
):
    bootstrap, topics, proxy = proxied_broker.kafka_bootstrap, proxied_topics, proxied_broker.proxy
    records = simulated_records(topics, 1500, 60, 201, malformed_rate=0.02, duplicate_rate=0.01)
    third = len(records) // 3
    acked = produce_acknowledged(bootstrap, records[:third])
    env = {"JUKEBOX_FLOW_BATCH_SIZE": "250"}
    if delivery_timeout_ms is not None:
        env["JUKEBOX_KAFKA_CLIENT_OPTIONS"] = f'{{"message.timeout.ms": "{delivery_timeout_ms}"}}'
    engine = engines(bootstrap, redis_url, topics, redis_key_prefix, snapshot_interval_s=1.0,
                     extra_env=env)
    client = redis.Redis.from_url(redis_url)
    wait_until(lambda: keys_under(client, redis_key_prefix) > 500, 60, "the first writes", check=engine.assert_running)
    # Counted before the rest is produced (the engine may take it in as fast as it comes),
    # and only this test's keys: the server is shared, and other tests' keys expire.
    keys = keys_under(client, redis_key_prefix)
    acked += produce_acknowledged(bootstrap, records[third:])
    expected = expectation(acked, topics)
    wait_until(lambda: keys_under(client, redis_key_prefix) >= keys + 300, 60,  # now the broker goes away
               "the rest being processed", check=engine.assert_running)
    outcome = ride_out(
        engine, lambda: engines(bootstrap, redis_url, topics, redis_key_prefix,
                                workdir=engine.workdir, snapshot_interval_s=1.0),
        getattr(proxy, fault), proxy.heal, OUTAGE_S, expected, store, bootstrap, topics)
    name = f"kafka_outage/{fault}" + ("" if delivery_timeout_ms is None else "_past_delivery_timeout")
    report(name, outage_s=OUTAGE_S, records=len(acked), **outcome.numbers)
    print(f"[faults] {name} verdict: {outcome.report.summary()}")
    assert outcome.report.clean, outcome.report.examples
    assert outcome.rss_peak_mib < outcome.rss_before_mib + 200, "memory grew during the outage"
    if delivery_timeout_ms is not None:
        assert outcome.behaviour != "stalled", "the sink outlived its delivery timeout"
        failure = outcome.error_lines("DeliveryFailed")
        print(f"[faults] {name} message: {failure[-1:]}")
        assert failure, outcome.log[-3000:]
