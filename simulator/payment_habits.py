"""How people pay for songs: methods by country, credit bundles, failure rates.

Mobile money dominates East Africa (M-Pesa, Airtel Money), cards matter in South
Africa and North Africa, coins everywhere. Amounts are whole credits at the
country's credit price, written exactly to the currency's minor units.

>>> amount_text("KE", 3), amount_text("SN", 2)
('60.00', '400')
>>> preferred_method("KE", 0.5)
'mobile_money'
"""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache

from schemas.countries import COUNTRIES

METHODS = ("mobile_money", "card", "coin")

# Share of customers preferring each method (mobile_money, card, coin).
METHOD_MIX: dict[str, tuple[float, float, float]] = {
    "KE": (0.80, 0.05, 0.15),
    "TZ": (0.70, 0.05, 0.25),
    "UG": (0.70, 0.05, 0.25),
    "GH": (0.60, 0.10, 0.30),
    "SN": (0.60, 0.05, 0.35),
    "ET": (0.50, 0.05, 0.45),
    "NG": (0.20, 0.45, 0.35),
    "ZA": (0.05, 0.60, 0.35),
    "EG": (0.20, 0.30, 0.50),
    "MA": (0.10, 0.35, 0.55),
}

CREDIT_BUNDLES = (1, 2, 3, 4, 5, 10)
CREDIT_BUNDLE_WEIGHTS = (0.30, 0.25, 0.20, 0.08, 0.12, 0.05)
CREDITS_PER_PLAY = (1, 2, 3)  # 2-3 credits: "play next" and premium requests
CREDITS_PER_PLAY_WEIGHTS = (0.88, 0.10, 0.02)

FAILURE_RATE = {"mobile_money": 0.05, "card": 0.06, "coin": 0.01}
RETRY_AFTER_FAILURE = 0.6  # share of customers who try again after a failed payment
REVERSAL_RATE = 0.003  # share of succeeded electronic payments charged back later
PROMO_SHARE = 0.02  # house plays: no payment, no credits


def preferred_method(country: str, u: float) -> str:
    """The method a customer with uniform draw `u` prefers in `country`."""
    mobile, card, _ = METHOD_MIX[country]
    if u < mobile:
        return "mobile_money"
    return "card" if u < mobile + card else "coin"


@lru_cache(maxsize=512)
def amount_text(country: str, credits: int) -> str:
    """Price of `credits` credits in major units, exact to the currency's minor units."""
    spec = COUNTRIES[country]
    return f"{spec.credit_price * credits:.{spec.minor_units}f}"


def amount_of(country: str, credits: int) -> Decimal:
    return Decimal(amount_text(country, credits))
