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

import orjson

from schemas.countries import CURRENCIES


def _major(minor: int, currency: str) -> Decimal:
    return Decimal(minor).scaleb(-CURRENCIES[currency].minor_units)


def revenue_usd(minor_by_currency: dict[str, int]) -> float:
    total = sum(
        (_major(minor, cur) * CURRENCIES[cur].usd_per_unit for cur, minor in sorted(minor_by_currency.items())),
        Decimal(0),
    )
    return float(total)


def credits_paid(minor_by_currency: dict[str, int]) -> float:
    total = sum(
        (_major(minor, cur) / CURRENCIES[cur].credit_price for cur, minor in sorted(minor_by_currency.items())),
        Decimal(0),
    )
    return float(total)


def currency_map_json(minor_by_currency: dict[str, int]) -> str:
    """Exact amounts per currency as decimal text, keys sorted."""
    return orjson.dumps(
        {cur: str(_major(minor, cur)) for cur, minor in sorted(minor_by_currency.items()) if minor},
    ).decode()
