"""Train the recommender on play history, tune it on later plays, test it on the future.

The history is split by *time*: parameters are estimated on the first `train_share`
of it, the six blend weights tuned on the next `valid_share` (coordinate ascent on
NDCG@10), and everything is measured on the rest, which neither step saw. Samples
are point in time (`recs_history.evaluation_samples`): at each hourly cut, the
venue's taste as the flow would have it, against the songs it played in the next
hour. Every list, model or baseline, goes through the same business rules
(`SongRanker`), so the comparison is like for like.

Estimated from training plays:

* `prior` p(genre | country, daypart), Laplace-smoothed over the genres licensed there;
* `pop` p(song | genre, country), additively smoothed, 0 where not licensed;
* `U @ V`: rank-`rank` truncated SVD of the row-normalised song co-occurrence matrix,
  songs co-occurring when one venue plays both within a `basket_s` block.

The baseline is country popularity: the songs most played in the venue's country
during training. Test numbers for the model are scored through onnxruntime from the
exported bytes, the way the flow serves them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np

from models.onnx_export import ParityError, inference_session, sha256_hex
from models.recommender import (
    OUTPUT,
    RECS_MODEL_NAME,
    RecsBlend,
    RecsParams,
    RecsScorer,
    blended,
    content_scores,
    loaded_model_from_bytes,
    recs_onnx_bytes,
    scores,
    signal_parts,
)
from models.recs_catalog import RecsCatalog
from models.recs_features import CONTEXTS, InputBuilder, RecsVocabulary
from models.recs_history import EvalSample, PlayHistory, evaluation_samples
from models.recs_rules import RecsPolicy, SongRanker
from online_store.venue_taste import TastePolicy, TrendingPolicy, daypart_at
from schemas.events import PlayEvent
from simulator.tastes import DAYPARTS

PARITY_TOLERANCE = 1e-6  # scores are probabilities of order 1e-3
GRID: dict[str, tuple[float, ...]] = {
    "alpha": (1.0, 3.0, 10.0, 30.0, 100.0, 300.0),
    "gamma": (0.3, 1.0, 3.0, 10.0, 30.0, 100.0),
    "w_language": (0.0, 0.25, 1.0, 4.0),
    "w_artist": (0.0, 0.25, 1.0, 4.0),
    "w_collab": (0.0, 0.03, 0.1, 0.3, 1.0),
    "w_trending": (0.0, 0.03, 0.1, 0.3, 1.0),
}


@dataclass(frozen=True, slots=True)
class RankingMetrics:
    hit_rate: float  # share of samples with at least one of the top k played next
    ndcg: float  # mean NDCG@k, binary relevance: the songs played next
    samples: int


def ranking_metrics(lists: Sequence[Sequence[str]], targets: Sequence[frozenset[str]], k: int = 10) -> RankingMetrics:
    """Hit rate@k and NDCG@k of ranked lists against the songs played next.

    >>> m = ranking_metrics([["a", "b"], ["c", "d"]], [frozenset({"b"}), frozenset({"x"})], k=2)
    >>> m.hit_rate, round(m.ndcg, 4), m.samples
    (0.5, 0.3155, 2)
    """
    if len(lists) != len(targets) or not lists:
        raise ValueError("need one target set per list, and at least one")
    discounts = [1.0 / math.log2(i + 2) for i in range(k)]
    hits = ndcg = 0.0
    for ranked, wanted in zip(lists, targets, strict=True):
        gains = [discounts[i] for i, song in enumerate(ranked[:k]) if song in wanted]
        hits += bool(gains)
        ndcg += sum(gains) / sum(discounts[:min(len(wanted), k)])
    return RankingMetrics(hits / len(lists), ndcg / len(lists), len(lists))


@dataclass(frozen=True, slots=True)
class RecsComparison:
    model: RankingMetrics
    popularity: RankingMetrics

    @property
    def hit_rate_lift(self) -> float:
        """Relative gain over the popularity baseline (0.25 = 25 % better)."""
        return self.model.hit_rate / self.popularity.hit_rate - 1.0 if self.popularity.hit_rate else math.inf

    @property
    def ndcg_lift(self) -> float:
        return self.model.ndcg / self.popularity.ndcg - 1.0 if self.popularity.ndcg else math.inf

    def as_flat(self, prefix: str) -> dict[str, float]:
        return {
            f"{prefix}hit_rate_at_10": self.model.hit_rate, f"{prefix}ndcg_at_10": self.model.ndcg,
            f"{prefix}popularity_hit_rate_at_10": self.popularity.hit_rate,
            f"{prefix}popularity_ndcg_at_10": self.popularity.ndcg,
            f"{prefix}hit_rate_lift": self.hit_rate_lift, f"{prefix}ndcg_lift": self.ndcg_lift,
            f"{prefix}samples": float(self.model.samples),
        }


@dataclass(frozen=True)
class TrainedRecsModel:
    params: RecsParams
    onnx_bytes: bytes
    sha256: str
    test: RecsComparison  # held-out future plays; the model scored through onnxruntime
    validation: RecsComparison
    holdout: list[EvalSample]  # the test samples, for re-scoring a champion on the same rows
    data_range: tuple[datetime, datetime]
    split_times: tuple[datetime, datetime]  # end of training, end of validation
    parity_max_abs_diff: float
    settings: dict[str, str]


def evaluate(rows: np.ndarray, samples: Sequence[EvalSample], ranker: SongRanker) -> RankingMetrics:
    """Metrics of score rows (one per sample, over the ranker's songs) under the rules."""
    snaps = [s.snapshot for s in samples]
    lists = ranker.rank_batch(rows, [s.country for s in snaps], [s.played for s in snaps],
                              [s.as_of_s for s in snaps])
    return ranking_metrics([[song for song, _ in ranked] for ranked in lists],
                           [s.targets for s in samples], ranker.policy.top_n)


def evaluate_scorer(scorer: RecsScorer, samples: Sequence[EvalSample], catalog: RecsCatalog,
                    policy: RecsPolicy) -> RankingMetrics:
    """A served model's metrics: its registered bytes through onnxruntime, the live rules."""
    rows = scorer.score([s.snapshot for s in samples], [s.trending for s in samples])
    return evaluate(rows, samples, SongRanker(scorer.song_ids, catalog, policy))


def popularity_rows(plays: Sequence[PlayEvent], countries: dict[str, str], samples: Sequence[EvalSample],
                    song_ids: Sequence[str]) -> np.ndarray:
    """The baseline's score rows: plays per song in the sample's country (training plays)."""
    column = {s: j for j, s in enumerate(song_ids)}
    counts: dict[str, np.ndarray] = {}
    for play in plays:
        country, j = countries.get(play.venue_id), column.get(play.song_id)
        if country is not None and j is not None:
            counts.setdefault(country, np.zeros(len(song_ids)))[j] += 1
    empty = np.zeros(len(song_ids))
    return np.stack([counts.get(s.snapshot.country, empty) for s in samples])


class RecsTrainer:
    """Hyperparameters are the constructor (River style); `fit` does the rest."""

    def __init__(self, rank: int = 32, taste: TastePolicy = TastePolicy(),
                 trending: TrendingPolicy = TrendingPolicy(), rules: RecsPolicy = RecsPolicy(),
                 horizon_s: int = 3600, cut_every_s: int = 3600, train_share: float = 0.6,
                 valid_share: float = 0.2, basket_s: int = 3 * 3600, smoothing: float = 0.5,
                 tune_rounds: int = 2, seed: int = 0) -> None:
        if not (0 < train_share and 0 < valid_share and train_share + valid_share < 1):
            raise ValueError("train_share and valid_share must be positive and leave a test share")
        self.rank, self.taste, self.trending, self.rules = rank, taste, trending, rules
        self.horizon_s, self.cut_every_s, self.basket_s = horizon_s, cut_every_s, basket_s
        self.train_share, self.valid_share, self.smoothing = train_share, valid_share, smoothing
        self.tune_rounds, self.seed = tune_rounds, seed

    def fit(self, history: PlayHistory, catalog: RecsCatalog,
            on_step: Callable[[str], None] | None = None) -> TrainedRecsModel:
        step = on_step or (lambda _text: None)
        start, end = history.start_s, history.end_s
        train_end = start + int((end - start) * self.train_share)
        valid_end = start + int((end - start) * (self.train_share + self.valid_share))
        vocab = vocabulary(catalog)
        countries = history.countries()
        train = [p for p in history.plays if p.played_at.timestamp() < train_end]
        step(f"estimating from {len(train):,} training plays")
        params = self.estimate(train, history, catalog, vocab)
        cuts = [*self._cuts(train_end, valid_end), *self._cuts(valid_end, end)]
        step(f"replaying history to {len(cuts)} hourly cuts")
        samples = evaluation_samples(history, catalog.traits, cuts, self.horizon_s, self.taste, self.trending)
        valid = [s for s in samples if s.cut_s < valid_end]
        test = [s for s in samples if s.cut_s >= valid_end]
        if not valid or not test:
            raise ValueError("too little history after training to tune and test: simulate longer")
        ranker = SongRanker(vocab.song_ids, catalog, self.rules)
        builder = InputBuilder(vocab)
        step(f"tuning the blend on {len(valid):,} validation samples")
        valid_inputs = builder.tensors([s.snapshot for s in valid], [s.trending for s in valid])
        blend = self.tune(params, valid_inputs, valid, ranker)
        params = replace(params, blend=blend)
        step("exporting ONNX and testing on held-out future plays")
        onnx_bytes = recs_onnx_bytes(params, {
            "model_kind": "hybrid content x popularity + co-occurrence + trending, v1",
            "data_start": _utc(start).isoformat(), "data_end": _utc(end).isoformat(),
        })
        test_inputs = builder.tensors([s.snapshot for s in test], [s.trending for s in test])
        parity = check_recs_parity(onnx_bytes, params, test_inputs)
        scorer = RecsScorer.from_model(loaded_model_from_bytes(onnx_bytes, "candidate", name=RECS_MODEL_NAME))
        baseline_valid = popularity_rows(train, countries, valid, vocab.song_ids)
        baseline_test = popularity_rows(train, countries, test, vocab.song_ids)
        return TrainedRecsModel(
            params=params,
            onnx_bytes=onnx_bytes,
            sha256=sha256_hex(onnx_bytes),
            test=RecsComparison(evaluate_scorer(scorer, test, catalog, self.rules),
                                evaluate(baseline_test, test, ranker)),
            validation=RecsComparison(evaluate(scores(params, valid_inputs), valid, ranker),
                                      evaluate(baseline_valid, valid, ranker)),
            holdout=test,
            data_range=(_utc(start), _utc(end)),
            split_times=(_utc(train_end), _utc(valid_end)),
            parity_max_abs_diff=parity,
            settings=self.describe(),
        )

    def describe(self) -> dict[str, str]:
        return {
            "rank": str(self.rank), "horizon_s": str(self.horizon_s), "basket_s": str(self.basket_s),
            "train_share": str(self.train_share), "valid_share": str(self.valid_share),
            "smoothing": str(self.smoothing), "now_half_life_s": str(self.taste.now_half_life_s),
            "habit_half_life_s": str(self.taste.habit_half_life_s),
            "trending_window_s": str(self.trending.window_s), "top_n": str(self.rules.top_n),
            "max_per_artist": str(self.rules.max_per_artist),
            "exclude_played_s": str(self.rules.exclude_played_s),
        }

    def _cuts(self, begin: int, end: int) -> list[int]:
        first = -(-begin // self.cut_every_s) * self.cut_every_s
        return list(range(first, end - self.horizon_s + 1, self.cut_every_s))

    def estimate(self, train: Sequence[PlayEvent], history: PlayHistory, catalog: RecsCatalog,
                 vocab: RecsVocabulary) -> RecsParams:
        """Priors, popularity and co-occurrence factors from training plays."""
        genre_index = {g: i for i, g in enumerate(vocab.genres)}
        song_index = {s: j for j, s in enumerate(vocab.song_ids)}
        country_index = {c: i for i, c in enumerate(dict.fromkeys(c for c, _ in CONTEXTS))}
        G, S, D = len(vocab.genres), len(vocab.song_ids), len(DAYPARTS)
        genre_code = np.array([genre_index[catalog.traits[s].genre] for s in vocab.song_ids], dtype=np.int64)
        licensed = np.stack([catalog.licensed_in(c)[[catalog.index[s] for s in vocab.song_ids]]
                             for c in country_index]).astype(np.float64)  # [C, S]
        genre_counts = np.zeros((len(country_index) * D, G))
        song_counts = np.zeros((len(country_index), S))
        baskets: dict[tuple[str, int], int] = {}
        rows, cols = [], []
        for play in train:
            registration = history.venues.get(play.venue_id)
            j = song_index.get(play.song_id)
            if registration is None or j is None or registration.country not in country_index:
                continue
            c, t = country_index[registration.country], int(play.played_at.timestamp())
            genre_counts[c * D + daypart_at(t, registration.timezone), genre_code[j]] += 1
            song_counts[c, j] += 1
            rows.append(baskets.setdefault((play.venue_id, t // self.basket_s), len(baskets)))
            cols.append(j)
        one_hot = np.eye(G)[genre_code]  # [S, G]
        licensed_genres = (licensed @ one_hot > 0).astype(np.float64)  # [C, G]
        prior = genre_counts + np.repeat(licensed_genres, D, axis=0)
        prior /= np.maximum(prior.sum(axis=1, keepdims=True), 1e-12)
        smoothed = (song_counts + self.smoothing) * licensed
        pop = smoothed / np.maximum((smoothed @ one_hot)[:, genre_code], 1e-12)
        U, V = self._cooccurrence_factors(rows, cols, len(baskets), S)
        artist_index = {a: i for i, a in enumerate(vocab.artists)}
        language_index = {lang: i for i, lang in enumerate(vocab.languages)}
        return RecsParams(
            vocab=vocab,
            prior=prior.astype(np.float32),
            pop=np.repeat(pop, D, axis=0).astype(np.float32),
            genre_code=genre_code,
            language_code=np.array([language_index[catalog.traits[s].language] for s in vocab.song_ids],
                                   dtype=np.int64),
            artist_code=np.array([artist_index[catalog.traits[s].artist] for s in vocab.song_ids],
                                 dtype=np.int64),
            U=U, V=V,
        )

    def _cooccurrence_factors(self, rows: list[int], cols: list[int], n_baskets: int,
                              n_songs: int) -> tuple[np.ndarray, np.ndarray]:
        # Imported here, only to train: SciPy and scikit-learn cost every process that
        # merely loads a model (the live flow, each CLI command) ~1.2 s at start.
        from scipy import sparse
        from sklearn.utils.extmath import randomized_svd

        baskets = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(max(n_baskets, 1), n_songs))
        baskets.data[:] = 1.0  # played at all in the block, not how often
        together = (baskets.T @ baskets).tocsr()
        together.setdiag(0.0)
        together.eliminate_zeros()
        totals = np.asarray(together.sum(axis=1)).ravel()
        transition = sparse.diags(1.0 / np.maximum(totals, 1.0)) @ together  # p(j | i)
        k = max(1, min(self.rank, n_songs - 1))
        u, sigma, vt = randomized_svd(transition, n_components=k, random_state=self.seed)
        return (u * sigma).astype(np.float32), vt.astype(np.float32)

    def tune(self, params: RecsParams, inputs: dict[str, np.ndarray], samples: Sequence[EvalSample],
             ranker: SongRanker) -> RecsBlend:
        """Coordinate ascent over GRID on validation NDCG@10 (ties keep the current value)."""
        parts = signal_parts(params, inputs)
        contents: dict[tuple[float, float], np.ndarray] = {}
        snaps = [s.snapshot for s in samples]
        allowed = ranker.allowed_rows([s.country for s in snaps], [s.played for s in snaps],
                                      [s.as_of_s for s in snaps])
        targets = [s.targets for s in samples]

        def ndcg(blend: RecsBlend) -> float:
            key = (blend.alpha, blend.gamma)
            if key not in contents:
                contents[key] = content_scores(params, inputs["taste"], *key)
            lists = ranker.rank_rows(blended(contents[key], parts, blend), allowed)
            return ranking_metrics([[song for song, _ in r] for r in lists], targets, ranker.policy.top_n).ndcg

        blend = params.blend
        best = ndcg(blend)
        for _ in range(self.tune_rounds):
            improved = False
            for name, values in GRID.items():
                for value in values:
                    trial = replace(blend, **{name: value})
                    if trial != blend and (score := ndcg(trial)) > best + 1e-9:
                        best, blend, improved = score, trial, True
            if not improved:
                break
        return blend


def vocabulary(catalog: RecsCatalog) -> RecsVocabulary:
    return RecsVocabulary(
        genres=tuple(sorted({s.genre for s in catalog.songs})),
        languages=tuple(sorted({s.language for s in catalog.songs})),
        artists=catalog.artists,
        song_ids=catalog.song_ids,
    )


def check_recs_parity(onnx_bytes: bytes, params: RecsParams, inputs: dict[str, np.ndarray],
                      tolerance: float = PARITY_TOLERANCE) -> float:
    """Largest |onnxruntime - numpy| score on `inputs`; ParityError above `tolerance`."""
    (got,) = inference_session(onnx_bytes).run([OUTPUT], inputs)
    worst = float(np.max(np.abs(got.astype(np.float64) - scores(params, inputs))))
    if not worst <= tolerance:
        raise ParityError(f"ONNX and numpy recommendation scores differ by {worst:.2e} > {tolerance:.0e}")
    return worst


def _utc(t_s: int) -> datetime:
    return datetime.fromtimestamp(t_s, tz=UTC)
