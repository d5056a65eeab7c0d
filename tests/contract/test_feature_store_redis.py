"""What only the Redis store has: the hash layout of FORMAT.md, key TTLs, the atomic
script under concurrent writers, NOSCRIPT recovery, bounded retries and error hygiene.

Against the real server from the session fixture; nothing is mocked.
"""

from __future__ import annotations

import random
import re
import ssl
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from dataflows.local_stack import free_port
from online_store.feature_row import FeatureRow
from online_store.redis_store import (
    RedisFeatureStore,
    StoreError,
    StoreUnavailableError,
    redis_client_from,
)
from online_store.store import WriteResult
from online_store.store_format import key_ttl_s
from tests.contract.test_feature_store import T0, WRITTEN, device_row, device_values

pytestmark = pytest.mark.integration

FORMAT_MD = Path(__file__).resolve().parents[2] / "online_store" / "FORMAT.md"
SECRET = "s3cret-Pw_do-not-leak"


@pytest.fixture
def client(redis_url):
    client = redis_client_from(redis_url)
    yield client
    client.close()


@pytest.fixture
def store(client, redis_key_prefix) -> RedisFeatureStore:
    return RedisFeatureStore(client, redis_key_prefix)


def hgetall_transcript(key: str) -> dict[str, str]:
    """The field/value pairs of a `HGETALL key` transcript in FORMAT.md."""
    text = FORMAT_MD.read_text()
    block = text[text.index(f"> HGETALL {key}\n"):].split("```", 1)[0]
    items = re.findall(r'^\s*\d+\) "(.*)"$', block, flags=re.MULTILINE)
    items = [item.replace('\\"', '"') for item in items]
    return dict(zip(items[::2], items[1::2], strict=True))


def test_the_hashes_are_exactly_the_format_md_examples(redis_url, test_namespace):
    client = redis_client_from(redis_url, socket_timeout_s=2)
    prefix = f"{test_namespace}:jb"  # FORMAT.md's examples, under this test's own prefix
    store = RedisFeatureStore(client, prefix)
    as_of, written = datetime(2026, 11, 23, 20, 14, 5, 250_000, tzinfo=UTC), datetime(2026, 11, 23, 20, 14, 6, 12_000, tzinfo=UTC)
    store.write([FeatureRow("customer", "acct-7f3a", 12, as_of, {
        "customer_payments_10m": 3, "customer_failed_payments_10m": 1,
        "customer_distinct_devices_10m": 2, "customer_distinct_countries_1h": 1,
        "customer_max_venue_distance_km_10m": 0.837126492000348})], written)
    store.write([FeatureRow("device", "jb-004217", 5, as_of, {
        "device_plays_5m": 2, "device_top_song_share_1h": 0.25, "device_revenue_usd_24h": 0.77,
        "device_revenue_by_currency_24h": '{"KES": "100.00"}', "device_speed_kmh_last": None})], written)
    for key in ("jb:customer:v1:acct-7f3a", "jb:device:v1:jb-004217"):
        stored = client.hgetall(f"{test_namespace}:{key}")
        assert {k.decode(): v.decode() for k, v in stored.items()} == hgetall_transcript(key)
        assert list(stored)[:3] == [b"_version", b"_as_of_ms", b"_written_ms"]
    client.close()


def test_every_applied_write_sets_the_key_ttl_and_a_stale_one_leaves_it(store, client, redis_key_prefix):
    store.write([device_row(f"jb-{i}", 2) for i in range(100)]
                + [FeatureRow("customer", "acct-1", 1, T0, {"customer_payments_10m": 1})], WRITTEN)
    device_ttl_ms, customer_ttl_ms = key_ttl_s("device") * 1000, key_ttl_s("customer") * 1000
    assert (device_ttl_ms, customer_ttl_ms) == (25 * 3600_000, 2 * 3600_000)
    for i in range(100):
        assert device_ttl_ms - 10_000 < client.pttl(f"{redis_key_prefix}:device:v1:jb-{i}") <= device_ttl_ms
    assert customer_ttl_ms - 10_000 < client.pttl(f"{redis_key_prefix}:customer:v1:acct-1") <= customer_ttl_ms

    key = f"{redis_key_prefix}:device:v1:jb-0"
    client.pexpire(key, 60_000)
    store.write([device_row("jb-0", 1)], WRITTEN)  # stale: must not extend the key's life
    assert client.pttl(key) <= 60_000
    store.write([device_row("jb-0", 3)], WRITTEN)
    assert client.pttl(key) > device_ttl_ms - 10_000


def test_the_ttl_margin_is_configurable(client, redis_key_prefix):
    store = RedisFeatureStore(client, redis_key_prefix, ttl_margin_s=0)
    store.write([FeatureRow("customer", "acct-1", 1, T0, {"customer_payments_10m": 1})], WRITTEN)
    assert 3_590_000 < client.pttl(f"{redis_key_prefix}:customer:v1:acct-1") <= 3_600_000


