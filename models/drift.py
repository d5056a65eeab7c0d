"""Input drift: how far a live window of one feature has moved from the model's reference.

Three measures, each comparing the reference distribution stored with a model
(a `ReferenceProfile`, built from the training sample) to the current window:

- **PSI** (population stability index) over quantile bins of the reference:
  `sum((a - e) * ln(a / e))`. Rule of thumb: < 0.1 stable, 0.1-0.25 moderate, > 0.25 major.
- **JS divergence** (Jensen-Shannon, base 2) over the same bins: symmetric, in [0, 1].
- **KS statistic** (two-sample Kolmogorov-Smirnov): the largest gap between the two
  empirical CDFs, in [0, 1]; needs no bins.

Empty bins. PSI divides by and takes the log of each bin's share, so one empty bin
makes it infinite. Both histograms are therefore *floored* at `epsilon` (default
1e-4) and renormalised before PSI. With a current window that leaves a 10 % bin
empty, that bin contributes `(0.1 - 1e-4) * ln(0.1 / 1e-4)` ~ 0.69: a large but
finite, comparable number. JS divergence is finite without smoothing (0 * log 0 = 0)
and is computed on the raw shares. KS has no bins.

Bins are right-closed, `(-inf, e0], (e0, e1], ..., (ek, +inf)`, cut at the reference
quantiles; repeated quantiles (a count feature that is mostly 0) collapse into one
edge, so such a feature gets fewer, well-filled bins.

>>> round(population_stability_index([0.5, 0.5], [0.9, 0.1]), 4)
0.8789
>>> jensen_shannon_divergence([1, 0], [0, 1])
1.0
>>> ks_statistic([1, 2, 3, 4], [3, 4, 5, 6])
0.5
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from schemas.outputs import ModelEvent, ModelEventKind

Values = Sequence[float] | np.ndarray

DEFAULT_EPSILON = 1e-4
DEFAULT_BINS = 10
DEFAULT_SKETCH_POINTS = 201


def quantile_edges(sample: Values, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Interior bin edges at the reference's quantiles, duplicates removed.

    >>> quantile_edges([1, 2, 3, 4, 5, 6, 7, 8], bins=4).tolist()
    [2.75, 4.5, 6.25]
    >>> quantile_edges([0, 0, 0, 0, 0, 0, 1, 5], bins=4).tolist()  # mostly zeros
    [0.0, 0.25]
    """
    values = _finite(sample)
    if values.size == 0:
        raise ValueError("cannot cut bins from an empty reference sample")
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    return np.unique(np.quantile(values, np.linspace(0.0, 1.0, bins + 1)[1:-1]))


def bin_counts(values: Values, edges: Values) -> np.ndarray:
    """How many values fall in each right-closed bin; `len(edges) + 1` bins.

    >>> bin_counts([0, 0, 1, 2, 7], [0.0, 1.5]).tolist()
    [2, 1, 2]
    """
    edges = np.asarray(edges, dtype=float)
    index = np.searchsorted(edges, _finite(values), side="left")
    return np.bincount(index, minlength=edges.size + 1)


def shares(counts: Values, epsilon: float = 0.0) -> np.ndarray:
    """Counts as proportions; with `epsilon > 0` every share is floored at it, then renormalised.

    >>> shares([3, 1, 0]).tolist()
    [0.75, 0.25, 0.0]
    >>> shares([3, 1, 0], epsilon=0.01).round(4).tolist()
    [0.7426, 0.2475, 0.0099]
    """
    counts = np.asarray(counts, dtype=float)
    total = counts.sum()
    if total <= 0:
        raise ValueError("no observations: cannot form a distribution")
    p = counts / total
    if epsilon > 0:
        p = np.maximum(p, epsilon)
        p = p / p.sum()
    return p


def population_stability_index(
    expected: Values,
    actual: Values,
    epsilon: float = DEFAULT_EPSILON,
) -> float:
    """PSI between two histograms over the same bins (counts or shares; each is normalised).

    >>> population_stability_index([10, 10], [10, 10])
    0.0
    >>> round(population_stability_index([0.5, 0.5], [1.0, 0.0]), 2)  # empty bin: large, finite
    4.6
    """
    e = shares(expected, epsilon)
    a = shares(actual, epsilon)
    _same_bins(e, a)
    return float(np.sum((a - e) * np.log(a / e)))


def jensen_shannon_divergence(p: Values, q: Values) -> float:
    """JS divergence in bits (0 = same, 1 = disjoint); counts or shares, no smoothing needed.

    >>> round(jensen_shannon_divergence([0.5, 0.5], [0.9, 0.1]), 4)
    0.1468
    """
    p, q = shares(p), shares(q)
    _same_bins(p, q)
    m = (p + q) / 2
    return float(np.clip((_kl_bits(p, m) + _kl_bits(q, m)) / 2, 0.0, 1.0))


