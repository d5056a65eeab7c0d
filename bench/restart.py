"""What a restart costs Bytewax per held jukebox, by how many it holds and in how many
recovery partitions.

Before a restarted process reads input, Bytewax 0.21.1 loads every snapshot of its
partitions and builds each key's logic; at the first epoch's end it writes every loaded
key's snapshot again (it wakes them all). Its loader pages through a partition 1,000
snapshots at a time with one query, which SQLite runs by joining every snapshot after the
page's start, blobs included, and sorting them to keep the first 1,000
(`EXPLAIN QUERY PLAN`: `USE TEMP B-TREE FOR ORDER BY`): each page reads the rest of the
partition, so that part grows with the square of the snapshots a partition holds, and
more partitions divide it.

For each count, a recovery directory is written holding that many day-old device
snapshots (the engine's snapshot form, built from a day at the fleet's 1.2 events a
minute), in 1 and in `--partitions` partitions (16 KiB pages, as `jukebox run` makes
them); then a flow with the live flow's name and device step resumes it with the
engine's `DeviceLogic`, runs its first epoch, and stops. Printed: seconds, µs per key,
and µs per key against the smallest count's (1.00x: the cost grows linearly).

    python -m bench.restart [--keys 10000 20000 40000] [--partitions 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig
from bytewax.run import cli_main
from bytewax.testing import TestingSource
from rich.console import Console
from rich.table import Table

from bench.recovery import DiscardSink
from bench.steady_flow import day_old_snapshots, write_device_states
from dataflows.flow import DeviceLogic

console = Console()


def resume_seconds(recovery_dir: Path) -> tuple[float, int]:
    """Seconds to resume every held device state and close the first epoch; keys built."""
    built = []

    def build(resume: object) -> DeviceLogic:
        built.append(1)
        return DeviceLogic(resume, scoring=True)

    flow = Dataflow("jukebox")
    nothing = op.input("warm_up", flow, TestingSource([], batch_size=5000))
    op.output("out", op.stateful_batch("device_features", nothing, build), DiscardSink())
    started = time.perf_counter()
    cli_main(flow, epoch_interval=timedelta(0), recovery_config=RecoveryConfig(str(recovery_dir)))
    return time.perf_counter() - started, len(built)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, nargs="+", default=[10_000, 20_000, 40_000])
    parser.add_argument("--partitions", type=int, default=8, help="compared with one partition")
    parser.add_argument("--samples", type=int, default=20, help="day-old states built (then copied)")
    args = parser.parse_args()
    ending = datetime.now(UTC).replace(microsecond=0)
    console.print(f"building {args.samples} day-old device states ...")
    snapshots = day_old_snapshots(max(args.keys), args.samples, ending)
    size = sum(len(s[2]) for _key, s in snapshots) / len(snapshots)
    table = Table(title=f"Bytewax 0.21.1 resuming day-old device snapshots ({size / 1024:.1f} KiB), "
                        "1 worker: load, build, first epoch")
    for column in ("keys held", "partitions", "seconds", "µs per key", "µs per key / smallest count's"):
        table.add_column(column, justify="right")
    first: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for count in sorted(args.keys):
            for partitions in sorted({1, args.partitions}):
                directory = Path(tmp) / f"{count}-{partitions}"
                console.print(f"writing {count:,} snapshots into {partitions} partition(s), then resuming ...")
                write_device_states(directory, snapshots[:count], partitions)
                seconds, built = resume_seconds(directory)
                if built != count:
                    raise SystemExit(f"resumed {built} keys of {count}")
                per_key = seconds / count * 1e6
                first.setdefault(partitions, per_key)
                table.add_row(f"{count:,}", str(partitions), f"{seconds:.1f}", f"{per_key:,.0f}",
                              f"{per_key / first[partitions]:.2f}x")
    console.print(table)


if __name__ == "__main__":
    main()
