"""Promise 5: re-sent, out-of-order, jittered and clock-skewed events.

Counts equal unique events; events from clocks +24 h ahead or 8 days behind are
quarantined on the late-events topic with their reason; a far-future event does
not make later on-time events of the same jukebox late.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta

import pytest

from dataflows.records import RawRecord
from schemas.events import PlayEvent
from schemas.topics import Topics
from tests.faults.conftest import report
from tests.faults.feed import engine_outputs, produce_acknowledged
from tests.faults.outage import wait_clean
from tests.faults.verifier import expectation
from tests.sample_events import T0, sample_events, venues_for

pytestmark = pytest.mark.integration

JUKEBOXES = 300
JITTER_S = 30
OUTLIERS = 40


def _record(event, topics: Topics, arrival) -> RawRecord:
    topic = {"play": topics.plays, "payment": topics.payments, "location": topics.locations,
             "venue": topics.venues}[event.kind]
    return RawRecord(topic, event.entity_id.encode(), event.model_dump_json().encode(), None, None,
                     int(arrival.timestamp() * 1000))


def _play(event_id: str, jukebox: str, at) -> PlayEvent:
    return PlayEvent(event_id=event_id, jukebox_id=jukebox, venue_id="v1", song_id="s1",
                     played_at=at, credits_used=1)


def skewed_delivery(topics: Topics, seed: int) -> tuple[list[RawRecord], Counter]:
    """Records in arrival order, and how many of each defect they carry."""
    rnd = random.Random(seed)
    events = sample_events(rnd, 6000, 3600, jukeboxes=JUKEBOXES, customers=400)
    timed = [(v.updated_at, _record(v, topics, T0 - timedelta(hours=1))) for v in venues_for(JUKEBOXES)]
    defects: Counter = Counter()
    for event in events:
        arrival = event.event_time + timedelta(seconds=rnd.uniform(-JITTER_S, JITTER_S))
        timed.append((arrival, _record(event, topics, arrival)))
        if rnd.random() < 0.1:  # an at-least-once resend of the same bytes, later
            resent = arrival + timedelta(seconds=rnd.uniform(1, 120))
            timed.append((resent, _record(event, topics, resent)))
            defects["duplicates"] += 1
    for i in range(OUTLIERS):
        arrival = T0 + timedelta(seconds=rnd.uniform(0, 3600))
        ahead = _play(f"ahead-{i}", f"jb-{rnd.randrange(JUKEBOXES)}", arrival + timedelta(hours=24))
        behind = _play(f"behind-{i}", f"jb-{rnd.randrange(JUKEBOXES)}", arrival - timedelta(days=8))
        timed += [(arrival, _record(ahead, topics, arrival)), (arrival, _record(behind, topics, arrival))]
    defects["clock_ahead_24h"] = defects["clock_behind_8d"] = OUTLIERS
    # One jukebox whose clock jumps a day ahead once, then reports on time again.
    first = T0 + timedelta(minutes=10)
    timed.append((first, _record(_play("jump", "jb-jumpy", first + timedelta(hours=24)), topics, first)))
    for i in range(20):
        at = first + timedelta(seconds=10 * (i + 1))
        timed.append((at, _record(_play(f"after-jump-{i}", "jb-jumpy", at), topics, at)))
    defects["clock_ahead_24h"] += 1
    # Late uploads within the allowed 12 h: admitted, counted.
    for i in range(20):
        at = T0 + timedelta(minutes=rnd.uniform(0, 60))
        arrival = at + timedelta(hours=6)
        timed.append((arrival, _record(_play(f"upload-{i}", "jb-uploader", at), topics, arrival)))
    defects["hours_late_admitted"] = 20
    timed.sort(key=lambda pair: pair[0])
    return [record for _, record in timed], defects


def test_duplicates_jitter_and_skewed_clocks(engines, kafka_bootstrap, redis_url, topics,
                                             redis_key_prefix, store):
    records, defects = skewed_delivery(topics, seed=501)
    acked = produce_acknowledged(kafka_bootstrap, records)
    expected = expectation(acked, topics)
    engine = engines(kafka_bootstrap, redis_url, topics, redis_key_prefix, snapshot_interval_s=1.0)
    waited, result = wait_clean(expected, store, kafka_bootstrap, topics, 60, engine.assert_running)
    outputs = engine_outputs(kafka_bootstrap, topics)
    reasons = Counter(dict(m.headers())["jukebox.reason"].decode() for m in outputs["late_events"])
    jumpy = store.read("device", "jb-jumpy", now=T0).readings["device_plays_1h"].value
    report("time_and_duplicates", records=len(acked), unique_admitted=expected.unique_admitted,
           duplicates_sent=defects["duplicates"], jitter_s=f"+-{JITTER_S}",
           ahead_24h=defects["clock_ahead_24h"], behind_8d=defects["clock_behind_8d"],
           hours_late_admitted=defects["hours_late_admitted"],
           quarantined_future=reasons["future_event_time"], quarantined_too_late=reasons["too_late"],
           jumpy_plays_counted=f"{jumpy}/20", caught_up_s=round(waited, 1))
    print(f"[faults] time_and_duplicates verdict: {result.summary()}")
    assert result.clean, result.examples
    assert reasons == {"future_event_time": defects["clock_ahead_24h"],
                       "too_late": defects["clock_behind_8d"]}
    assert jumpy == 20, "a far-future event made later on-time events late"
    uploader = store.read("device", "jb-uploader", now=T0).readings["device_plays_1h"].value
    assert uploader == 20
