"""Drift checks in the flow: scored batches against the serving model's training reference.

    fraud_score ─ drift_sample (stateless: one sample per scored batch)
                ─ key by model ─ fraud_drift (one DriftMonitor per input and score) ─ model events

A sample is the batch's input columns (built with `fraud_features.feature_matrix`, as
the model saw them) and its scores: per-event cost is a few numpy operations per batch.
All samples of a model meet on one worker (keyed by model name), like the anomaly
detector. The monitors belong to the model version in use and restart when it changes
(`models.model_drift`); a version without a stored reference is not checked (logged
once). Every closed window is reported to `on_report` (metrics); its `ModelEvent`s
go to `jukebox.model-events.v1`, keyed by model name, through the confirmed sink.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import bytewax.operators as op
import numpy as np
from bytewax.dataflow import Stream

from dataflows.records import OutMessage
from models.drift import DriftReport
from models.fraud_features import MISSING_DEFAULTS, feature_matrix
from models.model_drift import (
    DriftPolicy,
    ModelDriftState,
    ReferenceLookup,
    drift_state_for,
    update_model_drift,
)
from schemas.outputs import SCORE_FEATURE, ModelEvent
from schemas.topics import Topics

log = logging.getLogger(__name__)


@dataclass
class DriftConfig:
    """`reference(model, version)` returns the version's `ModelReference` or None (checks
    off for it); it is called once per version change. `on_report` sees every window."""

    reference: ReferenceLookup
    policy: DriftPolicy = field(default_factory=DriftPolicy)
    defaults: Mapping[str, float] = field(default_factory=lambda: dict(MISSING_DEFAULTS))
    on_report: Callable[[DriftReport], None] | None = None


@dataclass(frozen=True, slots=True)
class DriftSample:
    """The rows one model version scored in one batch, with their scores."""

    model: str
    version: str
    event_time: datetime  # the latest in the batch
    rows: tuple[Mapping[str, object], ...]
    scores: np.ndarray


def drift_samples(batch: Sequence[tuple[str, object]]) -> list[tuple[str, DriftSample]]:
    """(model, sample) per model version in a batch of `(jukebox_id, Scored)`; unscored rows
    (no model loaded) are left out."""
    groups: dict[tuple[str, str], list] = {}
    for _key, scored in batch:
        if getattr(scored, "model_score", None) is None or not scored.model_versions:  # type: ignore[attr-defined]
            continue  # unscored, or a payment placeholder (replay order)
        model, version = next(iter(scored.model_versions.items()))  # type: ignore[attr-defined]
        groups.setdefault((model, version), []).append(scored)
    return [
        (model, DriftSample(
            model, version, max(s.request.event_time for s in items),
            tuple(s.request.features for s in items),
            np.fromiter((s.model_score for s in items), dtype=float, count=len(items)),
        ))
        for (model, version), items in groups.items()
    ]


def sample_columns(sample: DriftSample, names: Sequence[str],
                   defaults: Mapping[str, float]) -> dict[str, np.ndarray]:
    """Column name -> values (inputs as the model saw them, and `score`)."""
    columns = {SCORE_FEATURE: sample.scores}
    if names:
        X = feature_matrix(sample.rows, tuple(names), {n: defaults.get(n, 0.0) for n in names})
        columns.update({name: X[:, i] for i, name in enumerate(names)})
    return columns


def model_event_message(event: ModelEvent, topics: Topics) -> OutMessage:
    return OutMessage(topics.model_events, event.model.encode(), event.model_dump_json().encode(),
                      [("jukebox.model_event", event.kind.encode())])


def update_drift(
    state: ModelDriftState | None, sample: DriftSample, config: DriftConfig
) -> tuple[ModelDriftState, list[DriftReport]]:
    """One sample into the model's drift state; the reports of the windows it closed."""
    current = drift_state_for(state, sample.model, sample.version, config.reference, config.policy)
    if current is not state and not current.checking:
        log.warning("%s v%s has no drift reference: drift checks are off for it",
                    sample.model, sample.version)
    if not current.checking:
        return current, []
    columns = sample_columns(sample, current.input_names, config.defaults)
    return update_model_drift(current, sample.model, sample.version, columns, sample.event_time,
                              config.reference, config.policy)


class _DriftLogic(op.StatefulBatchLogic):
    def __init__(self, resume: bytes | None, config: DriftConfig, topics: Topics) -> None:
        self.state: ModelDriftState | None = pickle.loads(resume) if resume is not None else None
        self.config, self.topics = config, topics

    def on_batch(self, values: list[DriftSample]) -> tuple[list, bool]:
        outputs: list[OutMessage] = []
        for sample in values:
            self.state, reports = update_drift(self.state, sample, self.config)
            for report in reports:
                if self.config.on_report is not None:
                    self.config.on_report(report)
                outputs.extend(model_event_message(e, self.topics) for e in report.events)
        return outputs, op.StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        return pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)


def drift_events(scored: Stream, config: DriftConfig, topics: Topics) -> Stream[OutMessage]:
    """The drift steps over the `fraud_score` output; returns model-event messages."""
    samples = op.flat_map_batch("drift_sample", scored, drift_samples)
    return op.key_rm("drift_messages", op.stateful_batch(
        "fraud_drift", samples, lambda resume: _DriftLogic(resume, config, topics)))
