"""Offline evaluation: the trained recommender against country popularity, on held-out
future plays of simulator venues, both ranked under the same business rules."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest

from models.recommender import RecsParams, scores
from models.recs_features import InputBuilder
from models.recs_rules import SongRanker
from models.recs_training import evaluate, popularity_rows, ranking_metrics, vocabulary
from tests.recs_models import recs_setup


@pytest.fixture(scope="module")
def setup():
    return recs_setup()


def test_model_clearly_beats_popularity_on_held_out_future_plays(setup):
    test = setup.trained.test
    print(f"\nheld-out: model HR@10 {test.model.hit_rate:.3f} NDCG@10 {test.model.ndcg:.4f} | popularity "
          f"HR@10 {test.popularity.hit_rate:.3f} NDCG@10 {test.popularity.ndcg:.4f} | lift HR "
          f"{test.hit_rate_lift:+.1%} NDCG {test.ndcg_lift:+.1%} over {test.model.samples} samples")
    assert test.model.samples >= 300
    assert test.hit_rate_lift >= 0.10 and test.ndcg_lift >= 0.10
    assert setup.trained.validation.ndcg_lift > 0.05  # tuned there, but it must hold there too


def test_the_gain_is_largest_where_crowds_changed(setup):
    trained, catalog = setup.trained, setup.catalog
    params, ranker = trained.params, SongRanker(trained.params.vocab.song_ids, catalog, setup.rules)
    train_end = trained.split_times[0].timestamp()
    train = [p for p in setup.history.plays if p.played_at.timestamp() < train_end]
    shifted = [s for s in trained.holdout if s.snapshot.venue_id in setup.shifted_venues]
    inputs = InputBuilder(params.vocab).tensors([s.snapshot for s in shifted], [s.trending for s in shifted])
    model = evaluate(scores(params, inputs), shifted, ranker)
    baseline = evaluate(popularity_rows(train, setup.history.countries(), shifted, params.vocab.song_ids),
                        shifted, ranker)
    assert len(shifted) >= 50 and model.ndcg > 1.3 * baseline.ndcg


def test_an_untrained_model_does_not_beat_popularity(setup):
    """The metric can tell a bad model: flat priors and popularity lose to the baseline."""
    trained, catalog = setup.trained, setup.catalog
    vocab = trained.params.vocab
    flat = RecsParams.uniform(vocab, trained.params.genre_code, trained.params.artist_code,
                              trained.params.language_code)
    ranker = SongRanker(vocab.song_ids, catalog, setup.rules)
    holdout = trained.holdout
    inputs = InputBuilder(vocab).tensors([s.snapshot for s in holdout], [s.trending for s in holdout])
    assert evaluate(scores(flat, inputs), holdout, ranker).ndcg < trained.test.popularity.ndcg


def test_samples_are_point_in_time_and_the_split_is_by_time(setup):
    trained, history = setup.trained, setup.history
    train_end, valid_end = (t.timestamp() for t in trained.split_times)
    played: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for p in history.plays:
        played[p.venue_id].append((int(p.played_at.timestamp()), p.song_id))
    for sample in trained.holdout[::7]:
        snap = sample.snapshot
        assert valid_end <= sample.cut_s and snap.as_of_s < sample.cut_s
        assert all(t < sample.cut_s for _, t in snap.played)
        window = {s for t, s in played[snap.venue_id] if sample.cut_s <= t < sample.cut_s + 3600}
        assert sample.targets == window
    assert trained.data_range[0].timestamp() < train_end < valid_end
    assert trained.parity_max_abs_diff <= 1e-6
    assert trained.params.vocab == vocabulary(setup.catalog)
    assert setup.history.duplicates > 0  # the history carried resends; each play counted once


def test_ranking_metrics_by_hand():
    m = ranking_metrics([["a", "b", "c"], ["x", "y", "z"], ["q", "r", "s"]],
                        [frozenset({"c", "a"}), frozenset({"y"}), frozenset({"nothing"})], k=3)
    dcg_1 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    dcg_2 = 1 / math.log2(3)
    assert m.hit_rate == pytest.approx(2 / 3) and m.ndcg == pytest.approx((dcg_1 + dcg_2) / 3)
    with pytest.raises(ValueError):
        ranking_metrics([], [])
    assert np.isclose(ranking_metrics([["a"]], [frozenset({"a"})], k=10).ndcg, 1.0)
