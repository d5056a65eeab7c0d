"""Replay throughput on this machine, in events/s, and where the time goes.

A seeded simulator history is written as JSON Lines (as `jukebox simulate --jsonl` does)
and replayed from the file, in-process, through the live flow factory, like `jukebox
replay` (in-memory store, outputs collected). Each configuration runs once:

1. history only: read, parse and merge the file (the ceiling of the input path);
2. history + decoding and admission (`route_record`), no flow;
3. the flow with no feature work: as 4 with each jukebox's update a no-op, so the engine,
   the history and decoding are all it does (the floor under every configuration);
4. features only, 1 worker;
5. features + fraud rules + River anomaly detector (no model), 1 worker;
6. as 5 + an ONNX fraud model (a 100-tree forest), 1 worker;
7. as 5 with 2 worker threads (`--workers`).

Then configuration 5 runs once more under cProfile and the time is attributed to the
flow's parts. Target: 100,000 events/s (5x the fleet's 20,000 events/s peak). A replay
runs in one process (a 2-process cluster gained 1.15x and was not byte-identical,
docs/operations.md), so the floor says how much of the target the engine leaves for the
features, the fraud steps and the recommender.

    python -m bench.replay [--jukeboxes 5000] [--hours 2] [--workers 2] [--no-profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

import dataflows.flow
from dataflows.flow import FlowConfig
from dataflows.garbage_collector import tune_garbage_collector
from dataflows.record import file_history, merged_history
from dataflows.records import contracts_by_topic, route_record
from dataflows.replay import replay_fraud_config
from dataflows.replay_run import ReplayRun, run_replay
from dataflows.simulate import record_line
from models.decision import DecisionPolicy
from models.fraud_features import FRAUD_MODEL_FEATURES
from models.fraud_scorer import FraudScorer, loaded_model_from_bytes
from models.rules import RulePolicy
from online_store.device import DeviceState
from schemas.topics import Topics
from simulator.simulation import Simulation

console = Console()
TARGET = 100_000
CLOCK = datetime(2026, 12, 1, tzinfo=UTC)

# where a profiled function's own time is attributed (first match of its file path)
PARTS = (
    ("decode + admission (route)", ("schemas/", "dataflows/records.py", "pydantic", "orjson")),
    ("device features", ("online_store/device.py", "online_store/windows.py", "online_store/text_windows.py",
                         "online_store/geo.py", "online_store/dedup.py", "online_store/payments.py",
                         "online_store/venues.py")),
    ("customer features", ("online_store/customer.py",)),
    ("fraud rules + decide", ("models/rules.py", "models/decision.py", "dataflows/fraud_steps.py")),
    ("anomaly detector (River)", ("models/anomaly.py", "river/")),
    ("store encode + write", ("online_store/store", "online_store/feature_row.py")),
    ("history file (read, parse, merge)", ("dataflows/record.py", "base64", "heapq")),
    ("flow glue (dataflows/flow.py, replay)", ("dataflows/flow.py", "dataflows/replay_run.py")),
    ("pickle (state snapshots)", ("pickle", "copyreg")),
)


def write_history(path: Path, jukeboxes: int, hours: float) -> int:
    sim = Simulation(jukeboxes=jukeboxes, seed=1, duration=timedelta(hours=hours), fraud_rate=0.05)
    count = 0
    with path.open("wb") as out:
        for record in sim.records():
            out.write(record_line(record))
            count += record.topic_attr != "labels"
    return count


def forest_scorer() -> FraudScorer:
    from sklearn.ensemble import RandomForestClassifier

    from models.onnx_export import onnx_model_bytes

    rnd = np.random.default_rng(0)
    X = rnd.random((4000, len(FRAUD_MODEL_FEATURES)), dtype=np.float32) * 20
    y = (X[:, 0] + X[:, 3] > 22).astype(int)
    forest = RandomForestClassifier(n_estimators=100, max_depth=8, random_state=0).fit(X, y)
    model = loaded_model_from_bytes(onnx_model_bytes(forest, FRAUD_MODEL_FEATURES), version="bench")
    return FraudScorer.from_model(model)


def replay_once(path: Path, config: FlowConfig, workers: int = 1) -> ReplayRun:
    return run_replay(lambda: merged_history([file_history(path, config.topics)]), config,
                      workers=workers, written_at=CLOCK)


def routed_per_s(path: Path, config: FlowConfig) -> float:
    """Events/s of reading the history and routing each record (decode with limits, then
    admission), as the flow's first step does, without the flow."""
    contracts = contracts_by_topic(config.topics)
    started = time.perf_counter()
    count = 0
    for raw in merged_history([file_history(path, config.topics)]):
        route_record(raw, contracts, config.topics, config.limits, config.admission)
        count += 1
    return count / (time.perf_counter() - started)


@contextmanager
def without_feature_work() -> Iterator[None]:
    """The flow as `build_flow` makes it, with every jukebox's update a no-op: each event
    is still read, decoded, admitted, keyed and handed to its jukebox's step, which then
    changes nothing and emits nothing. Bench-only: nothing else swaps the update."""
    idle = DeviceState("floor")
    real = dataflows.flow.applied_device_input
    dataflows.flow.applied_device_input = lambda _state, _item: (idle, False, [])
    try:
        yield
    finally:
        dataflows.flow.applied_device_input = real


