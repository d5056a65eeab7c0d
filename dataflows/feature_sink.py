"""The Bytewax sink that writes feature rows to an online store, one batch per call.

Each worker builds its own store (its own Redis connection) from a factory; a
micro-batch becomes one pipelined round trip in which each entity is written once,
at its highest version. A write that still fails after the store's bounded retries
raises, stopping the flow before its snapshot: on restart the inputs are replayed
and the version-guarded upserts make the replay harmless.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from online_store.feature_row import FeatureRow
from online_store.store import FeatureStore, WriteResult

WriteObserver = Callable[[WriteResult, float], None]


class _StorePartition(StatelessSinkPartition[FeatureRow]):
    def __init__(self, store: FeatureStore, observe: WriteObserver | None) -> None:
        self._store = store
        self._observe = observe

    def write_batch(self, items: list[FeatureRow]) -> None:
        started = datetime.now(UTC)
        result = self._store.write(items, written_at=started)
        if self._observe is not None:
            self._observe(result, (datetime.now(UTC) - started).total_seconds())


class FeatureStoreSink(DynamicSink[FeatureRow]):
    def __init__(self, store_factory: Callable[[], FeatureStore], observe: WriteObserver | None = None):
        self._factory = store_factory
        self._observe = observe

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _StorePartition:
        return _StorePartition(self._factory(), self._observe)
