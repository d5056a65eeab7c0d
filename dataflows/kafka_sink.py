"""Kafka sinks that confirm every delivery, or fail the flow loudly.

Bytewax 0.21.1's KafkaSink registers no delivery callback: with the broker gone,
its output is lost without a word. Ours raise `DeliveryFailed` unless every message
was acknowledged, before the epoch that produced it is committed. The flow then stops
before the epoch's snapshot, so on restart the inputs are replayed and the outputs
produced again (at-least-once; alert ids are deterministic, so consumers deduplicate
by id).

- `ConfirmedKafkaSink` confirms each batch (flush per `write_batch`): simple, for any
  stream.
- `EpochConfirmedKafkaSink` sends as batches come and confirms once per epoch, in the
  partition's `snapshot()`, which Bytewax calls when the epoch closes and before it is
  committed. Under live load the flow's output arrives in many small batches, and a
  flush per batch held the worker for a broker round trip each time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bytewax.outputs import (
    DynamicSink,
    FixedPartitionedSink,
    StatefulSinkPartition,
    StatelessSinkPartition,
)
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from dataflows.records import OutMessage

# Idempotent producer: broker-side dedup of retries, ordered per partition.
RELIABLE_PRODUCER_DEFAULTS = {
    "enable.idempotence": "true",
    "acks": "all",
    "linger.ms": "5",
    "compression.type": "lz4",
}


class DeliveryFailed(RuntimeError):
    """Some messages were not acknowledged by the broker; nothing was dropped silently."""


class ConfirmedProducer:
    """Publishes batches; returns only when the broker acknowledged every message."""

    def __init__(
        self,
        client_config: dict[str, str],
        delivery_timeout_s: float = 60.0,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        config = {**RELIABLE_PRODUCER_DEFAULTS, **client_config}
        config.setdefault("message.timeout.ms", str(int(delivery_timeout_s * 1000)))
        self._producer = Producer(config)
        self._timeout_s = delivery_timeout_s
        self._on_failure = on_failure
        self._failures: list[tuple[str, KafkaError]] = []
        self._sent = 0  # sent since the last confirm()

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failures.append((msg.topic() or "?", err))
            if self._on_failure is not None:
                self._on_failure(msg.topic() or "?")

    def publish(self, messages: Sequence[OutMessage]) -> None:
        """Send `messages` and wait until the broker acknowledged every one."""
        self.send(messages)
        self.confirm()

    def send(self, messages: Sequence[OutMessage]) -> None:
        """Enqueue `messages` without waiting (delivery reports are served as it goes);
        nothing is confirmed until `confirm()`."""
        for message in messages:
            self._produce(message)
        self._sent += len(messages)
        self._producer.poll(0)

    def confirm(self) -> None:
        """Return once every message sent so far is acknowledged; raise DeliveryFailed
        (naming the first error) if any failed or is still unacknowledged at the timeout."""
        if not self._sent:
            return
        undelivered = self._producer.flush(self._timeout_s + 5)
        sent, self._sent = self._sent, 0
        if self._failures or undelivered:
            failures, self._failures = self._failures, []
            first = f"; first error on {failures[0][0]}: {failures[0][1].str()}" if failures else ""
            raise DeliveryFailed(
                f"{len(failures)} of {sent} messages failed and {undelivered} are still "
                f"unacknowledged after {self._timeout_s:.0f}s{first}. The flow stops here so that "
                "its inputs are replayed from the last snapshot on restart."
            )

    def _produce(self, message: OutMessage) -> None:
        while True:
            try:
                self._producer.produce(
                    message.topic, message.value, message.key,
                    headers=message.headers or None, on_delivery=self._delivered,
                )
                return
            except BufferError:  # local queue full: serve callbacks, then retry
                self._producer.poll(0.1)
            except KafkaException as exc:
                raise DeliveryFailed(f"could not enqueue a message for {message.topic}: {exc}") from exc

    def close(self) -> None:
        if self._producer.flush(self._timeout_s) or self._failures:
            raise DeliveryFailed("messages still unacknowledged at shutdown")


class _ConfirmedPartition(StatelessSinkPartition[OutMessage]):
    def __init__(self, producer: ConfirmedProducer) -> None:
        self._producer = producer

    def write_batch(self, items: list[OutMessage]) -> None:
        self._producer.publish(items)

    def close(self) -> None:
        self._producer.close()


class _ProducerConfig:
    """What a sink's partitions build their ConfirmedProducer from (the constructor of both sinks)."""

    def __init__(
        self,
        client_config: dict[str, str],
        delivery_timeout_s: float = 60.0,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self._config = client_config
        self._timeout_s = delivery_timeout_s
        self._on_failure = on_failure

    def _new_producer(self) -> ConfirmedProducer:
        return ConfirmedProducer(self._config, self._timeout_s, self._on_failure)


class ConfirmedKafkaSink(_ProducerConfig, DynamicSink[OutMessage]):
    """One confirmed producer per worker; each message names its own topic."""

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ConfirmedPartition:
        return _ConfirmedPartition(self._new_producer())


class _EpochConfirmedPartition(StatefulSinkPartition[OutMessage, None]):
    def __init__(self, producer: ConfirmedProducer) -> None:
        self._producer = producer

    def write_batch(self, items: list[OutMessage]) -> None:
        self._producer.send(items)

    def snapshot(self) -> None:
        self._producer.confirm()  # the epoch closes: everything it produced is acknowledged

    def close(self) -> None:
        self._producer.close()


class EpochConfirmedKafkaSink(_ProducerConfig, FixedPartitionedSink[OutMessage, None]):
    """One producer for the flow's Kafka output (a keyed stream; the key is ignored),
    confirmed once per epoch. Output is small beside the input (alerts, dead letters,
    updates), so one partition, on one worker, carries it."""

    PART = "kafka-out"

    def list_parts(self) -> list[str]:
        return [self.PART]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _EpochConfirmedPartition:
        return _EpochConfirmedPartition(self._new_producer())
