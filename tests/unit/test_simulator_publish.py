"""`jukebox simulate` and its producing edge, without a broker.

A failing delivery is exercised for real: the client is pointed at a port where
nothing listens, with a short message timeout, so every record fails in the
delivery callback exactly as it would when a broker goes away.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import typer
from typer.testing import CliRunner

from dataflows.cli import app
from dataflows.local_stack import free_port
from dataflows.simulate import (
    DeliveryReport,
    duration_from_text,
    publish_records,
    read_jsonl,
    record_line,
    simulator_producer_config,
    start_from_text,
    write_jsonl,
)
from schemas.topics import Topics
from simulator.fraud import FraudLabel
from simulator.records import SimRecord
from simulator.simulation import Simulation

runner = CliRunner()


@pytest.fixture
def no_broker_env(monkeypatch):
    for name in ("JUKEBOX_KAFKA_BOOTSTRAP", "JUKEBOX_KAFKA_CLIENT_OPTIONS", "JUKEBOX_KAFKA_TOPIC_PREFIX"):
        monkeypatch.delenv(name, raising=False)


def test_duration_and_start_options():
    assert duration_from_text("90s") == timedelta(seconds=90)
    assert duration_from_text("1.5h") == timedelta(minutes=90)
    assert duration_from_text("2d") == timedelta(days=2)
    with pytest.raises(typer.BadParameter):
        duration_from_text("two hours")
    assert start_from_text("2026-11-27T18:00:00Z") == datetime(2026, 11, 27, 18, tzinfo=UTC)
    assert start_from_text("2026-11-27T21:00:00+03:00") == datetime(2026, 11, 27, 18, tzinfo=UTC)
    with pytest.raises(typer.BadParameter):
        start_from_text("2026-11-27T18:00:00")  # no offset: refused, never guessed
    now = start_from_text(None)
    assert now.tzinfo is UTC and now.second == 0 and now.microsecond == 0


def test_jsonl_keeps_records_byte_for_byte(tmp_path: Path):
    records = list(Simulation(jukeboxes=20, seed=3, duration=timedelta(minutes=30), malformed_rate=0.2).records())
    records.append(SimRecord("plays", b"jb-0000001", b"\xff\xfe not utf-8", 1, ("malformed:malformed_json",)))
    path = tmp_path / "run.jsonl"
    with path.open("wb") as out:
        assert list(write_jsonl(out, records)) == records
    assert list(read_jsonl(path)) == records
    assert b"value_b64" in record_line(records[-1])


def test_producer_config_is_reliable_and_deployment_options_win():
    config = simulator_producer_config({"bootstrap.servers": "b:9092", "linger.ms": "50"})
    assert config["enable.idempotence"] == "true" and config["acks"] == "all"
    assert config["linger.ms"] == "50" and config["bootstrap.servers"] == "b:9092"
    assert config.get("compression.type") == "lz4"  # this librdkafka build has it


def test_failed_deliveries_are_counted_never_dropped():
    records = [r for r in Simulation(jukeboxes=10, seed=1, max_events=40, include_labels=False).records()]
    config = simulator_producer_config({"bootstrap.servers": f"127.0.0.1:{free_port()}",
                                        "message.timeout.ms": "1500", "log_level": "0"})
    report = publish_records(config, Topics("nowhere."), records, flush_timeout_s=15)
    assert report.produced == len(records) == 40
    assert not report.ok and sum(report.failed.values()) == 40 and not report.delivered
    assert "nowhere.jukebox.venues.v1" in report.failed
    assert all(topic.startswith("nowhere.jukebox.") for topic in report.failed)
    assert "40 of 40 records failed delivery" in report.problem()


def test_a_report_without_failures_is_ok():
    report = DeliveryReport(produced=3)
    report.delivered["t"] += 3
    assert report.ok and report.problem() is None


def test_simulate_without_a_broker_says_how_to_get_one(no_broker_env):
    result = runner.invoke(app, ["simulate", "--jukeboxes", "5"])
    assert result.exit_code == 2
    assert "jukebox stack up" in result.output and "JUKEBOX_KAFKA_BOOTSTRAP" in result.output


def test_simulate_to_files_is_deterministic(no_broker_env, tmp_path: Path):
    def run(name: str) -> tuple[bytes, bytes]:
        out, labels = tmp_path / f"{name}.jsonl", tmp_path / f"{name}-labels.jsonl"
        result = runner.invoke(app, [
            "simulate", "--no-kafka", "--jsonl", str(out), "--labels-file", str(labels), "--jukeboxes", "60",
            "--seed", "7", "--duration", "3h", "--start", "2026-11-27T17:00:00Z", "--fraud-rate", "0.5",
            "--catalog",
        ])
        assert result.exit_code == 0, result.output
        return out.read_bytes(), labels.read_bytes()

    (records, labels), again = run("a"), run("b")
    assert (records, labels) == again
    expected = Simulation(60, 7, datetime(2026, 11, 27, 17, tzinfo=UTC), timedelta(hours=3), fraud_rate=0.5,
                          include_catalog=True)
    wanted = list(expected.records())
    assert list(read_jsonl(tmp_path / "a.jsonl")) == [r for r in wanted if r.topic_attr != "labels"]
    label_lines = labels.splitlines()
    assert label_lines == [r.value for r in wanted if r.topic_attr == "labels"] and label_lines
    assert all(FraudLabel.from_json(line).scenario for line in label_lines)


def test_simulate_exits_non_zero_when_deliveries_fail(monkeypatch):
    monkeypatch.setenv("JUKEBOX_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("JUKEBOX_KAFKA_CLIENT_OPTIONS", orjson.dumps(
        {"message.timeout.ms": "1500", "log_level": "0"}).decode())
    result = runner.invoke(app, ["simulate", "--jukeboxes", "5", "--events", "30", "--start", "2026-11-27T17:00:00Z"])
    assert result.exit_code == 1
    assert "delivery failed" in result.output and "30 of 30 records failed" in result.output


def test_bad_options_are_clear_errors(no_broker_env):
    result = runner.invoke(app, ["simulate", "--no-kafka", "--jsonl", "x.jsonl", "--duration", "soon"])
    assert result.exit_code == 2 and "90s, 15m, 2h, 1d" in result.output
    result = runner.invoke(app, ["simulate", "--no-kafka", "--jsonl", "x.jsonl", "--scenario", "card_skimming"])
    assert result.exit_code == 2 and "unknown scenarios" in result.output
