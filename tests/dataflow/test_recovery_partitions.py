"""Recovery partitions with the engine's large pages: Bytewax writes into them and resumes from them."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import timedelta

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig
from bytewax.testing import TestingSink, TestingSource, run_main

from dataflows.live import recovery_config
from dataflows.recovery_partitions import (
    COMPLETE,
    PAGE_SIZE,
    STAGING,
    create_partitions,
    main,
    needs_partitions,
)


def _pages_and_parts(path) -> tuple[int, list]:
    with closing(sqlite3.connect(path)) as db:
        return db.execute("PRAGMA page_size").fetchone()[0], db.execute(
            "select part_index, part_count from parts").fetchall()


def _files(directory) -> list[str]:
    """Everything in `directory`, SQLite's side files of open connections left out."""
    return sorted(p.name for p in directory.iterdir() if not p.name.endswith(("-wal", "-shm")))


def test_partitions_are_made_with_large_pages_and_refused_twice(tmp_path):
    create_partitions(tmp_path, 2)
    assert _pages_and_parts(tmp_path / "part-0.sqlite3") == (PAGE_SIZE, [(0, 2)])
    assert _pages_and_parts(tmp_path / "part-1.sqlite3") == (PAGE_SIZE, [(1, 2)])
    with pytest.raises(FileExistsError):
        create_partitions(tmp_path, 2)
    assert main([str(tmp_path / "x")]) == 2  # usage


def test_the_engine_creates_them_and_bytewax_resumes_its_state_from_them(tmp_path):
    config = recovery_config(tmp_path / "recovery", partitions=1)
    assert _pages_and_parts(tmp_path / "recovery" / "part-0.sqlite3")[0] == PAGE_SIZE

    def run(step: str, values: list[int]) -> list:
        flow = Dataflow("partitions")
        keyed = op.key_on("key", op.input(step, flow, TestingSource(values)), lambda _v: "k")

        def add(state, value):  # a 30 KB state: its snapshot spans several pages
            total = (state[0] if state else 0) + value
            return (total, bytes(30_000)), total

        out: list = []
        op.output("out", op.stateful_map("total", keyed, add), TestingSink(out))
        run_main(flow, epoch_interval=timedelta(0), recovery_config=config)
        return out

    assert run("first", [7, 5]) == [("k", 7), ("k", 12)]
    assert run("second", [1]) == [("k", 13)]  # resumed from the snapshot, not from zero
    assert isinstance(config, RecoveryConfig)
    assert _pages_and_parts(tmp_path / "recovery" / "part-0.sqlite3")[0] == PAGE_SIZE


def test_a_creation_cut_short_is_made_again_or_finished_never_left_without_tables(tmp_path):
    directory = tmp_path / "recovery"
    # killed before every partition was initialised: the staged files are dropped, made again
    (directory / STAGING).mkdir(parents=True)
    (directory / STAGING / "part-0.sqlite3").write_bytes(b"")
    assert needs_partitions(directory)
    recovery_config(directory, partitions=3)
    assert _files(directory) == [f"part-{i}.sqlite3" for i in range(3)]
    assert [_pages_and_parts(directory / f"part-{i}.sqlite3")[1] for i in range(3)] == [[(i, 3)] for i in range(3)]

    # killed while moving a complete set in: the rest is moved, whatever the count asked now
    (directory / STAGING).mkdir()
    for path in sorted(directory.glob("part-*")):
        path.replace(directory / STAGING / path.name)
    (directory / STAGING / COMPLETE).touch()
    (directory / STAGING / "part-0.sqlite3").replace(directory / "part-0.sqlite3")  # one moved already
    assert needs_partitions(directory)
    recovery_config(directory, partitions=8)
    assert not needs_partitions(directory)
    assert _files(directory) == [f"part-{i}.sqlite3" for i in range(3)]
    assert [_pages_and_parts(directory / f"part-{i}.sqlite3")[1] for i in range(3)] == [[(i, 3)] for i in range(3)]
