"""DeviceAnomalyDetector: scaled inputs, score-then-learn, learn-skip, picklable and small."""

from __future__ import annotations

import pickle
import random

import pytest

from models.anomaly import DEFAULT_BOUNDS, DeviceAnomalyDetector


def normal_window(rng: random.Random) -> dict[str, float]:
    plays = rng.randint(8, 20)
    paid = plays - rng.randint(0, 1)
    return {
        "device_plays_5m": rng.randint(0, 3),
        "device_plays_1h": plays,
        "device_distinct_songs_1h": max(1, plays - rng.randint(0, 3)),
        "device_top_song_share_1h": rng.uniform(0.05, 0.25),
        "device_credits_used_1h": plays,
        "device_unpaid_plays_1h": plays - paid,
        "device_after_hours_plays_1h": 0,
        "device_payments_1h": rng.randint(3, 8),
        "device_failed_payments_1h": rng.randint(0, 1),
        "device_payment_failure_ratio_1h": rng.uniform(0.0, 0.2),
        "device_unbacked_credits_1h": rng.uniform(0.0, 1.0),
        "device_venue_distance_km_last": rng.uniform(0.0, 0.1),
        "device_speed_kmh_last": rng.uniform(0.0, 2.0),
    }


def fraud_window(rng: random.Random) -> dict[str, float]:
    window = normal_window(rng)
    window.update(
        device_plays_1h=70,
        device_plays_5m=12,
        device_unpaid_plays_1h=55,
        device_unbacked_credits_1h=80.0,
        device_top_song_share_1h=0.9,
        device_distinct_songs_1h=3,
    )
    return window


def warmed(window_size: int = 100, n: int = 400, **config) -> DeviceAnomalyDetector:
    detector = DeviceAnomalyDetector(window_size=window_size, seed=7, **config)
    rng = random.Random(1)
    for _ in range(n):
        detector.score_then_learn(normal_window(rng))
    return detector


def test_inputs_are_scaled_into_the_unit_cube_and_clipped():
    detector = DeviceAnomalyDetector()
    x = detector.scaled(
        {
            "device_plays_5m": 15,
            "device_plays_1h": 10_000,
            "device_payments_1h": 5,
            "device_speed_kmh_last": -5.0,
            "device_venue_distance_km_last": -1.0,
            "device_top_song_share_1h": float("nan"),
            "device_unpaid_plays_1h": None,
            "device_revenue_by_currency_24h": '{"KES":"1"}',
        }
    )
    assert set(x) == set(DEFAULT_BOUNDS)
    assert all(0.0 <= v <= 1.0 for v in x.values())
    assert x["device_plays_5m"] == 1.0 and x["device_plays_1h"] == 1.0
    assert x["device_speed_kmh_last"] == 0.0 and x["device_venue_distance_km_last"] == 0.0
    assert x["device_top_song_share_1h"] == 0.0 and x["device_unpaid_plays_1h"] == 0.0
    assert x["device_payments_1h"] == 0.25 and x["device_failed_payments_1h"] == 0.0  # absent


def test_bounds_must_name_declared_features_with_a_range():
    with pytest.raises(ValueError, match="undeclared"):
        DeviceAnomalyDetector(bounds={"device_plays_per_min": (0, 1)})
    with pytest.raises(ValueError, match="lo < hi"):
        DeviceAnomalyDetector(bounds={"device_plays_5m": (5.0, 5.0)})


def test_cold_until_the_first_window_then_fraud_scores_higher():
    detector = DeviceAnomalyDetector(window_size=50, seed=3)
    rng = random.Random(2)
    assert detector.score_then_learn(normal_window(rng)) == 0.0 and not detector.is_warm
    detector = warmed()
    assert detector.is_warm
    rng = random.Random(99)
    normal = [detector.score(normal_window(rng)) for _ in range(50)]
    fraud = [detector.score(fraud_window(rng)) for _ in range(50)]
    assert min(fraud) > max(normal)
    assert sum(fraud) / 50 > 0.85 and sum(normal) / 50 < 0.7


def test_a_flagged_window_is_not_learned():
    detector = warmed()
    before = pickle.dumps(detector)
    window = fraud_window(random.Random(5))
    first = detector.score_then_learn(window, learn=False)
    assert pickle.dumps(detector) == before  # nothing about the forest changed
    assert detector.score_then_learn(window, learn=False) == first


def test_learn_below_skips_its_own_outliers():
    detector = warmed(learn_below=0.85)
    learned = detector.n_learned
    detector.score_then_learn(fraud_window(random.Random(6)))
    assert detector.n_learned == learned
    detector.score_then_learn(normal_window(random.Random(6)))
    assert detector.n_learned == learned + 1


def test_fraud_bursts_do_not_become_normal_when_skipped():
    rng = random.Random(8)
    skipping, learning = warmed(), warmed()
    for _ in range(300):
        window = fraud_window(rng)
        skipping.score_then_learn(window, learn=False)
        learning.score_then_learn(window)
    probe = fraud_window(random.Random(9))
    assert skipping.score(probe) > learning.score(probe)


def test_pickles_small_and_resumes_identically():
    detector = warmed(window_size=250, n=600)
    blob = pickle.dumps(detector)
    assert len(blob) < 300_000  # one forest for the whole fleet, ~170 KB
    restored = pickle.loads(blob)
    rng_a, rng_b = random.Random(11), random.Random(11)
    for _ in range(300):
        assert detector.score_then_learn(normal_window(rng_a)) == restored.score_then_learn(
            normal_window(rng_b)
        )
