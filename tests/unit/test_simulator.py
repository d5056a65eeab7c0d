"""The simulated stream: deterministic, decodable, in delivery order, imperfect on purpose."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas import (
    DecodeError,
    DeviceLocationEvent,
    PaymentEvent,
    PlayEvent,
    VenueRegistration,
    decode_event,
)
from schemas.countries import COUNTRIES
from simulator.event_json import epoch_ms
from simulator.fraud import FraudLabel
from simulator.geography import distance_km
from simulator.records import CLOCK_SKEW, DEBEZIUM, DUPLICATE, LATE, OUT_OF_ORDER, SimRecord
from simulator.simulation import DEFAULT_START, Simulation

COUNTRIES_BY_CURRENCY = {c.currency: c for c in COUNTRIES.values()}


@pytest.fixture(scope="module")
def busy_run() -> tuple[Simulation, list[SimRecord]]:
    """Twelve hours of a 300-jukebox fleet with every imperfection turned up."""
    sim = Simulation(
        jukeboxes=300, seed=11, duration=timedelta(hours=12), fraud_rate=0.2, duplicate_rate=0.01,
        out_of_order_rate=0.02, late_rate=0.2, clock_skew_rate=0.003, malformed_rate=0.01,
        debezium_share=0.3, include_catalog=True,
    )
    return sim, list(sim.records())


@pytest.fixture(scope="module")
def clean_run() -> tuple[Simulation, list[SimRecord]]:
    """The same kind of fleet with no imperfections and no fraud: the normal world."""
    sim = Simulation(
        jukeboxes=200, seed=12, duration=timedelta(hours=10), fraud_rate=0.0, duplicate_rate=0.0,
        out_of_order_rate=0.0, late_rate=0.0, malformed_rate=0.0,
    )
    return sim, list(sim.records())


def decoded(records):
    """(record, event) for every event record that is meant to decode."""
    for record in records:
        if record.contract is not None and record.malformed_reason is None:
            yield record, decode_event(record.value, record.contract)


# --- determinism ---------------------------------------------------------------------------
def test_same_seed_same_bytes_in_the_same_order():
    def run(seed):
        return list(Simulation(jukeboxes=80, seed=seed, duration=timedelta(hours=2), fraud_rate=0.5,
                               malformed_rate=0.05, duplicate_rate=0.05, late_rate=0.5).records())

    first, again, other = run(3), run(3), run(4)
    assert len(first) > 1500
    assert first == again
    assert [r.value for r in first] != [r.value for r in other]


DIGEST_SCRIPT = """
import hashlib
from datetime import timedelta
from simulator import Simulation
digest = hashlib.sha256()
for r in Simulation(jukeboxes=40, seed=8, duration=timedelta(hours=1), fraud_rate=0.5,
                    malformed_rate=0.05, duplicate_rate=0.05, late_rate=0.5).records():
    digest.update(repr(r).encode())
