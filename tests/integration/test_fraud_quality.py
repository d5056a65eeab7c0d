"""Detection quality of the whole fraud path, measured through the flow factory.

A model is trained on one simulator seed; the flow (features, ONNX model, rules,
River, decisions, cooldown) then runs over traffic from another seed, and its
alerts are judged against that traffic's labelled episodes. The numbers are
printed (`pytest -s`) and held to the issue's bar.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from dataflows.flow import FlowConfig
from dataflows.fraud_steps import FraudConfig
from dataflows.records import RawRecord
from models.decision import DecisionPolicy
from models.evaluation import episode_metrics
from models.fraud_scorer import FraudScorer, loaded_model_from_bytes
from models.training import FraudTrainer
from models.training_set import labelled_training_set
from schemas.outputs import FraudAlert
from schemas.topics import Topics
from simulator.fraud import FraudLabel
from simulator.simulation import DEFAULT_START, Simulation
from tests.dataflow.flow_harness import run_flow

pytestmark = pytest.mark.integration
TOPICS = Topics()
INPUTS = ("plays", "payments", "locations", "venues")


@pytest.fixture(scope="module")
def scorer() -> FraudScorer:
    history = Simulation(jukeboxes=400, seed=1, duration=timedelta(days=1), fraud_rate=0.3)
    trained = FraudTrainer(n_estimators=60).fit(labelled_training_set(history.records()))
    model = loaded_model_from_bytes(trained.onnx_bytes, "test", trained.sha256)
    return FraudScorer.from_model(model)


@pytest.mark.parametrize("model_threshold", [0.85, None], ids=["live-default-0.85", "model-own-threshold"])
def test_per_scenario_precision_and_recall_on_an_unseen_seed(scorer, model_threshold):
    hours = 18
    sim = Simulation(jukeboxes=500, seed=3, duration=timedelta(hours=hours), fraud_rate=0.5,
                     start=DEFAULT_START + timedelta(days=3))
    records, labels = [], []
    for r in sim.records():
        if r.topic_attr == "labels":
            labels.append(FraudLabel.from_json(r.value))
        elif r.topic_attr in INPUTS:
            records.append(RawRecord(getattr(TOPICS, r.topic_attr), r.key, r.value, 0, len(records),
                                     r.timestamp_ms))
    # The live default (JUKEBOX_MODELS_FRAUD_ALERT_THRESHOLD), or the model's own threshold
    # (chosen at training for at most 3 alerting clean jukebox-hours in 10,000), which serves
    # when that setting is unset
    fraud = FraudConfig(scorer=lambda _now: scorer, emitted_at=lambda t: t, now=lambda: DEFAULT_START,
                        decisions=DecisionPolicy(model_threshold=model_threshold or 0.0),
                        keep_policy_threshold=model_threshold is not None)
    run = run_flow(records, FlowConfig(topics=TOPICS, fraud=fraud), batch_size=500)
    alerts = [FraudAlert.model_validate_json(m.value) for m in run.messages if m.topic == TOPICS.fraud_alerts]
    # an id is published again only as an update: a higher severity or an added reason
    assert len({(a.alert_id, a.severity, tuple(a.reasons)) for a in alerts}) == len(alerts)
    alerts = list({a.alert_id: a for a in alerts}.values())  # what a consumer keeps
    result = episode_metrics(alerts, labels)

    fraud_jukeboxes = {label.jukebox_id for label in labels}
    clean = {k.decode() for k in (r.key for r in records if r.topic == TOPICS.plays)} - fraud_jukeboxes
    false_alerts = [a for a in alerts if a.jukebox_id in clean]
    per_10k_hours = len(false_alerts) / (len(clean) * hours) * 10_000
    print(f"\n{len(records):,} records, {len(alerts):,} alerts, {len(labels):,} labels, "
          f"model threshold {model_threshold or scorer.threshold:.3f}")
    print(f"{'scenario':<30} {'episodes':>8} {'precision':>9} {'recall':>7}")
    for scenario, m in result.by_scenario.items():
        print(f"{scenario:<30} {m.episodes:>8} {m.precision:>9.3f} {m.recall:>7.3f}")
    print(f"alerts inside some episode: {result.precision_any:.3f}; false alerts on clean "
          f"jukeboxes: {len(false_alerts)} = {per_10k_hours:.2f} per 10,000 jukebox-hours")
    for scenario, m in result.by_scenario.items():
        assert m.recall >= 0.9, (scenario, m)
        assert m.alerts == 0 or m.precision >= 0.9, (scenario, m)
    for a in false_alerts:
        print("false alert:", a.jukebox_id, [r.value for r in a.reasons], a.score, a.features)
    assert per_10k_hours < 1.0 or len(false_alerts) <= 1
