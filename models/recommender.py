"""The recommendation model: a hybrid of content, collaborative and trending signals,
scored as one ONNX graph, batched, and hot-swapped when a new champion is promoted.

For a venue in country c at daypart d, a song s of genre g scores

    content(s) = p_now(g) * pop(s | g, c)                          (genre taste x popularity)
    score(s)   = content(s) * (1 + w_lang * p(lang(s)) + w_artist * p(artist(s)))
               + w_collab * (p_songs @ U @ V)(s)                   (item-item co-occurrence)
               + w_trend * trending_c(s)

where the genre taste is smoothed in two steps (pseudo-counts, Bayesian style):
`p_habit = (habit + alpha * prior(c, d)) / (|habit| + alpha)` (the venue's usual taste
at this daypart, shrunk to its country's), then `p_now = (now + gamma * p_habit) /
(|now| + gamma)` (tonight's crowd, shrunk to the habit). `U @ V` is a low-rank
factorisation of the row-normalised song co-occurrence matrix. The parameters are
estimated from training plays and the six weights tuned on later, validation plays
(`recs_training`). `scores` (numpy) and the exported graph compute the same numbers;
training checks them against each other (`check_parity`).

>>> from models.recs_features import RecsVocabulary
>>> vocab = RecsVocabulary(("rai", "chaabi"), ("ar",), ("A", "B"), ("s1", "s2", "s3"))
>>> params = RecsParams.uniform(vocab, genre_code=[0, 0, 1], artist_code=[0, 1, 1], language_code=[0, 0, 0])
>>> model = loaded_model_from_bytes(recs_onnx_bytes(params), version="3", name=RECS_MODEL_NAME)
>>> scorer = RecsScorer.from_model(model)
>>> from online_store.venue_taste import TasteSnapshot
>>> snap = TasteSnapshot("v1", "MA", ("jb-1",), 0, 1, {"chaabi": 5.0}, {}, {}, {}, {}, (), ())
>>> scores = scorer.score([snap], [{}])
>>> scores.shape, int(scores[0].argmax())  # the chaabi song wins
((1, 3), 2)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

from models.fraud_scorer import (
    ChampionSource,
    ChampionWatcher,
    InferenceSessionLike,
    LoadedModel,
    ModelIntegrityError,
    loaded_model_from_bytes,  # noqa: F401 - re-exported for callers and the doctest
)
from models.onnx_export import TARGET_OPSET, inference_session, onnx_metadata
from models.recs_features import CONTEXTS, INPUTS, InputBuilder, RecsVocabulary
from online_store.venue_taste import TasteSnapshot

RECS_MODEL_NAME = "jukebox-recs"
OUTPUT = "scores"
EPS = 1e-6


@dataclass(frozen=True, slots=True)
class RecsBlend:
    """The six tuned weights (see the module docstring)."""

    alpha: float = 20.0
    gamma: float = 10.0
    w_language: float = 0.0
    w_artist: float = 0.0
    w_collab: float = 0.0
    w_trending: float = 0.0


@dataclass(frozen=True)
class RecsParams:
    vocab: RecsVocabulary
    prior: np.ndarray  # [contexts, G]: p(genre | country, daypart)
    pop: np.ndarray  # [contexts, S]: p(song | its genre, country); 0 where not licensed
    genre_code: np.ndarray  # [S] int64
    language_code: np.ndarray  # [S] int64
    artist_code: np.ndarray  # [S] int64
    U: np.ndarray  # [S, k]
    V: np.ndarray  # [k, S]
    blend: RecsBlend = RecsBlend()

    @classmethod
    def uniform(cls, vocab: RecsVocabulary, genre_code, artist_code, language_code) -> RecsParams:
        """Flat priors and popularity, no collaborative part: a test double and a floor."""
        G, S = len(vocab.genres), len(vocab.song_ids)
        genre_code = np.asarray(genre_code, dtype=np.int64)
        pop = np.zeros((len(CONTEXTS), S), dtype=np.float32)
        for g in range(G):
            members = genre_code == g
            pop[:, members] = 1.0 / max(1, int(members.sum()))
        return cls(vocab, np.full((len(CONTEXTS), G), 1.0 / G, dtype=np.float32), pop,
                   genre_code, np.asarray(language_code, dtype=np.int64),
                   np.asarray(artist_code, dtype=np.int64),
                   np.zeros((S, 1), dtype=np.float32), np.zeros((1, S), dtype=np.float32))


def _normalised(x: np.ndarray) -> np.ndarray:
    return x / (x.sum(axis=1, keepdims=True) + EPS)


def content_scores(params: RecsParams, taste: np.ndarray, alpha: float, gamma: float) -> np.ndarray:
    """p_now(genre of s) * pop(s | genre, country): the genre taste, smoothed twice."""
    f32 = np.float32
    G, L = len(params.vocab.genres), len(params.vocab.languages)
    now, habit, context = taste[:, :G], taste[:, G:2 * G], taste[:, 2 * G + L:]
    prior = context @ params.prior
    p_habit = (habit + f32(alpha) * prior) / (habit.sum(axis=1, keepdims=True) + f32(alpha))
    p_now = (now + f32(gamma) * p_habit) / (now.sum(axis=1, keepdims=True) + f32(gamma))
    return p_now[:, params.genre_code] * (context @ params.pop)


def signal_parts(params: RecsParams, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The blend-independent signals: language and artist affinity, co-occurrence, trending."""
    G, L = len(params.vocab.genres), len(params.vocab.languages)
    language = inputs["taste"][:, 2 * G:2 * G + L]
    return {
        "language": _normalised(language)[:, params.language_code],
        "artist": _normalised(inputs["artists"])[:, params.artist_code],
        "collab": (_normalised(inputs["songs"]) @ params.U) @ params.V,
        "trending": inputs["trending"],
    }