def ks_statistic(reference: Values, current: Values) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: max |F_ref(x) - F_cur(x)| over all x.

    >>> ks_statistic([1, 2, 3], [1, 2, 3])
    0.0
    >>> ks_statistic([0, 0, 0, 0], [1, 1])
    1.0
    """
    ref, cur = np.sort(_finite(reference)), np.sort(_finite(current))
    if ref.size == 0 or cur.size == 0:
        raise ValueError("KS needs two non-empty samples")
    points = np.concatenate([ref, cur])
    cdf_ref = np.searchsorted(ref, points, side="right") / ref.size
    cdf_cur = np.searchsorted(cur, points, side="right") / cur.size
    return float(np.max(np.abs(cdf_ref - cdf_cur)))


@dataclass(frozen=True, slots=True)
class ReferenceProfile:
    """What a model remembers of one training feature, small enough to store beside it.

    `quantiles` is a sketch of the reference sample at evenly spaced probabilities; KS
    against it is within about `1 / (len(quantiles) - 1)` of KS against the full sample.

    >>> sample = [0, 1, 1, 2, 2, 3, 3, 4, 5, 8]
    >>> ref = ReferenceProfile.from_sample("device_plays_1h", sample, bins=4)
    >>> ref.edges, ref.expected
    ((1.25, 2.5, 3.75), (0.3, 0.2, 0.2, 0.3))
    >>> ReferenceProfile.from_dict(ref.to_dict()) == ref
    True
    """

    feature: str
    edges: tuple[float, ...]
    expected: tuple[float, ...]
    quantiles: tuple[float, ...]
    sample_size: int

    @classmethod
    def from_sample(
        cls,
        feature: str,
        sample: Values,
        bins: int = DEFAULT_BINS,
        sketch_points: int = DEFAULT_SKETCH_POINTS,
    ) -> ReferenceProfile:
        values = _finite(sample)
        edges = quantile_edges(values, bins)
        expected = shares(bin_counts(values, edges))
        sketch = np.quantile(values, np.linspace(0.0, 1.0, sketch_points))
        return cls(
            feature=feature,
            edges=tuple(float(e) for e in edges),
            expected=tuple(float(p) for p in expected),
            quantiles=tuple(float(q) for q in sketch),
            sample_size=int(values.size),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, e.g. for an MLflow artifact next to the model."""
        return {
            "feature": self.feature,
            "edges": list(self.edges),
            "expected": list(self.expected),
            "quantiles": list(self.quantiles),
            "sample_size": self.sample_size,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReferenceProfile:
        profile = cls(
            feature=str(data["feature"]),
            edges=tuple(float(e) for e in data["edges"]),
            expected=tuple(float(p) for p in data["expected"]),
            quantiles=tuple(float(q) for q in data["quantiles"]),
            sample_size=int(data["sample_size"]),
        )
        if len(profile.expected) != len(profile.edges) + 1:
            raise ValueError(
                f"{profile.feature}: {len(profile.edges)} edges need {len(profile.edges) + 1} "
                f"expected shares, got {len(profile.expected)}"
            )
        return profile


@dataclass(frozen=True, slots=True)
class DriftReport:
    """One evaluated window: the three measures, whether any crossed its threshold, and the
    `ModelEvent` wire messages it produced (`schemas.outputs`)."""

    model: str
    feature: str
    psi: float
    js_divergence: float
    ks_statistic: float
    window_start: datetime
    window_end: datetime
    window_size: int
    drifted: bool
    consecutive_drifted: int
    events: tuple[ModelEvent, ...]


class DriftMonitor:
    """Watches one model input feature over sliding windows of its live values.

    Every `step` values, once `window_size` values have been seen, the latest
    window is compared with the reference. A window is *drifted* when any measure
    reaches its threshold. The first drifted window of a run emits
    `drift_detected`; the `retrain_after`-th drifted window in a row emits
    `retraining_requested` (once per run). Non-finite values are skipped.

    Windows advance by values seen, and their time range comes from the event
    times given to `update`, never from the wall clock.

    >>> from datetime import datetime, timezone
    >>> ref = ReferenceProfile.from_sample("device_plays_1h", list(range(100)), bins=5)
    >>> monitor = DriftMonitor("jukebox-fraud", ref, window_size=50, retrain_after=2)
    >>> t = datetime(2026, 11, 23, 20, 0, tzinfo=timezone.utc)
    >>> monitor.update(range(0, 100, 4), t) is None  # 25 of 50 values: not full yet
    True
    >>> report = monitor.update(range(2, 100, 4), t)
    >>> report.drifted, round(report.psi, 3), report.events
    (False, 0.0, ())
    >>> report = monitor.update([500.0] * 50, t)  # everything far above the reference
    >>> report.drifted, report.ks_statistic, [e.kind for e in report.events]
    (True, 1.0, ['drift_detected'])
    >>> [e.kind for e in monitor.update([600.0] * 50, t).events]
    ['retraining_requested']
    """

    def __init__(
        self,
        model: str,
        reference: ReferenceProfile,
        window_size: int = 1000,
        step: int | None = None,
        psi_threshold: float = 0.2,
        js_threshold: float = 0.1,
        ks_threshold: float = 0.15,
        retrain_after: int = 3,
        epsilon: float = DEFAULT_EPSILON,
        model_version: str = "unknown",
    ):
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size}")
        if step is not None and not 1 <= step <= window_size:
            raise ValueError(f"step must be in [1, window_size], got {step}")
        if retrain_after < 1:
            raise ValueError(f"retrain_after must be >= 1, got {retrain_after}")
        self.model = model
        self.model_version = model_version
        self.reference = reference
        self.window_size = window_size
        self.step = step or window_size
        self.psi_threshold = psi_threshold
        self.js_threshold = js_threshold
        self.ks_threshold = ks_threshold
        self.retrain_after = retrain_after
        self.epsilon = epsilon
        # Ring buffer of the latest values and their event times (epoch seconds).
        self._values = np.zeros(window_size, dtype=float)
        self._times = np.zeros(window_size, dtype=float)
        self._seen = 0
        self._since_report = 0
        self._consecutive = 0
        self._edges = np.asarray(reference.edges, dtype=float)
        self._expected = np.asarray(reference.expected, dtype=float)
        self._sketch = np.asarray(reference.quantiles, dtype=float)

    def update(self, values: Iterable[float], event_time: datetime) -> DriftReport | None:
        """Add a batch of values observed at `event_time`; a report when a window is due.

        At most one report per call: a batch longer than `step` is evaluated once, at its end.
        """
        if event_time.tzinfo is None:
            raise ValueError("event_time must be timezone-aware (UTC)")
        batch = _finite(np.fromiter(values, dtype=float))
        if batch.size == 0:
            return None
        batch = batch[-self.window_size :]
        at = event_time.timestamp()
        positions = (self._seen + np.arange(batch.size)) % self.window_size
        self._values[positions] = batch
        self._times[positions] = at
        self._seen += batch.size
        self._since_report += batch.size
        if self._seen < self.window_size or self._since_report < self.step:
            return None
        self._since_report = 0
        return self._report()

    def _report(self) -> DriftReport:
        window = self._values
        counts = bin_counts(window, self._edges)
        psi = population_stability_index(self._expected, counts, self.epsilon)
        js = jensen_shannon_divergence(self._expected, counts)
        ks = ks_statistic(self._sketch, window)
        drifted = psi >= self.psi_threshold or js >= self.js_threshold or ks >= self.ks_threshold
        self._consecutive = self._consecutive + 1 if drifted else 0
        start = datetime.fromtimestamp(float(self._times.min()), tz=UTC)
        end = datetime.fromtimestamp(float(self._times.max()), tz=UTC)
        kinds: list[ModelEventKind] = []
        if self._consecutive == 1:
            kinds.append("drift_detected")
        if self._consecutive == self.retrain_after:
            kinds.append("retraining_requested")
        events = tuple(self._event(kind, psi, js, ks, start, end) for kind in kinds)
        return DriftReport(
            model=self.model,
            feature=self.reference.feature,
            psi=psi,
            js_divergence=js,
            ks_statistic=ks,
            window_start=start,
            window_end=end,
            window_size=self.window_size,
            drifted=drifted,
            consecutive_drifted=self._consecutive,
            events=events,
        )


    @property
    def thresholds(self) -> dict[str, float]:
        return {"psi": self.psi_threshold, "js_divergence": self.js_threshold,
                "ks_statistic": self.ks_threshold}

    def _event(self, kind: ModelEventKind, psi: float, js: float, ks: float,
               start: datetime, end: datetime) -> ModelEvent:
        return ModelEvent(
            kind=kind, model=self.model, model_version=self.model_version,
            feature=self.reference.feature, psi=psi, js_divergence=js, ks_statistic=ks,
            window_start=start, window_end=end, window_size=self.window_size,
            thresholds=self.thresholds,
        )


def _finite(values: Values) -> np.ndarray:
    array = np.asarray(values, dtype=float).ravel()
    return array[np.isfinite(array)]


def _same_bins(p: np.ndarray, q: np.ndarray) -> None:
    if p.shape != q.shape:
        raise ValueError(f"histograms have different bins: {p.size} vs {q.size}")


def _kl_bits(p: np.ndarray, m: np.ndarray) -> float:
    mask = p > 0  # 0 * log(0 / m) = 0 by convention
    return float(np.sum(p[mask] * np.log2(p[mask] / m[mask])))
