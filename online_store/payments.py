"""Money features from exact per-currency totals in minor units.

Sums are kept as integers per currency (exact, order-independent) and turned into
credits and reference USD only when a value is read, always in currency order, so
the float result is the same whatever order the payments arrived in.

>>> revenue_usd({"KES": 10_000})          # 100.00 KES
0.77
>>> credits_paid({"KES": 6_000})          # 60.00 KES at 20 KES a credit
3.0
>>> currency_map_json({"XOF": 1500, "KES": 1250})
'{"KES":"12.50","XOF":"1500"}'
"""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache

import orjson

from schemas.countries import CURRENCIES


def _major(minor: int, currency: str) -> Decimal:
    return Decimal(minor).scaleb(-CURRENCIES[currency].minor_units)


def revenue_usd(minor_by_currency: dict[str, int]) -> float:
    return _revenue_usd(tuple(sorted(minor_by_currency.items())))


def credits_paid(minor_by_currency: dict[str, int]) -> float:
    return _credits_paid(tuple(sorted(minor_by_currency.items())))


def currency_map_json(minor_by_currency: dict[str, int]) -> str:
    """Exact amounts per currency as decimal text, keys sorted."""
    return _currency_map_json(tuple(sorted(minor_by_currency.items())))


# Read once per event for every jukebox, and most hold one currency with a total seen
# before: Decimal arithmetic is the expensive part, so results are cached by totals.
@lru_cache(maxsize=65_536)
def _revenue_usd(totals: tuple[tuple[str, int], ...]) -> float:
    return float(sum((_major(minor, cur) * CURRENCIES[cur].usd_per_unit for cur, minor in totals), Decimal(0)))


@lru_cache(maxsize=65_536)
def _credits_paid(totals: tuple[tuple[str, int], ...]) -> float:
    return float(sum((_major(minor, cur) / CURRENCIES[cur].credit_price for cur, minor in totals), Decimal(0)))


@lru_cache(maxsize=65_536)
def _currency_map_json(totals: tuple[tuple[str, int], ...]) -> str:
    return orjson.dumps({cur: str(_major(minor, cur)) for cur, minor in totals if minor}).decode()
