"""`jukebox replay` end to end over a recorded file, the backtest report, and the diff of two runs."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from dataflows.backtest_report import (
    alert_timeline,
    recommendation_quality,
    recommendation_updates,
    report_diff,
)
from dataflows.cli import app
from dataflows.simulate import record_line
from models.evaluation import episode_metrics
from schemas.outputs import FraudAlert, RankedSong, RecommendationUpdate
from simulator.fraud import FraudLabel
from simulator.simulation import Simulation

START = datetime(2026, 11, 27, 16, 0, tzinfo=UTC)
runner = CliRunner()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Path, Path, int]:
    """A simulator history file (labels in their own file, as `simulate --labels-file` writes)."""
    root = tmp_path_factory.mktemp("history")
    sim = Simulation(jukeboxes=250, seed=5, start=START, duration=timedelta(hours=2), fraud_rate=0.8,
                     late_rate=0.5)
    history, labels, events = root / "history.jsonl", root / "labels.jsonl", 0
    with history.open("wb") as h, labels.open("wb") as lab:
        for record in sim.records():
            if record.topic_attr == "labels":
                lab.write(record.value + b"\n")
            else:
                events += 1
                h.write(record_line(record))
    return history, labels, events


def replay(history: Path, labels: Path, out: Path, *options: str):
    result = runner.invoke(app, ["replay", "--input", str(history), "--labels", str(labels), "--out", str(out),
                                 "--model", "none", *options])
    assert result.exit_code == 0, result.output
    return orjson.loads((out / "report.json").read_bytes())


def test_replay_command_writes_sorted_outputs_and_a_report_identical_on_a_rerun(recorded, tmp_path):
    history, labels, events = recorded
    report = replay(history, labels, tmp_path / "a")
    replay(history, labels, tmp_path / "b")
    names = sorted(p.name for p in (tmp_path / "a").glob("*.jsonl"))
    assert names == ["dead_letters.jsonl", "features.jsonl", "fraud_alerts.jsonl", "late_events.jsonl",
                     "model_events.jsonl", "recommendations.jsonl"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
        digest = hashlib.sha256((tmp_path / "a" / name).read_bytes()).hexdigest()
        assert report["outputs"]["sha256"][name] == digest
    alerts = [FraudAlert.model_validate_json(line) for line in (tmp_path / "a" / "fraud_alerts.jsonl").read_bytes().splitlines()]
    assert alerts == sorted(alerts, key=lambda a: a.event_time.isoformat()) and len(alerts) == report["outputs"]["alerts"]
    assert report["run"]["events"] == events and report["run"]["speedup_vs_real_time"] > 100
    assert sum(report["alerts"]["by_severity"].values()) == len(alerts)
    for reason, counts in report["alerts"]["timeline"]["by_reason"].items():
        assert sum(counts) == report["alerts"]["by_reason"][reason]
    # precision/recall are the training-time judge's, over these alerts and labels
    label_list = [FraudLabel.from_json(line) for line in labels.read_bytes().splitlines()]
    judged = episode_metrics(alerts, label_list)
    assert report["labels"]["episodes"] == len({label.episode_id for label in label_list})
    for scenario, metrics in judged.by_scenario.items():
        assert report["labels"]["by_scenario"][scenario]["recall"] == metrics.recall
    assert report["config"]["fraud"]["model"] is None and report["config"]["fraud"]["anomaly"] is True
    page = (tmp_path / "a" / "report.html").read_text()
    assert page.count("<svg") == 3 and "song_looping" in page


def test_diff_puts_two_configurations_side_by_side(recorded, tmp_path):
    history, labels, _ = recorded
    replay(history, labels, tmp_path / "base")
    replay(history, labels, tmp_path / "strict", "--rule", "looping_min_plays_1h=1000", "--no-anomaly",
           "--allowed-lateness", "30m")
    result = runner.invoke(app, ["replay", "diff", str(tmp_path / "base" / "report.json"),
                                 str(tmp_path / "strict" / "report.json"), "--html", str(tmp_path / "d.html")])
    assert result.exit_code == 0, result.output
    assert "same history" in result.output
    a = orjson.loads((tmp_path / "base" / "report.json").read_bytes())
    b = orjson.loads((tmp_path / "strict" / "report.json").read_bytes())
    rows = {metric: (x, y) for metric, x, y in report_diff(a, b)}
    assert rows["config.fraud.rules.looping_min_plays_1h"] == (12.0, 1000.0)
    assert rows["config.admission.allowed_lateness_s"] == (12 * 3600, 1800)
    assert rows["identical fraud_alerts.jsonl"] == ("no", "no")
    assert rows["alerts.by_reason.song_looping"][1] is None and rows["alerts.by_reason.song_looping"][0] > 0
    assert rows["outputs.late_events.total"][1] > rows["outputs.late_events.total"][0]
    assert "<svg" in (tmp_path / "d.html").read_text()
    shown = runner.invoke(app, ["replay", "show", str(tmp_path / "strict" / "report.json"),
                                "--html", str(tmp_path / "s.html")])
    assert shown.exit_code == 0 and "alerts by reason" in shown.output
    assert "not run (--recs)" in shown.output  # not "0", which would read as a silent recommender
    assert "not run (--recs)" in (tmp_path / "s.html").read_text()
    assert (tmp_path / "s.html").read_text().count("<svg") == 3  # reasons, severities, scenarios


def test_replay_refuses_what_it_cannot_do(recorded, tmp_path):
    history, _labels, _ = recorded
    assert runner.invoke(app, ["replay", "--input", str(history)]).exit_code == 2  # no --out
    bad_rule = runner.invoke(app, ["replay", "--input", str(history), "--out", str(tmp_path / "x"),
                                   "--model", "none", "--rule", "looping=1"])
    assert bad_rule.exit_code == 2 and "not one of" in bad_rule.output
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_bytes(b'{"topic":"x.jukebox.plays.v1","partition":0,"offset":0,"timestamp_ms":1,"key":null,"value":null}\n')
    no_events = runner.invoke(app, ["replay", "--input", str(foreign), "--out", str(tmp_path / "z"), "--model", "none"])
    assert no_events.exit_code == 1 and "no events" in no_events.output
    missing_model = runner.invoke(app, ["replay", "--input", str(history), "--out", str(tmp_path / "m"),
                                        "--model", str(tmp_path / "absent.onnx")])
    assert missing_model.exit_code == 2 and "cannot load model" in missing_model.output


def test_recommendation_quality_judges_plays_against_the_list_in_force():
    t = START

    def update(jukebox: str, minutes: int, songs: list[str]) -> RecommendationUpdate:
        return RecommendationUpdate(jukebox_id=jukebox, songs=[RankedSong(song_id=s, score=1.0) for s in songs],
                                    model_version="3", generated_at=t, based_on_event_time=t + timedelta(minutes=minutes))

    base = int(t.timestamp())
    plays = {"jb-1": [(base - 60, "s1"), (base + 60, "s1"), (base + 120, "s9"), (base + 700, "s2")],
             "jb-2": [(base + 30, "s5")]}
    quality = recommendation_quality([update("jb-1", 0, ["s1", "s2"]), update("jb-1", 10, ["s3"])], plays)
    # the play before the first list is not judged; s1 hits, s9 misses, s2 at +700 s misses the new list
    assert quality["plays_judged"] == 3 and quality["hit_rate"] == pytest.approx(1 / 3)
    assert quality["jukeboxes"] == 1 and quality["distinct_songs"] == 3
    assert recommendation_quality([], plays) is None


def test_alert_timeline_counts_every_alert_in_its_event_time_bucket():
    from models.decision import DecisionPolicy, decide
    from models.rules import RulePolicy, rule_hits

    features = {"device_unpaid_plays_1h": 12, "device_plays_1h": 14}
    alerts = [decide(f"jb-{i}", None, START + timedelta(minutes=7 * i), features, None, None,
                     rule_hits(features, RulePolicy()), DecisionPolicy(), {}, START) for i in range(20)]
    timeline = alert_timeline(alerts, int(START.timestamp()), int(START.timestamp()) + 3600)
    assert timeline["bucket_s"] == 300 and sum(timeline["by_reason"]["unpaid_plays"]) == 20
    assert sum(sum(v) for v in timeline["by_severity"].values()) == 20


def test_a_model_file_and_its_threshold_can_be_backtested(recorded, tmp_path):
    import numpy as np
    from sklearn.ensemble import RandomForestClassifier

    from models.fraud_features import FRAUD_MODEL_FEATURES
    from models.onnx_export import onnx_model_bytes

    history, labels, _ = recorded
    rnd = np.random.default_rng(0)
    X = rnd.random((600, len(FRAUD_MODEL_FEATURES)), dtype=np.float32) * 10
    unpaid = FRAUD_MODEL_FEATURES.index("device_unpaid_plays_1h")
    forest = RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0).fit(X, X[:, unpaid] > 2)
    model = tmp_path / "candidate.onnx"
    model.write_bytes(onnx_model_bytes(forest, FRAUD_MODEL_FEATURES))
    common = ["replay", "--input", str(history), "--labels", str(labels), "--model", str(model), "--no-anomaly"]
    for name, threshold in (("low", ["--model-threshold", "0.5"]), ("high", ["--model-threshold", "0.99"]),
                            ("default", [])):
        result = runner.invoke(app, [*common, *threshold, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    low = orjson.loads((tmp_path / "low" / "report.json").read_bytes())
    high = orjson.loads((tmp_path / "high" / "report.json").read_bytes())
    default = orjson.loads((tmp_path / "default" / "report.json").read_bytes())["config"]["fraud"]
    # by default, the live flow's threshold (JUKEBOX_MODELS_FRAUD_ALERT_THRESHOLD), not the model's
    assert default["decisions"]["model_threshold"] == 0.85 and default["keep_policy_threshold"]
    version = low["config"]["fraud"]["model"]["version"]
    assert version.startswith("file-") and low["config"]["fraud"]["decisions"]["model_threshold"] == 0.5
    alerts = [orjson.loads(line) for line in (tmp_path / "low" / "fraud_alerts.jsonl").read_bytes().splitlines()]
    assert all(a["model_versions"] == {"jukebox-fraud": version} for a in alerts)
    assert low["alerts"]["by_reason"].get("model_score", 0) > high["alerts"]["by_reason"].get("model_score", 0)


def test_recommendations_replay_byte_identical_from_a_catalog_file(recorded, tmp_path):
    from models.recs_catalog import write_catalog_jsonl

    history, labels, _ = recorded
    catalog = tmp_path / "catalog.jsonl"
    write_catalog_jsonl(catalog, Simulation(jukeboxes=250, seed=5, start=START).catalog.songs)
    options = ("--recs", "--catalog", str(catalog), "--recs-model", "none", "--features-only")
    first = replay(history, labels, tmp_path / "a", *options)
    replay(history, labels, tmp_path / "b", *options)
    lists = (tmp_path / "a" / "recommendations.jsonl").read_bytes()
    assert lists and lists == (tmp_path / "b" / "recommendations.jsonl").read_bytes()
    updates = [RecommendationUpdate.model_validate_json(line) for line in lists.splitlines()]
    assert {u.model_version for u in updates} == {"trending"}
    assert all(u.generated_at == u.based_on_event_time for u in updates)  # event time, not wall clock
    assert first["config"]["recs"]["ranked_by"] == "trending"
    assert recommendation_updates(first) == len(updates) == first["outputs"]["recommendations"]


def test_ctrl_c_during_a_replay_writes_nothing_and_exits_130(recorded, tmp_path, monkeypatch):
    import dataflows.replay as replay_module

    history, labels, _ = recorded
    read = replay_module.fingerprinted

    def interrupted(records, digest):  # Ctrl-C while Bytewax reads the history
        for i, record in enumerate(read(records, digest)):
            if i == 500:
                raise KeyboardInterrupt
            yield record

    monkeypatch.setattr(replay_module, "fingerprinted", interrupted)
    result = runner.invoke(app, ["replay", "--input", str(history), "--labels", str(labels),
                                 "--out", str(tmp_path / "a"), "--model", "none"])
    assert result.exit_code == 130, result.output
    assert "replay interrupted after" in result.output  # Bytewax itself logs where the reading stopped
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())
