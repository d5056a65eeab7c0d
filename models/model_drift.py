"""Drift of one served model: its stored reference, a monitor per input and score, and
the retraining decision that acts on the events they emit.

`ModelReference` is what training stores beside the model (`reference.json` in the
MLflow run): one `ReferenceProfile` per model input, from the training rows, and one
for the model's score on the holdout (feature name `score`). Serving keeps a
`ModelDriftState`: one `DriftMonitor` per profile for the model version in use,
replaced when the version changes. A version stored without a reference gets no
monitors (drift checks off for it).

>>> import numpy as np
>>> from datetime import UTC, datetime
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(2000, 1))
>>> reference = ModelReference.from_training(("device_plays_1h",), X, rng.random(500))
>>> ModelReference.from_json(reference.to_json()) == reference
True
>>> policy = DriftPolicy(window_size=200, retrain_after=2)
>>> t = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
>>> state, reports = update_model_drift(None, "jukebox-fraud", "3", {"device_plays_1h":
...     X[:200, 0] + 3.0, "score": rng.random(200)}, t, lambda _m, _v: reference, policy)
>>> [(r.feature, [e.kind for e in r.events]) for r in reports]
[('device_plays_1h', ['drift_detected']), ('score', [])]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import orjson

from models.drift import DEFAULT_BINS, DriftMonitor, DriftReport, ReferenceProfile
from schemas.outputs import SCORE_FEATURE, ModelEvent

REFERENCE_FILE = "reference.json"
REFERENCE_FORMAT = 1


@dataclass(frozen=True, slots=True)
class ModelReference:
    """The training-time distributions of a model's inputs and of its score."""

    features: tuple[ReferenceProfile, ...]
    score: ReferenceProfile | None = None

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(p.feature for p in self.features)

    @property
    def profiles(self) -> tuple[ReferenceProfile, ...]:
        """Every profile to watch: the inputs, then the score."""
        return self.features + ((self.score,) if self.score is not None else ())

    @classmethod
    def from_training(
        cls,
        feature_names: Sequence[str],
        X: np.ndarray,
        scores: Sequence[float] | np.ndarray | None = None,
        bins: int = DEFAULT_BINS,
    ) -> ModelReference:
        """Profiles of the columns of `X` (the model's input matrix, in `feature_names`
        order) and of `scores`. A column with no finite value is left out."""
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[1] != len(feature_names):
            raise ValueError(f"X must have {len(feature_names)} columns, got shape {X.shape}")
        features = tuple(
            ReferenceProfile.from_sample(name, X[:, i], bins)
            for i, name in enumerate(feature_names)
            if np.isfinite(X[:, i]).any()
        )
        score = None
        if scores is not None and np.isfinite(np.asarray(scores, dtype=float)).any():
            score = ReferenceProfile.from_sample(SCORE_FEATURE, scores, bins)
        return cls(features, score)

    def to_json(self) -> str:
        return orjson.dumps({
            "format": REFERENCE_FORMAT,
            "features": [p.to_dict() for p in self.features],
            "score": self.score.to_dict() if self.score is not None else None,
        }).decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelReference:
        data = orjson.loads(text)
        if data.get("format") != REFERENCE_FORMAT:
            raise ValueError(f"unknown reference format {data.get('format')!r}")
        score = data.get("score")
        return cls(
            tuple(ReferenceProfile.from_dict(p) for p in data["features"]),
            ReferenceProfile.from_dict(score) if score is not None else None,
        )


@dataclass(frozen=True, slots=True)
class DriftPolicy:
    """How live windows are compared with the reference (see `DriftMonitor`)."""

    window_size: int = 1000
    step: int | None = None
    psi_threshold: float = 0.2
    js_threshold: float = 0.1
    ks_threshold: float = 0.15
    retrain_after: int = 3

    def monitor(self, model: str, version: str, profile: ReferenceProfile) -> DriftMonitor:
        return DriftMonitor(
            model, profile, window_size=self.window_size, step=self.step,
            psi_threshold=self.psi_threshold, js_threshold=self.js_threshold,
            ks_threshold=self.ks_threshold, retrain_after=self.retrain_after,
            model_version=version,
        )


@dataclass(slots=True)
class ModelDriftState:
    """The monitors of the model version in use; none when it has no reference."""

    model: str
    version: str
    monitors: dict[str, DriftMonitor] = field(default_factory=dict)

    @property
    def checking(self) -> bool:
        return bool(self.monitors)

    @property
    def input_names(self) -> tuple[str, ...]:
        """The model inputs watched (the score aside)."""
        return tuple(n for n in self.monitors if n != SCORE_FEATURE)


ReferenceLookup = Callable[[str, str], ModelReference | None]
"""(model, version) -> the version's stored reference, or None when it has none."""


def drift_state_for(
    state: ModelDriftState | None,
    model: str,
    version: str,
    reference_for: ReferenceLookup,
    policy: DriftPolicy = DriftPolicy(),
) -> ModelDriftState:
    """`state` itself while it follows `model` `version`; else fresh monitors from the
    version's reference (none when it has no reference)."""
    if state is not None and (state.model, state.version) == (model, version):
        return state
    reference = reference_for(model, version)
    monitors = {}
    if reference is not None:
        monitors = {p.feature: policy.monitor(model, version, p) for p in reference.profiles}
    return ModelDriftState(model, version, monitors)


def update_model_drift(
    state: ModelDriftState | None,
    model: str,
    version: str,
    columns: Mapping[str, np.ndarray],
    event_time: datetime,
    reference_for: ReferenceLookup,
    policy: DriftPolicy = DriftPolicy(),
) -> tuple[ModelDriftState, list[DriftReport]]:
    """Add one batch of live values (column name -> values; `score` for the scores)
    scored by `model` `version` at `event_time`; the reports of the windows that closed.

    A new model or version starts fresh monitors (its reference is looked up once).
    """
    state = drift_state_for(state, model, version, reference_for, policy)
    reports = []
    for name, monitor in state.monitors.items():
        values = columns.get(name)
        if values is None:
            continue
        report = monitor.update(values, event_time)
        if report is not None:
            reports.append(report)
    return state, reports


def retraining_request(
    events: Iterable[ModelEvent], model: str, registered_at: datetime | None
) -> ModelEvent | None:
    """The latest `retraining_requested` event for `model` whose window ended after the
    serving version was registered (`registered_at`; None: no version yet, any request
    counts), else None: nothing asked for a retrain since the current champion.

    >>> from datetime import UTC, datetime
    >>> def event(kind, end):
    ...     return ModelEvent(kind=kind, model="jukebox-fraud", model_version="3", feature="score",
    ...         psi=0.5, js_divergence=0.2, ks_statistic=0.3, window_start=end, window_end=end,
    ...         window_size=100, thresholds={})
    >>> t = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
    >>> events = [event("drift_detected", t), event("retraining_requested", t)]
    >>> retraining_request(events, "jukebox-fraud", t.replace(hour=19)).kind
    'retraining_requested'
    >>> retraining_request(events, "jukebox-fraud", t.replace(hour=21)) is None
    True
    """
    pending = [
        e for e in events
        if e.kind == "retraining_requested" and e.model == model
        and (registered_at is None or e.window_end > registered_at)
    ]
    return max(pending, key=lambda e: e.window_end, default=None)
