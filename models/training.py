"""Train the fraud classifier on point-in-time-correct feature rows, export it, check it.

Input is a `TrainingSet`: the feature row the online logic emitted at each event
of a labelled history, labelled by whether that jukebox (or the paying customer)
was inside a labelled fraud episode at that event time (see `training_set`).

* Split: a fixed share of *jukeboxes* is held out (chosen by a hash of the id, so
  the same history always gives the same holdout and rows of one jukebox never
  straddle train and holdout).
* Model: a random forest on `FRAUD_MODEL_FEATURES`, missing values filled by the
  declared defaults (`fraud_features`). Its decision threshold is the lowest at which
  alerts (one per jukebox and hour) would be right 95% of the time on the forest's
  out-of-bag predictions, so the holdout stays untouched for evaluation, and at which
  at most 3 in 10,000 clean jukebox-hours would alert. Precision depends on how much
  fraud the training history holds (the simulator's 30 % of jukebox-days is far more
  than a fleet's); the clean-hour rate does not.
* Export: ONNX, with the column order, defaults, threshold and data range in the
  file's metadata; onnxruntime must match scikit-learn within 1e-4 on the holdout
  or training fails (`ParityError`).
* Drift reference: the distribution of each input over the training rows and of the
  score over the holdout (`model_drift.ModelReference`), logged as `reference.json`.
* Metrics on the holdout's fraud and clean rows (ambiguous rows, labelled -1, are
  left out of training and of these metrics): precision, recall (at the threshold)
  and PR-AUC, overall and per scenario. Per scenario means "this scenario's
  positives against all clean rows": every false positive counts against every
  scenario. Alert-level, per-episode numbers come from `evaluation`.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np

from models.fraud_features import FRAUD_MODEL_FEATURES, MISSING_DEFAULTS, MODEL_NAME, feature_matrix
from models.model_drift import ModelReference
from models.onnx_export import check_parity, onnx_model_bytes, sha256_hex

if TYPE_CHECKING:  # scikit-learn is imported where it is used: serving never loads it
    from sklearn.ensemble import RandomForestClassifier

AMBIGUOUS = -1
"""Label of a row that is neither fraud nor clean (just after an episode): kept for
replays of the alert stream, left out of training and of row metrics."""


@dataclass(frozen=True)
class TrainingSet:
    """One row per scored event, in delivery order."""

    rows: list[Mapping[str, object]]
    labels: (
        np.ndarray
    )  # 1 = inside a labelled fraud episode at that event time, 0 clean, -1 ambiguous
    scenarios: list[str | None]  # the episode's scenario code for positives, else None
    event_times_ms: np.ndarray
    jukebox_ids: list[str]

    def __post_init__(self) -> None:
        n = len(self.rows)
        if not (
            len(self.labels)
            == len(self.scenarios)
            == len(self.event_times_ms)
            == len(self.jukebox_ids)
            == n
        ):
            raise ValueError("rows, labels, scenarios, times and jukebox ids differ in length")

    def __len__(self) -> int:
        return len(self.rows)

    def usable(self) -> TrainingSet:
        """Only the rows labelled fraud (1) or clean (0)."""
        return self.subset(self.labels != AMBIGUOUS)

    def subset(self, mask: np.ndarray) -> TrainingSet:
        idx = np.flatnonzero(mask)
        return TrainingSet(
            rows=[self.rows[i] for i in idx],
            labels=self.labels[idx],
            scenarios=[self.scenarios[i] for i in idx],
            event_times_ms=self.event_times_ms[idx],
            jukebox_ids=[self.jukebox_ids[i] for i in idx],
        )

    @property
    def time_range(self) -> tuple[datetime, datetime]:
        if not len(self):
            raise ValueError("empty training set")
        lo, hi = int(self.event_times_ms.min()), int(self.event_times_ms.max())
        return (
            datetime.fromtimestamp(lo / 1000, tz=UTC),
            datetime.fromtimestamp(hi / 1000, tz=UTC),
        )


def in_holdout(jukebox_id: str, share: float) -> bool:
    """Stable assignment of a jukebox to the holdout (independent of seeds and order).

    >>> in_holdout("jb-000123", 0.25) == in_holdout("jb-000123", 0.25)
    True
    """
    bucket = int.from_bytes(hashlib.sha256(jukebox_id.encode()).digest()[:8], "big")
    return bucket / 2**64 < share


@dataclass(frozen=True, slots=True)
class ScenarioMetrics:
    precision: float
    recall: float
    pr_auc: float
    positives: int

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r > 0 else 0.0


@dataclass(frozen=True)
class FraudMetrics:
    overall: ScenarioMetrics
    by_scenario: dict[str, ScenarioMetrics]
    threshold: float
    negatives: int

    def as_flat(self) -> dict[str, float]:
        """MLflow metric names: `precision`, `pr_auc`, `song_looping.recall`, ..."""
        out = {
            "precision": self.overall.precision,
            "recall": self.overall.recall,
            "pr_auc": self.overall.pr_auc,
            "f1": self.overall.f1,
            "threshold": self.threshold,
        }
        for scenario, m in sorted(self.by_scenario.items()):
            out |= {
                f"{scenario}.precision": m.precision,
                f"{scenario}.recall": m.recall,
                f"{scenario}.pr_auc": m.pr_auc,
                f"{scenario}.positives": float(m.positives),
            }
        return {k: v for k, v in out.items() if math.isfinite(v)}


def _binary(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.size and not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 or 1 (drop ambiguous rows with TrainingSet.usable())")
    return labels.astype(bool)


def scenario_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> ScenarioMetrics:
    labels = _binary(labels)
    flagged = scores >= threshold
    tp = int(np.sum(flagged & labels))
    precision = tp / int(flagged.sum()) if flagged.any() else 0.0
    positives = int(labels.sum())
    recall = tp / positives if positives else math.nan
    from sklearn.metrics import average_precision_score

    pr_auc = (
        float(average_precision_score(labels, scores))
        if positives and (~labels).any()
        else math.nan
    )
    return ScenarioMetrics(precision, recall, pr_auc, positives)


def fraud_metrics(
    scores: np.ndarray, labels: np.ndarray, scenarios: Sequence[str | None], threshold: float
) -> FraudMetrics:
    labels = _binary(labels)
    names = np.array([s or "" for s in scenarios], dtype=object)
    by_scenario = {}
    for scenario in sorted({s for s in scenarios if s}):
        keep = ~labels | (names == scenario)
        by_scenario[scenario] = scenario_metrics(scores[keep], labels[keep], threshold)
    return FraudMetrics(
        scenario_metrics(scores, labels, threshold), by_scenario, threshold, int((~labels).sum())
    )


def alert_threshold(
    scores: np.ndarray,
    labels: np.ndarray,
    jukebox_ids: Sequence[str],
    event_times_ms: np.ndarray,
    target_precision: float = 0.95,
    window_s: int = 3600,
    max_clean_rate: float | None = None,
) -> float:
    """The lowest score threshold at which *alerts* would be right `target_precision` of the
    time, counting as the decision's cooldown does: one alert per jukebox per window, right
    when a fraud row of that window reaches the threshold. Row precision overstates alert
    precision: fraud rows bunch into few windows, false positives spread over many.
    Falls back to the most precise threshold when the target is out of reach. With
    `max_clean_rate`, it is also high enough that at most that share of the windows with
    clean rows would alert on them (rounded down: 2 of 6,758 windows at 3e-4).

    >>> alert_threshold(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 1, 0, 0]),
    ...                 ["a", "a", "b", "c"], np.array([0, 3_600_000, 0, 0]), target_precision=0.9)
    0.8
    >>> t = alert_threshold(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 0, 0]),
    ...                     ["a", "b", "c", "d"], np.zeros(4), target_precision=0.3, max_clean_rate=0.34)
    >>> 0.7 < t < 0.71   # one of the three clean windows may reach it: 0.7 no longer does
    True
    """
    labels = _binary(labels)
    windows: dict[tuple[str, int], list[float]] = {}
    for score, fraud, jukebox, t in zip(scores, labels, jukebox_ids, event_times_ms):
        best = windows.setdefault((jukebox, int(t) // 1000 // window_s), [-1.0, -1.0])  # -1: no row
        best[int(fraud)] = max(best[int(fraud)], float(score))
    if not windows:
        raise ValueError("no rows to choose a threshold from")
    best_clean, best_fraud = np.array(list(windows.values())).T
    threshold = _precision_threshold(best_clean, best_fraud, target_precision)
    clean = np.sort(best_clean[best_clean >= 0])[::-1]
    allowed = int(max_clean_rate * len(clean)) if max_clean_rate is not None else len(clean)
    if allowed < len(clean):
        threshold = max(threshold, float(np.nextafter(clean[allowed], np.inf)))
    return threshold


def _precision_threshold(best_clean: np.ndarray, best_fraud: np.ndarray, target_precision: float) -> float:
    best_any = np.maximum(best_clean, best_fraud)
    candidates = np.unique(best_any[best_any > 0])
    # Windows alerting and windows right, at every candidate threshold (descending sweep).
    alerting = np.searchsorted(np.sort(best_any), candidates, side="left")
    right = np.searchsorted(np.sort(best_fraud), candidates, side="left")
    precision = (len(best_fraud) - right) / np.maximum(len(best_any) - alerting, 1)
    reached = np.flatnonzero(precision >= target_precision)
    chosen = reached[0] if len(reached) else int(np.argmax(precision))
    return float(candidates[chosen])


@dataclass(frozen=True)
class TrainedFraudModel:
    onnx_bytes: bytes
    sha256: str
    feature_names: tuple[str, ...]
    classifier: RandomForestClassifier
    threshold: float
    metrics: FraudMetrics
    holdout: TrainingSet
    data_range: tuple[datetime, datetime]
    params: dict[str, str]
    parity_max_abs_diff: float
    n_train: int
    metadata: dict[str, str] = field(default_factory=dict)
    reference: ModelReference | None = None  # for drift checks while it serves

    def __repr__(self) -> str:
        return (
            f"TrainedFraudModel(sha256={self.sha256[:12]}...,"
            f" pr_auc={self.metrics.overall.pr_auc:.4f},"
            f" n_train={self.n_train}, n_holdout={len(self.holdout)})"
        )


class FraudTrainer:
    """Random-forest fraud classifier; the constructor is the whole configuration."""

    def __init__(
        self,
        n_estimators: int = 150,
        max_depth: int | None = 14,
        min_samples_leaf: int = 2,
        max_features: float | str = "sqrt",
        class_weight: str | None = "balanced_subsample",
        holdout_share: float = 0.25,
        target_alert_precision: float = 0.95,
        max_clean_alert_rate: float | None = 3e-4,
        seed: int = 0,
        n_jobs: int = -1,
        feature_names: Sequence[str] = FRAUD_MODEL_FEATURES,
        defaults: Mapping[str, float] = MISSING_DEFAULTS,
    ) -> None:
        if not 0.0 < holdout_share < 1.0:
            raise ValueError("holdout_share must be in (0, 1)")
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.class_weight = class_weight
        self.holdout_share = holdout_share
        self.target_alert_precision = target_alert_precision
        self.max_clean_alert_rate = max_clean_alert_rate
        self.seed = seed
        self.n_jobs = n_jobs
        self.feature_names = tuple(feature_names)
        self.defaults = {n: float(defaults[n]) for n in self.feature_names}

    @property
    def params(self) -> dict[str, str]:
        return {
            "algorithm": "sklearn.RandomForestClassifier",
            "n_estimators": str(self.n_estimators),
            "max_depth": str(self.max_depth),
            "min_samples_leaf": str(self.min_samples_leaf),
            "max_features": str(self.max_features),
            "class_weight": str(self.class_weight),
            "holdout_share": str(self.holdout_share),
            "seed": str(self.seed),
            "threshold_rule": f"alert precision >= {self.target_alert_precision} out of bag"
            + ("" if self.max_clean_alert_rate is None
               else f", at most {self.max_clean_alert_rate} of clean jukebox-hours alerting"),
        }

    def split(self, data: TrainingSet) -> tuple[TrainingSet, TrainingSet]:
        held = np.array([in_holdout(j, self.holdout_share) for j in data.jukebox_ids], dtype=bool)
        return data.subset(~held), data.subset(held)

    def fit(self, data: TrainingSet) -> TrainedFraudModel:
        """Train on the training jukeboxes' usable rows; evaluate on the held-out ones'.
        `TrainedFraudModel.holdout` keeps every held-out row, ambiguous ones included."""
        train_all, holdout_all = self.split(data)
        train, holdout = train_all.usable(), holdout_all.usable()
        for part, what in ((train, "training"), (holdout, "holdout")):
            if len(set(part.labels.tolist())) < 2:
                raise ValueError(
                    f"the {what} split needs both fraud and clean rows "
                    f"({int(part.labels.sum())} fraud of {len(part)}); "
                    "simulate more jukeboxes or days"
                )
        from sklearn.ensemble import RandomForestClassifier

        X = feature_matrix(train.rows, self.feature_names, self.defaults)
        forest = RandomForestClassifier(
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            min_samples_leaf=self.min_samples_leaf,
            max_features=self.max_features,
            class_weight=self.class_weight,
            bootstrap=True,
            oob_score=True,
            random_state=self.seed,
            n_jobs=self.n_jobs,
        )
        with warnings.catch_warnings():
            # Few trees leave some rows without out-of-bag votes; they count as score 0 below.
            warnings.filterwarnings("ignore", "Some inputs do not have OOB scores", UserWarning)
            classifier = forest.fit(X, train.labels)
        oob = np.nan_to_num(classifier.oob_decision_function_[:, 1], nan=0.0)
        threshold = alert_threshold(
            oob, train.labels, train.jukebox_ids, train.event_times_ms, self.target_alert_precision,
            max_clean_rate=self.max_clean_alert_rate,
        )
        data_range = data.time_range
        metadata = {
            "model_name": MODEL_NAME,
            "feature_defaults": json.dumps(self.defaults, sort_keys=True),
            "decision_threshold": repr(threshold),
            "data_start": data_range[0].isoformat(),
            "data_end": data_range[1].isoformat(),
            "params": json.dumps(self.params, sort_keys=True),
        }
        onnx_bytes = onnx_model_bytes(classifier, self.feature_names, metadata)
        X_holdout = feature_matrix(holdout.rows, self.feature_names, self.defaults)
        parity = check_parity(onnx_bytes, classifier, X_holdout)
        scores = classifier.predict_proba(X_holdout)[:, 1]
        return TrainedFraudModel(
            onnx_bytes=onnx_bytes,
            sha256=sha256_hex(onnx_bytes),
            feature_names=self.feature_names,
            classifier=classifier,
            threshold=threshold,
            metrics=fraud_metrics(scores, holdout.labels, holdout.scenarios, threshold),
            holdout=holdout_all,
            data_range=data_range,
            params=self.params,
            parity_max_abs_diff=parity,
            n_train=len(train),
            metadata=metadata,
            reference=ModelReference.from_training(self.feature_names, X, scores),
        )
