"""scikit-learn classifier -> ONNX bytes the serving path can trust.

The exported graph has one float32 input, `features` [N, n_features], and one
output, `fraud_probability` [N] (the positive-class column of the classifier's
probabilities). The column order travels inside the file as the metadata entry
`feature_names` (a JSON list), next to the missing-value defaults it was trained
with, so a model is never fed columns in an order it was not trained on.

`check_parity` runs the exported bytes in onnxruntime and compares them with
scikit-learn on the same rows; training fails when they differ by more than 1e-4.

Converter note: skl2onnx 1.20 cannot convert HistGradientBoostingClassifier
fitted by scikit-learn 1.9 (it passes booleans into an ONNX int attribute), so the
trainer uses RandomForestClassifier, whose conversion is exact to ~4e-7.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

if TYPE_CHECKING:
    import onnx

# `onnx` and `skl2onnx` (with scikit-learn) are imported where models are built or read,
# not here: serving needs only onnxruntime, and they add ~1 s to every engine start.

INPUT_NAME = "features"
OUTPUT_NAME = "fraud_probability"
PARITY_TOLERANCE = 1e-4
TARGET_OPSET = 17  # what onnxruntime >= 1.18 runs; pinned so exports are reproducible


class ParityError(AssertionError):
    """onnxruntime and scikit-learn disagree on the same rows: the export is not trusted."""


def onnx_model_bytes(
    classifier: object,
    feature_names: Sequence[str],
    metadata: Mapping[str, str] = {},
) -> bytes:
    """Convert a fitted binary classifier (classes [0, 1]) to ONNX bytes with one
    probability output and `feature_names` (+ `metadata`) stored in the file."""
    classes = [int(c) for c in getattr(classifier, "classes_", [])]
    if classes != [0, 1]:
        raise ValueError(f"expected a binary classifier with classes [0, 1], got {classes}")
    n_in = getattr(classifier, "n_features_in_", None)
    if n_in != len(feature_names):
        raise ValueError(f"classifier takes {n_in} features, {len(feature_names)} names given")
    import onnx
    from onnx import helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    model = convert_sklearn(
        classifier,
        initial_types=[(INPUT_NAME, FloatTensorType([None, len(feature_names)]))],
        options={id(classifier): {"zipmap": False}},
        target_opset={"": TARGET_OPSET, "ai.onnx.ml": 3},
    )
    _expose_positive_probability(model)
    model.graph.name = "fraud_classifier"  # skl2onnx picks a random uuid: keep exports reproducible
    helper.set_model_props(model, {**metadata, "feature_names": json.dumps(list(feature_names))})
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _expose_positive_probability(model: onnx.ModelProto) -> None:
    # skl2onnx outputs `label` and `probabilities` [N, 2]; serving wants one [N] column.
    from onnx import TensorProto, helper

    graph = model.graph
    probabilities = next(o.name for o in graph.output if o.name == "probabilities")
    graph.initializer.append(helper.make_tensor("positive_class", TensorProto.INT64, [], [1]))
    graph.node.append(
        helper.make_node(
            "Gather",
            [probabilities, "positive_class"],
            [OUTPUT_NAME],
            name="positive_column",
            axis=1,
        )
    )
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [None]))


def sha256_hex(data: bytes) -> str:
    """Hex sha256, the artifact identity recorded in the registry.

    >>> sha256_hex(b"")[:12]
    'e3b0c44298fc'
    """
    return hashlib.sha256(data).hexdigest()


def onnx_metadata(onnx_bytes: bytes) -> dict[str, str]:
    """The metadata entries stored in an ONNX file."""
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    return {p.key: p.value for p in model.metadata_props}


def onnx_feature_names(onnx_bytes: bytes) -> tuple[str, ...]:
    raw = onnx_metadata(onnx_bytes).get("feature_names")
    if raw is None:
        raise ValueError("the ONNX file stores no `feature_names` metadata")
    names = json.loads(raw)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError("`feature_names` metadata is not a JSON list of strings")
    return tuple(names)


def inference_session(onnx_bytes: bytes, threads: int = 1) -> ort.InferenceSession:
    """A CPU session. One intra-op thread by default: a stream worker per core is
    the unit of parallelism, and more threads per session only oversubscribe."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def check_parity(
    onnx_bytes: bytes, classifier: object, X: np.ndarray, tolerance: float = PARITY_TOLERANCE
) -> float:
    """Largest |onnxruntime - scikit-learn| positive-class probability over the rows of X;
    raises ParityError above `tolerance`."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    if len(X) == 0:
        raise ValueError("parity needs at least one row")
    expected = classifier.predict_proba(X)[:, 1]  # type: ignore[attr-defined]
    (got,) = inference_session(onnx_bytes).run([OUTPUT_NAME], {INPUT_NAME: X})
    worst = float(np.max(np.abs(got.astype(np.float64) - expected)))
    if not worst <= tolerance:  # also catches NaN
        raise ParityError(f"ONNX and scikit-learn differ by {worst:.2e} > {tolerance:.0e}")
    return worst
