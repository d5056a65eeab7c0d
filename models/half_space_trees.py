"""River's Half-Space Trees, with the trees held as arrays and a batch scored at once.

River's `HalfSpaceTrees` walks ten node objects deep per tree in Python, for every score
and every learn: ~100 µs per closed device window, a fifth of a replay's time
(bench.replay's profile, 2026-12-04). The trees here are River's own (the splits
`river.tree.padded.make_padded_tree` draws from the same seeded `random.Random` when
`HalfSpaceTrees.learn_one` builds them, drawn here without importing River), laid out
heap-style: node `i`'s children are `2i + 1` and `2i + 2`. A batch's root-to-leaf paths are found with one array operation
per level, and a window's learning adds a count to each node of its paths.

Scores are River's to the bit: masses are integers, so River's float sums of
`mass * 2**depth` are exact, and so are these (tests/unit/test_half_space_trees.py
checks them against `river.anomaly.HalfSpaceTrees`). Every feature must be present
(River's branch for a missing feature is not taken), scaled to [0, 1] by the caller.

>>> import numpy as np
>>> forest = HalfSpaceForest(("a", "b"), n_trees=3, height=4, window_size=4, seed=1)
>>> normal = np.array([[0.1, 0.2], [0.15, 0.25], [0.1, 0.2], [0.12, 0.2]])
>>> forest.scores_then_learn(normal, np.ones(4, dtype=bool))  # cold until 4 rows are learnt
[None, None, None, None]
>>> far, near = forest.scores_then_learn(np.array([[0.9, 0.9], [0.1, 0.2]]), np.zeros(2, dtype=bool))
>>> round(far, 3), round(near, 3)
(0.968, 0.118)
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

_ROWS_PER_ARRAY_WALK = 8  # fewer rows walk in Python: each array step costs ~1 µs
_ROWS_PER_BINCOUNT = 64  # from this many rows, learning counts every node at once
_PADDING = 0.15  # River's HalfSpaceTrees.learn_one builds its trees with this padding


class HalfSpaceForest:
    """`n_trees` trees of `height` over `features` (columns, in order), masses pivoting
    every `window_size` learnt rows; `seed` picks the same splits as River's forest."""

    def __init__(self, features: Sequence[str], n_trees: int = 10, height: int = 8,
                 window_size: int = 250, seed: int | None = None) -> None:
        self.features = tuple(features)
        self.n_trees, self.height, self.window_size = n_trees, height, window_size
        rng, column = random.Random(seed), {name: i for i, name in enumerate(self.features)}
        inner = 2 ** height - 1
        split, threshold = [0] * (n_trees * inner), [0.0] * (n_trees * inner)
        for t in range(n_trees):
            limits = {name: (0.0, 1.0) for name in sorted(self.features)}
            _grow_splits(limits, height, t * inner, 0, column, rng, split, threshold)
        nodes = n_trees * (2 * inner + 1)
        self._set_arrays(split, threshold, [0] * nodes, [0] * nodes)
        self.counter = 0  # rows learnt in the current window
        self.first_window = True  # until the first pivot, every score is None (River's 0)
        self.learnt = 0  # rows learnt, ever

    @classmethod
    def from_river(cls, forest, features: Sequence[str]) -> HalfSpaceForest:
        """The arrays of a River `HalfSpaceTrees` (its masses, counter and window),
        for detectors pickled before this module; an unbuilt one gets fresh trees."""
        out = cls(features, forest.n_trees, forest.height, forest.window_size, forest.seed)
        if forest.trees:
            out._set_trees(forest.trees)
            out.counter, out.first_window = forest.counter, forest._first_window
        return out

    def _set_trees(self, roots: list) -> None:
        from river.tree.padded import PaddedBranch

        trees, nodes = len(roots), 2 ** (self.height + 1) - 1
        inner = nodes // 2
        column = {name: i for i, name in enumerate(self.features)}
        split, threshold = [0] * (trees * inner), [0.0] * (trees * inner)
        l_mass, r_mass = [0] * (trees * nodes), [0] * (trees * nodes)
        for t, root in enumerate(roots):
            stack = [(root, 0)]
            while stack:
                node, i = stack.pop()
                l_mass[t * nodes + i], r_mass[t * nodes + i] = node.l_mass, node.r_mass
                if isinstance(node, PaddedBranch):
                    split[t * inner + i], threshold[t * inner + i] = column[node.feature], node.threshold
                    stack += ((node.children[0], 2 * i + 1), (node.children[1], 2 * i + 2))
        self._set_arrays(split, threshold, l_mass, r_mass)

    def _set_arrays(self, split: list[int], threshold: list[float], l_mass: list[int],
                    r_mass: list[int]) -> None:
        # Tree t's node i is at t * nodes + i of the masses, and its split at t * inner + i.
        self._split_array, self._threshold_array = np.array(split, dtype=np.intp), np.array(threshold)
        self.l_mass, self.r_mass = np.array(l_mass, dtype=np.int32), np.array(r_mass, dtype=np.int32)
        self._set_derived()

    def __getstate__(self) -> dict:
        """Config, masses and splits: the rest is derived (~60 KB for 10 x 8)."""
        keep = ("features", "n_trees", "height", "window_size", "counter", "first_window", "learnt",
                "l_mass", "r_mass", "_threshold_array")
        return {**{k: self.__dict__[k] for k in keep}, "_split_array": self._split_array.astype(np.int16)}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._split_array = state["_split_array"].astype(np.intp)
        self._set_derived()

    def _set_derived(self) -> None:
        """What the splits and the shape give: the splits as lists (read by the row-by-row
        walk) and each tree's offsets into the flat arrays."""
        self._split, self._threshold = self._split_array.tolist(), self._threshold_array.tolist()
        trees, nodes = self.n_trees, 2 ** (self.height + 1) - 1
        self._inner_base = np.arange(trees, dtype=np.intp) * (nodes // 2)
        self._node_base = np.arange(trees, dtype=np.intp) * nodes
        self._depth_weights = 1 << np.arange(self.height + 1, dtype=np.int64)

    @property
    def max_score(self) -> int:
        return self.n_trees * self.window_size * (2 ** (self.height + 1) - 1)

    def paths(self, X: np.ndarray) -> np.ndarray:
        """(height + 1, rows, trees): the node (index into the masses) each row visits at
        each depth of each tree. River goes left on value < threshold (so right on NaN)."""
        if len(X) < _ROWS_PER_ARRAY_WALK:
            return self._paths_row_by_row(X)
        rows, columns = X.shape
        out = np.empty((self.height + 1, rows, self.n_trees), dtype=np.intp)
        at = np.zeros((rows, self.n_trees), dtype=np.intp)
        out[0] = self._node_base
        values, row_base = X.ravel(), (np.arange(rows, dtype=np.intp) * columns)[:, None]
        for depth in range(self.height):
            inner = at + self._inner_base
            right = ~(values.take(self._split_array.take(inner) + row_base) < self._threshold_array.take(inner))
            at = 2 * at + 1 + right
            out[depth + 1] = at + self._node_base
        return out

    def _paths_row_by_row(self, X: np.ndarray) -> np.ndarray:
        split, threshold, height = self._split, self._threshold, self.height
        inner, nodes = len(split) // self.n_trees, len(self.l_mass) // self.n_trees
        paths = []
        for x in X.tolist():
            for t in range(self.n_trees):
                at, i, n = 0, t * inner, t * nodes
                paths.append(n)
                for _ in range(height):
                    at = 2 * at + (1 if x[split[i + at]] < threshold[i + at] else 2)
                    paths.append(n + at)
        return np.array(paths, dtype=np.intp).reshape(len(X), self.n_trees, height + 1).transpose(2, 0, 1)

    def scores(self, paths: np.ndarray) -> list[float | None]:
        """River's `score_one` of each row, without learning; None while cold."""
        if self.first_window:
            return [None] * paths.shape[1]
        if paths.shape[1] < _ROWS_PER_ARRAY_WALK:
            return self._scores_row_by_row(paths)
        mass = self.r_mass.take(paths)  # (height + 1, rows, trees)
        # River stops a tree's walk after the first node above the leaves with too little mass
        stopped = np.logical_or.accumulate(mass[:-1] < 0.1 * self.window_size, axis=0)
        mass[1:][stopped] = 0
        totals = np.tensordot(self._depth_weights, mass, axes=1).sum(axis=1)
        return [1 - float(total) / self.max_score for total in totals.tolist()]

    def _scores_row_by_row(self, paths: np.ndarray) -> list[float | None]:
        limit, top = 0.1 * self.window_size, self.max_score
        out: list[float | None] = []
        for trees in self.r_mass.take(paths.transpose(1, 2, 0)).tolist():  # [row][tree][depth]
            total = 0
            for masses in trees:
                weight = 1
                for mass in masses:
                    total += mass * weight
                    if mass < limit:
                        break
                    weight <<= 1
            out.append(1 - float(total) / top)
        return out

    def learn(self, paths: np.ndarray) -> None:
        """River's `learn_one` of each row, in order; the caller ends a window when due."""
        if paths.shape[1] < _ROWS_PER_BINCOUNT:
            np.add.at(self.l_mass, paths.ravel(), 1)
        else:  # add.at costs ~50 ns a visit; bincount's cost is the whole array's
            self.l_mass += np.bincount(paths.ravel(), minlength=len(self.l_mass)).astype(np.int32)
        self.counter += paths.shape[1]
        self.learnt += paths.shape[1]

    def pivot(self) -> None:
        """End a window: what was learnt in it becomes the reference mass."""
        self.r_mass, self.l_mass = self.l_mass, np.zeros_like(self.l_mass)
        self.counter, self.first_window = 0, False

    def scores_then_learn(self, X: np.ndarray, learn: np.ndarray,
                          learn_below: float | None = None) -> list[float | None]:
        """Each row scored, then learnt if `learn[i]` and (`learn_below` is None or its
        score is under it), in row order: the same as River's `score_one` then
        `learn_one` row by row. None: scored while cold (River says 0)."""
        paths = self.paths(X)
        out: list[float | None] = []
        start = 0
        while start < len(X):
            # No window ends before `room` more rows are learnt: score that many at once,
            # so a window's end rescores only the rows scored after it in the same chunk.
            room = self.window_size - self.counter
            chunk = paths[:, start:start + max(room, _ROWS_PER_ARRAY_WALK)]
            scores = self.scores(chunk)
            keep = learn[start:start + chunk.shape[1]].copy()
            if learn_below is not None:
                keep &= np.array([(0.0 if s is None else s) < learn_below for s in scores])  # River's cold 0
            learnt = np.flatnonzero(keep)
            if len(learnt) < room:
                self.learn(chunk[:, learnt])
                out += scores
                start += chunk.shape[1]
                continue
            end = learnt[room - 1] + 1  # rows after the pivoting one score on the new masses
            self.learn(chunk[:, learnt[:room]])
            self.pivot()
            out += scores[:end]
            start += end
        return out


def _grow_splits(limits: dict[str, tuple[float, float]], height: int, base: int, i: int,
                 column: dict[str, int], rng: random.Random, split: list[int],
                 threshold: list[float]) -> None:
    """Node `i`'s split and those below it, as `river.tree.padded.make_padded_tree` draws
    them: the same `rng` calls in the same order (node, then left, then right), so a seed
    gives River's trees. Importing River's trees would import most of River, SciPy and
    pandas (~1.2 s and ~175 MB of a process, 2026-12-05) for these few lines."""
    if height == 0:
        return
    names = list(limits)
    on = rng.choices(population=names, weights=[limits[n][1] - limits[n][0] for n in names])[0]
    a, b = limits[on]
    at = rng.uniform(a + _PADDING * (b - a), b - _PADDING * (b - a))
    split[base + i], threshold[base + i] = column[on], at
    limits[on] = (a, at)
    _grow_splits(limits, height - 1, base, 2 * i + 1, column, rng, split, threshold)
    limits[on] = (at, b)
    _grow_splits(limits, height - 1, base, 2 * i + 2, column, rng, split, threshold)
    limits[on] = (a, b)
