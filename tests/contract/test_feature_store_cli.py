"""`jukebox features get` against the real Redis server, configured through JUKEBOX_* variables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console
from typer.testing import CliRunner

from dataflows.cli import app
from dataflows.features_cli import features_table
from online_store.definitions import features_of
from online_store.feature_row import FeatureRow
from online_store.redis_store import RedisFeatureStore, redis_client_from

pytestmark = pytest.mark.integration


@pytest.fixture
def cli_env(monkeypatch, redis_url, redis_key_prefix):
    for name in ("JUKEBOX_REDIS_URL", "JUKEBOX_REDIS_KEY_PREFIX", "JUKEBOX_REDIS_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JUKEBOX_REDIS_URL", redis_url)
    monkeypatch.setenv("JUKEBOX_REDIS_KEY_PREFIX", redis_key_prefix)
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps at the terminal width


def run(*args: str):
    return CliRunner().invoke(app, ["features", "get", *args])


def test_prints_every_feature_with_unit_event_time_age_and_staleness(cli_env, redis_url, redis_key_prefix):
    as_of = datetime.now(UTC) - timedelta(minutes=30)
    store = RedisFeatureStore(redis_client_from(redis_url), redis_key_prefix)
    store.write([FeatureRow("device", "jb-42", 7, as_of, {
        "device_plays_5m": 3, "device_plays_24h": 120, "device_top_song_share_1h": 0.125,
        "device_speed_kmh_last": None})], written_at=datetime.now(UTC))
    result = run("jb-42")
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if "device_" in line}
    assert set(lines) == {f.name for f in features_of("device")}  # absent ones listed too
    assert "3" in lines["device_plays_5m"].split() and "stale" in lines["device_plays_5m"]
    assert "fresh" in lines["device_plays_24h"] and "0.125" in lines["device_top_song_share_1h"]
    assert "—" in lines["device_speed_kmh_last"] and "km/h" in lines["device_speed_kmh_last"]
    assert "30m" in lines["device_plays_5m"] and as_of.strftime("%Y-%m-%d %H:%M") in lines["device_plays_5m"]
    assert f"{redis_key_prefix}:device:v1:jb-42" in result.output and "version 7" in result.output


def test_in_an_80_column_terminal_every_feature_name_shows_whole(redis_url, redis_key_prefix):
    now = datetime.now(UTC)
    store = RedisFeatureStore(redis_client_from(redis_url), redis_key_prefix)
    store.write([FeatureRow("device", "jb-43", 1, now, {f.name: 1 for f in features_of("device")
                                                         if f.name.endswith(("_5m", "_1h"))})], now)
    found = store.read("device", "jb-43", now=now)
    # the CLI passes its console's width; these tests' consoles are 200 wide (tests/conftest.py)
    console = Console(width=80, record=True)
    console.print(features_table(found, "jb:device:v1:jb-43", console.width))
    text = console.export_text()
    assert max(map(len, text.splitlines())) <= 80 and "event times shown from" in text
    assert {f.name for f in features_of("device")} <= {w for line in text.splitlines() for w in line.split()}


def test_customer_entities_are_selected_with_the_entity_option(cli_env, redis_url, redis_key_prefix):
    store = RedisFeatureStore(redis_client_from(redis_url), redis_key_prefix)
    now = datetime.now(UTC)
    store.write([FeatureRow("customer", "acct-1", 1, now, {"customer_payments_10m": 4})], now)
    result = run("acct-1", "--entity", "customer")
    assert result.exit_code == 0, result.output
    assert "customer_payments_10m" in result.output and "device_" not in result.output


def test_an_unknown_entity_or_id_is_a_clear_error(cli_env):
    result = run("jb-1", "--entity", "venue")
    assert result.exit_code == 1 and "unknown entity 'venue'" in result.output
    result = run("bad id!")
    assert result.exit_code == 1 and "invalid device id" in result.output
    result = run("jb-never-written")
    assert result.exit_code == 1 and "no features stored" in result.output


def test_without_a_redis_url_it_says_how_to_get_one(monkeypatch):
    monkeypatch.delenv("JUKEBOX_REDIS_URL", raising=False)
    result = run("jb-1")
    assert result.exit_code == 2
    assert "jukebox stack up" in result.output and "JUKEBOX_REDIS_URL" in result.output


def test_an_unreachable_redis_exits_2_without_the_password(monkeypatch):
    from dataflows.local_stack import free_port

    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("JUKEBOX_REDIS_URL", f"redis://app:hunter2-secret@127.0.0.1:{free_port()}/0")
    monkeypatch.setenv("JUKEBOX_REDIS_RETRY_ATTEMPTS", "2")
    monkeypatch.setenv("JUKEBOX_REDIS_SOCKET_TIMEOUT_S", "0.5")
    result = run("jb-1")
    assert result.exit_code == 2 and "unreachable after 2 attempts" in result.output
    assert "hunter2" not in result.output
