"""What a restart costs Bytewax per held jukebox, by how many it holds and in how many
recovery partitions.

Before a restarted process reads input, Bytewax 0.21.1 loads every snapshot of its
partitions and builds each key's logic. Its loader pages through a partition 1,000
snapshots at a time with one query, which SQLite runs by joining every snapshot after the
page's start, blobs included, and sorting them to keep the first 1,000
(`EXPLAIN QUERY PLAN`: `USE TEMP B-TREE FOR ORDER BY`): each page reads the rest of the
partition, so that part grows with the square of the snapshots a partition holds, and
smaller partitions keep it small (`jukebox run` makes
`JUKEBOX_FLOW_RECOVERY_PARTITIONS_PER_PROCESS`, 8, a process).

For each count, a recovery directory is written holding that many day-old device
snapshots (the engine's snapshot form, built from a day at the fleet's 1.2 events a
minute), in 1 and in `--partitions` partitions (64 KiB pages, as `jukebox run` makes
them); then a flow with the live flow's name and device step resumes it with the
engine's `DeviceLogic`, and is timed until its device step has answered its first input.
The source stays open until then, as a live one does: a Bytewax run whose input ends
writes every key's snapshot again (`on_eof` wakes them all), which a live flow never
does, and which a bench timing an ended run counted as part of the restart before
2026-12-04, 18:00 UTC. Printed: seconds, µs per key, and µs per key against the smallest
count's (1.00x: the cost grows linearly).

    python -m bench.restart [--keys 10000 20000 40000] [--partitions 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.recovery import RecoveryConfig
from bytewax.run import cli_main
from rich.console import Console
from rich.table import Table

from bench.steady_flow import ENGINE_PARTITIONS, day_old_snapshots, write_device_states
from dataflows.flow import DeviceLogic
from dataflows.idle_state import DeviceProbe

console = Console()


class _ProbeUntilAnswered(StatelessSourcePartition):
    """Sends one jukebox's release probe every 20 ms until the device step has answered
    one (or 10 minutes have passed), then ends: open until then, so the run's end is not
    part of the timing."""

    def __init__(self, answered: list) -> None:
        self.answered = answered
        self.deadline = time.monotonic() + 600

    def next_batch(self) -> list:
        if self.answered or time.monotonic() > self.deadline:
            raise StopIteration
        return [("jb-0", DeviceProbe("jb-0"))]

    def next_awake(self) -> datetime:
        return datetime.now(UTC) + timedelta(milliseconds=20)


class _ProbeSource(DynamicSource):
    def __init__(self, answered: list) -> None:
        self.answered = answered

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ProbeUntilAnswered:
        return _ProbeUntilAnswered(self.answered)


class _AnswerPartition(StatelessSinkPartition):
    def __init__(self, on_answer: Callable[[], None]) -> None:
        self.on_answer = on_answer

    def write_batch(self, items: list) -> None:
        if items:
            self.on_answer()


class _AnswerSink(DynamicSink):
    def __init__(self, on_answer: Callable[[], None]) -> None:
        self.on_answer = on_answer

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _AnswerPartition:
        return _AnswerPartition(self.on_answer)


def resume_seconds(recovery_dir: Path) -> tuple[float, int]:
    """Seconds from the run's start until the device step, its held states resumed, has
    answered its first input; and how many keys it had built by then."""
    built: list[int] = []
    answered: list[tuple[float, int]] = []

    def build(resume: object) -> DeviceLogic:
        built.append(1)
        return DeviceLogic(resume, scoring=True)  # scoring on: a probe goes on downstream

    def on_answer() -> None:
        if not answered:
            answered.append((time.perf_counter(), len(built)))

    flow = Dataflow("jukebox")
    probes = op.input("warm_up", flow, _ProbeSource(answered))
    op.output("out", op.stateful_batch("device_features", probes, build), _AnswerSink(on_answer))
    started = time.perf_counter()
    cli_main(flow, epoch_interval=timedelta(seconds=5), recovery_config=RecoveryConfig(str(recovery_dir)))
    if not answered:
        raise SystemExit("the device step answered no input within 10 minutes")
    at, keys = answered[0]
    return at - started, keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, nargs="+", default=[10_000, 20_000, 40_000])
    parser.add_argument("--partitions", type=int, default=ENGINE_PARTITIONS,
                        help="compared with one partition (default: as many as `jukebox run` makes a process)")
    parser.add_argument("--samples", type=int, default=20, help="day-old states built (then copied)")
    args = parser.parse_args()
    ending = datetime.now(UTC).replace(microsecond=0)
    console.print(f"building {args.samples} day-old device states ...")
    snapshots = day_old_snapshots(max(args.keys), args.samples, ending)
    size = sum(len(s[2]) for _key, s in snapshots) / len(snapshots)
    table = Table(title=f"Bytewax 0.21.1 resuming day-old device snapshots ({size / 1024:.1f} KiB), "
                        "1 worker: load and build, until the first input is answered")
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
