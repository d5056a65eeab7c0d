"""Bytewax recovery partitions, created with 16 KiB SQLite pages.

Bytewax writes a snapshot of every entity touched in an epoch into its partition, and a
day-old jukebox's snapshot is ~19 KiB: with SQLite's default 4 KiB pages each one is a
chain of overflow pages. Created with 16 KiB pages instead, a partition takes 63-67 µs
to write such a snapshot where the default took 98-99 µs, and ~17 µs either way for a
1 KiB one (`python -m bench.recovery`, 2026-12-03). A page size is fixed when the file is
first written and cannot change once Bytewax has put it in WAL mode, so the files are
made here, empty with the page size set, and `init_db_dir` then adds Bytewax's tables.

    python -m dataflows.recovery_partitions <directory> <count>

Each process also notes the cluster's shape beside its partitions (`SHAPE_FILE`) and
refuses to resume them in a different multi-process shape: a Bytewax 0.21.1 cluster
grown from 1 to 2 or from 2 to 3 processes crashed at start in every attempt
(2026-12-03, "Send thread panic" right after loading the snapshots; a minimal Bytewax
flow rescaled fine, so the cause is in how our flow meets Bytewax, not found yet), while
one process changing its worker count and an unchanged cluster resume.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path

from bytewax.recovery import init_db_dir

PAGE_SIZE = 16_384
SHAPE_FILE = "cluster-shape.json"


class ShapeChanged(RuntimeError):
    """Recovery state written by a cluster of another shape, which Bytewax cannot resume."""


def claim_cluster_shape(directory: Path, processes: int, workers_per_process: int) -> None:
    """Note the cluster's shape in `directory`, unless it holds the state of a cluster of
    another shape that this one cannot resume (either of them with several processes).

    >>> import tempfile
    >>> directory = Path(tempfile.mkdtemp())
    >>> create_partitions(directory, 2)
    >>> claim_cluster_shape(directory, 1, 1)
    >>> claim_cluster_shape(directory, 1, 2)  # one process: its workers may change
    >>> claim_cluster_shape(directory, 2, 2)
    Traceback (most recent call last):
    ...
    dataflows.recovery_partitions.ShapeChanged: this recovery state was written by 1 process(es) x 2 worker(s); resuming it as 2 x 2 crashes the cluster at start (Bytewax 0.21.1): keep the shape, or reset the recovery state (docs/operations.md, "Changing the number of processes")
    """
    path = directory / SHAPE_FILE
    shape = {"processes": processes, "workers_per_process": workers_per_process}
    if path.exists():
        before = json.loads(path.read_text())
        if before != shape and max(before["processes"], processes) > 1:
            raise ShapeChanged(
                f"this recovery state was written by {before['processes']} process(es) x "
                f"{before['workers_per_process']} worker(s); resuming it as {processes} x {workers_per_process} "
                "crashes the cluster at start (Bytewax 0.21.1): keep the shape, or reset the recovery state "
                '(docs/operations.md, "Changing the number of processes")')
    if not any(directory.glob("part-*.sqlite3")):
        return  # a process holding no partition holds no state either
    temporary = path.with_suffix(f".{os.getpid()}.tmp")  # processes sharing one directory
    temporary.write_text(json.dumps(shape))
    temporary.replace(path)


def create_partitions(directory: Path, count: int, page_size: int = PAGE_SIZE) -> None:
    """`part-0.sqlite3` ... `part-<count - 1>.sqlite3` in `directory` (which must exist and
    hold none of them), initialised by Bytewax."""
    if count < 1:
        raise ValueError(f"a recovery directory needs at least one partition, not {count}")
    existing = sorted(p.name for p in directory.glob("part-*.sqlite3"))
    if existing:
        raise FileExistsError(f"{directory} already holds {existing}")
    for index in range(count):
        db = sqlite3.connect(directory / f"part-{index}.sqlite3")
        try:
            db.execute(f"PRAGMA page_size = {int(page_size)}")
            db.execute("VACUUM")  # writes the header: an untouched file would forget the size
        finally:
            db.close()
    init_db_dir(directory, count)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m dataflows.recovery_partitions <directory> <count>", file=sys.stderr)
        return 2
    create_partitions(Path(argv[0]), int(argv[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
