"""The fraud model in MLflow: log a training run, register a version, promote a champion,
and load a verified artifact back.

Any tracking URI works; `local_tracking_uri(data_dir)` is the embedded default (a
SQLite store with artifacts beside it). Each registered version carries, as tags,
the sha256 of its ONNX file and its input feature names; loading refuses an
artifact whose bytes hash differently, whose stored columns differ from the tags, or
that takes a column the flow does not supply (`ModelIntegrityError`, `models.registered_model`).

Promotion: the `champion` alias moves to a new version only when that version's
PR-AUC on the new run's holdout is higher than the current champion's on the *same*
rows (the champion is re-scored, not compared with its old, different holdout).
Both are scored from their registered artifacts through onnxruntime, so the new
version is proven loadable before it can be promoted, and two identical models tie.
A champion that can no longer be loaded is replaced.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from models.fraud_features import FRAUD_MODEL_FEATURES, MODEL_NAME, check_feature_names
from models.fraud_scorer import (
    FraudScorer,
    LoadedModel,
    ModelIntegrityError,
    loaded_model_from_bytes,
)
from models.model_drift import REFERENCE_FILE
from models.registered_model import (
    ARTIFACT_DIR,
    CHAMPION,
    RegisteredModel,
    local_artifact_location,
    local_tracking_uri,
    mlflow_error,
)

if TYPE_CHECKING:  # training (scikit-learn) is not imported by the serving engine
    from models.training import TrainedFraudModel, TrainingSet

__all__ = ["ARTIFACT_DIR", "CHAMPION", "ONNX_FILE", "FraudModelRegistry", "RegistrationOutcome",
           "load_onnx_file", "local_artifact_location", "local_tracking_uri", "pr_auc_on"]

ONNX_FILE = "fraud.onnx"


@dataclass(frozen=True, slots=True)
class RegistrationOutcome:
    run_id: str
    version: str
    promoted: bool
    previous_champion: str | None
    new_pr_auc: float
    champion_pr_auc: float | None  # the previous champion, on the same holdout
    reason: str


def pr_auc_on(scorer: FraudScorer, holdout: TrainingSet) -> float:
    """PR-AUC of a scorer on a holdout's fraud and clean rows (ambiguous ones left out)."""
    from sklearn.metrics import average_precision_score

    rows = holdout.usable()
    return float(average_precision_score(rows.labels, scorer.score(rows.rows)))


class FraudModelRegistry(RegisteredModel):
    """A registered model (default `jukebox-fraud`) in one MLflow tracking store."""

    onnx_file = ONNX_FILE

    def __init__(
        self,
        tracking_uri: str,
        name: str = MODEL_NAME,
        experiment: str = MODEL_NAME,
        artifact_location: str | None = None,
        expected_features: Sequence[str] | None = FRAUD_MODEL_FEATURES,
    ) -> None:
        super().__init__(tracking_uri, name, experiment, artifact_location)
        self.expected_features = expected_features

    def log_run(
        self,
        trained: TrainedFraudModel,
        params: Mapping[str, object] = {},
        metrics: Mapping[str, float] = {},
    ) -> str:
        """One MLflow run: params, holdout metrics (+ `metrics`, e.g. alert-level ones),
        data range, the ONNX file and its hash, and the drift reference (`reference.json`)."""
        start, end = trained.data_range
        all_params = {
            **trained.params,
            **{k: str(v) for k, v in params.items()},
            "n_train_rows": str(trained.n_train),
            "n_holdout_rows": str(len(trained.holdout)),
            "data_start": start.isoformat(),
            "data_end": end.isoformat(),
            "feature_count": str(len(trained.feature_names)),
        }
        logged = {
            **trained.metrics.as_flat(),
            **metrics,
            "parity_max_abs_diff": trained.parity_max_abs_diff,
        }
        files = {"feature_names.json": json.dumps(list(trained.feature_names))}
        if trained.reference is not None:
            files[REFERENCE_FILE] = trained.reference.to_json()
        return self._log_run(f"fraud-{trained.sha256[:8]}", all_params, logged, trained.onnx_bytes,
                             trained.sha256, files)

    def register(
        self,
        trained: TrainedFraudModel,
        params: Mapping[str, object] = {},
        min_gain: float = 0.0,
        metrics: Mapping[str, float] = {},
    ) -> RegistrationOutcome:
        """Log the run, register a new version, and move `champion` only if it is better."""
        run_id = self.log_run(trained, params, metrics)
        version = self._create_version(run_id, trained.sha256, tuple(trained.feature_names), {
            "pr_auc": repr(trained.metrics.overall.pr_auc),
            "decision_threshold": repr(trained.threshold),
        })
        # Score the new version as it will serve: its registered artifact, downloaded and
        # verified, through onnxruntime; the champion is scored the same way on the same rows.
        registered = FraudScorer.from_model(self.load_version(version), expected_features=None)
        new_auc = pr_auc_on(registered, trained.holdout)
        previous = self.champion_version()
        champion_auc: float | None = None
        if previous is None:
            promote, reason = True, "no champion yet"
        else:
            try:
                champion = FraudScorer.from_model(
                    self.load_version(previous), expected_features=None
                )
                champion_auc = pr_auc_on(champion, trained.holdout)
            except (ModelIntegrityError, mlflow_error(), OSError) as exc:
                promote, reason = True, f"champion v{previous} cannot be loaded ({exc})"
            else:
                promote = new_auc > champion_auc + min_gain
                verdict = "beats" if promote else "does not beat"
                reason = (
                    f"PR-AUC {new_auc:.4f} {verdict} champion v{previous}'s "
                    f"{champion_auc:.4f} on the same holdout"
                )
        self._settle(run_id, version, promote,
                     None if champion_auc is None else ("champion_pr_auc_same_holdout", champion_auc))
        return RegistrationOutcome(
            run_id, str(version), promote, previous, new_auc, champion_auc, reason
        )

    def _check_features(self, model: LoadedModel) -> None:
        try:
            check_feature_names(model.feature_names, self.expected_features)
        except ValueError as exc:
            raise ModelIntegrityError(f"{model.name} v{model.version}: {exc}") from None

    def _load_file(self, path: Path) -> LoadedModel:
        return load_onnx_file(path, self.expected_features)


def load_onnx_file(
    path: Path,
    expected_features: Sequence[str] | None = FRAUD_MODEL_FEATURES,
    expected_sha256: str | None = None,
) -> LoadedModel:
    """A local ONNX file, versioned by its content (`file-<sha256[:12]>`)."""
    if path.suffix != ".onnx" or not path.is_file():
        raise FileNotFoundError(f"{path} is not an .onnx file")
    onnx_bytes = path.read_bytes()
    model = loaded_model_from_bytes(onnx_bytes, "pending", expected_sha256, source=str(path))
    model = LoadedModel(
        onnx_bytes,
        f"file-{model.sha256[:12]}",
        model.feature_names,
        model.sha256,
        model.name,
        str(path),
    )
    try:
        check_feature_names(model.feature_names, expected_features)
    except ValueError as exc:
        raise ModelIntegrityError(f"{path}: {exc}") from None
    return model
