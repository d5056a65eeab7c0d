"""Promise 4: poison input goes to the dead-letter topic, never into the engine.

Every hostile record lands in the dead-letter topic with its reason code and origin
headers, the payload capped with the full payload's size and sha256, the engine
process never restarts (same pid, no traceback), no non-finite number reaches
Redis or an alert, and resident memory stays bounded while 2 MB and 30 MB records
pass through.
"""

from __future__ import annotations

import base64
import hashlib
import math
import threading
import time
from typing import Self

import orjson
import pytest
import redis

from dataflows.records import DEAD_LETTER_PAYLOAD_CAP, RawRecord
from tests.faults.conftest import keys_under, report
from tests.faults.feed import engine_outputs, produce_acknowledged, simulated_records
from tests.faults.verifier import expectation, origin_of, verdict
from tests.integration.flow_process import wait_until

pytestmark = pytest.mark.integration

MB = 1024 * 1024
PLAY = (b'{"event_id":"poison-%d","jukebox_id":"jb-poison","venue_id":"v1","song_id":"s1",'
        b'"played_at":"2026-11-27T16:30:00Z","credits_used":1}')
PAYMENT = (b'{"event_id":"poison-%d","payment_id":"p1","jukebox_id":"jb-poison","venue_id":"v1",'
           b'"customer_id":"c1","amount":"-5.00","currency":"KES","method":"card",'
           b'"status":"succeeded","occurred_at":"2026-11-27T16:30:00Z"}')
LOCATION = (b'{"event_id":"poison-%d","jukebox_id":"jb-poison","lat":Infinity,"lon":3,'
            b'"accuracy_m":5,"reported_at":"2026-11-27T16:30:00Z"}')


def _play(n: int, old: bytes, new: bytes) -> bytes:
    return (PLAY % n).replace(old, new, 1)


def _padded(n: int, size: int) -> bytes:
    head = (PLAY % n)[:-1] + b',"pad":"'
    return head + b"x" * (size - len(head) - 2) + b'"}'


# (name, topic attribute, value, the reason code the contract promises)
POISON: list[tuple[str, str, bytes | None, str]] = [
    ("malformed_json", "plays", b'{"event_id": "poison-0", "jukebox_id": ', "malformed_json"),
    ("nan", "plays", _play(1, b'"credits_used":1', b'"credits_used":NaN'), "malformed_json"),
    ("infinity", "locations", LOCATION % 2, "malformed_json"),
    ("huge_integer_400_digits", "plays", _play(3, b'"credits_used":1', b'"credits_used":' + b"9" * 400),
     "malformed_json"),
    ("integer_past_64_bits", "plays", _play(4, b'"credits_used":1', b'"credits_used":18446744073709551616'),
     "invalid_value"),
    ("nesting_10000_deep", "plays", b'{"a":' + b"[" * 10_000 + b"]" * 10_000 + b"}", "nesting_too_deep"),
    ("duplicate_keys", "plays", _play(6, b"{", b'{"jukebox_id":"jb-other",'), "duplicate_key"),
    ("lone_surrogate_escaped", "plays", _play(7, b'"s1"', b'"\\ud800"'), "malformed_json"),
    ("lone_surrogate_utf8", "plays", _play(8, b'"s1"', b'"\xed\xa0\x80"'), "malformed_json"),
    ("negative_amount", "payments", PAYMENT % 9, "invalid_value"),
    ("nan_amount", "payments", (PAYMENT % 10).replace(b'"-5.00"', b'"NaN"'), "not_finite"),
    ("schema_version_2", "plays", _play(11, b"{", b'{"schema_version":2,'), "unknown_schema_version"),
    ("schema_version_as_text", "plays", _play(12, b"{", b'{"schema_version":"1",'),
     "unknown_schema_version"),
    ("empty_value", "plays", b"", "empty_message"),
    ("tombstone", "plays", None, "empty_message"),
    ("binary", "plays", bytes(range(256)) * 4, "malformed_json"),
    ("record_2mb", "plays", _padded(16, 2 * MB), "message_too_large"),
    ("record_30mb_a", "plays", _padded(17, 30 * MB), "message_too_large"),
    ("record_30mb_b", "plays", _padded(18, 30 * MB), "message_too_large"),
    ("record_30mb_c", "plays", _padded(19, 30 * MB), "message_too_large"),
]


