"""Replays against the real broker and Redis: record == Kafka range, isolation, live parity."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import redis
from typer.testing import CliRunner

from dataflows.cli import app
from dataflows.flow import FlowConfig
from dataflows.record import kafka_history
from dataflows.replay import replay_fraud_config
from dataflows.replay_run import feature_lines, messages_by_output, run_replay
from dataflows.simulate import publish_records, simulator_producer_config
from models.decision import DecisionPolicy
from models.rules import RulePolicy
from online_store.feature_row import FeatureRow
from online_store.redis_store import RedisFeatureStore
from schemas.topics import Topics
from simulator.simulation import Simulation
from tests.integration.flow_process import FlowProcess, wait_until

pytestmark = pytest.mark.integration

START = datetime(2026, 11, 27, 16, 0, tzinfo=UTC)
runner = CliRunner()
OUTPUT_FILES = ("fraud_alerts", "dead_letters", "late_events", "recommendations", "features")


def simulation(seed: int) -> Simulation:
    return Simulation(jukeboxes=250, seed=seed, start=START, duration=timedelta(hours=2), fraud_rate=0.6)


def publish(bootstrap: str, topics: Topics, records, rate: float = 0.0) -> None:
    report = publish_records(simulator_producer_config({"bootstrap.servers": bootstrap, "linger.ms": "2"}),
                             topics, records, rate=rate)
    assert report.ok, report.problem()


@pytest.fixture
def settings_env(monkeypatch, kafka_bootstrap, redis_url, topics, redis_key_prefix):
    """The CLI's settings point at the test's topics (its 'live' ones) and Redis prefix."""
    for name, value in {"JUKEBOX_KAFKA_BOOTSTRAP": kafka_bootstrap, "JUKEBOX_KAFKA_TOPIC_PREFIX": topics.prefix,
                        "JUKEBOX_REDIS_URL": redis_url, "JUKEBOX_REDIS_KEY_PREFIX": redis_key_prefix}.items():
        monkeypatch.setenv(name, value)


def invoke(*args: str) -> None:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output


def test_a_recorded_file_replays_exactly_like_the_kafka_range_it_came_from(
    settings_env, kafka_bootstrap, topics, tmp_path
):
    records = list(simulation(seed=31).records())
    publish(kafka_bootstrap, topics, records)
    invoke("record", "--out", str(tmp_path / "history.jsonl"))
    invoke("replay", "--input", str(tmp_path / "history.jsonl"), "--out", str(tmp_path / "file"), "--model", "none")
    invoke("replay", "--kafka", "--out", str(tmp_path / "kafka"), "--model", "none")
    for name in OUTPUT_FILES:
        assert (tmp_path / "file" / f"{name}.jsonl").read_bytes() == \
            (tmp_path / "kafka" / f"{name}.jsonl").read_bytes(), name
    from_file = orjson.loads((tmp_path / "file" / "report.json").read_bytes())
    from_kafka = orjson.loads((tmp_path / "kafka" / "report.json").read_bytes())
    assert from_file["run"]["history_sha256"] == from_kafka["run"]["history_sha256"]
    inputs = [r for r in records if r.topic_attr != "labels"]
    assert from_kafka["run"]["events"] == len(inputs) and from_kafka["outputs"]["alerts"] > 10
    assert from_kafka["labels"]["episodes"] == len({orjson.loads(r.value)["episode_id"] for r in records
                                                     if r.topic_attr == "labels"})

    # a bounded time range: exactly the records whose Kafka timestamp falls in it
    lo, hi = START + timedelta(minutes=40), START + timedelta(minutes=70)
    invoke("replay", "--kafka", "--start", lo.isoformat(), "--end", hi.isoformat(),
           "--out", str(tmp_path / "window"), "--model", "none")
    window = orjson.loads((tmp_path / "window" / "report.json").read_bytes())
    wanted = [r for r in inputs if lo.timestamp() * 1000 <= r.timestamp_ms < hi.timestamp() * 1000]
    assert window["run"]["events"] == len(wanted) > 100
    assert window["run"]["outside_time_range"] == len(records) - len(wanted) - sum(
        1 for r in records if r.topic_attr == "labels" and lo.timestamp() * 1000 <= r.timestamp_ms < hi.timestamp() * 1000)

    # explicit offsets: the first 50 records of one plays partition and nothing else
    others = [f"{t}:{p}=0-0" for t, n in ((topics.plays, 8), (topics.payments, 8), (topics.locations, 4),
                                          (topics.venues, 2), (topics.labels, 2)) for p in range(n)
              if (t, p) != (topics.plays, 3)]
    options = [x for spec in [*others, f"{topics.plays}:3=0-50"] for x in ("--offsets", spec)]
    invoke("replay", "--kafka", *options, "--out", str(tmp_path / "offsets"), "--model", "none")
    assert orjson.loads((tmp_path / "offsets" / "report.json").read_bytes())["run"]["records_by_topic"] == \
        {topics.plays: 50}


def _topic_counts(bootstrap: str, names: list[str]) -> Counter:
    return Counter(raw.topic for raw in kafka_history({"bootstrap.servers": bootstrap}, names))


def _redis_dump(client: redis.Redis, pattern: str) -> dict:
    return {key: client.hgetall(key) for key in client.scan_iter(match=pattern, count=1000)}


def test_a_replay_never_touches_live_keys_or_topics(
    settings_env, kafka_bootstrap, redis_url, topics, redis_key_prefix, tmp_path
):
    publish(kafka_bootstrap, topics, simulation(seed=32).records())
    client = redis.Redis.from_url(redis_url)
    live_store = RedisFeatureStore(client, redis_key_prefix)
    live_store.write([FeatureRow("device", "jb-0000001", 1, START, {"device_plays_5m": 99})],
                     written_at=datetime.now(UTC))
    live_names = [spec.name for spec in topics.specs()]
    topics_before = _topic_counts(kafka_bootstrap, live_names)
    keys_before = _redis_dump(client, f"{redis_key_prefix}:*")

    invoke("replay", "--kafka", "--redis", "--publish", "--namespace", "bt1", "--out", str(tmp_path / "r"),
           "--model", "none")

    assert _topic_counts(kafka_bootstrap, live_names) == topics_before
    assert _redis_dump(client, f"{redis_key_prefix}:*") == keys_before
    report = orjson.loads((tmp_path / "r" / "report.json").read_bytes())
    replay_topics = Topics(f"bt1.{topics.prefix}")
    published = _topic_counts(kafka_bootstrap, [replay_topics.fraud_alerts, replay_topics.dead_letters])
    assert published[replay_topics.fraud_alerts] == report["outputs"]["alerts"] > 0
    assert published[replay_topics.dead_letters] == report["outputs"]["dead_letters"]["total"]
    replay_store = RedisFeatureStore(client, f"bt1:{redis_key_prefix}")
    assert len(list(replay_store.scan_entities("device"))) == report["outputs"]["features"]["device"] > 200
    features = replay_store.read("device", "jb-0000001", now=datetime.now(UTC))
    assert features is not None and features.value("device_plays_5m") != 99
    # the namespace now holds keys: a second replay into it is refused rather than mixed in
    again = runner.invoke(app, ["replay", "--kafka", "--redis", "--namespace", "bt1", "--out", str(tmp_path / "r2"),
                                "--model", "none"])
    assert again.exit_code == 2 and "choose another --namespace" in again.output
    again = runner.invoke(app, ["replay", "--kafka", "--publish", "--namespace", "bt1", "--out", str(tmp_path / "r3"),
                                "--model", "none"])
    assert again.exit_code == 2 and "already exist" in again.output
    assert _topic_counts(kafka_bootstrap, [replay_topics.fraud_alerts])[replay_topics.fraud_alerts] == \
        published[replay_topics.fraud_alerts]  # nothing more was published


# Rules that read customer features: a customer's payments reach its step from many
# jukeboxes, which the live flow does not put in one order (docs/reliability.md).
CROSS_ENTITY = {"payment_testing", "account_on_distant_jukeboxes"}


def _rule_alerts(values) -> tuple[set[str], set[tuple[str, str]], set[tuple[str, str]]]:
    """Ids of the alerts raised by a rule on the jukebox's own features, their (jukebox,
    reason) conditions, and the conditions of the rules on customer features. (Anomaly
    alerts are left out: the one detector learns from every jukebox's closed windows in
    arrival order, which live and replay do not share.)"""
    alerts = [a for a in map(orjson.loads, values) if a["reasons"] != ["anomaly"]]
    own = [a for a in alerts if not CROSS_ENTITY & set(a["reasons"])]
    return ({a["alert_id"] for a in own},
            {(a["jukebox_id"], reason) for a in own for reason in a["reasons"] if reason != "anomaly"},
            {(a["jukebox_id"], reason) for a in alerts for reason in a["reasons"] if reason in CROSS_ENTITY})


class _FlowWithoutRegistry(FlowProcess):
    """`jukebox run` with an empty model registry: rules and the anomaly detector, no model."""

    def env(self) -> dict[str, str]:
        return {**super().env(), "JUKEBOX_DATA_DIR": str(self.workdir / "data")}


def test_the_live_flow_and_a_replay_of_its_input_agree(kafka_bootstrap, redis_url, topics, redis_key_prefix,
                                                       tmp_path):
    """Features and dead letters are identical, and so are the alerts of the rules on a
    jukebox's own features: the live source merges a jukebox's plays, payments and
    locations (three topics) by Kafka timestamp, as the replay orders its history.

    The input is in Kafka before the engine starts, as after an outage. An engine at the
    head of its topics instead releases a topic that is at its head, so a record still on
    its way from the producer can come after a later one of another topic (within the
    5 s lead): 100 % of the rule alerts alike on an idle machine, 90 % with the machine busy,
    and 68 % once in CI (2026-12-05), so that case is not a test of equality."""
    records = list(simulation(seed=33).records())
    publish(kafka_bootstrap, topics, [r for r in records if r.topic_attr == "venues"])
    publish(kafka_bootstrap, topics, [r for r in records if r.topic_attr != "venues"])
    flow = _FlowWithoutRegistry(kafka_bootstrap, redis_url, topics, redis_key_prefix, tmp_path).start()
    try:
        clock = datetime.now(UTC)
        config = FlowConfig(topics=topics, fraud=replay_fraud_config(None, RulePolicy(), DecisionPolicy(),
                                                                     True, False, clock))
        client = {"bootstrap.servers": kafka_bootstrap}
        run = run_replay(lambda: kafka_history(client, [*topics.inputs, topics.labels]), config, written_at=clock)
        replayed = {line: None for line in feature_lines(run.feature_stores, clock)}
        live_store = RedisFeatureStore(redis.Redis.from_url(redis_url), redis_key_prefix)
        wait_until(lambda: {line: None for line in feature_lines([live_store], clock)} == replayed, 60,
                   "the live flow's features to equal the replay's", check=flow.assert_running)
        time.sleep(1)
    finally:
        flow.stop()
    outputs = messages_by_output(run.messages, topics)
    live_dead = sorted(raw.value for raw in kafka_history(client, [topics.dead_letters]))
    assert live_dead == sorted(outputs["dead_letters"]) and live_dead
    live_ids, live_own, live_cross = _rule_alerts(raw.value for raw in kafka_history(client, [topics.fraud_alerts]))
    replay_ids, replay_own, replay_cross = _rule_alerts(outputs["fraud_alerts"])
    same_cross = len(live_cross & replay_cross) / max(len(live_cross | replay_cross), 1)
    print(f"rule alerts on the jukebox's own features: live {len(live_ids)}, replay {len(replay_ids)}; "
          f"on customer features: live {len(live_cross)}, replay {len(replay_cross)}, {same_cross:.0%} alike")
    # Measured 2026-12-05: 11 of 11 alike, idle or with three busy loops on the 2 cores; on
    # customer features 10 of 12 conditions (the live flow missed 2 of 4 account_on_distant_jukeboxes).
    assert len(replay_ids) >= 10 and live_ids == replay_ids and live_own == replay_own
    assert live_cross and replay_cross
