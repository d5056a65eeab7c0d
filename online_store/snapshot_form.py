"""Compact forms of entity state for snapshots.

Bytewax snapshots every entity touched in an epoch, and at fleet scale nearly every
event touches an entity that is then snapshotted: the pickle of a state is paid about
once per event. Pickling costs ~2 µs per Python object with its own `__reduce__`
(a window, an array, a datetime) and almost nothing per plain int, dict or bytes, so
states reduce to flat tuples of those.

>>> from online_store.windows import SlidingSum
>>> w = SlidingSum(3600); w.advance(7200); w.add(7100)
True
>>> back = window_from(window_form(w))
>>> (back.window_s, back.buckets, back.total, back.head) == (w.window_s, w.buckets, w.total, w.head)
True
>>> from datetime import datetime, UTC
>>> moment = datetime(2026, 11, 23, 20, 0, 0, 123_456, tzinfo=UTC)
>>> time_from(time_form(moment)) == moment, time_form(None), time_from(None)
(True, None, None)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from online_store.windows import SlidingCounter, SlidingSum

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def time_form(moment: datetime | None) -> int | None:
    """Microseconds since the epoch, exact."""
    return None if moment is None else (moment - _EPOCH) // _ONE_US


def time_from(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + timedelta(microseconds=us)


def window_form(window: SlidingSum | SlidingCounter) -> tuple:
    if type(window) is SlidingSum:
        return (0, window.window_s, window.buckets, window.total, window.head)
    return (1, window.window_s, window.buckets, window.totals, window.head)


def window_from(form: tuple) -> SlidingSum | SlidingCounter:
    kind, window_s, buckets, total, head = form
    return (SlidingSum if kind == 0 else SlidingCounter)(window_s, buckets, total, head)
