"""The online store's storage format in code: keys, field encoding, key TTLs.

FORMAT.md is the specification; this module is its one implementation, shared by
every store so they all validate and encode a row the same way, before any I/O.

>>> entity_key("jb", "device", "jb-1")
'jb:device:v1:jb-1'
>>> encoded_value(FEATURES["device_top_song_share_1h"], 0.1)
'0.1'
>>> encoded_value(FEATURES["device_revenue_by_currency_24h"], {"XOF": "1500", "KES": "12.50"})
'{"KES":"12.50","XOF":"1500"}'
>>> key_ttl_s("customer", margin_s=3600)
7200
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from numbers import Integral, Real
from operator import itemgetter

import orjson

from online_store.definitions import FEATURES, Feature, features_of  # noqa: F401 - in doctests
from online_store.feature_row import FeatureRow, ms_since_epoch
from schemas.types import ID_PATTERN

KEY_LAYOUT_VERSION = 1
"""Bumped only with a new key layout; old and new keys then coexist (see FORMAT.md)."""

VERSION_FIELD = "_version"
AS_OF_FIELD = "_as_of_ms"
WRITTEN_FIELD = "_written_ms"
METADATA_FIELDS = (VERSION_FIELD, AS_OF_FIELD, WRITTEN_FIELD)

MAX_VERSION = 2**53 - 1  # Lua compares versions as doubles: exact up to 2^53
DEFAULT_TTL_MARGIN_S = 3600
ENTITIES = ("device", "customer")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

StoredValue = int | float | str
"""A decoded feature value: int, float, or a currency map's canonical JSON text."""

_ID = re.compile(ID_PATTERN)
_CURRENCY = re.compile(r"[A-Z]{3}")
_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_GLOB_SPECIAL = re.compile(r"([\\*?\[\]])")


def checked_entity(entity: str) -> str:
    if entity not in ENTITIES:
        raise ValueError(f"unknown entity {entity!r}: expected one of {', '.join(ENTITIES)}")
    return entity


def entity_key(prefix: str, entity: str, entity_id: str) -> str:
    """The hash holding one entity's features: `{prefix}:{entity}:v1:{entity_id}`."""
    checked_entity(entity)
    if not isinstance(entity_id, str) or not _ID.fullmatch(entity_id):
        raise ValueError(f"invalid {entity} id {entity_id!r}: expected 1-64 of [A-Za-z0-9._:-]")
    return f"{prefix}:{entity}:v{KEY_LAYOUT_VERSION}:{entity_id}"


def entity_key_pattern(prefix: str, entity: str) -> str:
    """SCAN MATCH pattern for every key of an entity; glob characters in the prefix escaped.

    >>> entity_key_pattern("t[1]", "device")
    't\\\\[1\\\\]:device:v1:*'
    """
    escaped = _GLOB_SPECIAL.sub(r"\\\1", prefix)
    return f"{escaped}:{checked_entity(entity)}:v{KEY_LAYOUT_VERSION}:*"


def entity_id_of(key: str, prefix: str, entity: str) -> str:
    """The id in a key (ids may contain ':', so strip the known head rather than split).

    >>> entity_id_of("jb:customer:v1:acct:42", "jb", "customer")
    'acct:42'
    """
    head = f"{prefix}:{entity}:v{KEY_LAYOUT_VERSION}:"
    if not key.startswith(head):
        raise ValueError(f"key {key!r} is not a {entity} key under prefix {prefix!r}")
    return key[len(head):]


def key_ttl_s(entity: str, margin_s: int = DEFAULT_TTL_MARGIN_S) -> int:
    """Key lifetime after its last write: the entity's longest feature TTL plus a margin."""
    if margin_s < 0:
        raise ValueError(f"TTL margin must be >= 0 s, got {margin_s}")
    features = features_of(checked_entity(entity))  # type: ignore[arg-type]
    return max(f.ttl_s for f in features) + margin_s


