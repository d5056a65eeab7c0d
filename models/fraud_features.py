"""The fraud model's input contract: which features, in what order, and what a missing one means.

Training and serving build the model's input matrix with the same function,
`feature_matrix`, so they cannot disagree about order, defaults or dtype.

Missing values never reach a model. The rule, per value:

* absent key, `None` or NaN -> the feature's declared default (`MISSING_DEFAULTS`):
  windowed counts, sums and ratios default to 0.0 (an empty window *is* zero);
  `*_last` location features default to -1.0, a sentinel outside their valid
  range (>= 0) meaning "no location report yet", which a tree model can split on;
  customer features default to 0.0 (the event names no paying customer);
* +inf / -inf -> +/- `FLOAT32_LIMIT`, the extreme of float32 (a speed from two
  reports with no time between them is "faster than anything", not unknown);
* anything that is not a number (a string, a currency map) is refused with a
  `ValueError`: that is a caller bug, not missing data.

>>> X = feature_matrix([{"device_plays_5m": 3, "device_speed_kmh_last": float("inf")}, {}],
...                    ("device_plays_5m", "device_speed_kmh_last"))
>>> X.dtype, X.shape
(dtype('float32'), (2, 2))
>>> X[0].tolist() == [3.0, FLOAT32_LIMIT]
True
>>> X[1].tolist()
[0.0, -1.0]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from online_store.definitions import FEATURES, NUMERIC_DEVICE_FEATURES, features_of

MODEL_NAME = "jukebox-fraud"

NUMERIC_CUSTOMER_FEATURES: tuple[str, ...] = tuple(
    f.name for f in features_of("customer") if f.value_type != "currency_map"
)

RULE_ONLY_FEATURES: tuple[str, ...] = ("device_unbacked_credits_1h", "device_unbacked_payments_1h")
"""Features the rules (and the River detector) read but the model does not. Trained on
them, the model took a lost payment record for invented payments: over two unseen
simulations (500 jukeboxes, 18 h), 1 + 2 + 4 + 13 false alerts on clean jukeboxes (at
0.85 and at the trained threshold) against 0 + 3 + 3 + 7 without them, same recall
(2026-12-04)."""

FRAUD_MODEL_FEATURES: tuple[str, ...] = tuple(
    name for name in NUMERIC_DEVICE_FEATURES + NUMERIC_CUSTOMER_FEATURES if name not in RULE_ONLY_FEATURES
)
"""Input columns of the fraud model, in order. At a payment event the row is the
device row merged with the customer row that payment produced; at plays and
location reports the customer columns are absent and take their default."""

NO_LOCATION_YET = -1.0

MISSING_DEFAULTS: dict[str, float] = {
    name: NO_LOCATION_YET if FEATURES[name].window_s is None else 0.0
    for name in FRAUD_MODEL_FEATURES
}

FLOAT32_LIMIT = float(np.finfo(np.float32).max)


def unknown_features(names: Sequence[str]) -> list[str]:
    """Names that are not declared numeric features (the online store cannot supply them).

    >>> unknown_features(["device_plays_5m", "device_plays_5min", "device_revenue_by_currency_24h"])
    ['device_plays_5min', 'device_revenue_by_currency_24h']
    """
    return [n for n in names if n not in FEATURES or FEATURES[n].value_type == "currency_map"]


def check_feature_names(names: Sequence[str], expected: Sequence[str] | None = None) -> None:
    """Refuse a model whose input columns the online store cannot supply, or that repeats
    a column. With `expected` (the columns the flow supplies), each column must be one of
    them, in any order and any number: a model names its columns in its own metadata, and
    one trained before a feature was added keeps serving after the upgrade.

    >>> check_feature_names(["device_plays_1h", "device_plays_5m"], FRAUD_MODEL_FEATURES)
    >>> check_feature_names(["device_plays_1h", "customer_payments_10m"], ["device_plays_1h"])
    Traceback (most recent call last):
    ...
    ValueError: model inputs are not among the flow's features: ['customer_payments_10m']
    """
    unknown = unknown_features(names)
    if unknown:
        raise ValueError(f"model inputs are not declared features: {unknown}")
    if len(set(names)) != len(names):
        raise ValueError("model inputs repeat a feature name")
    if expected is not None:
        supplied = set(expected)
        extra = [n for n in names if n not in supplied]
        if extra:
            raise ValueError(f"model inputs are not among the flow's features: {extra}")


def feature_matrix(
    rows: Sequence[Mapping[str, object]],
    names: Sequence[str],
    defaults: Mapping[str, float] = MISSING_DEFAULTS,
) -> np.ndarray:
    """Rows of feature values -> a finite float32 matrix, columns in `names` order."""
    fill = np.array([defaults.get(n, 0.0) for n in names], dtype=np.float64)
    cells = np.empty((len(rows), len(names)), dtype=object)
    for i, row in enumerate(rows):
        cells[i] = [row.get(n) for n in names]
    # One pass over the distinct types is much cheaper than a check per cell (~2 ms / 1k rows).
    bad = {type(v) for v in cells.ravel()} - _NUMBER_TYPES
    if bad:
        name, value = next(
            (names[j], v) for row in cells for j, v in enumerate(row) if type(v) in bad
        )
        raise ValueError(f"feature {name!r} is {type(value).__name__}, not a number")
    out = cells.astype(np.float64)  # None -> NaN
    missing = np.isnan(out)
    if missing.any():
        out[missing] = np.broadcast_to(fill, out.shape)[missing]
    np.clip(out, -FLOAT32_LIMIT, FLOAT32_LIMIT, out=out)
    return out.astype(np.float32)


_NUMBER_TYPES: set[type] = {
    type(None),
    bool,
    int,
    float,
    np.bool_,
    np.int32,
    np.int64,
    np.float32,
    np.float64,
}
