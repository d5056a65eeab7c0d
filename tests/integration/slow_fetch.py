"""A consumer whose fetches of one topic lag: the uneven drain of a backlog, on demand."""

from __future__ import annotations

from collections import deque


class SlowTopicConsumer:
    """Wraps a confluent-kafka consumer: records of `topic` come out at most `per_poll` a
    `consume` call, in their order; everything else as fetched."""

    def __init__(self, consumer, topic: str, per_poll: int) -> None:
        self._consumer, self._topic, self._per_poll = consumer, topic, per_poll
        self._held: deque = deque()

    def consume(self, num_messages: int, timeout: float) -> list:
        messages = self._consumer.consume(num_messages, timeout)
        out = [m for m in messages if m.topic() != self._topic]
        self._held.extend(m for m in messages if m.topic() == self._topic)
        out.extend(self._held.popleft() for _ in range(min(self._per_poll, len(self._held))))
        return out

    def __getattr__(self, name: str):
        return getattr(self._consumer, name)


def slowed(part, topic: str, per_poll: int):
    """The source partition `part`, its fetches of `topic` slowed (a retired part reads nothing)."""
    if hasattr(part, "_consumer"):
        part._consumer = SlowTopicConsumer(part._consumer, topic, per_poll)
    return part
