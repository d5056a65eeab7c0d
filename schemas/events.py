"""Input contracts: what jukeboxes, payment gateways and the venue registry send us.

Every input carries a unique `event_id`, an explicit `schema_version` and a
timezone-aware event time. Models are frozen; unknown fields are refused so a
producer's typo is a dead letter, not a silently ignored value.

>>> play = PlayEvent(event_id="e1", jukebox_id="jb-1", venue_id="v-1", song_id="s-9",
...                  played_at="2026-11-23T20:00:00Z", credits_used=1)
>>> play.event_time.isoformat()
'2026-11-23T20:00:00+00:00'
>>> play.entity_id
'jb-1'
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from schemas.countries import COUNTRIES, CURRENCIES
from schemas.types import SCHEMA_VERSION, EntityId, Latitude, Longitude, UtcDatetime

MAX_AMOUNT_MAJOR = Decimal(100000000)  # 1e8 major units: above any jukebox payment
MAX_AMOUNT_TEXT = 24
# Written out: pydantic's own schema for Decimal changed between releases (2.14 dropped
# its maxLength), and a published contract must not move with a dependency.
_AMOUNT_SCHEMA = WithJsonSchema({"title": "Amount", "type": "string", "maxLength": MAX_AMOUNT_TEXT})


class Contract(BaseModel):
    """Base of every wire contract: frozen, strict about unknown fields, finite floats."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", allow_inf_nan=False, str_max_length=256, validate_default=True
    )
    schema_version: Literal[1] = SCHEMA_VERSION


class InputEvent(Contract):
    event_id: EntityId
    kind: ClassVar[str]

    @property
    def event_time(self) -> datetime:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def entity_id(self) -> str:
        """The id the topic is keyed and partitioned by."""
        return self.jukebox_id  # type: ignore[attr-defined]


class PlayEvent(InputEvent):
    kind: ClassVar[str] = "play"
    jukebox_id: EntityId
    venue_id: EntityId
    song_id: EntityId
    played_at: UtcDatetime
    credits_used: Annotated[StrictInt, Field(ge=0, le=100)]
    payment_id: EntityId | None = None

    @property
    def event_time(self) -> datetime:
        return self.played_at


class PaymentMethod(StrEnum):
    MOBILE_MONEY = "mobile_money"
    CARD = "card"
    COIN = "coin"


class PaymentStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REVERSED = "reversed"


class PaymentEvent(InputEvent):
    """A payment attempt. `amount` is a decimal string in major units, exact to the
    currency's minor unit (no float rounding): "12.50" KES, "1500" XOF."""

    kind: ClassVar[str] = "payment"
    payment_id: EntityId
    jukebox_id: EntityId
    venue_id: EntityId
    customer_id: EntityId
    amount: Annotated[Decimal, _AMOUNT_SCHEMA]
    currency: Literal["NGN", "KES", "ZAR", "GHS", "EGP", "MAD", "XOF", "UGX", "TZS", "ETB"]
    method: PaymentMethod
    status: PaymentStatus
    occurred_at: UtcDatetime

    @field_validator("amount", mode="before")
    @classmethod
    def _amount_is_text(cls, value: object) -> object:
        # Floats lose minor units (0.1 + 0.2); integers are fine, text is the contract.
        if isinstance(value, (bool, float)):
            # ValueError: pydantic reports it as a ValidationError; a TypeError would escape.
            raise ValueError("amount must be a decimal string such as \"12.50\"")  # noqa: TRY004
        if isinstance(value, str) and len(value) > MAX_AMOUNT_TEXT:
            raise ValueError("amount text too long")
        return value

    @model_validator(mode="after")
    def _amount_fits_currency(self) -> PaymentEvent:
        amount = self.amount
        if not amount.is_finite() or amount <= 0 or amount > MAX_AMOUNT_MAJOR:
            raise ValueError(f"amount must be > 0 and <= {MAX_AMOUNT_MAJOR}")
        exponent = amount.normalize().as_tuple().exponent
        if isinstance(exponent, int) and -exponent > CURRENCIES[self.currency].minor_units:
            raise ValueError(f"amount has more decimals than {self.currency} minor units allow")
        return self

    @property
    def event_time(self) -> datetime:
        return self.occurred_at

    @property
    def amount_minor(self) -> int:
        """Amount in minor units (cents, or units for zero-decimal currencies)."""
        return int(self.amount.scaleb(CURRENCIES[self.currency].minor_units))


class DeviceLocationEvent(InputEvent):
    kind: ClassVar[str] = "location"
    jukebox_id: EntityId
    lat: Latitude
    lon: Longitude
    accuracy_m: Annotated[float, Field(ge=0.0, le=100_000.0, allow_inf_nan=False)]
    reported_at: UtcDatetime

    @property
    def event_time(self) -> datetime:
        return self.reported_at


class OpeningHours(Contract):
    """Opening hours for one weekday (0 = Monday) in the venue's local time.
    `closes` earlier than `opens` means the venue closes after midnight."""

    schema_version: Literal[1] = Field(default=SCHEMA_VERSION, exclude=True)
    weekday: Annotated[StrictInt, Field(ge=0, le=6)]
    opens: Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]
    closes: Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]


class VenueRegistration(InputEvent):
    """Reference data for a venue, on a compacted topic keyed by venue_id.
    `active=False` is a deregistration (a Debezium delete)."""

    kind: ClassVar[str] = "venue"
    venue_id: EntityId
    jukebox_ids: Annotated[list[EntityId], Field(max_length=64)]
    country: str
    lat: Latitude
    lon: Longitude
    timezone: Annotated[str, Field(max_length=64)]
    opening_hours: Annotated[list[OpeningHours], Field(max_length=21)]
    updated_at: UtcDatetime
    active: bool = True

    @field_validator("country")
    @classmethod
    def _known_country(cls, value: str) -> str:
        if value not in COUNTRIES:
            raise ValueError(f"country must be one of {sorted(COUNTRIES)}")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @property
    def event_time(self) -> datetime:
        return self.updated_at

    @property
    def entity_id(self) -> str:
        return self.venue_id


INPUT_CONTRACTS: tuple[type[InputEvent], ...] = (
    PlayEvent,
    PaymentEvent,
    DeviceLocationEvent,
    VenueRegistration,
)
