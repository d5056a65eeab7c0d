"""Output contracts: what downstream systems and jukebox firmware consume.

Changing a field's meaning or removing a field needs a new schema version and new
topic names (`...v2`); adding an optional field does not.

>>> alert_id_for("jb-1", "song_looping", 1763900000)
'fa-85fd73fe8eca23cbf85d'
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Annotated

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


OUTPUT_CONTRACTS = (FraudAlert, RecommendationUpdate, DeadLetter)