def test_concurrent_writers_of_interleaved_rows_converge_on_the_latest_event_time(redis_url, redis_key_prefix):
    entities, top, writers = [f"jb-{i}" for i in range(20)], 120, 8
    rows = [device_row(e, v) for e in entities for v in range(1, top + 1)]
    random.Random(7).shuffle(rows)
    shares = [rows[w::writers] for w in range(writers)]  # every writer holds high and low versions
    start, errors = threading.Barrier(writers), []

    def write_share(share: list[FeatureRow]) -> None:
        client = redis_client_from(redis_url)
        store = RedisFeatureStore(client, redis_key_prefix)
        try:
            start.wait()
            for i in range(0, len(share), 20):
                store.write(share[i:i + 20], WRITTEN)
        except Exception as exc:  # noqa: BLE001 - a thread's failure must reach the assert below
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=write_share, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    reader = RedisFeatureStore(redis_client_from(redis_url), redis_key_prefix)
    for found in reader.read_many("device", entities, T0):
        assert found.version == top
        assert {name: r.value for name, r in found.readings.items()} == device_values(top)


def test_a_flushed_script_is_reloaded_and_the_batch_still_applies(store, client):
    client.script_flush()
    assert store.write([device_row(f"jb-{i}", 1) for i in range(10)], WRITTEN) == WriteResult(10, 0)
    assert store.read("device", "jb-9", T0).version == 1


def test_an_unreachable_server_fails_after_the_bounded_attempts_without_the_password():
    port = free_port()  # bound then released: nothing listens there
    client = redis_client_from(f"redis://app:{SECRET}@127.0.0.1:{port}/0", socket_timeout_s=0.5)
    store = RedisFeatureStore(client, "jb", attempts=3, backoff_s=0.01)
    calls = {
        "write": lambda: store.write([device_row("jb-1", 1)], WRITTEN),
        "read": lambda: store.read("device", "jb-1", T0),
        "read_many": lambda: store.read_many("device", ["jb-1", "jb-2"], T0),
        "scan": lambda: list(store.scan_entities("device")),
    }
    for name, call in calls.items():
        started = time.perf_counter()
        with pytest.raises(StoreUnavailableError) as failure:
            call()
        message = str(failure.value)
        assert f"127.0.0.1:{port}" in message and "after 3 attempts" in message, name
        assert SECRET not in message and SECRET not in repr(failure.value), name
        assert failure.value.__cause__ is None and failure.value.__suppress_context__, name
        assert time.perf_counter() - started < 3, name


def test_refused_credentials_fail_at_once_without_the_password(redis_url):
    client = redis_client_from(redis_url.replace("redis://", f"redis://nobody:{SECRET}@"))
    store = RedisFeatureStore(client, "jb", attempts=50, backoff_s=1.0)
    started = time.perf_counter()
    with pytest.raises(StoreUnavailableError, match="refused the credentials") as failure:
        store.write([device_row("jb-1", 1)], WRITTEN)
    assert time.perf_counter() - started < 1  # not retried 50 times with 1 s backoff
    assert SECRET not in str(failure.value)


def test_a_refused_command_is_a_clear_error(store, client, redis_key_prefix):
    client.set(f"{redis_key_prefix}:device:v1:jb-1", "not a hash")
    with pytest.raises(StoreError, match="WRONGTYPE"):
        store.write([device_row("jb-1", 1)], WRITTEN)
    client.hset(f"{redis_key_prefix}:device:v1:jb-2", "_as_of_ms", "seven")
    with pytest.raises(StoreError, match="corrupt _as_of_ms"):
        store.write([device_row("jb-2", 1)], WRITTEN)
    with pytest.raises(ValueError, match="corrupt metadata"):
        store.read("device", "jb-2", T0)


def test_scan_treats_glob_characters_in_the_prefix_literally(client, test_namespace):
    literal = RedisFeatureStore(client, f"{test_namespace}:a*[b]?")
    lookalike = RedisFeatureStore(client, f"{test_namespace}:aXbY")
    lookalike.write([device_row("jb-other", 1)], WRITTEN)
    literal.write([device_row("jb-mine", 1)], WRITTEN)
    assert list(literal.scan_entities("device")) == ["jb-mine"]


def test_client_settings_tls_and_bad_urls():
    tls = redis_client_from(f"rediss://app:{SECRET}@redis.example:6380/2", ssl_ca_certs="/etc/ca.pem",
                            ssl_certfile="/etc/c.pem", ssl_keyfile="/etc/k.pem", socket_timeout_s=1.5)
    kwargs = tls.connection_pool.connection_kwargs
    assert tls.connection_pool.connection_class is redis.SSLConnection
    assert (kwargs["ssl_ca_certs"], kwargs["ssl_certfile"], kwargs["ssl_keyfile"]) == ("/etc/ca.pem", "/etc/c.pem", "/etc/k.pem")
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["socket_timeout"]) == ("redis.example", 6380, 2, 1.5)
    connection = tls.connection_pool.make_connection()  # built, not connected
    assert connection.cert_reqs == ssl.CERT_REQUIRED and connection.ca_certs == "/etc/ca.pem"
    assert connection.retry.get_retries() == 0  # retries belong to the store, bounded and reported
    explicit = redis_client_from("redis://127.0.0.1:6379/0", username="app", password=SECRET)
    assert (explicit.connection_pool.connection_kwargs["username"], explicit.connection_pool.connection_kwargs["password"]) == ("app", SECRET)
    for url, options in [(f"http://app:{SECRET}@h:1", {}), (f"redis://app:{SECRET}@h:1", {"ssl_ca_certs": "/ca"}),
                         (f"redis://app:{SECRET}@h:1/0?socket_timeout=x", {})]:
        with pytest.raises(ValueError) as failure:
            redis_client_from(url, password=SECRET, **options)
        assert SECRET not in str(failure.value)
