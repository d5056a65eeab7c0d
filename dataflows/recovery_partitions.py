"""Bytewax recovery partitions, created with 64 KiB SQLite pages (SQLite's largest).

Bytewax writes a snapshot of every entity touched in an epoch into its partition, and a
day-old jukebox's snapshot is ~21 KiB: with SQLite's default 4 KiB pages each one is a
chain of overflow pages. Created with 16 KiB pages instead, a partition took 63-67 µs
to write such a snapshot where the default took 98-99 µs, and ~17 µs either way for a
1 KiB one (`python -m bench.recovery`, 2026-12-03). 64 KiB pages (2026-12-04, alternating
runs) write it in 58-81 µs against 74-111 with 16 KiB when superseded snapshots are kept
for a backup interval (600 s, as the Kubernetes manifests run), and the same (73-85 µs) when
they are dropped at once (`jukebox run`'s default); a 1 KiB snapshot and a restart's load
cost the same, and the disk held grows by ~3 %. Pages of 32 KiB were slower than both.
A page size is fixed when the file is
first written and cannot change once Bytewax has put it in WAL mode, so the files are
made here, empty with the page size set, and `init_db_dir` then adds Bytewax's tables.
They are made in a staging directory inside the recovery directory and moved in only once
all are initialised: a process killed midway used to leave partitions without Bytewax's
tables, which every later start then took as made and failed on.

    python -m dataflows.recovery_partitions <directory> <count>

Each process also notes the cluster's shape beside its partitions (`SHAPE_FILE`): the
input source's state is kept per process, under a name holding the process count
(kafka_source.py), and Bytewax 0.21.1 crashed every process of a cluster that resumed
state of a source part no process listed ("Send thread panic", 2026-12-03). A cluster of
a new size lists the parts of the old one, and retires them.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
from pathlib import Path

from bytewax.recovery import init_db_dir

PAGE_SIZE = 65_536
SHAPE_FILE = "cluster-shape.json"
STAGING = ".partitions-staging"  # where new partitions are made (create_partitions)
COMPLETE = "complete"  # in STAGING: every partition there is initialised


def recorded_processes(directory: Path | None) -> int | None:
    """The number of processes of the cluster whose recovery state `directory` holds, as
    `record_cluster_shape` noted it (None: not noted, or no directory)."""
    path = None if directory is None else directory / SHAPE_FILE
    if path is None or not path.exists():
        return None
    return int(json.loads(path.read_text())["processes"])


def holds_partitions(directory: Path | None) -> bool:
    return directory is not None and any(directory.glob("part-*.sqlite3"))


def holds_snapshots(directory: Path | None) -> bool:
    """Whether a recovery partition in `directory` holds any snapshot."""
    for path in [] if directory is None else sorted(directory.glob("part-*.sqlite3")):
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            if db.execute("SELECT 1 FROM snaps LIMIT 1").fetchone() is not None:
                return True
        except sqlite3.OperationalError:
            continue  # not initialised by Bytewax yet
        finally:
            db.close()
    return False


def record_cluster_shape(directory: Path | None, processes: int, workers_per_process: int) -> None:
    """Note the shape of the cluster about to write the recovery state in `directory`.

    >>> import tempfile
    >>> directory = Path(tempfile.mkdtemp())
    >>> create_partitions(directory, 2)
    >>> holds_snapshots(directory)  # new partitions hold no snapshot
    False
    >>> record_cluster_shape(directory, 2, 1)
    >>> recorded_processes(directory)
    2
    """
    if not holds_partitions(directory):
        return  # a process holding no partition holds no state either
    path = directory / SHAPE_FILE
    temporary = path.with_suffix(f".{os.getpid()}.tmp")  # processes sharing one directory
    temporary.write_text(json.dumps({"processes": processes, "workers_per_process": workers_per_process}))
    temporary.replace(path)


def needs_partitions(directory: Path) -> bool:
    """Whether `create_partitions` has work to do in `directory`: it holds no partition,
    or a creation was cut short (its staging directory is still there)."""
    return not holds_partitions(directory) or (directory / STAGING).exists()


def finish_partitions(directory: Path) -> bool:
    """Finish a creation cut short after its mark (True), or drop one cut short before it."""
    staging = directory / STAGING
    if (staging / COMPLETE).exists():
        _move_in(staging, directory)
        return True
    if staging.exists():
        shutil.rmtree(staging)
    return False


def create_partitions(directory: Path, count: int, page_size: int = PAGE_SIZE,
                      kept: range | None = None) -> None:
    """`part-0.sqlite3` ... `part-<count - 1>.sqlite3` in `directory` (which must exist and
    hold none of them), initialised by Bytewax, or the rest of a creation cut short.
    `kept`: the indices `directory` keeps (a Kubernetes pod's share of the cluster's
    partitions; all by default); all `count` are made, so each knows the whole count.

    They are made in `STAGING`, marked complete, then moved in. A creation cut short
    before its mark is made again; one cut short after it is finished (its set, whatever
    `count` says now), so `directory` never holds partitions without Bytewax's tables.

    >>> import tempfile
    >>> directory = Path(tempfile.mkdtemp())
    >>> (directory / STAGING).mkdir(); (directory / STAGING / "part-0.sqlite3").touch()
    >>> needs_partitions(directory)  # a creation killed before it was complete
    True
    >>> create_partitions(directory, 2)
    >>> sorted(p.name for p in directory.iterdir()), needs_partitions(directory)
    (['part-0.sqlite3', 'part-1.sqlite3'], False)
    """
    if count < 1:
        raise ValueError(f"a recovery directory needs at least one partition, not {count}")
    if finish_partitions(directory):
        return
    staging = directory / STAGING
    existing = sorted(p.name for p in directory.glob("part-*.sqlite3"))
    if existing:
        raise FileExistsError(f"{directory} already holds {existing}")
    staging.mkdir(mode=0o700)
    for index in range(count):
        db = sqlite3.connect(staging / f"part-{index}.sqlite3")
        try:
            db.execute(f"PRAGMA page_size = {int(page_size)}")
            db.execute("VACUUM")  # writes the header: an untouched file would forget the size
        finally:
            db.close()
    init_db_dir(staging, count)
    if kept is not None:
        for index in set(range(count)) - set(kept):
            (staging / f"part-{index}.sqlite3").unlink()
    _durable(staging)
    (staging / COMPLETE).touch()
    _durable(staging)
    _move_in(staging, directory)


def _move_in(staging: Path, directory: Path) -> None:
    """Move the staged partitions (and any SQLite side files) into `directory`, then drop
    the staging directory: the mark goes last, so a move cut short is finished later."""
    for path in sorted(staging.glob("part-*")):
        os.replace(path, directory / path.name)
    _durable(directory)
    (staging / COMPLETE).unlink()
    staging.rmdir()


def _durable(directory: Path) -> None:
    """fsync a directory, so the files made or moved in it survive a power cut."""
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


USAGE = """usage: python -m dataflows.recovery_partitions <directory> <count> [<first> <last>]
       python -m dataflows.recovery_partitions --finish <directory>"""


def main(argv: list[str]) -> int:
    """Make `count` partitions in `directory`, keeping those from `first` to `last` (a pod's
    share); or, with `--finish`, finish or drop a creation cut short (the init container)."""
    if len(argv) == 2 and argv[0] == "--finish":
        finish_partitions(Path(argv[1]))
        return 0
    if len(argv) not in (2, 4) or not all(arg.isdigit() for arg in argv[1:]):
        print(USAGE, file=sys.stderr)
        return 2
    count, *share = map(int, argv[1:])
    create_partitions(Path(argv[0]), count, kept=range(share[0], share[1] + 1) if share else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