print(digest.hexdigest())
"""


def test_runs_are_identical_across_processes_and_hash_seeds():
    root = Path(__file__).resolve().parents[2]
    digests = {
        subprocess.run([sys.executable, "-c", DIGEST_SCRIPT], cwd=root, capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": hash_seed}).stdout.strip()
        for hash_seed in ("1", "2")
    }
    assert len(digests) == 1 and len(digests.pop()) == 64


def test_records_can_be_replayed_from_the_same_simulation_object():
    sim = Simulation(jukeboxes=40, seed=9, duration=timedelta(minutes=40))
    assert list(sim.records()) == list(sim.records())


def test_an_event_bounded_run_is_a_prefix_of_a_longer_one():
    def events(n):
        return [r for r in Simulation(jukeboxes=60, seed=5, max_events=n, fraud_rate=0.0).records()
                if r.topic_attr != "labels"]

    short, long = events(1500), events(4000)
    assert len(short) == 1500 and len(long) == 4000
    assert long[:1500] == short


# --- contracts -----------------------------------------------------------------------------
def test_every_good_record_decodes_into_its_contract_and_is_canonical(busy_run):
    _, records = busy_run
    kinds = Counter()
    for record, event in decoded(records):
        assert not isinstance(event, DecodeError), (record, event)
        assert type(event) is record.contract
        assert event.entity_id.encode() == record.key
        if DEBEZIUM not in record.flags:  # the contract's own JSON, byte for byte
            assert event.model_dump_json().encode() == record.value
        kinds[record.topic_attr] += 1
    assert kinds["plays"] > 5000 and kinds["payments"] > 2000 and kinds["locations"] > 5000
    assert kinds["venues"] == busy_run[0].fleet.venues


def test_malformed_records_are_refused_with_the_promised_reason(busy_run):
    _, records = busy_run
    reasons = Counter()
    for record in records:
        reason = record.malformed_reason
        if reason is None:
            continue
        result = decode_event(record.value, record.contract)
        assert isinstance(result, DecodeError), record
        assert result.reason == reason, (record.value[:200], result)
        reasons[reason] += 1
    assert {"malformed_json", "naive_datetime", "invalid_value", "unknown_schema_version",
            "missing_field", "unknown_field"} <= set(reasons)


def test_every_malformed_variant_matches_decode_event():
    sim = Simulation(jukeboxes=50, seed=2, duration=timedelta(hours=3), malformed_rate=0.5, fraud_rate=0.0)
    reasons = Counter()
    for record in sim.records():
        if record.malformed_reason:
            result = decode_event(record.value, record.contract)
            assert isinstance(result, DecodeError) and result.reason == record.malformed_reason
            reasons[(record.topic_attr, result.reason)] += 1
    assert {reason for _, reason in reasons} == {
        "malformed_json", "naive_datetime", "invalid_value", "unknown_schema_version", "missing_field",
        "unknown_field", "out_of_range", "duplicate_key", "not_an_object", "nesting_too_deep",
        "message_too_large",
    }
    assert {topic for topic, _ in reasons} == {"plays", "payments", "locations"}


def test_keys_topics_and_non_event_records(busy_run):
    sim, records = busy_run
    topics = Counter(r.topic_attr for r in records)
    assert set(topics) == {"song_catalog", "venues", "plays", "payments", "locations", "labels"}
    assert topics["song_catalog"] == len(sim.catalog.songs)
    for record in records:
        if record.topic_attr == "labels":
            label = FraudLabel.from_json(record.value)
            assert record.key == label.jukebox_id.encode()
        elif record.topic_attr == "song_catalog":
            assert record.value.startswith(b'{"schema_version":1,"song_id":"' + record.key + b'"')


def test_records_come_in_delivery_order_after_their_event_time(busy_run):
    _, records = busy_run
    stamps = [r.timestamp_ms for r in records]
    assert stamps == sorted(stamps)
    for record, event in decoded(records):
        if CLOCK_SKEW not in record.flags and record.topic_attr != "venues":
            assert record.timestamp_ms >= epoch_ms(event.event_time)


def test_a_duration_bounds_event_times_and_an_event_count_bounds_records(busy_run):
    sim, records = busy_run
    end = sim.end
    for record, event in decoded(records):
        if CLOCK_SKEW not in record.flags:
            assert sim.start - timedelta(minutes=2) <= event.event_time < end
    bounded = list(Simulation(jukeboxes=30, seed=1, max_events=777).records())
    assert sum(r.topic_attr != "labels" for r in bounded) == 777


# --- the world is realistic ------------------------------------------------------------------
def test_venues_are_registered_with_their_country_zone_and_hours(busy_run):
    sim, records = busy_run
    venues = [event for record, event in decoded(records) if record.topic_attr == "venues"]
    assert {v.country for v in venues} == set(COUNTRIES)
    assert sum(len(v.jukebox_ids) for v in venues) == sim.jukeboxes
    for venue in venues:
        country = COUNTRIES[venue.country]
        assert 1 <= len(venue.jukebox_ids) <= 4
        assert venue.timezone == country.timezone
        assert distance_km(venue.lat, venue.lon, *country.center) < 100
        assert 1 <= len(venue.opening_hours) <= 7
        assert venue.venue_id.startswith(f"v-{venue.country}-")


def test_payments_are_whole_credits_in_the_venue_currency(clean_run):
    sim, records = clean_run
    statuses, methods = Counter(), defaultdict(Counter)
    for record, event in decoded(records):
        if isinstance(event, PaymentEvent):
            country = sim.fleet.country_of(sim.fleet.venue_index(event.venue_id))
            assert event.currency == country.currency
            credits = event.amount / country.credit_price
            assert credits == int(credits) and credits >= 1
            assert -event.amount.as_tuple().exponent == country.minor_units
            statuses[event.status.value] += 1
            methods[country.code][event.method.value] += 1
    total = sum(statuses.values())
    assert 0.9 < statuses["succeeded"] / total < 0.99
    assert 0.01 < statuses["failed"] / total < 0.08
    assert methods["KE"].most_common(1)[0][0] == "mobile_money"
    assert methods["ZA"].most_common(1)[0][0] == "card"


def test_paid_plays_spend_credits_their_payment_bought(clean_run):
    _, records = clean_run
    payments, plays = {}, []
    for record, event in decoded(records):
        if isinstance(event, PaymentEvent) and event.status.value == "succeeded":
            payments[event.payment_id] = event
        elif isinstance(event, PlayEvent):
            plays.append(event)
    spent = Counter()
    free = 0
    for play in plays:
        if play.payment_id is None:
            assert play.credits_used == 0  # a house song: no payment, no credits
            free += 1
            continue
        payment = payments[play.payment_id]
        assert payment.jukebox_id == play.jukebox_id and payment.occurred_at < play.played_at
        assert 1 <= play.credits_used <= 3
        spent[play.payment_id] += play.credits_used
    for payment_id, credits in spent.items():
        payment = payments[payment_id]
        assert credits <= payment.amount / COUNTRIES_BY_CURRENCY[payment.currency].credit_price
    assert 0 < free / len(plays) < 0.06



def test_plays_happen_when_venues_are_open_and_follow_the_evening(clean_run):
    sim, records = clean_run
    plays = [e for _, e in decoded(records) if isinstance(e, PlayEvent)]
    closed = sum(not sim.fleet.open_at(sim.fleet.venue_index(p.venue_id), epoch_ms(p.played_at)) for p in plays)
    assert closed / len(plays) < 0.02  # only the last song or two after closing time
    # A jukebox plays one song at a time: consecutive plays at least ~2 minutes apart.
    by_jukebox = defaultdict(list)
    for play in plays:
        by_jukebox[play.jukebox_id].append(play.played_at)
    for times in by_jukebox.values():
        times.sort()
        assert all((b - a).total_seconds() >= 140 for a, b in itertools.pairwise(times))


def test_locations_every_fifteen_minutes_near_the_venue(clean_run):
    sim, records = clean_run
    venues = {e.venue_id: e for _, e in decoded(records) if isinstance(e, VenueRegistration)}
    home = {jb: v for v in venues.values() for jb in v.jukebox_ids}
    reports = defaultdict(list)
    for _, event in decoded(records):
        if isinstance(event, DeviceLocationEvent):
            reports[event.jukebox_id].append(event)
            venue = home[event.jukebox_id]
            assert distance_km(venue.lat, venue.lon, event.lat, event.lon) < 1.5
            assert 0 < event.accuracy_m <= 400
    assert len(reports) == sim.jukeboxes
    for events in reports.values():
        times = sorted(e.reported_at for e in events)
        assert all(895 <= (b - a).total_seconds() <= 905 for a, b in itertools.pairwise(times))


def test_customers_are_regulars_of_one_or_two_nearby_venues(clean_run):
    _, records = clean_run
    venues = {e.venue_id: e for _, e in decoded(records) if isinstance(e, VenueRegistration)}
    visited = defaultdict(set)
    for _, event in decoded(records):
        if isinstance(event, PaymentEvent):
            visited[event.customer_id].add(event.venue_id)
    assert len(visited) > 300
    assert sum(len(v) <= 2 for v in visited.values()) / len(visited) > 0.95
    for places in visited.values():
        for a, b in itertools.combinations(places, 2):
            assert distance_km(venues[a].lat, venues[a].lon, venues[b].lat, venues[b].lon) < 200


# --- imperfections ---------------------------------------------------------------------------
def test_imperfection_rates_are_roughly_respected(busy_run):
    sim, records = busy_run
    traffic = [r for r in records if r.topic_attr in ("plays", "payments", "locations")]
    flags = Counter(f for r in traffic for f in r.flags)
    originals = len(traffic) - flags[DUPLICATE]
    assert flags[DUPLICATE] / originals == pytest.approx(sim.duplicate_rate, rel=0.35)
    assert flags[OUT_OF_ORDER] / len(traffic) == pytest.approx(sim.out_of_order_rate, rel=0.35)
    malformed = sum(r.malformed_reason is not None for r in traffic)
    assert malformed / len(traffic) == pytest.approx(sim.malformed_rate, rel=0.35)
    assert flags[CLOCK_SKEW] > 0 and flags[LATE] > 0
    venues = [r for r in records if r.topic_attr == "venues"]
    assert sum(DEBEZIUM in r.flags for r in venues) / len(venues) == pytest.approx(0.3, abs=0.1)


def test_duplicates_repeat_an_earlier_record_byte_for_byte(busy_run):
    _, records = busy_run
    seen = set()
    for record in records:
        if record.is_duplicate:
            assert (record.topic_attr, record.key, record.value) in seen
        else:
            seen.add((record.topic_attr, record.key, record.value))


def test_late_backlogs_and_skewed_clocks(busy_run):
    _, records = busy_run
    late_jukeboxes, lateness = set(), []
    for record, event in decoded(records):
        age_s = (record.timestamp_ms - epoch_ms(event.event_time)) / 1000
        if CLOCK_SKEW in record.flags:
            if LATE not in record.flags:  # +24 h or -8 days off the true time, which arrival tells
                assert min(abs(age_s + 86_400), abs(age_s - 8 * 86_400)) < 150
        elif LATE in record.flags:
            late_jukeboxes.add(record.key)
            lateness.append(age_s)
        elif OUT_OF_ORDER not in record.flags and record.topic_attr != "venues":
            assert age_s < (40 if record.is_duplicate else 9)  # network latency (+ a resend)
    # late_rate 0.2 per day over 12 h of 300 jukeboxes: ~30 outages, in the window or not.
    assert 10 <= len(late_jukeboxes) <= 45
    assert max(lateness) > 3600


def test_debezium_venue_envelopes_decode_like_plain_rows(busy_run):
    _, records = busy_run
    wrapped = [r for r in records if DEBEZIUM in r.flags]
    assert wrapped and all(b'"op":"c"' in r.value and b'"before":null' in r.value for r in wrapped)
    for record in wrapped:
        assert isinstance(decode_event(record.value, VenueRegistration), VenueRegistration)


# --- configuration and scale ------------------------------------------------------------------
@pytest.mark.parametrize("bad", [
    {"start": datetime(2026, 1, 1)},
    {"duplicate_rate": 1.5},
    {"fraud_rate": -0.1},
    {"scenarios": ("card_skimming",)},
    {"duration": timedelta(0)},
    {"max_events": 0},
    {"seed": -1},
])
def test_invalid_configuration_is_refused(bad):
    with pytest.raises(ValueError):
        Simulation(jukeboxes=10, **bad)


def test_a_million_jukebox_fleet_starts_without_generating_the_world():
    began = time.perf_counter()
    sim = Simulation(jukeboxes=1_000_000, seed=1, fraud_rate=0.0, late_rate=0.0, include_venues=False)
    fleet = sim.fleet
    assert fleet.jukeboxes == 1_000_000 and 250_000 < fleet.venues < 1_000_000
    columns = (fleet.jukebox_venue, fleet.jukebox_phase_s, fleet.venue_lat, fleet.venue_lon,
               fleet.venue_country, fleet.venue_schedule, fleet.venue_taste, fleet.venue_rate)
    assert sum(c.nbytes for c in columns) < 40 * 1024 * 1024  # a few bytes per jukebox
    first = list(itertools.islice(sim.records(), 5000))
    assert len(first) == 5000 and len({r.key for r in first}) > 3000
    assert time.perf_counter() - began < 15
    venue = fleet.venue(fleet.venues - 1)
    assert venue.jukebox_ids[-1] == "jb-0999999"


def test_default_start_is_a_fixed_friday_evening():
    assert DEFAULT_START == datetime(2026, 11, 27, 16, tzinfo=UTC) and DEFAULT_START.weekday() == 4
