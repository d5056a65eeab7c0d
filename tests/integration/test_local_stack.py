from __future__ import annotations

import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

pytestmark = pytest.mark.integration


def test_topics_exist_with_their_partitions(kafka_bootstrap, topics):
    metadata = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10)
    for spec in topics.specs():
        assert len(metadata.topics[spec.name].partitions) == spec.partitions


def test_broker_round_trip_and_redis_answer(kafka_bootstrap, redis_url, topics):
    delivered = []
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    producer.produce(topics.plays, key=b"jb-1", value=b"{}", partition=0,
                     on_delivery=lambda err, msg: delivered.append(err))
    assert producer.flush(10) == 0 and delivered == [None]
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "t",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topics.plays, 0, 0)])
    message = consumer.poll(10)
    consumer.close()
    assert message is not None and message.value() == b"{}"
    assert redis.Redis.from_url(redis_url).ping()
