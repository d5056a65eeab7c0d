"""What Bytewax recovery costs the engine: per snapshot, by size, and for the fleet by epoch.

When an epoch closes, Bytewax 0.21 takes a snapshot of every key touched in it and writes
it into the worker's SQLite recovery partition, on the worker's own thread; superseded
snapshots are kept for the backup interval (`-b`, `RECOVERY_BACKUP_INTERVAL_S`). A
jukebox's device snapshot grows with the windows' traffic (bench.state_memory), and at
the fleet's average rate (1.2 events a minute per jukebox) a 5-second epoch sees each
jukebox at most once: about one device snapshot per event.

1. sizes: the pickled device states of sample jukeboxes after 10 minutes, 1 hour and a
   day at 1.2 events a minute (the engine's own update logic), and what pickling them
   costs (`DeviceLogic.snapshot`);
2. per snapshot: a flow with one stateful step whose snapshots are those bytes, `--keys`
   keys each touched once per epoch for `--epochs` epochs, run without recovery, with
   recovery dropping superseded snapshots at once (backup interval 0; in the engine's
   64 KiB-page partitions, dataflows/recovery_partitions.py, and in Bytewax's default
   4 KiB ones), and with recovery keeping them (a backup interval longer than the run);
   the worker time per snapshot over the run without recovery, and the partition's bytes
   on disk;
3. fleet: for epochs of 5 s to 5 min, the snapshots per event at that rate
   ((1 - e^-x) / x, x = events per jukebox per epoch), and what the measured costs of
   the day-old state make of them at 20,000 events/s: worker CPU (cores), bytes written,
   and the disk a one-hour backup interval holds.

    python -m bench.recovery [--keys 10000] [--epochs 5] [--jukeboxes 40]
"""

from __future__ import annotations

import argparse
import math
import pickle
import random
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.recovery import RecoveryConfig
from bytewax.run import cli_main
from rich.console import Console
from rich.table import Table

from bench.state_memory import device_states, jukebox_events
from dataflows.recovery_partitions import PAGE_SIZE, create_partitions

FLEET_RATE = 20_000  # events/s at peak
PER_JUKEBOX_S = 1.2 / 60  # the fleet's average events per jukebox per second
AGES = (("10 min", 10), ("1 h", 60), ("24 h", 1440))
EPOCHS_S = (5, 30, 60, 300)
BACKUP_S = 3600  # deploy/k8s/configmap.yaml
console = Console()


class _Batches(StatelessSourcePartition[tuple[str, bytes]]):
    """`epochs` batches of every key once, key i with `snapshots[i % n]`: with a zero epoch
    interval, one batch an epoch."""

    def __init__(self, snapshots: list[bytes], keys: int, epochs: int) -> None:
        self._batch = [(str(i), snapshots[i % len(snapshots)]) for i in range(keys)]
        self._left = epochs

    def next_batch(self) -> list[tuple[str, bytes]]:
        if not self._left:
            raise StopIteration
        self._left -= 1
        return list(self._batch)


class _Source(DynamicSource[tuple[str, bytes]]):
    def __init__(self, snapshots: list[bytes], keys: int, epochs: int) -> None:
        self._snapshots, self._keys, self._epochs = snapshots, keys, epochs

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Batches:
        return _Batches(self._snapshots, self._keys, self._epochs)


class _Discard(StatelessSinkPartition[object]):
    def write_batch(self, items: list[object]) -> None:
        pass


class DiscardSink(DynamicSink[object]):
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Discard:
        return _Discard()


class HeldSnapshot(op.StatefulBatchLogic):
    """Emits nothing; its snapshot is the last value it was sent (a jukebox's snapshot)."""

    def __init__(self, _resume: object) -> None:
        self.held: object = None

    def on_batch(self, values: list) -> tuple[list, bool]:
        self.held = values[-1]
        return [], op.StatefulBatchLogic.RETAIN

    def snapshot(self) -> object:
        return self.held


def run_seconds(snapshots: list[bytes], keys: int, epochs: int, recovery_dir: Path | None,
                backup: timedelta, page_size: int = PAGE_SIZE) -> float:
    """Wall seconds of `epochs` epochs touching `keys` keys, key i snapshotting
    `snapshots[i % len(snapshots)]`, into a partition of `page_size` pages (the engine's)."""
    flow = Dataflow("recovery_bench")
    keyed = op.input("in", flow, _Source(snapshots, keys, epochs))
    op.output("out", op.stateful_batch("state", keyed, HeldSnapshot), DiscardSink())
    config = None
    if recovery_dir is not None:
        recovery_dir.mkdir()
        create_partitions(recovery_dir, 1, page_size)
        config = RecoveryConfig(str(recovery_dir), backup_interval=backup)
    started = time.perf_counter()
    cli_main(flow, epoch_interval=timedelta(0), recovery_config=config)
    return time.perf_counter() - started