def utc_ms(moment: datetime) -> int:
    """Milliseconds since the Unix epoch, exact (no float rounding), floored.

    >>> utc_ms(datetime(2026, 1, 1, 0, 0, 0, 999_999, tzinfo=UTC))
    1767225600999
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment!r}: a timezone-aware UTC time is required")
    return ms_since_epoch(moment)


def utc_from_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def _encoded_int(feature: Feature, value: object) -> str:
    if type(value) is int:  # the common case, without the slow ABC checks below
        return str(value)
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{feature.name} is an int feature, got {value!r}")
    return str(int(value))


def _encoded_float(feature: Feature, value: object) -> str:
    if type(value) is float:
        number = value
    elif isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{feature.name} is a float feature, got {value!r}")
    else:
        number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{feature.name} must be finite, got {number!r}")
    return repr(number)  # shortest text that parses back to the same double


def _encoded_currency_map(feature: Feature, value: object) -> str:
    if isinstance(value, str):
        return _canonical_currency_text(feature.name, value)
    return _canonical_currency_map(feature.name, value)


# A device row carries its 24 h revenue map as JSON text on every event, and most
# jukeboxes repeat a few (`{}`, one currency at a running total): validated once each.
@lru_cache(maxsize=65_536)
def _canonical_currency_text(name: str, text: str) -> str:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{name} is not valid JSON: {exc}") from None
    return _canonical_currency_map(name, value)


def _canonical_currency_map(name: str, value: object) -> str:
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{name} must be a JSON object of currency -> amount, got {value!r}")
    for currency, amount in value.items():
        if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
            raise ValueError(f"{name}: {currency!r} is not an ISO 4217 currency code")
        if not (type(amount) is int or (isinstance(amount, str) and _DECIMAL.fullmatch(amount))):
            raise ValueError(f"{name}: amount for {currency} must be an exact int "
                             f"or decimal text, got {amount!r}")
    try:
        return orjson.dumps(dict(value), option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError as exc:  # e.g. an amount beyond 64 bits
        raise ValueError(f"{name}: {exc}") from None


_ENCODERS = {"int": _encoded_int, "float": _encoded_float, "currency_map": _encoded_currency_map}
_DECODERS = {"int": int, "float": float, "currency_map": str}
_DECLARED = {
    entity: {f.name: (f, _ENCODERS[f.value_type])
             for f in features_of(entity)}  # type: ignore[arg-type]
    for entity in ENTITIES
}


def encoded_value(feature: Feature, value: object) -> str:
    """The hash field text of a value (never None: None means the field is absent).
    Raises TypeError for a value of the wrong type, ValueError for a bad value."""
    return _ENCODERS[feature.value_type](feature, value)


def decoded_value(feature: Feature, text: str) -> StoredValue:
    """Inverse of `encoded_value`.

    >>> decoded_value(FEATURES["device_plays_5m"], "12")
    12
    >>> decoded_value(FEATURES["device_speed_kmh_last"], "1e-05")
    1e-05
    """
    return _DECODERS[feature.value_type](text)


# -- rows encoded at once -----------------------------------------------------------
# Encoding a row field by field cost ~13 µs (repr of a float alone ~0.45 µs), once per
# event. Rows of one shape (the same fields, each value of its feature's type) share a
# plan: their numbers go through one orjson call, whose text for a finite double equals
# `repr` except in the exponent forms (`1e-05` against `0.00001`, `2.5e-07` against
# `2.5e-7`), so any row whose numbers print an exponent or four leading zeros, or a
# non-finite value (`null`), or an int beyond 64 bits, is encoded field by field.
# tests/unit/test_store_format.py checks the two paths agree on random rows.

_NO_NUMBERS = b"[]"


@dataclass(frozen=True, slots=True)
class RowPlan:
    """How a row of one shape is encoded: which values are numbers, which currency maps."""

    numbers: Callable[[dict], tuple]  # the row's int and float values, in order
    currency_maps: tuple[tuple[int, str], ...]  # (position among the sets, feature name)
    set_names: tuple[str, ...]
    deletes: tuple[str, ...]
    field_names: frozenset[str]

    def texts(self, values: dict) -> tuple[str, ...] | None:
        """The set fields' texts, or None when the row must be encoded field by field."""
        try:
            text = orjson.dumps(self.numbers(values))
        except orjson.JSONEncodeError:  # an int beyond 64 bits
            return None
        if b"e" in text or b"0.0000" in text or b"null" in text:
            return None
        texts = text[1:-1].decode().split(",") if text != _NO_NUMBERS else []
        for at, name in self.currency_maps:
            try:
                texts.insert(at, _canonical_currency_text(name, values[name]))
            except (ValueError, TypeError):  # field by field says which and why
                return None
        return tuple(texts)


