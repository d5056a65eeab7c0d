"""HalfSpaceForest scores and learns as River's HalfSpaceTrees, to the bit, in any batching;
detectors pickled with River's forest resume on the arrays with the same scores."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from river.anomaly import HalfSpaceTrees

from models.half_space_trees import HalfSpaceForest

FEATURES = ("a", "b", "c")
SNAPSHOTS = Path(__file__).parent / "snapshots"


@st.composite
def runs(draw: st.DrawFn) -> tuple:
    config = {"n_trees": draw(st.integers(1, 4)), "height": draw(st.integers(1, 8)),
              "window_size": draw(st.sampled_from([10, 20, 70]) | st.integers(2, 30)), "seed": draw(st.integers(0, 10_000))}
    learn_below = draw(st.none() | st.floats(0.0, 1.0))
    forest = HalfSpaceForest(FEATURES, **config)
    # values on a split threshold test River's `value < threshold` boundary; 0 and 1 the
    # faces; NaN goes right in River (not less than anything)
    value = st.floats(0.0, 1.0) | st.sampled_from([0.0, 1.0, math.nan, *forest._threshold[:8]])
    rows = draw(st.lists(st.tuples(st.lists(value, min_size=3, max_size=3), st.booleans()), min_size=30, max_size=160))
    batches = draw(st.lists(st.integers(1, 40) | st.integers(64, 160), min_size=1, max_size=20))
    return config, learn_below, rows, batches


@settings(max_examples=150, deadline=None)
@given(runs())
def test_scores_and_learning_equal_rivers_row_by_row(run):
    config, learn_below, rows, batches = run
    river = HalfSpaceTrees(**config)
    expected = []
    for values, learn in rows:
        x = dict(zip(FEATURES, values, strict=True))
        score = float(river.score_one(x))
        expected.append(score)
        if learn and (learn_below is None or score < learn_below):
            river.learn_one(x)
    forest, got, start = HalfSpaceForest(FEATURES, **config), [], 0
    for size in batches * (len(rows) // sum(batches) + 1):  # batches below and above the array walk's
        part = rows[start:start + size]
        if not part:
            break
        X = np.array([values for values, _ in part]).reshape(len(part), len(FEATURES))
        got += forest.scores_then_learn(X, np.array([learn for _, learn in part], dtype=bool), learn_below)
        start += size
    assert [0.0 if score is None else score for score in got] == expected  # NaN never scores NaN
    assert forest.counter == river.counter and forest.first_window == river._first_window
    resumed = HalfSpaceForest.from_river(river, FEATURES)  # River's trees and masses, as arrays
    assert np.array_equal(resumed.l_mass, forest.l_mass) and np.array_equal(resumed.r_mass, forest.r_mass)
    assert resumed._threshold == forest._threshold and resumed._split == forest._split


def test_a_detector_pickled_with_rivers_forest_resumes_with_the_same_scores():
    # written by 71fa27d (River's HalfSpaceTrees inside): 4 trees of height 6, windows of
    # 50, 30 rows into its third; the scores are the old code's for the 120 windows after
    saved = pickle.loads((SNAPSHOTS / "anomaly_detector_2026-12-04.pickle").read_bytes())
    assert saved["written_by"] == "71fa27d"
    detector = pickle.loads(saved["detector"])
    assert isinstance(detector.forest, HalfSpaceForest) and detector.forest.counter == 30
    assert detector.scores_then_learn(saved["windows"]) == saved["scores"]
    assert detector.n_learned == saved["n_learned"]


def test_pickles_without_what_it_derives_and_resumes_the_same():
    forest = HalfSpaceForest(FEATURES, n_trees=10, height=8, window_size=5, seed=3)
    rng = np.random.default_rng(1)
    forest.scores_then_learn(rng.random((12, 3)), np.ones(12, dtype=bool))
    blob = pickle.dumps(forest, protocol=pickle.HIGHEST_PROTOCOL)
    assert len(blob) < 70_000 and b"_inner_base" not in blob
    restored, X = pickle.loads(blob), rng.random((30, 3))
    learn = rng.random(30) < 0.7
    assert restored.scores_then_learn(X, learn) == forest.scores_then_learn(X, learn)
