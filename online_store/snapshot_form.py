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
>>> back == w, back.total
(True, 1)
>>> window_from((0, 3600, {119: 2}, 2, 120)).buckets  # a snapshot written before the rings
{119: 2}
>>> from datetime import datetime, UTC
>>> moment = datetime(2026, 11, 23, 20, 0, 0, 123_456, tzinfo=UTC)
>>> time_from(time_form(moment)) == moment, time_form(None), time_from(None)
(True, None, None)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from online_store.dedup import event_digest
from online_store.definitions import BUCKETS_PER_WINDOW
from online_store.text_windows import SlidingTextSet, text_set, text_set_of
from online_store.windows import (
    SlidingCounter,
    SlidingSet,
    SlidingSum,
    id_counter,
    set_window,
    sum_window,
)

Window = SlidingSum | SlidingCounter | SlidingSet | SlidingTextSet

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def time_form(moment: datetime | None) -> int | None:
    """Microseconds since the epoch, exact."""
    return None if moment is None else (moment - _EPOCH) // _ONE_US


def time_from(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + timedelta(microseconds=us)


# A window's form is its own `__reduce__` arguments, tagged with the kind of its rebuild.
# Kinds 0 and 1 were the dict windows' forms, before the rings.
_KIND_OF_REBUILD = {sum_window: 2, SlidingCounter: 3, id_counter: 4, set_window: 5, text_set: 6}
_REBUILD_OF_KIND = {kind: rebuild for rebuild, kind in _KIND_OF_REBUILD.items()}


def window_form(window: Window) -> tuple:
    rebuild, held = window.__reduce__()
    return (_KIND_OF_REBUILD[rebuild], *held)


def window_from(form: tuple) -> Window:
    kind, window_s, *held = form
    if kind in _REBUILD_OF_KIND:
        return _REBUILD_OF_KIND[kind](window_s, *held)
    # Kinds 0 and 1: snapshots written before the rings, {bucket: sum or counts} and the totals.
    buckets, _totals, head = held
    if kind == 0:
        window = SlidingSum(window_s, None, head)
        window.replace_buckets(buckets)
        return window
    slots: list = [None] * BUCKETS_PER_WINDOW
    for bucket, counts in buckets.items():
        slots[bucket % BUCKETS_PER_WINDOW] = [part for pair in counts.items() for part in pair]
    return SlidingCounter(window_s, slots if buckets else None, head)


def window_as(window: Window, kind: type) -> Window:
    """`window` as the `kind` of window its state keeps now: a snapshot written before
    songs were counted by digest and payers, devices and countries kept as sets holds
    them as SlidingCounters of strings, and one written before 2026-12-04 a jukebox's
    payers as a SlidingSet."""
    if type(window) is kind:
        return window
    if type(window) is SlidingSet and kind is SlidingTextSet:
        return text_set_of(window)
    if type(window) is not SlidingCounter:
        return window
    converted = kind(window.window_s, None, window.head)
    for bucket, counts in window.buckets.items():
        for key, amount in counts.items():
            if kind in (SlidingSet, SlidingTextSet):
                converted.add(bucket * window.bucket_s, key)
            else:
                converted.add(bucket * window.bucket_s, event_digest(key), amount)
    return converted
