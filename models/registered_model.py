"""What every model we serve shares in MLflow: a run with its ONNX file, a version tagged
with the file's sha256 and input columns, the `champion` alias, and verified loading.

`FraudModelRegistry` and `RecsModelRegistry` add what differs: what a run logs, which
metric decides a promotion, which columns a model must have. Loading refuses an
artifact whose bytes hash differently from its version's tag, or whose columns differ
from the tagged ones (`ModelIntegrityError`).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from models.fraud_scorer import LoadedModel, ModelIntegrityError, loaded_model_from_bytes
from models.model_drift import REFERENCE_FILE, ModelReference

CHAMPION = "champion"
ARTIFACT_DIR = "model"


def mlflow_error() -> type[Exception]:
    """MLflow's exception class. MLflow is imported on first use, here and where a client is
    made: `import mlflow` takes ~1.3 s, which CLI commands that touch no model skip."""
    from mlflow.exceptions import MlflowException

    return MlflowException


def local_tracking_uri(data_dir: Path) -> str:
    """The embedded store: `<data_dir>/mlruns/mlflow.db` (SQLite, MLflow 3's default backend)."""
    root = (Path(data_dir) / "mlruns").resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def local_artifact_location(tracking_uri: str) -> str | None:
    """Artifacts of a local SQLite store live next to it; a server chooses its own."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return (Path(tracking_uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()


class RegisteredModel:
    """One registered model (`name`) in one MLflow tracking store."""

    onnx_file = "model.onnx"  # the artifact's file name under `ARTIFACT_DIR`

    def __init__(self, tracking_uri: str, name: str, experiment: str,
                 artifact_location: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.name = name
        self.experiment = experiment
        self.artifact_location = artifact_location or local_artifact_location(tracking_uri)
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    # -- writing ---------------------------------------------------------------------------

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        return self.client.create_experiment(self.experiment, artifact_location=self.artifact_location)

    def _log_run(self, run_name: str, params: Mapping[str, str], metrics: Mapping[str, float],
                 onnx_bytes: bytes, sha256: str, files: Mapping[str, str] = {}) -> str:
        """One finished run: params, metrics (also as metrics.json), the ONNX file and `files`."""
        run_id = self.client.create_run(self._experiment_id(), run_name=run_name).info.run_id
        try:
            for key, value in sorted(params.items()):
                self.client.log_param(run_id, key, value)
            for key, value in sorted(metrics.items()):
                self.client.log_metric(run_id, key, value)
            self.client.set_tag(run_id, "onnx_sha256", sha256)
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                (folder / self.onnx_file).write_bytes(onnx_bytes)
                (folder / "metrics.json").write_text(json.dumps(dict(metrics), indent=1, sort_keys=True))
                for file_name, text in files.items():
                    (folder / file_name).write_text(text)
                for path in sorted(folder.iterdir()):
                    self.client.log_artifact(run_id, str(path), ARTIFACT_DIR)
        except BaseException:
            self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id)
        return run_id

    def _create_version(self, run_id: str, sha256: str, feature_names: tuple[str, ...],
                        tags: Mapping[str, str]) -> str:
        try:
            self.client.get_registered_model(self.name)
        except mlflow_error():
            self.client.create_registered_model(self.name)
        run = self.client.get_run(run_id)
        return str(self.client.create_model_version(
            self.name, source=f"{run.info.artifact_uri}/{ARTIFACT_DIR}", run_id=run_id,
            tags={"onnx_sha256": sha256, "feature_names": json.dumps(list(feature_names)), **tags},
        ).version)

    def _settle(self, run_id: str, version: str, promote: bool,
                champion_metric: tuple[str, float] | None) -> None:
        """Move `champion` when promoted; tag the version; log the champion's score on the
        same holdout to the new run (so the run shows what it was compared with)."""
        if promote:
            self.client.set_registered_model_alias(self.name, CHAMPION, version)
        self.client.set_model_version_tag(self.name, version, "promoted", str(promote).lower())
        if champion_metric is not None:
            self.client.log_metric(run_id, *champion_metric)

    # -- reading ---------------------------------------------------------------------------

    def champion_version(self) -> str | None:
        try:
            return str(self.client.get_model_version_by_alias(self.name, CHAMPION).version)
        except mlflow_error():
            return None

    def load_version(self, version: str) -> LoadedModel:
        """Download a version's ONNX file and verify it against its registered tags."""
        mv = self.client.get_model_version(self.name, str(version))
        registered_sha = mv.tags.get("onnx_sha256")
        if not registered_sha:
            raise ModelIntegrityError(f"{self.name} v{version} has no registered onnx_sha256 tag")
        from mlflow.artifacts import download_artifacts

        with tempfile.TemporaryDirectory() as tmp:
            path = download_artifacts(artifact_uri=f"{mv.source}/{self.onnx_file}", dst_path=tmp,
                                      tracking_uri=self.tracking_uri)
            onnx_bytes = Path(path).read_bytes()
        model = loaded_model_from_bytes(onnx_bytes, str(mv.version), registered_sha, self.name,
                                        f"models:/{self.name}/{mv.version}")
        if tuple(json.loads(mv.tags.get("feature_names", "[]"))) != model.feature_names:
            raise ModelIntegrityError(
                f"{self.name} v{version}: the file's feature names differ from the registered ones")
        self._check_features(model)
        return model

    def load_reference(self, version: str) -> ModelReference | None:
        """The drift reference stored with a version (`reference.json`), or None for a version
        trained before references were stored. An unreadable file is an error."""
        from mlflow.artifacts import download_artifacts

        mv = self.client.get_model_version(self.name, str(version))
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = download_artifacts(artifact_uri=f"{mv.source}/{REFERENCE_FILE}", dst_path=tmp,
                                          tracking_uri=self.tracking_uri)
            except (mlflow_error(), OSError):
                return None
            return ModelReference.from_json(Path(path).read_bytes())

    def registered_at(self, version: str) -> datetime:
        """When a version was registered (MLflow's creation time), UTC."""
        mv = self.client.get_model_version(self.name, str(version))
        return datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC)

    def load(self, uri: str) -> LoadedModel:
        """`models:/<name>@<alias>`, `models:/<name>/<version>` or a local `.onnx` path."""
        if not uri.startswith("models:/"):
            return self._load_file(Path(uri))
        name, _, alias = uri.removeprefix("models:/").partition("@")
        if alias:
            if name != self.name:
                raise ValueError(f"this registry serves {self.name!r}, not {name!r}")
            try:
                version = self.client.get_model_version_by_alias(name, alias).version
            except mlflow_error() as exc:
                raise LookupError(f"no version of {name!r} has alias {alias!r}") from exc
            return self.load_version(str(version))
        name, _, version = name.partition("/")
        if name != self.name or not version:
            raise ValueError(f"expected models:/{self.name}/<version> or @<alias>, got {uri!r}")
        return self.load_version(version)

    def _check_features(self, model: LoadedModel) -> None:
        """Refuse a model whose columns the serving code cannot feed (none by default)."""

    def _load_file(self, path: Path) -> LoadedModel:
        raise NotImplementedError
