"""The recommender in MLflow (`jukebox-recs`): log a run, register a version, promote a
champion only when it is better, and load a verified artifact back.

The same store and conventions as the fraud model (`models.registered_model`): the
embedded SQLite store by default, the sha256 of the ONNX file and its input columns as
version tags, `ModelIntegrityError` for an artifact whose bytes or columns differ from them.

Promotion: the `champion` alias moves to a new version only when, scored from its
registered artifact through onnxruntime on the new run's held-out samples under the
live business rules, its NDCG@10 beats both the popularity baseline on those samples
and the current champion re-scored on the *same* samples (by more than `min_gain`).
Two identical models tie, so retraining on the same data never churns the champion;
a champion that can no longer be loaded is replaced.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from models.fraud_scorer import LoadedModel, ModelIntegrityError, loaded_model_from_bytes
from models.recommender import RECS_MODEL_NAME, RecsScorer
from models.recs_catalog import RecsCatalog
from models.recs_rules import RecsPolicy
from models.recs_training import TrainedRecsModel, evaluate_scorer
from models.registered_model import RegisteredModel, mlflow_error

ONNX_FILE = "recs.onnx"


@dataclass(frozen=True, slots=True)
class RecsRegistrationOutcome:
    run_id: str
    version: str
    promoted: bool
    previous_champion: str | None
    new_ndcg: float
    champion_ndcg: float | None  # the previous champion, on the same held-out samples
    baseline_ndcg: float
    reason: str


class RecsModelRegistry(RegisteredModel):
    """The registered model `jukebox-recs` in one MLflow tracking store."""

    onnx_file = ONNX_FILE

    def __init__(self, tracking_uri: str, name: str = RECS_MODEL_NAME, experiment: str = RECS_MODEL_NAME,
                 artifact_location: str | None = None) -> None:
        super().__init__(tracking_uri, name, experiment, artifact_location)

    def log_run(self, trained: TrainedRecsModel, params: Mapping[str, object] = {},
                metrics: Mapping[str, float] = {}) -> str:
        """One run: settings, blend, data range and split, test and validation metrics, the file."""
        start, end = trained.data_range
        blend = {f"blend_{k}": repr(v) for k, v in _blend(trained).items()}
        all_params = {
            **trained.settings, **blend, **{k: str(v) for k, v in params.items()},
            "data_start": start.isoformat(), "data_end": end.isoformat(),
            "train_end": trained.split_times[0].isoformat(), "valid_end": trained.split_times[1].isoformat(),
            "songs": str(len(trained.params.vocab.song_ids)),
        }
        logged = {**trained.test.as_flat(""), **trained.validation.as_flat("valid_"), **metrics,
                  "parity_max_abs_diff": trained.parity_max_abs_diff}
        return self._log_run(f"recs-{trained.sha256[:8]}", all_params, logged, trained.onnx_bytes,
                             trained.sha256)

    def register(self, trained: TrainedRecsModel, catalog: RecsCatalog, rules: RecsPolicy = RecsPolicy(),
                 params: Mapping[str, object] = {}, min_gain: float = 0.0,
                 metrics: Mapping[str, float] = {}) -> RecsRegistrationOutcome:
        """Log the run, register a version, move `champion` only if it is better."""
        run_id = self.log_run(trained, params, metrics)
        version = self._create_version(run_id, trained.sha256, tuple(trained.params.vocab.feature_names), {
            "ndcg_at_10": repr(trained.test.model.ndcg),
            "hit_rate_at_10": repr(trained.test.model.hit_rate),
        })
        holdout = trained.holdout
        # Score the new version as it will serve: its registered artifact, verified, through
        # onnxruntime; the champion the same way on the same samples.
        new = evaluate_scorer(RecsScorer.from_model(self.load_version(version)), holdout, catalog, rules).ndcg
        baseline = trained.test.popularity.ndcg
        previous = self.champion_version()
        champion_ndcg: float | None = None
        if new <= baseline:
            promote = False
            reason = f"NDCG@10 {new:.4f} does not beat the popularity baseline's {baseline:.4f}"
        elif previous is None:
            promote, reason = True, "no champion yet"
        else:
            try:
                champion = RecsScorer.from_model(self.load_version(previous))
                champion_ndcg = evaluate_scorer(champion, holdout, catalog, rules).ndcg
            except (ModelIntegrityError, mlflow_error(), OSError) as exc:
                promote, reason = True, f"champion v{previous} cannot be loaded ({exc})"
            else:
                promote = new > champion_ndcg + min_gain
                verdict = "beats" if promote else "does not beat"
                reason = (f"NDCG@10 {new:.4f} {verdict} champion v{previous}'s {champion_ndcg:.4f} "
                          "on the same held-out samples")
        self._settle(run_id, version, promote,
                     None if champion_ndcg is None else ("champion_ndcg_same_holdout", champion_ndcg))
        return RecsRegistrationOutcome(run_id, str(version), promote, previous, new, champion_ndcg,
                                       baseline, reason)

    def _load_file(self, path: Path) -> LoadedModel:
        return load_recs_onnx_file(path)


def _blend(trained: TrainedRecsModel) -> dict[str, float]:
    b = trained.params.blend
    return {"alpha": b.alpha, "gamma": b.gamma, "w_language": b.w_language, "w_artist": b.w_artist,
            "w_collab": b.w_collab, "w_trending": b.w_trending}


def load_recs_onnx_file(path: Path) -> LoadedModel:
    """A local recommender file, versioned by its content (`file-<sha256[:12]>`)."""
    if path.suffix != ".onnx" or not path.is_file():
        raise FileNotFoundError(f"{path} is not an .onnx file")
    model = loaded_model_from_bytes(path.read_bytes(), "pending", name=RECS_MODEL_NAME, source=str(path))
    return LoadedModel(model.onnx_bytes, f"file-{model.sha256[:12]}", model.feature_names,
                       model.sha256, RECS_MODEL_NAME, str(path))
