"""The `FeatureStore` protocol, what a read returns, and an in-memory store.

A store keeps one record per entity. `write` upserts a micro-batch of rows, each
guarded by its version: a row is applied only if its version is greater than the
stored one (or nothing is stored), so replays and retries never let an older
update overwrite a newer one. `read` returns each value with its event time, its
age at `now` and whether it is stale (age > the feature's declared `ttl_s`).

`InMemoryFeatureStore` has the same semantics as `RedisFeatureStore` (same
validation, encoding and guard), for replays and tests:

>>> from datetime import UTC, datetime, timedelta
>>> from online_store.feature_row import FeatureRow
>>> t = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
>>> store = InMemoryFeatureStore()
>>> store.write([FeatureRow("device", "jb-1", 2, t, {"device_plays_5m": 4}),
...              FeatureRow("device", "jb-1", 1, t - timedelta(minutes=1), {"device_plays_5m": 1})],
...             written_at=t)
WriteResult(applied=1, stale=0, superseded=1)
>>> found = store.read("device", "jb-1", now=t + timedelta(minutes=10))
>>> reading = found.readings["device_plays_5m"]
>>> reading.value, reading.age, reading.stale
(4, datetime.timedelta(seconds=600), True)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from online_store.definitions import FEATURES
from online_store.feature_row import FeatureRow
from online_store.store_format import (
    AS_OF_FIELD,
    DEFAULT_TTL_MARGIN_S,
    ENTITIES,
    VERSION_FIELD,
    WRITTEN_FIELD,
    EncodedRow,
    StoredValue,
    checked_entity,
    decoded_value,
    encoded_row,
    entity_key,
    key_ttl_s,
    utc_from_ms,
    utc_ms,
)


@dataclass(frozen=True, slots=True)
class WriteResult:
    """Rows of a batch applied, ignored by the guard, and dropped as superseded in the batch.

    `superseded` rows were replaced, before any I/O, by a higher version of the same
    entity naming the same features in the same batch: the outcome is identical.
    """

    applied: int
    stale: int
    superseded: int = 0

    def __add__(self, other: WriteResult) -> WriteResult:
        return WriteResult(self.applied + other.applied, self.stale + other.stale,
                           self.superseded + other.superseded)


@dataclass(frozen=True, slots=True)
class FeatureReading:
    name: str
    value: StoredValue
    unit: str
    as_of: datetime  # event time the value is as of (the entity's clock at its last write)
    age: timedelta  # now - as_of; negative when `now` is behind the event time
    stale: bool  # age > the feature's declared ttl_s


@dataclass(frozen=True, slots=True)
class EntityFeatures:
    """One entity's stored features as read at some `now`; absent features have no reading."""

    entity: str
    entity_id: str
    version: int
    as_of: datetime
    written_at: datetime
    readings: Mapping[str, FeatureReading]

    def value(self, name: str) -> StoredValue | None:
        """The value of a declared feature of this entity, None when absent; KeyError on a typo."""
        feature = FEATURES.get(name)
        if feature is None or feature.entity != self.entity:
            raise KeyError(f"{name!r} is not a declared {self.entity} feature")
        reading = self.readings.get(name)
        return None if reading is None else reading.value

    @property
    def stale_features(self) -> tuple[str, ...]:
        return tuple(name for name, reading in self.readings.items() if reading.stale)


def _text(raw: str | bytes) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def entity_features(
    entity: str, entity_id: str, fields: Mapping[str, str] | Mapping[bytes, bytes], now: datetime
) -> EntityFeatures | None:
    """Decode a stored hash (str or bytes fields); None for an empty one (absent key).

    Fields that are not declared features of the entity are ignored, so a reader
    keeps working when a newer writer adds features (FORMAT.md, compatibility).
    """
    if not fields:
        return None
    now_ms = utc_ms(now)  # refuses a naive `now`
    text = {_text(k): _text(v) for k, v in fields.items()}
    where = f"{checked_entity(entity)} {entity_id!r}"
    try:
        version, as_of_ms = int(text[VERSION_FIELD]), int(text[AS_OF_FIELD])
        written_ms = int(text[WRITTEN_FIELD])
    except (KeyError, ValueError) as exc:
        detail = f"{where}: corrupt metadata ({exc!r}); see online_store/FORMAT.md"
        raise ValueError(detail) from None
    as_of = utc_from_ms(as_of_ms)
    age = timedelta(milliseconds=now_ms - as_of_ms)
    readings = {}
    for name, raw in text.items():
        feature = FEATURES.get(name)
        if feature is None or feature.entity != entity:
            continue
        try:
            value = decoded_value(feature, raw)
        except ValueError:
            detail = f"{where}: field {name} holds {raw!r}, not a {feature.value_type}"
            raise ValueError(detail) from None
        readings[name] = FeatureReading(name, value, feature.unit, as_of, age,
                                        age > timedelta(seconds=feature.ttl_s))
    return EntityFeatures(entity, entity_id, version, as_of, utc_from_ms(written_ms), readings)


