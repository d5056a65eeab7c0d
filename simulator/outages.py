"""Connectivity outages: a jukebox offline for hours, then uploading its backlog.

While offline a jukebox keeps playing (coins only: mobile money and cards need
the network) and keeps its GPS fixes; everything it recorded arrives when it
reconnects, with the old event times. One outage in twenty lasts past a
day-long shift (13-30 h), beyond any sensible allowed lateness.

>>> windows = outage_windows(seed=1, span=0, jukeboxes=100, start_ms=0, end_ms=86_400_000, count=3)
>>> len(windows), all(0 <= jb < 100 and start < end for jb, start, end in windows)
(3, True)
"""

from __future__ import annotations

import random

HOUR_MS = 3_600_000
LONG_OUTAGE_SHARE = 0.05


def outage_windows(
    seed: int, span: int, jukeboxes: int, start_ms: int, end_ms: int, count: int
) -> list[tuple[int, int, int]]:
    """`count` outages starting in [start_ms, end_ms): (jukebox, offline from, back at)."""
    rng = random.Random(f"{seed}:outages:{span}")
    windows = []
    for _ in range(count):
        jukebox = rng.randrange(jukeboxes)
        start = rng.randrange(start_ms, end_ms)
        hours = rng.uniform(13, 30) if rng.random() < LONG_OUTAGE_SHARE else rng.uniform(1, 6)
        windows.append((jukebox, start, start + int(hours * HOUR_MS)))
    return windows