def blended(content: np.ndarray, parts: Mapping[str, np.ndarray], b: RecsBlend) -> np.ndarray:
    f32 = np.float32
    boost = f32(1.0) + f32(b.w_language) * parts["language"] + f32(b.w_artist) * parts["artist"]
    return content * boost + f32(b.w_collab) * parts["collab"] + f32(b.w_trending) * parts["trending"]


def scores(params: RecsParams, inputs: Mapping[str, np.ndarray], blend: RecsBlend | None = None) -> np.ndarray:
    """The model in numpy (float32, as the graph computes it); `blend` overrides the params'."""
    b = blend or params.blend
    return blended(content_scores(params, inputs["taste"], b.alpha, b.gamma), signal_parts(params, inputs), b)


def _const(name: str, value) -> onnx.TensorProto:
    from onnx import numpy_helper  # building a model needs onnx; serving needs onnxruntime only

    array = np.asarray(value)
    if array.dtype.kind == "f":
        array = array.astype(np.float32)
    return numpy_helper.from_array(array, name)


def recs_onnx_bytes(params: RecsParams, metadata: Mapping[str, str] = {}) -> bytes:
    """The model as an ONNX graph (MatMul, Gather, ReduceSum, elementwise ops), with its
    vocabulary and weights in the file's metadata."""
    import onnx
    from onnx import TensorProto, helper

    vocab, b = params.vocab, params.blend
    G, L, F = len(vocab.genres), len(vocab.languages), len(vocab.feature_names)
    A, S = len(vocab.artists), len(vocab.song_ids)
    off = vocab.context_offset
    inits = [
        _const("prior", params.prior), _const("pop", params.pop), _const("U", params.U),
        _const("V", params.V), _const("genre_code", params.genre_code),
        _const("language_code", params.language_code), _const("artist_code", params.artist_code),
        _const("axis1", np.array([1], dtype=np.int64)), _const("eps", EPS), _const("one", 1.0),
        *(_const(k, getattr(b, k)) for k in ("alpha", "gamma", "w_language", "w_artist",
                                              "w_collab", "w_trending")),
    ]
    nodes = []

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def columns(start: int, end: int, output: str) -> str:
        inits.extend([_const(f"{output}_start", np.array([start], dtype=np.int64)),
                      _const(f"{output}_end", np.array([end], dtype=np.int64))])
        return node("Slice", ["taste", f"{output}_start", f"{output}_end", "axis1"], output)

    def total(x: str) -> str:
        return node("ReduceSum", [x, "axis1"], f"{x}_sum", keepdims=1)

    def normalised(x: str) -> str:
        return node("Div", [x, node("Add", [total(x), "eps"], f"{x}_den")], f"{x}_p")

    now, habit = columns(0, G, "now"), columns(G, 2 * G, "habit")
    language, context = columns(2 * G, 2 * G + L, "language"), columns(off, F, "context")
    prior = node("MatMul", [context, "prior"], "prior_cd")
    p_habit = node("Div", [node("Add", [habit, node("Mul", [prior, "alpha"], "prior_a")], "habit_num"),
                           node("Add", [total(habit), "alpha"], "habit_den")], "p_habit")
    p_now = node("Div", [node("Add", [now, node("Mul", [p_habit, "gamma"], "habit_g")], "now_num"),
                         node("Add", [total(now), "gamma"], "now_den")], "p_now")
    genre_part = node("Gather", [p_now, "genre_code"], "genre_part", axis=1)
    content = node("Mul", [genre_part, node("MatMul", [context, "pop"], "pop_cd")], "content")
    language_part = node("Gather", [normalised(language), "language_code"], "language_part", axis=1)
    artist_part = node("Gather", [normalised("artists"), "artist_code"], "artist_part", axis=1)
    boost = node("Add", ["one", node("Add", [
        node("Mul", [language_part, "w_language"], "language_w"),
        node("Mul", [artist_part, "w_artist"], "artist_w")], "boosts")], "boost")
    collab = node("MatMul", [node("MatMul", [normalised("songs"), "U"], "songs_u"), "V"], "collab")
    mixed = node("Add", [node("Mul", [content, boost], "content_b"),
                         node("Mul", [collab, "w_collab"], "collab_w")], "mixed")
    node("Add", [mixed, node("Mul", ["trending", "w_trending"], "trending_w")], OUTPUT)
    graph = helper.make_graph(
        nodes, "jukebox_recs",
        [helper.make_tensor_value_info("taste", TensorProto.FLOAT, ["N", F]),
         helper.make_tensor_value_info("artists", TensorProto.FLOAT, ["N", A]),
         helper.make_tensor_value_info("songs", TensorProto.FLOAT, ["N", S]),
         helper.make_tensor_value_info("trending", TensorProto.FLOAT, ["T", S])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", S])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", TARGET_OPSET)],
                              producer_name="jukebox-streams")
    model.ir_version = 8  # what onnxruntime >= 1.18 reads; pinned for reproducible bytes
    helper.set_model_props(model, {
        **metadata,
        "feature_names": json.dumps(list(vocab.feature_names)),
        "artists": json.dumps(list(vocab.artists)),
        "song_ids": json.dumps(list(vocab.song_ids)),
        "blend": json.dumps(asdict(b)),
    })
    onnx.checker.check_model(model)
    return model.SerializeToString()


