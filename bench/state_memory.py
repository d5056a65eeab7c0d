"""The engine's memory per jukebox: the device state it holds, as the feature windows fill.

A jukebox's windows are bucketed (60 buckets a window), so the state a jukebox holds
grows with each bucket its traffic opens until the window is full: after an hour for the
1 h windows, after a day for the 24 h ones and the seen-event ids (kept for the
duplicate check as long as an event can count). This bench applies a jukebox's traffic
(plays 60 %, payments 25 %, location reports 15 %, at the fleet's average rate:
20,000 events/s over 1,000,000 jukeboxes is 1.2 events a minute) to a sample of
jukeboxes with the engine's own update logic, and measures what their states hold
(tracemalloc) after 10 minutes, 1 hour, 6 hours and a day of event time. Printed: KiB per
jukebox, the part that is seen-event ids, what the whole fleet would hold, and the size
of the jukebox's snapshot (Bytewax writes one for every jukebox touched in an epoch).
Then, for the day, what each part of the state holds (each window, the seen ids, the
venue, ...): where memory work would pay.

    python -m bench.state_memory [--per-minute 1.2] [--jukeboxes 40]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import pickle
import random
import sys
import tracemalloc
from datetime import UTC, datetime, timedelta

from rich.console import Console
from rich.table import Table

from online_store.device import DeviceState, update_device
from schemas.events import DeviceLocationEvent, PaymentEvent, PlayEvent

START = datetime(2026, 12, 1, 18, 0, tzinfo=UTC)
FLEET = 1_000_000


def jukebox_events(jukebox: str, per_minute: float, minutes: int, rnd: random.Random,
                   start: datetime = START) -> list:
    events: list = []
    for i in range(round(per_minute * minutes)):
        at = start + timedelta(seconds=rnd.uniform(0, minutes * 60))
        kind = rnd.random()
        if kind < 0.6:
            events.append(PlayEvent(event_id=f"{jukebox}-p{i}", jukebox_id=jukebox, venue_id="v1",
                                    song_id=f"s{rnd.randrange(2000)}", played_at=at, credits_used=1,
                                    payment_id=f"{jukebox}-pay{i}"))  # paid: honest traffic
        elif kind < 0.85:
            events.append(PaymentEvent(
                event_id=f"{jukebox}-m{i}", payment_id=f"{jukebox}-pay{i}", jukebox_id=jukebox,
                venue_id="v1", customer_id=f"c{rnd.randrange(5000)}", amount="60", currency="KES",
                method="mobile_money", status="succeeded", occurred_at=at))
        else:
            events.append(DeviceLocationEvent(event_id=f"{jukebox}-l{i}", jukebox_id=jukebox,
                                              lat=-1.29, lon=36.82, accuracy_m=9.5, reported_at=at))
    return events


def device_states(events: list) -> tuple[dict[str, DeviceState], int]:
    """Every jukebox's state after its events (applied in event-time order, by the engine's
    update logic), and the bytes those states hold (tracemalloc)."""
    # Applied as the engine applies them: each decoded from its bytes and dropped after, so
    # the ids a state keeps (payers, payment ids) are its own strings and are counted.
    records = [(type(event), event.model_dump_json()) for event in sorted(events, key=lambda e: e.event_time)]
    del events
    gc.collect()
    tracemalloc.start()
    try:
        states: dict[str, DeviceState] = {}
        for kind, raw in records:
            event = kind.model_validate_json(raw)
            states[event.jukebox_id], _ = update_device(states.get(event.jukebox_id), event)
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return states, held


def held_state(per_minute: float, minutes: int, jukeboxes: int) -> tuple[float, float, float, dict[str, float]]:
    """Bytes a jukebox's state holds, of which seen-event ids, its snapshot (pickled) after
    `minutes` of traffic, and the bytes of each part (`part_bytes`)."""
    rnd = random.Random(minutes)
    events = [e for j in range(jukeboxes) for e in jukebox_events(f"jb-{j}", per_minute, minutes, rnd)]
    states, held = device_states(events)
    seen = sum(len(ids) * ids.itemsize for s in states.values() for ids in s.seen.hours.values())
    pickled = sum(len(pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL)) for s in states.values())
    return held / jukeboxes, seen / jukeboxes, pickled / jukeboxes, part_bytes(list(states.values()))


def deep_bytes(root: object, counted: set[int]) -> int:
    """`sys.getsizeof` of `root` and of everything it reaches that is not in `counted`
    (ids, added as they are counted): an object shared by two parts counts once."""
    total, stack = 0, [root]
    while stack:
        item = stack.pop()
        if id(item) in counted:
            continue
        counted.add(id(item))
        total += sys.getsizeof(item)
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
        else:
            names = [name for cls in type(item).__mro__ for name in getattr(cls, "__slots__", ())]
            stack.extend(getattr(item, name) for name in names if hasattr(item, name))
    return total


def part_bytes(states: list[DeviceState]) -> dict[str, float]:
    """Mean bytes per jukebox that each field of the state (windows, seen ids, venue, ...)
    holds (`deep_bytes`)."""
    parts = dict.fromkeys((field.name for field in dataclasses.fields(DeviceState)), 0.0)
    for state in states:
        counted: set[int] = set()
        for name in parts:
            parts[name] += deep_bytes(getattr(state, name), counted)
    return {name: held / len(states) for name, held in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-minute", type=float, default=1.2, help="events a minute per jukebox")
    parser.add_argument("--jukeboxes", type=int, default=40, help="sample size")
    args = parser.parse_args()
    table = Table(title=f"device state per jukebox at {args.per_minute} events a minute")
    for column in ("event time", "KiB per jukebox", "of which seen ids", f"{FLEET:,} jukeboxes",
                   "snapshot KiB per jukebox"):
        table.add_column(column, justify="right")
    for label, minutes in (("10 min", 10), ("1 h", 60), ("6 h", 360), ("24 h", 1440)):
        per_jukebox, seen, pickled, parts = held_state(args.per_minute, minutes, args.jukeboxes)
        table.add_row(label, f"{per_jukebox / 1024:,.1f}", f"{seen / 1024:,.1f}",
                      f"{per_jukebox * FLEET / 2**30:,.1f} GiB", f"{pickled / 1024:,.1f}")
    console = Console()
    console.print(table)
    by_part = Table(title=f"after {label}: what each part holds (getsizeof of all it reaches, shared"
                          " objects such as small ints in each jukebox: more than the total above)")
    by_part.add_column("part")
    by_part.add_column("KiB per jukebox", justify="right")
    for name, held in sorted(parts.items(), key=lambda part: -part[1]):
        by_part.add_row(name, f"{held / 1024:,.1f}")
    console.print(by_part)


if __name__ == "__main__":
    main()
