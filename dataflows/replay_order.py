"""History order inside a replay, whatever the batch size, worker count or timing.

A step keyed by one entity but fed by many others (a customer's payments come from
every jukebox it paid at; the anomaly detector hears every jukebox's closed windows)
receives its inputs in whatever order the workers happen to deliver them, and its
outputs depend on that order. A replay has a total order to restore: its single
source partition stamps every record with its position in the history
(`history_position`), and runs in lockstep epochs (`epoch_interval=0`: Bytewax reads
the next source batch only once the whole flow has finished the last, so one epoch
is one batch). Then:

* `EpochStash` holds what a key received during an epoch and applies it in history
  order when the epoch ends (Bytewax calls `snapshot()` then, on every key woken in
  it); the outputs go out in the next epoch;
* `PaymentOrder` keeps a jukebox's decisions in its own history order, although the
  request for a payment comes the long way, through the customer step, one epoch
  later than the jukebox's other requests.

The live flow has no total order across partitions and does not use either.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from bytewax.operators import StatefulBatchLogic

BATCH_BITS = 20  # a position is (source batch << BATCH_BITS) | index in the batch
MAX_BATCH = 1 << BATCH_BITS
_DUE = datetime(2000, 1, 1, tzinfo=UTC)  # a notification time always in the past


def history_position(batch: int, index: int) -> int:
    """The position of a record in the history: batch order first, then batch index.

    >>> history_position(2, 5) > history_position(1, 999), batch_of(history_position(2, 5))
    (True, 2)
    """
    return (batch << BATCH_BITS) | index


def batch_of(position: int) -> int:
    return position >> BATCH_BITS


@dataclass(frozen=True, slots=True)
class Sequenced:
    """An input of a keyed step with the position of the record it came from."""

    position: int
    item: object


class EpochStash:
    """Items held until the epoch ends, then applied in history order.

    `add` in `on_batch`; `close` in `snapshot` (the end of the epoch for the key);
    `ready()` in `on_notify`, which `due()` asks for as soon as anything is held.

    >>> stash = EpochStash(order=lambda item: item)
    >>> stash.add([3, 1, 2]); stash.ready(), stash.due() is not None
    ([], True)
    >>> stash.close(lambda items: [f"applied {items}"]); stash.ready(), stash.due()
    (['applied [1, 2, 3]'], None)

    `keep(item)` holds an item over the end of an epoch (e.g. one that may still be
    overtaken by an item delivered a batch late).
    """

    __slots__ = ("_held", "_order", "_ready")

    def __init__(self, order: Callable[[object], object]) -> None:
        self._held: list = []
        self._ready: list = []
        self._order = order

    def add(self, items: Iterable) -> None:
        self._held.extend(items)

    def close(self, apply: Callable[[list], list], keep: Callable[[object], bool] | None = None) -> None:
        held = self._held
        if keep is not None:
            self._held = [item for item in held if keep(item)]
            held = [item for item in held if not keep(item)]
        else:
            self._held = []
        if held:
            held.sort(key=self._order)
            self._ready.extend(apply(held))

    def ready(self) -> list:
        ready, self._ready = self._ready, []
        return ready

    def due(self) -> datetime | None:
        # Due at once while anything is held: Bytewax then calls `on_notify` in the
        # activation that ends the epoch, right after `snapshot`, so the outputs leave in
        # the very next epoch (the anomaly step counts on that: a window is at most one
        # batch late). Before the epoch ends the call returns nothing.
        return _DUE if self._held or self._ready else None


class HistoryOrdered:
    """A keyed logic that, in a replay, holds each epoch's inputs in `self.stash` and
    applies them with `apply_in_order` when the epoch ends (its `snapshot()` calls
    `end_epoch`); live (`stash` None) it applies them as they come."""

    stash: EpochStash | None = None

    def apply_in_order(self, items: list) -> list:
        raise NotImplementedError

    def held_over(self) -> Callable[[object], bool] | None:
        """Which held items wait for a later epoch (see `EpochStash.close`)."""
        return None

    def end_epoch(self) -> None:
        if self.stash is not None:
            self.stash.close(self.apply_in_order, self.held_over())

    def notify_at(self) -> datetime | None:
        return None if self.stash is None else self.stash.due()

    def on_notify(self) -> tuple[list, bool]:
        return ([] if self.stash is None else self.stash.ready()), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list, bool]:
        if self.stash is None:
            return [], StatefulBatchLogic.RETAIN
        self.stash.close(self.apply_in_order)
        return self.stash.ready(), StatefulBatchLogic.RETAIN


@dataclass(frozen=True, slots=True)
class PaymentPending:
    """Sent straight from the device step to the jukebox's decisions: the request for
    the payment at `position` is on its way through the customer step; decide nothing
    of this jukebox after it until it arrives."""

    jukebox_id: str
    position: int


@dataclass(frozen=True, slots=True)
class PaymentUnscored:
    """The customer step's answer for a pending payment that yields no request."""

    jukebox_id: str
    position: int


class PaymentOrder:
    """One jukebox's decision inputs, released in the jukebox's history order.

    Items are released as they come, except after a `PaymentPending`: then everything
    waits until the payment's own request comes back (`payment_position(item)` is the
    position of the payment an item is the request for, or None for any other item).

    >>> order = PaymentOrder(payment_position=lambda item: item[1] if isinstance(item, tuple) else None)
    >>> order.arrange(PaymentPending("jb", 7)), order.arrange("play after it")
    ([], [])
    >>> order.arrange(("payment", 7)), order.waiting
    ([('payment', 7), 'play after it'], False)
    """

    __slots__ = ("_awaiting", "_early", "_held", "_payment_position")

    def __init__(self, payment_position: Callable[[object], int | None]) -> None:
        self._awaiting: int | None = None
        self._held: deque = deque()
        self._early: dict[int, object] = {}
        self._payment_position = payment_position

    @property
    def waiting(self) -> bool:
        return self._awaiting is not None or bool(self._held) or bool(self._early)

    def arrange(self, item: object) -> list:
        if type(item) is PaymentPending:
            if self._awaiting is not None:
                self._held.append(item)
                return []
            answer = self._early.pop(item.position, None)
            if answer is None:
                self._awaiting = item.position
                return []
            return [answer]
        position = item.position if type(item) is PaymentUnscored else self._payment_position(item)
        if position is not None:
            if position != self._awaiting:
                self._early[position] = item  # came before its placeholder
                return []
            self._awaiting = None
            released = [item]
            while self._held and self._awaiting is None:
                released.extend(self.arrange(self._held.popleft()))
            return released
        if self._awaiting is not None:
            self._held.append(item)
            return []
        return [item]

