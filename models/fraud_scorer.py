"""Batched ONNX fraud scoring, and hot reload of the promoted model.

`FraudScorer` is given its onnxruntime session, model version and column order;
it turns a batch of feature rows into one float32 matrix (`fraud_features.feature_matrix`:
no NaN, no infinity ever reaches the session) and makes exactly one `run` call per
batch. `ChampionWatcher`, polled with the current time, asks the registry every
`check_every_s` seconds which version holds the `champion` alias and swaps to it
without a restart; a version that fails verification is refused and the current
one keeps serving.

>>> import numpy as np
>>> from sklearn.ensemble import RandomForestClassifier
>>> from models.onnx_export import onnx_model_bytes
>>> names = ("device_plays_5m", "device_unpaid_plays_1h")
>>> X = np.array([[0, 0], [1, 0], [5, 9], [6, 12]] * 5, dtype=np.float32)
>>> clf = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, [0, 0, 1, 1] * 5)
>>> model = loaded_model_from_bytes(onnx_model_bytes(clf, names), version="7")
>>> scorer = FraudScorer.from_model(model, expected_features=None)
>>> scorer.score([{"device_plays_5m": 6, "device_unpaid_plays_1h": 12}, {}]).round(2).tolist()
[1.0, 0.0]
>>> scorer.model_versions
{'jukebox-fraud': '7'}
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import numpy as np

from models.fraud_features import (
    FRAUD_MODEL_FEATURES,
    MISSING_DEFAULTS,
    MODEL_NAME,
    check_feature_names,
    feature_matrix,
)
from models.onnx_export import (
    OUTPUT_NAME,
    inference_session,
    onnx_feature_names,
    onnx_metadata,
    sha256_hex,
)


class ModelIntegrityError(ValueError):
    """A model artifact that must not serve: wrong columns, or bytes that are not
    the ones registered."""


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A verified model artifact, as the registry (or a local file) hands it out."""

    onnx_bytes: bytes
    version: str
    feature_names: tuple[str, ...]
    sha256: str
    name: str = MODEL_NAME
    source: str = ""

    def __repr__(self) -> str:  # never print a megabyte of bytes into a log
        return f"LoadedModel({self.name!r}, version={self.version!r}, sha256={self.sha256[:12]}...)"


def loaded_model_from_bytes(
    onnx_bytes: bytes,
    version: str,
    expected_sha256: str | None = None,
    name: str = MODEL_NAME,
    source: str = "",
) -> LoadedModel:
    """Check an artifact's hash (when one was registered) and read its column order."""
    digest = sha256_hex(onnx_bytes)
    if expected_sha256 is not None and digest != expected_sha256:
        raise ModelIntegrityError(
            f"{name} version {version}: artifact sha256 {digest[:12]}... does not match the "
            f"registered {expected_sha256[:12]}..."
        )
    try:
        names = onnx_feature_names(onnx_bytes)
    except ValueError as exc:
        raise ModelIntegrityError(f"{name} version {version}: {exc}") from None
    return LoadedModel(onnx_bytes, version, names, digest, name, source)


class InferenceSessionLike(Protocol):
    def get_inputs(self) -> list[Any]: ...
    def get_outputs(self) -> list[Any]: ...
    def run(self, output_names: list[str], input_feed: dict[str, np.ndarray]) -> list[Any]: ...