def day_states(minutes: int, jukeboxes: int) -> list[bytes]:
    """The pickled device states of `jukeboxes` jukeboxes after `minutes` at the fleet's rate."""
    rnd = random.Random(minutes)
    events = [e for j in range(jukeboxes) for e in jukebox_events(f"jb-{j}", PER_JUKEBOX_S * 60, minutes, rnd)]
    states, _held = device_states(events)
    return [pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL) for state in states.values()]


def pickle_us(states: list[bytes]) -> float:
    """Best of 5: microseconds to pickle one of these states (as `DeviceLogic.snapshot` does)."""
    loaded = [pickle.loads(raw) for raw in states]
    best = math.inf
    for _ in range(5):
        started = time.perf_counter()
        for state in loaded:
            pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        best = min(best, time.perf_counter() - started)
    return best / len(loaded) * 1e6


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def snapshots_per_event(epoch_s: float) -> float:
    """Device snapshots per event at the fleet's rate: a jukebox touched in an epoch is
    written once, however many of its events the epoch holds (Poisson arrivals)."""
    x = PER_JUKEBOX_S * epoch_s
    return (1 - math.exp(-x)) / x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=10_000, help="keys touched every epoch")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--jukeboxes", type=int, default=40, help="sample of device states per age")
    args = parser.parse_args()
    snapshots = args.keys * args.epochs
    per_snapshot = Table(title=f"Bytewax recovery per snapshot ({args.keys:,} keys x {args.epochs} epochs, "
                               "1 worker; worker time over the same run without recovery)")
    for column in ("device state after", "snapshot KiB", "pickle µs", "write µs (backup 0)",
                   "write µs, Bytewax's 4 KiB pages", "write µs (kept)", "disk KiB per snapshot kept"):
        per_snapshot.add_column(column, justify="right")
    measured: dict[str, tuple[float, float, float, float, float]] = {}
    for label, minutes in AGES:
        states = day_states(minutes, args.jukeboxes)
        size = sum(map(len, states)) / len(states)
        bare = run_seconds(states, args.keys, args.epochs, None, timedelta(0))
        with tempfile.TemporaryDirectory() as tmp:
            dropped = run_seconds(states, args.keys, args.epochs, Path(tmp) / "r", timedelta(0))
        with tempfile.TemporaryDirectory() as tmp:
            small_pages = run_seconds(states, args.keys, args.epochs, Path(tmp) / "r", timedelta(0), 4096)
        with tempfile.TemporaryDirectory() as tmp:
            kept = run_seconds(states, args.keys, args.epochs, Path(tmp) / "r", timedelta(days=1))
            disk = dir_bytes(Path(tmp) / "r")
        measured[label] = (size, pickle_us(states), (dropped - bare) / snapshots * 1e6,
                           (kept - bare) / snapshots * 1e6, disk / snapshots)
        size, pickled, write0, write_kept, disk_each = measured[label]
        per_snapshot.add_row(label, f"{size / 1024:,.1f}", f"{pickled:,.0f}", f"{write0:,.0f}",
                             f"{(small_pages - bare) / snapshots * 1e6:,.0f}", f"{write_kept:,.0f}",
                             f"{disk_each / 1024:,.1f}")
        console.print(f"  {label}: {size / 1024:,.1f} KiB, write {write0:,.0f} / {write_kept:,.0f} µs")
    console.print(per_snapshot)

    size, pickled, write0, write_kept, disk_each = measured[AGES[-1][0]]
    fleet = Table(title=f"the fleet at {FLEET_RATE:,} events/s, day-old device states (device step only; "
                        f"measured costs above; backup interval {BACKUP_S} s)")
    for column in ("epoch", "snapshots per event", "µs per event (backup 0 / kept)",
                   "cores (backup 0 / kept)", "MB/s written to disk", "disk held for the backup interval"):
        fleet.add_column(column, justify="right")
    for epoch_s in EPOCHS_S:
        per_event = snapshots_per_event(epoch_s)
        us0, us_kept = per_event * (pickled + write0), per_event * (pickled + write_kept)
        written = per_event * FLEET_RATE * disk_each
        fleet.add_row(f"{epoch_s} s", f"{per_event:.2f}", f"{us0:,.0f} / {us_kept:,.0f}",
                      f"{us0 * FLEET_RATE / 1e6:,.1f} / {us_kept * FLEET_RATE / 1e6:,.1f}",
                      f"{written / 1e6:,.0f}",
                      f"{per_event * FLEET_RATE * BACKUP_S * disk_each / 1e9:,.0f} GB")
    console.print(fleet)


if __name__ == "__main__":
    main()
