"""The anomaly detector's forest as arrays next to River's own HalfSpaceTrees, in one run.

Both score then learn the same device windows (13 features in [0, 1], a few far out), with
the engine's forest (10 trees of height 8, 250-window pivots). River goes one window at a
time; the arrays (`models/half_space_trees.py`) take a batch at once, as the anomaly step
gets them (every window the worker's micro-batch closed). Printed: µs a window for each
batch size (best of `--repeats`), its ratio to River, and whether every score was
River's own.

    python -m bench.anomaly [--windows 3000] [--repeats 4]
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
from rich.console import Console
from rich.table import Table
from river.anomaly import HalfSpaceTrees

from models.half_space_trees import HalfSpaceForest

BATCHES = (1, 2, 4, 8, 16, 64, 256)
FOREST = {"n_trees": 10, "height": 8, "window_size": 250, "seed": 42}


def windows(count: int, features: int, seed: int = 1) -> np.ndarray:
    rng = random.Random(seed)
    return np.array([[rng.random() * 0.3 + (0.6 if rng.random() < 0.02 else 0.0) for _ in range(features)]
                     for _ in range(count)])


def river_run(X: np.ndarray, names: tuple[str, ...]) -> tuple[float, list[float]]:
    """(µs a window, scores) of River scoring then learning one window at a time."""
    forest, scores = HalfSpaceTrees(**FOREST), []
    rows = [dict(zip(names, row, strict=True)) for row in X.tolist()]
    started = time.perf_counter()
    for x in rows:
        scores.append(forest.score_one(x))
        forest.learn_one(x)
    return (time.perf_counter() - started) / len(rows) * 1e6, [float(s) for s in scores]


def arrays_run(X: np.ndarray, names: tuple[str, ...], batch: int) -> tuple[float, list[float]]:
    forest, scores, learn = HalfSpaceForest(names, **FOREST), [], np.ones(len(X), dtype=bool)
    started = time.perf_counter()
    for start in range(0, len(X), batch):
        scores += forest.scores_then_learn(X[start:start + batch], learn[start:start + batch])
    elapsed = time.perf_counter() - started
    return elapsed / len(X) * 1e6, [0.0 if s is None else s for s in scores]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    names = tuple(f"feature_{i:02d}" for i in range(13))
    X = windows(args.windows, len(names))
    best: dict[object, float] = {}
    same: dict[object, bool] = {}
    for _ in range(args.repeats):  # alternated, so a slow spell of the machine hits all
        river_us, expected = river_run(X, names)
        best["river"] = min(best.get("river", river_us), river_us)
        for batch in BATCHES:
            us, scores = arrays_run(X, names, batch)
            best[batch] = min(best.get(batch, us), us)
            same[batch] = same.get(batch, True) and scores == expected
    table = Table(title=f"anomaly detector: score then learn, {args.windows:,} windows (best of {args.repeats})")
    for column in ("forest", "batch", "µs a window", "River / this", "River's scores"):
        table.add_column(column, justify="left" if column == "forest" else "right")
    table.add_row("River HalfSpaceTrees", "1", f"{best['river']:.1f}", "1.00", "")
    for batch in BATCHES:
        table.add_row("arrays", str(batch), f"{best[batch]:.1f}", f"{best['river'] / best[batch]:.2f}",
                      "all equal" if same[batch] else "DIFFERENT")
    Console().print(table)


if __name__ == "__main__":
    main()