def _part_of(filename: str, name: str) -> str | None:
    where = filename.replace("\\", "/")
    part = next((label for label, marks in PARTS if any(m in where for m in marks)), None)
    if part is None and ("bytewax" in where or name in ("run_main", "cli_main")):
        return "bytewax engine"
    return part


def where_time_goes(run: Callable[[], object]) -> list[tuple[str, float]]:
    """Share of own time per part; time in builtins and helpers (dict ops, dataclass
    constructors, datetime) goes to the nearest caller that belongs to a part."""
    profiler = cProfile.Profile()
    profiler.enable()
    run()
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # func -> (cc, nc, tottime, cumtime, {caller: (nc, cc, tt, ct)})
    totals: dict[str, float] = defaultdict(float)

    def attribute(func: tuple, seconds: float, depth: int) -> None:
        part = _part_of(func[0], func[2])
        callers = stats.get(func, (0, 0, 0, 0, {}))[4]
        if part is not None or depth > 6 or not callers:
            totals[part or "other"] += seconds
            return
        weight = sum(c[2] for c in callers.values()) or sum(c[0] for c in callers.values()) or 1
        for caller, (nc, _cc, tt, _ct) in callers.items():
            attribute(caller, seconds * ((tt or nc) / weight), depth + 1)

    for func, (_cc, _nc, own, _cum, _callers) in stats.items():
        attribute(func, own, 0)
    grand = sum(totals.values())
    return sorted(((part, seconds / grand) for part, seconds in totals.items()), key=lambda x: -x[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jukeboxes", type=int, default=5000)
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    tune_garbage_collector()  # as `jukebox replay` does
    topics = Topics()
    rules_only = replay_fraud_config(None, RulePolicy(), DecisionPolicy(), True, False, CLOCK)
    with_model = replay_fraud_config(forest_scorer(), RulePolicy(), DecisionPolicy(), True, False, CLOCK)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "history.jsonl"
        events = write_history(path, args.jukeboxes, args.hours)
        console.print(f"history: {events:,} events ({path.stat().st_size / 1e6:.0f} MB), "
                      f"{args.jukeboxes:,} jukeboxes, {args.hours:g} h; {os.cpu_count()} CPUs")
        rows: list[tuple[str, float, str]] = []
        started = time.perf_counter()
        read = sum(1 for _ in merged_history([file_history(path, topics)]))
        rows.append(("history only (read, parse, merge)", read / (time.perf_counter() - started), ""))
        rows.append(("history + decode + admission, no flow", routed_per_s(path, FlowConfig(topics=topics)), ""))
        with without_feature_work():
            floor = replay_once(path, FlowConfig(topics=topics))
        rows.append(("the flow with no feature work (its floor)", floor.events_per_s,
                     f"{1e6 / floor.events_per_s:.1f} µs an event"))
        console.print(f"  the flow's floor: {floor.events_per_s:,.0f} events/s")
        for label, config, workers in (
            ("features only, 1 worker", FlowConfig(topics=topics), 1),
            ("features + rules + anomaly, 1 worker", FlowConfig(topics=topics, fraud=rules_only), 1),
            ("features + rules + anomaly + ONNX model, 1 worker", FlowConfig(topics=topics, fraud=with_model), 1),
            (f"features + rules + anomaly, {args.workers} workers", FlowConfig(topics=topics, fraud=rules_only),
             args.workers),
        ):
            run = replay_once(path, config, workers)
            speedup = (run.split.last_ms - run.split.first_ms) / 1000 / run.wall_s
            rows.append((label, run.events_per_s, f"{speedup:,.0f}x real time, {len(run.messages):,} messages"))
            console.print(f"  {label}: {run.events_per_s:,.0f} events/s")
        profile = None if args.no_profile else where_time_goes(
            lambda: replay_once(path, FlowConfig(topics=topics, fraud=rules_only)))

    table = Table(title=f"replay throughput ({os.cpu_count()} CPUs; target {TARGET:,} events/s)")
    for column in ("configuration", "events/s", "of target", "notes"):
        table.add_column(column, justify="left" if column in ("configuration", "notes") else "right")
    for label, rate, notes in rows:
        table.add_row(label, f"{rate:,.0f}", f"{rate / TARGET:.0%}", notes)
    console.print(table)
    budget = 1e6 * (os.cpu_count() or 1) / TARGET
    console.print(f"{TARGET:,} events/s on {os.cpu_count()} CPUs leaves {budget:.0f} µs of CPU an event for "
                  f"everything, if every CPU replayed; one process's floor is {1e6 / floor.events_per_s:.1f} µs "
                  f"before any feature is computed.")
    if profile:
        parts = Table(title="where the time goes (features + rules + anomaly, 1 worker; cProfile own time)")
        parts.add_column("part")
        parts.add_column("share", justify="right")
        for part, share in profile:
            parts.add_row(part, f"{share:.0%}")
        console.print(parts)


if __name__ == "__main__":
    main()