def coalesced_rows(rows: Sequence[EncodedRow]) -> list[EncodedRow]:
    """The batch with superseded rows dropped; applying it equals applying `rows` in order.

    Consecutive rows of one entity (ignoring other entities' rows) that name the same
    fields collapse to the latest as-of time, the last one on ties: whatever is stored,
    applying both leaves exactly what applying that one leaves. Rows naming different
    fields are all kept, in order.
    """
    kept: list[EncodedRow] = []
    last_index: dict[tuple[str, str], int] = {}
    for row in rows:
        ident = (row.entity, row.entity_id)
        index = last_index.get(ident)
        if index is not None and kept[index].field_names == row.field_names:
            if row.as_of_ms >= kept[index].as_of_ms:
                kept[index] = row
            continue
        last_index[ident] = len(kept)
        kept.append(row)
    return kept


@runtime_checkable
class FeatureStore(Protocol):
    """Online features by entity; every implementation passes tests/contract/."""

    def write(self, rows: Sequence[FeatureRow], written_at: datetime) -> WriteResult:
        """Upsert a micro-batch; each row applied only if newer than what is stored."""
        ...

    def read(self, entity: str, entity_id: str, now: datetime) -> EntityFeatures | None: ...

    def read_many(
        self, entity: str, entity_ids: Sequence[str], now: datetime
    ) -> list[EntityFeatures | None]:
        """Reads in the order of `entity_ids`, in one round trip."""
        ...

    def scan_entities(self, entity: str) -> Iterator[str]:
        """Every stored id of an entity, for tools and tests (not for the hot path)."""
        ...


class InMemoryFeatureStore:
    """A `FeatureStore` in a dict, with the Redis store's validation, encoding and guard.

    A record expires `key_ttl_s(entity, ttl_margin_s)` after its last write, judged
    against the `written_at` of later writes and the `now` of reads (Redis judges
    against its own clock). Fields are kept as encoded text, exactly as in Redis.
    """

    def __init__(self, ttl_margin_s: int = DEFAULT_TTL_MARGIN_S):
        self.ttl_margin_s = ttl_margin_s
        self._ttl_ms = {entity: key_ttl_s(entity, ttl_margin_s) * 1000 for entity in ENTITIES}
        self._hashes: dict[tuple[str, str], dict[str, str]] = {}
        self._expires_ms: dict[tuple[str, str], int] = {}

    def write(self, rows: Sequence[FeatureRow], written_at: datetime) -> WriteResult:
        written_ms = utc_ms(written_at)
        encoded = [encoded_row(row) for row in rows]  # validate the whole batch before applying any
        batch = coalesced_rows(encoded)
        applied = sum(self._upsert(row, written_ms) for row in batch)
        return WriteResult(applied, len(batch) - applied, len(encoded) - len(batch))

    def _upsert(self, row: EncodedRow, written_ms: int) -> bool:
        # Mirrors online_store/upsert.lua.
        ident = (row.entity, row.entity_id)
        fields = self._live(ident, written_ms)
        if fields is not None and int(fields[AS_OF_FIELD]) > row.as_of_ms:
            return False
        fields = self._hashes.setdefault(ident, {})
        fields.update({VERSION_FIELD: str(row.version), AS_OF_FIELD: str(row.as_of_ms),
                       WRITTEN_FIELD: str(written_ms)})
        fields.update(row.sets)
        for name in row.deletes:
            fields.pop(name, None)
        self._expires_ms[ident] = written_ms + self._ttl_ms[row.entity]
        return True

    def _live(self, ident: tuple[str, str], now_ms: int) -> dict[str, str] | None:
        if ident in self._hashes and now_ms >= self._expires_ms[ident]:
            del self._hashes[ident], self._expires_ms[ident]
        return self._hashes.get(ident)

    def read(self, entity: str, entity_id: str, now: datetime) -> EntityFeatures | None:
        entity_key("jb", entity, entity_id)  # same validation as Redis
        fields = self._live((entity, entity_id), utc_ms(now))
        return None if fields is None else entity_features(entity, entity_id, fields, now)

    def read_many(
        self, entity: str, entity_ids: Sequence[str], now: datetime
    ) -> list[EntityFeatures | None]:
        return [self.read(entity, entity_id, now) for entity_id in entity_ids]

    def scan_entities(self, entity: str) -> Iterator[str]:
        checked_entity(entity)
        return iter([entity_id for (kind, entity_id) in self._hashes if kind == entity])
