"""The one settings object, read once at the entrypoint from `JUKEBOX_*` variables.

Nesting uses the first underscore after the prefix: `JUKEBOX_KAFKA_BOOTSTRAP` is
`kafka.bootstrap`, `JUKEBOX_REDIS_URL` is `redis.url`,
`JUKEBOX_KAFKA_CLIENT_OPTIONS='{"socket.timeout.ms": "5000"}'` passes raw librdkafka
options through. Secrets are `SecretStr`: they print as `**********` and are only
unwrapped when handed to a client.

Leaf code never receives this object; the entrypoint hands each part only the
values or clients it needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Part):
    bootstrap: str | None = Field(
        default=None, description="host:port[,host:port]; unset = the embedded local broker"
    )
    topic_prefix: str = ""
    group_id: str = Field(
        default="jukebox-engine", description="Consumer group the engine commits its input offsets to "
        "(bookkeeping beside the recovery snapshots; where a partition without a snapshot starts)"
    )
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None
    client_options: dict[str, str] = Field(default_factory=dict)
    max_message_bytes: int = 64 * 1024

    def client_config(self, bootstrap: str | None = None) -> dict[str, str]:
        """librdkafka configuration, secrets included: pass to a client, never log it."""
        config: dict[str, str] = {
            "bootstrap.servers": bootstrap or self.bootstrap or "",
            "security.protocol": self.security_protocol,
        }
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password.get_secret_value() if self.sasl_password else None,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": self.ssl_key_password.get_secret_value()
            if self.ssl_key_password
            else None,
        }
        config.update({k: v for k, v in optional.items() if v is not None})
        config.update(self.client_options)
        return config


class RedisSettings(_Part):
    url: SecretStr | None = Field(
        default=None, description="redis:// or rediss:// URL; unset = the embedded local server"
    )
    username: str | None = None
    password: SecretStr | None = None
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    key_prefix: str = "jb"
    socket_timeout_s: float = 5.0
    retry_attempts: int = 5


class FeatureSettings(_Part):
    allowed_lateness_s: int = Field(
        default=12 * 3600, description="Events older than arrival time minus this go to late-events"
    )
    max_future_skew_s: int = Field(
        default=300, description="Events stamped further ahead of arrival are quarantined"
    )


class FlowSettings(_Part):
    workers: int = 1
    batch_size: int = Field(
        default=5000, ge=1, le=1_000_000, description="Most records one Kafka fetch hands the flow "
        "(librdkafka's limit: 1,000,000). Only a backlog fills a batch (live load brings what arrived "
        "in a 10 ms pause); a bigger one coalesces more of a jukebox's rows into one Redis write, and "
        "must still fit the epoch when state is day-old"
    )
    recovery_dir: Path | None = None
    recovery_partitions_per_process: int = Field(
        default=8, ge=1, description="Recovery partitions a new recovery directory gets per "
        "process (at least one per worker; fixed once created): a restart reads a partition's "
        "snapshots in pages that each re-read the rest of it, so smaller partitions resume "
        "faster (bench.restart)"
    )
    snapshot_interval_s: float = 5.0
    metrics_port: int | None = 9108
    recommendations: bool = Field(
        default=True, description="Publish recommendation updates (needs the song catalog)"
    )
    state_check_interval_s: float | None = Field(
        default=300.0, description="How often an idle entity's state is checked for release "
        "(wall clock); unset = never release"
    )
    partition_skew_margin_s: int = Field(
        default=24 * 3600, description="Extra fleet-clock time before idle state is released, "
        "for input partitions consumed unevenly (e.g. one partition's backlog after an outage)"
    )
    input_alignment: bool = Field(
        default=True, description="Merge the process's input partitions in arrival order (Kafka "
        "timestamps), waiting for a partition behind the others, so a backlog is applied in "
        "arrival order across topics (dataflows/input_alignment.py); false: never wait"
    )
    input_max_lead_s: float = Field(
        default=5.0, ge=0, description="How far past the last record of a partition that may still "
        "deliver earlier ones a record may go out"
    )
    input_start: Literal["committed", "earliest"] = Field(
        default="committed", description="With recovery on, where an input partition the snapshot "
        "does not hold starts (the number of processes changed): the consumer group's committed "
        "offset, else the earliest; earliest: always the start of retention (resetting state)"
    )
    input_stall_s: float = Field(
        default=10.0, gt=0, description="A partition behind the others that stays empty this long "
        "(wall clock) stops holding them back"
    )


class ModelSettings(_Part):
    mlflow_tracking_uri: str | None = Field(
        default=None, description="unset = a local MLflow store under data_dir/mlruns"
    )
    fraud_model_uri: str = "models:/jukebox-fraud@champion"
    recs_model_uri: str = "models:/jukebox-recs@champion"
    recs_catalog_path: Path | None = Field(
        default=None, description="Song catalog as JSON Lines; unset = the song-catalog topic"
    )
    reload_interval_s: float = 30.0
    fraud_alert_threshold: float | None = Field(
        default=0.85,
        description="Model score an alert needs when no rule fired; unset = the model's own "
        "training threshold (95% alert precision, at most 3 alerting clean jukebox-hours in "
        "10,000, out of bag)",
    )
    drift_window_size: int = Field(
        default=1000, ge=10, description="Scored rows per drift window (0.2 PSI / 0.1 JS / 0.15 KS)"
    )
    drift_retrain_after: int = Field(
        default=3, ge=1, description="Drifted windows in a row that request a retraining"
    )


class JukeboxSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="JUKEBOX_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        frozen=True,
        extra="ignore",
    )

    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    features: FeatureSettings = FeatureSettings()
    flow: FlowSettings = FlowSettings()
    models: ModelSettings = ModelSettings()
    data_dir: Path = Path("data")
