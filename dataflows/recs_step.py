"""Recommendation updates in the flow: taste per play, scoring per venue per interval.

    admitted ─ recs_inputs (plays, venue registrations) ─ key venue
      ─ recs_venue_taste (taste state; a snapshot at most once per interval of event time)
      ─ key country ─ recs_country_score (trending state; one ONNX call per batch; rules)
      ─ key venue ─ recs_deliver (what each jukebox was sent: material change + interval)
      ─ RecommendationUpdate on `topics.recommendations`, keyed by jukebox_id

Per play the flow does a few dict updates; the model runs per venue per interval,
batched per country (a country key sees one snapshot per venue per interval, so the
hot keys carry ~1/100 of the play rate). Which venues are scored and which updates are
sent is decided on event time, so a replay sends the same lists; trending is fed by
the plays each snapshot carries, so it lags by up to one interval per venue.

`build_flow` calls `recommendation_step` on its admitted stream; `recs_flow` builds a
recommendations-only flow from the same steps (its own deployment, and the tests).
Step ids are permanent (recovery state is stored under them).
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import bytewax.operators as op
import numpy as np
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.outputs import Sink

from dataflows.records import Admitted, OutMessage, contracts_by_topic, route_record
from dataflows.replay_order import EpochStash, HistoryOrdered, Sequenced
from models.recommender import RecsScorer
from models.recs_catalog import RecsCatalog
from models.recs_rules import DeliveryState, RankedList, RecsPolicy, SongRanker, deliveries
from online_store.admission import AdmissionPolicy
from online_store.venue_taste import (
    CountryTrending,
    TastePolicy,
    TasteSnapshot,
    TrendingPolicy,
    update_venue_taste,
)
from schemas.decoding import DecodeLimits
from schemas.events import PlayEvent, VenueRegistration
from schemas.outputs import RankedSong, RecommendationUpdate
from schemas.topics import Topics

TRENDING_VERSION = "trending"  # model_version of lists ranked by trending alone (no model yet)


@dataclass
class RecsConfig:
    """What the recommendation steps need; built once per process by the runner.

    `scorer(now)` returns the model to use for a batch (a watcher's `poll`, or a fixed
    scorer), or None before any model exists: lists are then ranked by the country's
    trending songs under the same rules. `generated_at(based_on)` stamps updates: the
    wall clock live, event time in replays and tests.
    """

    catalog: RecsCatalog
    scorer: Callable[[datetime], RecsScorer | None]
    now: Callable[[], datetime]
    generated_at: Callable[[datetime], datetime]
    taste: TastePolicy = field(default_factory=TastePolicy)
    trending: TrendingPolicy = field(default_factory=TrendingPolicy)
    rules: RecsPolicy = field(default_factory=RecsPolicy)
    on_scored: Callable[[str, str, float, int], None] | None = None  # model, version, seconds, rows
    on_delivery: Callable[[int, int], None] | None = None  # sent, suppressed


def recs_input(admitted: Admitted) -> PlayEvent | VenueRegistration | Sequenced | None:
    event = admitted.event
    if not isinstance(event, PlayEvent | VenueRegistration):
        return None
    return event if admitted.position is None else Sequenced(admitted.position, event)


def _venue_of(item: PlayEvent | VenueRegistration | Sequenced) -> str:
    return item.item.venue_id if type(item) is Sequenced else item.venue_id


def _country_of(item: TasteSnapshot | Sequenced) -> str:
    return item.item.country if type(item) is Sequenced else item.country


class _PickledLogic(op.StatefulBatchLogic):
    keeps_snapshots = True  # False in a replay: nothing would read them

    def __init__(self, resume: bytes | None) -> None:
        self.state = pickle.loads(resume) if resume is not None else None

    def snapshot(self) -> bytes | None:
        if not self.keeps_snapshots:
            return None
        return pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)


class _VenueTasteLogic(_PickledLogic):
    def __init__(self, resume: bytes | None, config: RecsConfig, replay_order: bool = False) -> None:
        super().__init__(resume)
        self.songs, self.policy = config.catalog.traits, config.taste
        self.keeps_snapshots = not replay_order

    def on_batch(self, values: list) -> tuple[list, bool]:
        outputs: list = []
        state = self.state
        for event in values:
            if type(event) is Sequenced:  # a replay: the snapshot keeps the play's position
                state, emitted = update_venue_taste(state, event.item, self.songs, self.policy)
                outputs.extend(Sequenced(event.position, snapshot) for snapshot in emitted)
                continue
            state, emitted = update_venue_taste(state, event, self.songs, self.policy)
            outputs.extend(emitted)
        self.state = state
        return outputs, op.StatefulBatchLogic.RETAIN


class CountryScorer:
    """Scores one country's batch of snapshots: the model (or trending) and the rules.
    Shared by every country key of a worker; rankers are built once per model version."""

    def __init__(self, config: RecsConfig) -> None:
        self.config = config
        self._rankers: dict[tuple[str, int], SongRanker] = {}
        self._catalog_ranker = SongRanker(config.catalog.song_ids, config.catalog, config.rules)

    def _ranker(self, scorer: RecsScorer) -> SongRanker:
        key = (scorer.version, id(scorer))
        ranker = self._rankers.get(key)
        if ranker is None:
            self._rankers.clear()  # one live model at a time
            ranker = self._rankers[key] = SongRanker(scorer.song_ids, self.config.catalog, self.config.rules)
        return ranker

    def ranked(self, snapshots: list[TasteSnapshot], shares: list[dict[str, float]],
               row_by_row: bool = False) -> list[RankedList]:
        """Rank each snapshot with its own country trending shares (`shares[i]`).

        `row_by_row` scores one snapshot per model call: the model's float32 matrix
        products round differently with the number of rows in a call, and a replay must
        not depend on which snapshots shared an epoch."""
        config = self.config
        scorer = config.scorer(config.now())
        countries = [s.country for s in snapshots]
        played = [s.played for s in snapshots]
        as_of = [s.as_of_s for s in snapshots]
        if scorer is not None:
            started = time.perf_counter()
            if row_by_row:
                rows = np.vstack([scorer.score([snapshot], [row_shares])
                                  for snapshot, row_shares in zip(snapshots, shares, strict=True)])
            else:
                rows = scorer.score(snapshots, shares)
            lists = self._ranker(scorer).rank_batch(rows, countries, played, as_of)
            if config.on_scored is not None:
                config.on_scored(scorer.name, scorer.version, time.perf_counter() - started, len(rows))
            version = scorer.version
        else:
            ranker, index = self._catalog_ranker, config.catalog.index
            rows = np.zeros((len(snapshots), len(index)), dtype=np.float32)
            for i, row_shares in enumerate(shares):
                for song_id, share in row_shares.items():
                    if song_id in index:
                        rows[i, index[song_id]] = share
            allowed = ranker.allowed_rows(countries, played, as_of) & (rows > 0)
            lists = ranker.rank_rows(rows, allowed)
            version = TRENDING_VERSION
        return [RankedList(s.venue_id, s.jukebox_ids, s.as_of_s, tuple(songs), version)
                for s, songs in zip(snapshots, lists, strict=True)]


class _CountryScoreLogic(HistoryOrdered, _PickledLogic):
    """A country's trending songs; each venue snapshot is ranked with the trending shares
    as of that snapshot (its own plays and those of the snapshots before it), so a list
    does not depend on which snapshots shared its micro-batch. In a replay, a batch's
    snapshots (from many venues, in no set order) are taken in history order at the end
    of the epoch."""

    def __init__(self, resume: bytes | None, config: RecsConfig, scorer: CountryScorer,
                 replay_order: bool = False) -> None:
        super().__init__(resume)
        self.state = self.state or CountryTrending(config.trending)
        self.scorer = scorer
        self.keeps_snapshots = not replay_order
        self.stash = EpochStash(_snapshot_order) if replay_order else None

    def on_batch(self, values: list) -> tuple[list, bool]:
        if self.stash is not None:
            self.stash.add(values)
            return [], op.StatefulBatchLogic.RETAIN
        # Live: a micro-batch brings each venue's snapshots grouped by venue (Bytewax runs
        # keys in turn); taken in event-time order, the trending each one sees is as of
        # its own time, not as of the last venue's.
        return self.apply_in_order(sorted(values, key=_event_time_order)), op.StatefulBatchLogic.RETAIN

    def apply_in_order(self, values: list) -> list[RankedList]:
        trending = self.state
        snapshots = [v.item if type(v) is Sequenced else v for v in values]
        shares: list[dict[str, float]] = []
        for snapshot in snapshots:
            head = trending.head
            trending.add(snapshot.new_plays)
            trending.advance(snapshot.as_of_s)
            unchanged = shares and not snapshot.new_plays and trending.head == head
            shares.append(shares[-1] if unchanged else trending.shares())
        return self.scorer.ranked(snapshots, shares, row_by_row=self.stash is not None)

    def snapshot(self) -> bytes | None:
        self.end_epoch()
        return super().snapshot()


def _snapshot_order(item: Sequenced) -> tuple[int, str]:
    return item.position, item.item.venue_id


def _event_time_order(snapshot: TasteSnapshot) -> tuple[int, str]:
    return snapshot.as_of_s, snapshot.venue_id


def update_message(ranked: RankedList, jukebox_id: str, generated_at: datetime, topics: Topics) -> OutMessage:
    based_on = datetime.fromtimestamp(ranked.as_of_s, tz=UTC)
    update = RecommendationUpdate(
        jukebox_id=jukebox_id, venue_id=ranked.venue_id,
        songs=[RankedSong(song_id=song, score=score) for song, score in ranked.songs],
        model_version=ranked.model_version, generated_at=generated_at, based_on_event_time=based_on,
    )
    return OutMessage(topics.recommendations, jukebox_id.encode(), update.model_dump_json().encode(),
                      [("jukebox.model_version", ranked.model_version.encode())])


class _DeliverLogic(_PickledLogic):
    def __init__(self, resume: bytes | None, config: RecsConfig, topics: Topics,
                 replay_order: bool = False) -> None:
        super().__init__(resume)
        self.config, self.topics = config, topics
        self.keeps_snapshots = not replay_order

    def on_batch(self, values: list[RankedList]) -> tuple[list, bool]:
        config, outputs = self.config, []
        state: DeliveryState | None = self.state
        sent = suppressed = 0
        for ranked in values:
            state, send, skipped = deliveries(state, ranked, config.rules)
            suppressed += skipped
            if send:
                stamp = config.generated_at(datetime.fromtimestamp(ranked.as_of_s, tz=UTC))
                outputs.extend(update_message(ranked, jukebox_id, stamp, self.topics) for jukebox_id in send)
                sent += len(send)
        self.state = state
        if config.on_delivery is not None:
            config.on_delivery(sent, suppressed)
        return outputs, op.StatefulBatchLogic.RETAIN


def recommendation_step(events: Stream[Admitted], config: RecsConfig, topics: Topics,
                        replay_order: bool = False) -> Stream[OutMessage]:
    """The recommendation steps on the flow's admitted events; returns update messages.
    (`replay_order`: see `FlowConfig.replay_order`.)"""
    inputs = op.filter_map("recs_inputs", events, recs_input)
    by_venue = op.key_on("recs_key_venue", inputs, _venue_of)
    snapshots = op.key_rm("recs_snapshots", op.stateful_batch(
        "recs_venue_taste", by_venue, lambda resume: _VenueTasteLogic(resume, config, replay_order)))
    by_country = op.key_on("recs_key_country", snapshots, _country_of)
    scorer = CountryScorer(config)
    ranked = op.key_rm("recs_ranked", op.stateful_batch(
        "recs_country_score", by_country,
        lambda resume: _CountryScoreLogic(resume, config, scorer, replay_order)))
    lists = op.key_on("recs_key_ranked", ranked, lambda r: r.venue_id)
    return op.key_rm("recs_updates", op.stateful_batch(
        "recs_deliver", lists, lambda resume: _DeliverLogic(resume, config, topics, replay_order)))


def recs_flow(
    name: str,
    source: Source,
    sink: Sink[OutMessage],
    config: RecsConfig,
    topics: Topics = Topics(),
    limits: DecodeLimits = DecodeLimits(),
    admission: AdmissionPolicy = AdmissionPolicy(),
) -> Dataflow:
    """Recommendations only: route plays and registrations, then `recommendation_step`.
    Dead letters are left to the feature flow, which reads the same records."""
    from dataflows.flow import raw_records  # the feature flow's edge, shared

    contracts = contracts_by_topic(topics)
    wanted = {topics.plays, topics.venues}

    def admitted(batch: list) -> list[Admitted]:
        raws = raw_records(batch)
        routed = (route_record(raw, contracts, topics, limits, admission) for raw in raws if raw.topic in wanted)
        return [item for item in routed if isinstance(item, Admitted)]

    flow = Dataflow(name)
    records = op.input("records", flow, source)
    events = op.flat_map_batch("route", records, admitted)
    op.output("kafka_out", recommendation_step(events, config, topics), sink)
    return flow