class FraudScorer:
    """Probability of fraud for a batch of feature rows.

    `feature_names` is the model's column order; `defaults` fill missing values
    (absent, None or NaN; see `fraud_features`). With `expected_features`, a model
    naming a column not in it is refused (ModelIntegrityError); it may take any of them.
    """

    def __init__(
        self,
        session: InferenceSessionLike,
        version: str,
        feature_names: Sequence[str],
        defaults: Mapping[str, float] = MISSING_DEFAULTS,
        name: str = MODEL_NAME,
        expected_features: Sequence[str] | None = FRAUD_MODEL_FEATURES,
        threshold: float | None = None,
    ) -> None:
        self.session = session
        self.threshold = threshold  # the decision threshold chosen at training, if known
        self.version = str(version)
        self.name = name
        self.feature_names = tuple(feature_names)
        try:
            check_feature_names(self.feature_names, expected_features)
        except ValueError as exc:
            raise ModelIntegrityError(f"{name} version {version}: {exc}") from None
        missing_defaults = [n for n in self.feature_names if n not in defaults]
        if missing_defaults:
            raise ValueError(f"no missing-value default declared for {missing_defaults}")
        self.defaults = {n: float(defaults[n]) for n in self.feature_names}
        self._input_name, self._output_name = self._check_session()

    def _check_session(self) -> tuple[str, str]:
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelIntegrityError(f"expected one input tensor, the model has {len(inputs)}")
        width = inputs[0].shape[-1] if inputs[0].shape else None
        if isinstance(width, int) and width != len(self.feature_names):
            raise ModelIntegrityError(
                f"model input is {width} wide, {len(self.feature_names)} feature names given"
            )
        meta = getattr(self.session, "get_modelmeta", None)
        stored = meta().custom_metadata_map.get("feature_names") if meta else None
        if stored is not None and tuple(json.loads(stored)) != self.feature_names:
            raise ModelIntegrityError("feature names given differ from those stored in the model")
        outputs = [o.name for o in self.session.get_outputs()]
        output = (
            OUTPUT_NAME if OUTPUT_NAME in outputs else outputs[0] if len(outputs) == 1 else None
        )
        if output is None:
            raise ModelIntegrityError(f"no `{OUTPUT_NAME}` output among {outputs}")
        return inputs[0].name, output

    @classmethod
    def from_model(
        cls,
        model: LoadedModel,
        session_factory: Callable[[bytes], InferenceSessionLike] = inference_session,
        expected_features: Sequence[str] | None = FRAUD_MODEL_FEATURES,
    ) -> FraudScorer:
        """A scorer for a verified artifact, with the defaults it was trained with."""
        meta = onnx_metadata(model.onnx_bytes)
        stored = meta.get("feature_defaults")
        defaults = {**MISSING_DEFAULTS, **json.loads(stored)} if stored else MISSING_DEFAULTS
        threshold = float(meta["decision_threshold"]) if "decision_threshold" in meta else None
        return cls(
            session_factory(model.onnx_bytes),
            model.version,
            model.feature_names,
            defaults=defaults,
            name=model.name,
            expected_features=expected_features,
            threshold=threshold,
        )

    @property
    def model_versions(self) -> dict[str, str]:
        """What an alert scored by this scorer records in `FraudAlert.model_versions`."""
        return {self.name: self.version}

    def score(self, rows: Sequence[Mapping[str, object]]) -> np.ndarray:
        """Fraud probabilities in [0, 1], one per row, from one session call."""
        if not rows:
            return np.zeros(0, dtype=np.float64)
        X = feature_matrix(rows, self.feature_names, self.defaults)
        (out,) = self.session.run([self._output_name], {self._input_name: X})
        scores = np.asarray(out, dtype=np.float64).reshape(-1)
        if scores.shape[0] != len(rows) or not np.isfinite(scores).all():
            raise RuntimeError(f"{self.name} v{self.version} returned invalid scores")
        return np.clip(scores, 0.0, 1.0)


class ChampionSource(Protocol):
    """Where the watcher asks which version is champion, and fetches it verified."""

    def champion_version(self) -> str | None: ...
    def load_version(self, version: str) -> LoadedModel: ...


class ChampionWatcher:
    """Serves the champion and follows it: `poll(now)` checks the registry at most
    every `check_every_s` seconds of the `now` it is given, and returns the scorer
    to use (None until a champion exists).

    A version refused for integrity (hash or columns) is never retried; any other
    failure (registry unreachable) is retried at the next check. Either way the
    current scorer keeps serving, `last_error` says why nothing changed, and
    `failed_checks` counts every check that failed (a metric follows its increase).
    """

    def __init__(
        self,
        source: ChampionSource,
        check_every_s: float = 30.0,
        session_factory: Callable[[bytes], InferenceSessionLike] = inference_session,
        expected_features: Sequence[str] | None = FRAUD_MODEL_FEATURES,
    ) -> None:
        self.source = source
        self.check_every = timedelta(seconds=check_every_s)
        self.session_factory = session_factory
        self.expected_features = expected_features
        self.scorer: FraudScorer | None = None
        self.last_error: str | None = None
        self.failed_checks = 0
        self.refused_versions: set[str] = set()
        self.swaps: list[tuple[datetime, str | None, str]] = []
        self._next_check: datetime | None = None

    def poll(self, now: datetime) -> FraudScorer | None:
        if self._next_check is not None and now < self._next_check:
            return self.scorer
        self._next_check = now + self.check_every
        version: str | None = None
        try:
            version = self.source.champion_version()
            if version is None or version in self.refused_versions:
                return self.scorer
            if self.scorer is None or version != self.scorer.version:
                self._swap_to(version, now)
            self.last_error = None
        except ModelIntegrityError as exc:
            if version is not None:
                self.refused_versions.add(version)
            self.last_error = str(exc)
            self.failed_checks += 1
        except Exception as exc:  # noqa: BLE001 - any registry/load failure: keep serving, retry next check
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.failed_checks += 1
        return self.scorer

    def _swap_to(self, version: str, now: datetime) -> None:
        scorer = FraudScorer.from_model(
            self.source.load_version(version), self.session_factory, self.expected_features
        )
        self.swaps.append((now, self.scorer.version if self.scorer else None, scorer.version))
        self.scorer = scorer
