"""Output contracts: what downstream systems and jukebox firmware consume.

Changing a field's meaning or removing a field needs a new schema version and new
topic names (`...v2`); adding an optional field does not.

>>> alert_id_for("jb-1", "song_looping", 1763900000)
'fa-85fd73fe8eca23cbf85d'
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StrictInt, StrictStr

from schemas.events import Contract
from schemas.types import EntityId, UtcDatetime


class FraudReason(StrEnum):
    """Why an alert was raised. Codes are stable; add new ones, never rename."""

    LOCATION_AWAY_FROM_VENUE = "location_away_from_venue"
    IMPOSSIBLE_TRAVEL = "impossible_travel"
    UNPAID_PLAYS = "unpaid_plays"
    SONG_LOOPING = "song_looping"
    PAYMENT_TESTING = "payment_testing"
    AFTER_HOURS_ACTIVITY = "after_hours_activity"
    ACCOUNT_ON_DISTANT_JUKEBOXES = "account_on_distant_jukeboxes"
    MODEL_SCORE = "model_score"
    ANOMALY = "anomaly"


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


def alert_id_for(entity_id: str, condition: str, window_start_epoch_s: int) -> str:
    """Deterministic alert id: the same condition on the same entity in the same
    cooldown window always gets the same id, so replays and restarts never
    publish two different alerts for one condition."""
    digest = hashlib.sha256(f"{entity_id}|{condition}|{window_start_epoch_s}".encode()).hexdigest()
    return f"fa-{digest[:20]}"


class FraudAlert(Contract):
    alert_id: Annotated[StrictStr, Field(pattern=r"^fa-[0-9a-f]{20}$")]
    jukebox_id: EntityId
    venue_id: EntityId | None = None
    customer_id: EntityId | None = None
    reasons: Annotated[list[FraudReason], Field(min_length=1)]
    score: Annotated[float, Field(ge=0.0, le=1.0)]
    severity: Severity
    model_versions: dict[str, str] = Field(
        description="Scorer name -> version that scored this alert, e.g. {'jukebox-fraud': '3'}"
    )
    features: dict[str, float] = Field(description="Feature values that drove the decision")
    window_start: UtcDatetime
    event_time: UtcDatetime = Field(description="Event time of the input that triggered it")
    emitted_at: UtcDatetime = Field(description="Processing time it was produced (not part of the id)")


class RankedSong(Contract):
    schema_version: int = Field(default=1, exclude=True)
    song_id: EntityId
    score: float


class RecommendationUpdate(Contract):
    jukebox_id: EntityId
    venue_id: EntityId | None = None
    songs: Annotated[list[RankedSong], Field(max_length=50)]
    model_version: StrictStr
    generated_at: UtcDatetime
    based_on_event_time: UtcDatetime


class DeadLetter(Contract):
    """A record we could not use, with where it came from and why.
    `payload_b64` holds the original bytes, truncated to a cap; `payload_sha256`
    and `payload_size` describe the full original."""

    model_config = ConfigDict(str_max_length=64 * 1024)

    reason: StrictStr = Field(description="Stable reason code, e.g. malformed_json")
    field: StrictStr | None = None
    detail: StrictStr
    error_class: StrictStr
    source_topic: StrictStr
    source_partition: StrictInt | None = None
    source_offset: StrictInt | None = None
    payload_b64: StrictStr
    payload_truncated: bool
    payload_size: StrictInt
    payload_sha256: StrictStr
    seen_at: UtcDatetime


ModelEventKind = Literal["drift_detected", "retraining_requested"]

SCORE_FEATURE = "score"
"""`ModelEvent.feature` of a check on the model's own output rather than an input."""


class ModelEvent(Contract):
    """A model-lifecycle event on `jukebox.model-events.v1`, keyed by model name.

    `drift_detected`: the first window of a run of drifted windows of one input (or of
    the score); `retraining_requested`: that run reached the configured length.
    `jukebox train fraud --on-retraining-request` acts on the latter.

    >>> event = ModelEvent(kind="drift_detected", model="jukebox-fraud", model_version="3",
    ...     feature="device_plays_1h", psi=0.31, js_divergence=0.05, ks_statistic=0.2,
    ...     window_start="2026-11-23T20:00:00Z", window_end="2026-11-23T20:10:00Z",
    ...     window_size=1000, thresholds={"psi": 0.2, "js_divergence": 0.1, "ks_statistic": 0.15})
    >>> ModelEvent.model_validate_json(event.model_dump_json()) == event
    True
    """

    kind: ModelEventKind
    model: EntityId
    model_version: EntityId
    feature: EntityId = Field(description=f"The model input checked, or '{SCORE_FEATURE}' for its output")
    psi: Annotated[float, Field(ge=0.0, description="Population stability index vs the reference")]
    js_divergence: Annotated[float, Field(ge=0.0, le=1.0, description="Jensen-Shannon divergence, bits")]
    ks_statistic: Annotated[float, Field(ge=0.0, le=1.0, description="Two-sample Kolmogorov-Smirnov statistic")]
    window_start: UtcDatetime = Field(description="Earliest event time in the window")
    window_end: UtcDatetime = Field(description="Latest event time in the window")
    window_size: Annotated[StrictInt, Field(ge=1, description="Values in the window")]
    thresholds: dict[str, float] = Field(
        description="Threshold per measure (psi, js_divergence, ks_statistic); reaching any drifts"
    )


OUTPUT_CONTRACTS = (FraudAlert, RecommendationUpdate, DeadLetter, ModelEvent)
