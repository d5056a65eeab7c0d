"""The ten countries the fleet runs in: currency, minor units, time zone, reference prices.

Reference data, defined once. USD rates are *reference* rates used to make revenue
comparable across currencies in features and models; they are not for accounting.

>>> COUNTRIES["KE"].currency, COUNTRIES["KE"].minor_units
('KES', 2)
>>> CURRENCIES["XOF"].minor_units
0
>>> round(usd_amount(Decimal("1000"), "NGN"), 4)
0.65
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Country:
    code: str  # ISO 3166-1 alpha-2
    name: str
    currency: str  # ISO 4217
    minor_units: int  # ISO 4217 exponent
    timezone: str  # IANA zone of most venues
    usd_per_unit: Decimal  # reference rate
    credit_price: Decimal  # price of one play credit, in major units
    center: tuple[float, float]  # a populous city (lat, lon), for simulation and sanity checks


COUNTRIES: dict[str, Country] = {
    c.code: c
    for c in (
        Country("NG", "Nigeria", "NGN", 2, "Africa/Lagos", Decimal("0.00065"), Decimal(200), (6.5244, 3.3792)),
        Country("KE", "Kenya", "KES", 2, "Africa/Nairobi", Decimal("0.0077"), Decimal(20), (-1.2921, 36.8219)),
        Country("ZA", "South Africa", "ZAR", 2, "Africa/Johannesburg", Decimal("0.055"), Decimal(5), (-26.2041, 28.0473)),
        Country("GH", "Ghana", "GHS", 2, "Africa/Accra", Decimal("0.065"), Decimal(2), (5.6037, -0.1870)),
        Country("EG", "Egypt", "EGP", 2, "Africa/Cairo", Decimal("0.020"), Decimal(10), (30.0444, 31.2357)),
        Country("MA", "Morocco", "MAD", 2, "Africa/Casablanca", Decimal("0.10"), Decimal(3), (33.5731, -7.5898)),
        Country("SN", "Senegal", "XOF", 0, "Africa/Dakar", Decimal("0.0016"), Decimal(200), (14.7167, -17.4677)),
        Country("UG", "Uganda", "UGX", 0, "Africa/Kampala", Decimal("0.00027"), Decimal(1000), (0.3476, 32.5825)),
        Country("TZ", "Tanzania", "TZS", 2, "Africa/Dar_es_Salaam", Decimal("0.00038"), Decimal(500), (-6.7924, 39.2083)),
        Country("ET", "Ethiopia", "ETB", 2, "Africa/Addis_Ababa", Decimal("0.0075"), Decimal(25), (9.0054, 38.7636)),
    )
}

CURRENCIES: dict[str, Country] = {c.currency: c for c in COUNTRIES.values()}


def usd_amount(amount: Decimal, currency: str) -> float:
    """Reference USD value of an amount in major units of `currency`."""
    return float(amount * CURRENCIES[currency].usd_per_unit)


def credits_bought(amount: Decimal, currency: str) -> float:
    """Play credits an amount buys at the country's reference credit price.

    >>> credits_bought(Decimal("60"), "KES")
    3.0
    """
    return float(amount / CURRENCIES[currency].credit_price)