class RecsScorer:
    """Scores taste snapshots over the model's songs in one session call per batch."""

    def __init__(self, session: InferenceSessionLike, version: str, vocab: RecsVocabulary,
                 name: str = RECS_MODEL_NAME) -> None:
        self.session, self.version, self.vocab, self.name = session, str(version), vocab, name
        self.builder = InputBuilder(vocab)
        names = {i.name: i for i in session.get_inputs()}
        if set(names) != set(INPUTS) or OUTPUT not in [o.name for o in session.get_outputs()]:
            raise ModelIntegrityError(f"{name} v{version}: inputs {sorted(names)}, expected {INPUTS}")
        widths = {"taste": len(vocab.feature_names), "artists": len(vocab.artists),
                  "songs": len(vocab.song_ids), "trending": len(vocab.song_ids)}
        for input_name, width in widths.items():
            declared = names[input_name].shape[-1]
            if isinstance(declared, int) and declared != width:
                raise ModelIntegrityError(
                    f"{name} v{version}: input {input_name} is {declared} wide, vocabulary says {width}")

    @classmethod
    def from_model(cls, model: LoadedModel,
                   session_factory: Callable[[bytes], InferenceSessionLike] = inference_session) -> RecsScorer:
        meta = onnx_metadata(model.onnx_bytes)
        try:
            vocab = RecsVocabulary.from_names(model.feature_names, json.loads(meta["artists"]),
                                              json.loads(meta["song_ids"]))
        except (KeyError, ValueError) as exc:
            raise ModelIntegrityError(f"{model.name} v{model.version}: {exc}") from None
        return cls(session_factory(model.onnx_bytes), model.version, vocab, model.name)

    @property
    def song_ids(self) -> tuple[str, ...]:
        return self.vocab.song_ids

    def score(self, snapshots: Sequence[TasteSnapshot], trending: Sequence[Mapping[str, float]]) -> np.ndarray:
        """[len(snapshots), songs] scores; `trending` is one mapping for all rows, or one per row."""
        if not snapshots:
            return np.zeros((0, len(self.vocab.song_ids)), dtype=np.float32)
        (out,) = self.session.run([OUTPUT], self.builder.tensors(snapshots, trending))
        out = np.asarray(out)
        if out.shape != (len(snapshots), len(self.vocab.song_ids)) or not np.isfinite(out).all():
            raise RuntimeError(f"{self.name} v{self.version} returned invalid scores")
        return out


class RecsChampionWatcher(ChampionWatcher):
    """The fraud `ChampionWatcher` (poll timing, refused versions, keep serving on
    errors), building `RecsScorer`s instead."""

    def __init__(self, source: ChampionSource, check_every_s: float = 30.0,
                 session_factory: Callable[[bytes], InferenceSessionLike] = inference_session) -> None:
        super().__init__(source, check_every_s, session_factory, expected_features=None)

    def _swap_to(self, version: str, now: datetime) -> None:
        scorer = RecsScorer.from_model(self.source.load_version(version), self.session_factory)
        self.swaps.append((now, self.scorer.version if self.scorer else None, scorer.version))
        self.scorer = scorer  # type: ignore[assignment]
