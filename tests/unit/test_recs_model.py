"""The recommender's ONNX graph, scorer, hot swap and catalog loading."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import onnx
import pytest

from models.fraud_scorer import LoadedModel, ModelIntegrityError
from models.recommender import (
    OUTPUT,
    RECS_MODEL_NAME,
    RecsBlend,
    RecsChampionWatcher,
    RecsParams,
    RecsScorer,
    loaded_model_from_bytes,
    recs_onnx_bytes,
    scores,
)
from models.recs_catalog import (
    CatalogError,
    RecsCatalog,
    read_catalog_jsonl,
    songs_from_topic,
    write_catalog_jsonl,
)
from models.recs_features import CONTEXTS, InputBuilder, RecsVocabulary
from models.recs_training import check_recs_parity, vocabulary
from online_store.venue_taste import TasteSnapshot
from simulator.catalog import SongCatalog

CATALOG = RecsCatalog(SongCatalog(songs=120, artists=30, seed=4).songs)
VOCAB = vocabulary(CATALOG)


def random_params(seed: int, blend: RecsBlend) -> RecsParams:
    rng = np.random.default_rng(seed)
    G, S = len(VOCAB.genres), len(VOCAB.song_ids)
    genre_index = {g: i for i, g in enumerate(VOCAB.genres)}
    return RecsParams(
        vocab=VOCAB,
        prior=rng.dirichlet(np.ones(G), len(CONTEXTS)).astype(np.float32),
        pop=rng.random((len(CONTEXTS), S)).astype(np.float32),
        genre_code=np.array([genre_index[CATALOG.traits[s].genre] for s in VOCAB.song_ids]),
        language_code=np.array([VOCAB.languages.index(CATALOG.traits[s].language) for s in VOCAB.song_ids]),
        artist_code=np.array([VOCAB.artists.index(CATALOG.traits[s].artist) for s in VOCAB.song_ids]),
        U=rng.normal(size=(S, 6)).astype(np.float32), V=rng.normal(size=(6, S)).astype(np.float32),
        blend=blend,
    )


def random_snapshots(seed: int, n: int) -> list[TasteSnapshot]:
    rng = np.random.default_rng(seed)
    pick = lambda names, k: {str(x): float(rng.random() * 5) for x in rng.choice(names, k)}
    return [
        TasteSnapshot(f"v{i}", str(rng.choice(["KE", "NG", "ZA", "MA"])), ("jb-1",), 1_800_000_000,
                      int(rng.integers(0, 3)), pick(VOCAB.genres, 3), pick(VOCAB.genres, 5),
                      pick(VOCAB.languages, 2), pick(VOCAB.artists, 4), pick(VOCAB.song_ids, 7), (), ())
        for i in range(n)
    ]


@pytest.mark.parametrize("blend", [RecsBlend(), RecsBlend(3.0, 0.3, 1.0, 4.0, 0.3, 1.0)])
def test_onnx_graph_computes_what_numpy_computes(blend):
    params = random_params(1, blend)
    raw = recs_onnx_bytes(params)
    onnx.checker.check_model(onnx.load_from_string(raw))
    builder = InputBuilder(VOCAB)
    snapshots = random_snapshots(2, 64)
    per_row = builder.tensors(snapshots, [{VOCAB.song_ids[i]: 0.1} for i in range(64)])
    assert check_recs_parity(raw, params, per_row) <= 1e-6
    # One trending row broadcasts over the batch, as the flow sends it.
    shared = builder.tensors(snapshots, [{VOCAB.song_ids[3]: 0.5}])
    scorer = RecsScorer.from_model(loaded_model_from_bytes(raw, "9", name=RECS_MODEL_NAME))
    got = scorer.score(snapshots, [{VOCAB.song_ids[3]: 0.5}])
    assert got.shape == (64, len(VOCAB.song_ids))
    assert np.max(np.abs(got - scores(params, shared))) <= 1e-6
    assert scorer.song_ids == VOCAB.song_ids and scorer.version == "9"


def test_the_same_params_export_the_same_bytes():
    params = random_params(3, RecsBlend())
    assert recs_onnx_bytes(params) == recs_onnx_bytes(params)


def test_taste_values_outside_the_vocabulary_are_ignored_not_fatal():
    snap = replace(random_snapshots(5, 1)[0], genres_now={"polka": 3.0}, songs={"s-999999": 1.0},
                   country="XX")
    inputs = InputBuilder(VOCAB).tensors([snap], [{"s-999999": 1.0}])
    assert inputs["songs"].sum() == 0 and inputs["trending"].sum() == 0
    assert inputs["taste"][0, VOCAB.context_offset:].sum() == 0


def _with_metadata(raw: bytes, **props: str) -> bytes:
    model = onnx.load_from_string(raw)
    for prop in model.metadata_props:
        if prop.key in props:
            prop.value = props[prop.key]
    return model.SerializeToString()


def test_a_file_whose_vocabulary_does_not_fit_its_graph_is_refused():
    raw = recs_onnx_bytes(random_params(1, RecsBlend()))
    fewer_songs = _with_metadata(raw, song_ids=json.dumps(list(VOCAB.song_ids[:-1])))
    with pytest.raises(ModelIntegrityError, match="songs"):
        RecsScorer.from_model(loaded_model_from_bytes(fewer_songs, "1", name=RECS_MODEL_NAME))
    shuffled = list(VOCAB.feature_names)
    shuffled[0], shuffled[1] = shuffled[1], shuffled[0]
    with pytest.raises(ModelIntegrityError, match="layout"):
        RecsScorer.from_model(loaded_model_from_bytes(
            _with_metadata(raw, feature_names=json.dumps(shuffled)), "1", name=RECS_MODEL_NAME))
    assert RecsVocabulary.from_names(VOCAB.feature_names, VOCAB.artists, VOCAB.song_ids) == VOCAB


class VersionsSource:
    """A registry double: which version is champion, and its bytes."""

    def __init__(self, versions: dict[str, bytes], expected: dict[str, str]) -> None:
        self.versions, self.expected, self.champion = versions, expected, None

    def champion_version(self):
        return self.champion

    def load_version(self, version: str) -> LoadedModel:
        return loaded_model_from_bytes(self.versions[version], version, self.expected[version], RECS_MODEL_NAME)


def test_watcher_swaps_to_the_champion_and_refuses_a_tampered_version():
    good1, good3 = recs_onnx_bytes(random_params(1, RecsBlend())), recs_onnx_bytes(random_params(3, RecsBlend()))
    tampered = recs_onnx_bytes(random_params(2, RecsBlend()))
    from models.onnx_export import sha256_hex

    source = VersionsSource({"1": good1, "2": tampered, "3": good3},
                            {"1": sha256_hex(good1), "2": sha256_hex(good1), "3": sha256_hex(good3)})
    watcher = RecsChampionWatcher(source, check_every_s=30)
    t = datetime(2026, 11, 27, tzinfo=UTC)
    assert watcher.poll(t) is None
    source.champion = "1"
    assert watcher.poll(t + timedelta(seconds=10)) is None  # not checked again yet
    scorer = watcher.poll(t + timedelta(seconds=31))
    assert isinstance(scorer, RecsScorer) and scorer.version == "1"
    source.champion = "2"
    assert watcher.poll(t + timedelta(seconds=62)).version == "1"
    assert "2" in watcher.refused_versions and "sha256" in watcher.last_error
    source.champion = "3"
    assert watcher.poll(t + timedelta(seconds=93)).version == "3"
    assert [(old, new) for _, old, new in watcher.swaps] == [(None, "1"), ("1", "3")]
    (out,) = watcher.scorer.session.run([OUTPUT], InputBuilder(VOCAB).tensors(random_snapshots(1, 2), [{}]))
    assert out.shape == (2, len(VOCAB.song_ids))


def test_catalog_round_trips_through_json_lines_and_names_a_bad_line(tmp_path):
    path = tmp_path / "songs.jsonl"
    assert write_catalog_jsonl(path, CATALOG.songs) == len(CATALOG)
    assert tuple(read_catalog_jsonl(path)) == CATALOG.songs
    lines = path.read_bytes().splitlines()
    path.write_bytes(b"\n".join([*lines[:7], b'{"song_id": "s-1"}', *lines[7:]]))
    with pytest.raises(CatalogError, match=r"songs.jsonl:8"):
        read_catalog_jsonl(path)
    with pytest.raises(CatalogError, match="no such"):
        read_catalog_jsonl(tmp_path / "missing.jsonl")


def test_topic_records_fold_last_value_wins_and_tombstones_delete():
    a, b = CATALOG.songs[:2]
    renamed = replace(a, title="Remix")
    folded = songs_from_topic([(a.song_id.encode(), a.json_bytes(), "0@0"), (b.song_id.encode(), b.json_bytes(), "0@1"),
                               (a.song_id.encode(), renamed.json_bytes(), "0@2"), (b.song_id.encode(), None, "0@3")])
    assert folded == [renamed]
    with pytest.raises(CatalogError, match="0@9"):
        songs_from_topic([(b"other", a.json_bytes(), "0@9")])
    with pytest.raises(CatalogError, match="not a valid song"):
        songs_from_topic([(b"x", b"{not json", "0@1")])
