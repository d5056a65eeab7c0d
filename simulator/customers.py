"""Customers: opaque payment-account hashes, regulars of one venue (sometimes two).

A venue has a pool of regulars, a few of them there most nights (the pool is
sampled with a skew toward its first members). A customer id is a keyed hash of
(seed, home venue, position in the pool), so nothing per customer is stored.

>>> customer_id(seed=1, venue=42, member=0)
'c-0678ed5bf072a54a'
>>> customer_id(1, 42, 0) == customer_id(1, 42, 0) != customer_id(2, 42, 0)
True
>>> pool_size(jukeboxes_at_venue=2)
95
"""

from __future__ import annotations

from hashlib import blake2b


def pool_size(jukeboxes_at_venue: int) -> int:
    return 25 + 35 * jukeboxes_at_venue


def customer_digest(seed: int, venue: int, member: int) -> bytes:
    return blake2b(f"{seed}:{venue}:{member}".encode(), digest_size=8).digest()


def customer_id(seed: int, venue: int, member: int) -> str:
    return "c-" + customer_digest(seed, venue, member).hex()


def method_draw(digest: bytes) -> float:
    """A uniform draw fixed per customer: which payment method they prefer."""
    return int.from_bytes(digest[:2], "big") / 65536.0


def one_off_customer_id(seed: int, label: str) -> str:
    """An account outside every venue's pool (a fraudster's fresh account)."""
    return "c-" + blake2b(f"{seed}:one-off:{label}".encode(), digest_size=8).hexdigest()