_PLANS: dict[tuple, RowPlan | None] = {}
_MAX_PLANS = 4096  # shapes come from the flow's own code: a handful per entity
_NUMBER_TYPES = {"int": int, "float": float}


def row_plan(entity: str, names: tuple[str, ...], types: tuple[type, ...]) -> RowPlan | None:
    """The plan for rows of this shape; None when a field is undeclared or of another type."""
    shape = (entity, names, types)
    try:
        return _PLANS[shape]
    except KeyError:
        pass
    plan = _planned(entity, names, types)
    if len(_PLANS) < _MAX_PLANS:
        _PLANS[shape] = plan
    return plan


def _planned(entity: str, names: tuple[str, ...], types: tuple[type, ...]) -> RowPlan | None:
    declared = _DECLARED[entity]
    numbers: list[str] = []
    currency_maps: list[tuple[int, str]] = []
    set_names: list[str] = []
    deletes: list[str] = []
    for name, kind in zip(names, types, strict=True):
        if name not in declared:
            return None
        value_type = declared[name][0].value_type
        if kind is type(None):
            deletes.append(name)
        elif _NUMBER_TYPES.get(value_type) is kind:
            numbers.append(name)
            set_names.append(name)
        elif value_type == "currency_map" and kind is str:
            currency_maps.append((len(set_names), name))
            set_names.append(name)
        else:
            return None
    return RowPlan(_getter(tuple(numbers)), tuple(currency_maps), tuple(set_names),
                   tuple(deletes), frozenset(set_names) | frozenset(deletes))


def _getter(names: tuple[str, ...]) -> Callable[[dict], tuple]:
    if len(names) > 1:
        return itemgetter(*names)  # a tuple, in C
    if names:
        only = names[0]
        return lambda values: (values[only],)
    return lambda values: ()


@dataclass(frozen=True, slots=True)
class EncodedRow:
    """A validated row, ready for any store: fields to set (names and their texts, which
    are always ASCII) and fields to delete."""

    entity: str
    entity_id: str
    version: int
    as_of_ms: int
    set_names: tuple[str, ...]
    set_texts: tuple[str, ...]
    deletes: tuple[str, ...]
    field_names: frozenset[str]  # every field the row names, set or deleted

    @property
    def sets(self) -> tuple[tuple[str, str], ...]:
        return tuple(zip(self.set_names, self.set_texts, strict=True))


def encoded_row(row: FeatureRow) -> EncodedRow:
    """Validate and encode a row; raises ValueError naming the entity and the problem.

    >>> values = {"device_plays_5m": 3, "device_speed_kmh_last": None}
    >>> r = encoded_row(FeatureRow("device", "jb-1", 7, EPOCH, values))
    >>> r.sets, r.deletes
    ((('device_plays_5m', '3'),), ('device_speed_kmh_last',))
    """
    key = entity_key("jb", row.entity, row.entity_id)  # validates entity and id
    version = row.version
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= MAX_VERSION:
        raise ValueError(f"{key}: version must be an int in [0, 2^53), got {version!r}")
    values = row.values
    plan = row_plan(row.entity, tuple(values), tuple(map(type, values.values())))
    texts = None if plan is None else plan.texts(values)
    if texts is None:
        return _checked_row(key, row, version)
    return EncodedRow(row.entity, row.entity_id, version, utc_ms(row.as_of),
                      plan.set_names, texts, plan.deletes, plan.field_names)


def _checked_row(key: str, row: FeatureRow, version: int) -> EncodedRow:
    """Field by field, with an error naming the first bad one: the reference encoding,
    and the path of any row no plan covers."""
    declared = _DECLARED[row.entity]
    sets: list[tuple[str, str]] = []
    deletes: list[str] = []
    for name, value in row.values.items():
        if name not in declared:
            raise ValueError(f"{key}: {name!r} is not a declared {row.entity} feature")
        if value is None:
            deletes.append(name)
            continue
        feature, encode = declared[name]
        try:
            sets.append((name, encode(feature, value)))
        except (ValueError, TypeError) as exc:  # every bad row raises the same error type
            raise ValueError(f"{key}: {exc}") from None
    names = tuple(name for name, _ in sets)
    return EncodedRow(row.entity, row.entity_id, version, utc_ms(row.as_of), names,
                      tuple(text for _, text in sets), tuple(deletes),
                      frozenset(names) | frozenset(deletes))