class RssSampler:
    """VmRSS of a process every 100 ms, in a thread, while the poison passes."""

    def __init__(self, engine) -> None:
        self.engine, self.samples, self._stop = engine, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set() and self.engine.exit_code is None:
            self.samples.append(self.engine.rss_mib())
            time.sleep(0.1)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def _non_finite_values(client: redis.Redis, key_prefix: str) -> list[str]:
    bad = []
    for key in client.scan_iter(match=f"{key_prefix}:*", count=1000):
        for name, value in client.hgetall(key).items():
            text = value.decode()
            if text.startswith("{"):
                continue  # a currency map: exact decimal text
            if not math.isfinite(float(text)):
                bad.append(f"{key.decode()} {name.decode()}={text}")
    return bad


def test_every_poison_record_is_dead_lettered_and_the_engine_never_restarts(
    engines, kafka_bootstrap, redis_url, topics, redis_key_prefix, store
):
    good = simulated_records(topics, 400, 30, 401, malformed_rate=0.0, duplicate_rate=0.0)
    poison = [RawRecord(getattr(topics, attr), f"jb-poison-{i}".encode(), value, None, None,
                        good[len(good) // 2].timestamp_ms)
              for i, (_, attr, value, _) in enumerate(POISON)]
    acked = produce_acknowledged(kafka_bootstrap, good[: len(good) // 2])
    engine = engines(kafka_bootstrap, redis_url, topics, redis_key_prefix, snapshot_interval_s=1.0)
    pid = engine.pid
    client = redis.Redis.from_url(redis_url)
    wait_until(lambda: keys_under(client, redis_key_prefix) > 100, 60, "the first writes", check=engine.assert_running)
    time.sleep(1.0)
    rss_before = engine.rss_mib()
    with RssSampler(engine) as rss:
        poison_acked = produce_acknowledged(kafka_bootstrap, poison)
        acked += poison_acked + produce_acknowledged(kafka_bootstrap, good[len(good) // 2:])
        expected = expectation(acked, topics)
        waited = wait_until(lambda: verdict(expected, store, **engine_outputs(kafka_bootstrap, topics)).clean,
                            90, "every poison record dead-lettered and the good ones applied",
                            check=engine.assert_running)
    outputs = engine_outputs(kafka_bootstrap, topics)
    result = verdict(expected, store, **outputs)
    letters = {(dict(m.headers())["jukebox.source.topic"].decode(),
                int(dict(m.headers())["jukebox.source.partition"]),
                int(dict(m.headers())["jukebox.source.offset"])): m for m in outputs["dead_letters"]}
    rows = []
    for (name, _, value, reason), record in zip(POISON, poison_acked, strict=True):
        message = letters[origin_of(record)]
        letter = orjson.loads(message.value())
        payload = value or b""
        assert dict(message.headers())["jukebox.reason"].decode() == reason, name
        assert letter["reason"] == reason, (name, letter["detail"])
        assert letter["payload_size"] == len(payload), name
        assert letter["payload_sha256"] == hashlib.sha256(payload).hexdigest(), name
        assert base64.b64decode(letter["payload_b64"]) == payload[:DEAD_LETTER_PAYLOAD_CAP], name
        assert letter["payload_truncated"] == (len(payload) > DEAD_LETTER_PAYLOAD_CAP), name
        assert len(message.value()) < 64 * 1024, f"{name}: dead letter of {len(message.value())} bytes"
        rows.append(f"{name}={reason}")
    failures = engine.metric_total("jukebox_decode_failures_total")
    peak = max(rss.samples, default=rss_before)
    report("poison", records=len(acked), poison=len(POISON), dead_lettered=len(letters),
           decode_failures_metric=int(failures), same_pid=engine.pid == pid,
           rss_before_mib=round(rss_before), rss_peak_mib=round(peak),
           rss_after_mib=round(engine.rss_mib()), vm_hwm_mib=round(engine.peak_rss_mib()),
           clean_after_s=round(waited, 1))
    print("[faults] poison reasons: " + " ".join(rows))
    print(f"[faults] poison verdict: {result.summary()}")
    assert result.clean, result.examples
    assert engine.pid == pid and engine.exit_code is None
    assert "Traceback" not in engine.log()
    assert failures >= len(POISON)
    assert not _non_finite_values(client, redis_key_prefix)
    assert all(math.isfinite(v) for m in outputs["alerts"]
               for v in orjson.loads(m.value())["features"].values())
    assert peak < rss_before + 400, "memory is not bounded by the record size"
