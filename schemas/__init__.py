"""Wire contracts of jukebox-streams: events in, alerts and recommendations out.

No I/O here: pydantic models, topic names, decoding with limits, JSON Schema export.
"""

from schemas.decoding import DecodeError, DecodeLimits, decode_event
from schemas.events import (
    INPUT_CONTRACTS,
    DeviceLocationEvent,
    InputEvent,
    OpeningHours,
    PaymentEvent,
    PaymentMethod,
    PaymentStatus,
    PlayEvent,
    VenueRegistration,
)
from schemas.outputs import (
    DeadLetter,
    FraudAlert,
    FraudReason,
    RankedSong,
    RecommendationUpdate,
    Severity,
    alert_id_for,
)
from schemas.topics import Topics, TopicSpec
from schemas.types import SCHEMA_VERSION, format_utc

__all__ = [
    "INPUT_CONTRACTS",
    "SCHEMA_VERSION",
    "DeadLetter",
    "DecodeError",
    "DecodeLimits",
    "DeviceLocationEvent",
    "FraudAlert",
    "FraudReason",
    "InputEvent",
    "OpeningHours",
    "PaymentEvent",
    "PaymentMethod",
    "PaymentStatus",
    "PlayEvent",
    "RankedSong",
    "RecommendationUpdate",
    "Severity",
    "TopicSpec",
    "Topics",
    "VenueRegistration",
    "alert_id_for",
    "decode_event",
    "format_utc",
]
