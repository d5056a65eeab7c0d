"""Drift maths against independent implementations (scipy) and known values; the monitor's windows."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp

from models.drift import (
    DriftMonitor,
    ReferenceProfile,
    bin_counts,
    jensen_shannon_divergence,
    ks_statistic,
    population_stability_index,
    quantile_edges,
)

T0 = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)


@pytest.mark.parametrize("seed", range(5))
def test_ks_statistic_matches_scipy_including_ties(seed):
    rng = np.random.default_rng(seed)
    a = rng.poisson(3, size=400).astype(float)  # integer counts: many ties
    b = rng.poisson(3.6, size=250).astype(float)
    assert ks_statistic(a, b) == pytest.approx(ks_2samp(a, b).statistic, abs=1e-12)
    c, d = rng.normal(size=300), rng.normal(0.3, 1.2, size=500)
    assert ks_statistic(c, d) == pytest.approx(ks_2samp(c, d).statistic, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_js_divergence_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    p, q = rng.random(8), rng.random(8)
    q[2] = 0.0  # an empty bin needs no smoothing
    expected = jensenshannon(p, q, base=2) ** 2  # scipy returns the distance (the square root)
    assert jensen_shannon_divergence(p, q) == pytest.approx(expected, abs=1e-12)


def test_psi_by_hand_and_its_properties():
    expected, actual = np.array([0.2, 0.3, 0.5]), np.array([0.25, 0.25, 0.5])
    by_hand = sum((a - e) * math.log(a / e) for e, a in zip(expected, actual, strict=True))
    assert population_stability_index(expected, actual) == pytest.approx(by_hand, rel=1e-3)
    # Symmetric, zero on identical histograms, invariant to count scaling.
    assert population_stability_index(actual, expected) == pytest.approx(
        population_stability_index(expected, actual))
    assert population_stability_index([5, 5, 10], [50, 50, 100]) == pytest.approx(0.0, abs=1e-12)


def test_psi_empty_bins_are_smoothed_to_a_finite_documented_contribution():
    expected = [0.1, 0.9]
    actual = [0.0, 1.0]
    psi = population_stability_index(expected, actual, epsilon=1e-4)
    assert math.isfinite(psi)
    # The empty bin dominates: ~ (0.1 - 1e-4) * ln(0.1 / 1e-4) ~ 0.69, as the module says.
    assert 0.69 < psi < 0.80
    # A smaller epsilon penalises the empty bin more: it is a knob, not noise.
    assert population_stability_index(expected, actual, epsilon=1e-6) > psi


def test_same_distribution_is_stable_and_a_half_sigma_shift_is_not():
    rng = np.random.default_rng(7)
    reference = ReferenceProfile.from_sample("device_revenue_usd_1h", rng.normal(size=20_000))
    edges = np.asarray(reference.edges)
    same = bin_counts(rng.normal(size=5_000), edges)
    shifted = bin_counts(rng.normal(0.5, 1.0, size=5_000), edges)
    assert population_stability_index(reference.expected, same) < 0.02
    assert population_stability_index(reference.expected, shifted) > 0.2


def test_quantile_bins_handle_mostly_zero_counts_and_constant_features():
    assert quantile_edges([0.0] * 90 + list(range(1, 11)), bins=10).tolist()[0] == 0.0
    constant = ReferenceProfile.from_sample("device_unpaid_plays_1h", [0.0] * 50, bins=10)
    assert constant.edges == (0.0,) and constant.expected == (1.0, 0.0)
    # Everything at 0 again: no drift; everything above: maximal KS.
    assert population_stability_index(constant.expected, bin_counts([0.0] * 10, constant.edges)) == 0.0
    assert ks_statistic(constant.quantiles, [3.0] * 10) == 1.0


@pytest.mark.parametrize("seed", range(3))
def test_the_quantile_sketch_keeps_ks_close_to_the_full_sample(seed):
    rng = np.random.default_rng(seed)
    full = rng.lognormal(size=50_000)
    profile = ReferenceProfile.from_sample("device_revenue_usd_24h", full, sketch_points=201)
    current = rng.lognormal(0.1, 1.0, size=2_000)
    assert abs(ks_statistic(profile.quantiles, current) - ks_statistic(full, current)) <= 1 / 200 + 0.005


def test_reference_profile_survives_json_and_rejects_inconsistent_data():
    profile = ReferenceProfile.from_sample("device_plays_1h", np.arange(1000) % 37, bins=8)
    assert ReferenceProfile.from_dict(json.loads(json.dumps(profile.to_dict()))) == profile
    broken = profile.to_dict() | {"expected": [1.0]}
    with pytest.raises(ValueError, match="expected shares"):
        ReferenceProfile.from_dict(broken)


def _monitor(**config) -> DriftMonitor:
    reference = ReferenceProfile.from_sample("device_plays_1h", np.arange(1000) % 50, bins=10)
    return DriftMonitor("jukebox-fraud", reference, **config)


def test_sliding_windows_report_every_step_with_their_event_time_range():
    monitor = _monitor(window_size=100, step=25)
    reports = []
    for i in range(10):  # 10 batches of 25 values, one minute apart
        report = monitor.update(np.arange(25) * 2 % 50, T0 + timedelta(minutes=i))
        reports.append(report)
    assert [r is not None for r in reports] == [False, False, False] + [True] * 7
    last = reports[-1]
    assert last.window_size == 100
    # The window holds the last 4 batches: minutes 6..9.
    assert (last.window_start, last.window_end) == (T0 + timedelta(minutes=6), T0 + timedelta(minutes=9))
    assert not last.drifted and last.events == ()


def test_drift_events_once_per_run_and_retraining_after_consecutive_windows():
    monitor = _monitor(window_size=50, retrain_after=3)
    normal = np.arange(50) % 50
    kinds = []
    for values in (normal, [900.0] * 50, [900.0] * 50, [900.0] * 50, [900.0] * 50, normal, [900.0] * 50):
        report = monitor.update(values, T0)
        kinds.append([e.kind for e in report.events])
    assert kinds == [[], ["drift_detected"], [], ["retraining_requested"], [], [], ["drift_detected"]]
    event = monitor.update([900.0] * 50, T0).events  # second window of the new run: nothing new
    assert event == ()


def test_each_threshold_alone_can_flag_a_window():
    high = {"psi_threshold": 1e9, "js_threshold": 1e9, "ks_threshold": 1e9}
    shifted = (np.arange(50) % 50) + 10.0
    for metric in ("psi_threshold", "js_threshold", "ks_threshold"):
        monitor = _monitor(window_size=50, **(high | {metric: 0.05}))
        assert monitor.update(shifted, T0).drifted, metric
    assert not _monitor(window_size=50, **high).update(shifted, T0).drifted


def test_non_finite_values_are_skipped_and_naive_times_refused():
    monitor = _monitor(window_size=4)
    assert monitor.update([float("nan"), float("inf"), 1.0, 2.0, 3.0], T0) is None  # 3 finite
    assert monitor.update([4.0], T0) is not None
    with pytest.raises(ValueError, match="timezone-aware"):
        monitor.update([1.0], datetime(2026, 11, 23, 20, 0))


def test_monitor_config_is_validated():
    with pytest.raises(ValueError):
        _monitor(window_size=0)
    with pytest.raises(ValueError):
        _monitor(window_size=10, step=11)
    with pytest.raises(ValueError):
        _monitor(retrain_after=0)
