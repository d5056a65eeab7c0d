"""The live flow's drain rate at steady state: jukeboxes with a day of history, against new ones.

`bench.feature_flow` drains events of brand-new jukeboxes, whose state (and recovery
snapshot) is small. A fleet that has run for a day holds day-old states: each event then
updates fuller windows, and Bytewax rewrites a ~19 KiB snapshot of every jukebox touched in
an epoch (bench.recovery). This bench drains the same backlog three times with `jukebox
run` (1 process, features + rules + River), on the same embedded broker and Redis:

1. new: from an empty recovery directory (every jukebox starts empty), 5-second epochs;
2. day-old: from a recovery directory holding, for every jukebox, a device state built by
   the engine's update logic from a day of traffic at the fleet's average rate (1.2 events
   a minute) ending where the backlog starts; `--samples` states are built and copied
   under each jukebox's id in the engine's snapshot form, and written by a Bytewax flow
   with the live flow's name and device step id, so `jukebox run` resumes them as its own;
   5-second epochs;
3. the same day-old states at 60-second epochs: with the defaults the drain closes at most
   one epoch, so the gap to 2. is about what the snapshots of 5-second epochs cost.

Ahead of the backlog, each jukebox gets one play, and a drain is timed from when those
are in: a resumed state is unpickled at its jukebox's first event, a cost of the restart,
not of the steady state. Printed: events/s and flow CPU per event of each drain, their
ratio, the time from the process's start to all drained (resume, warm-up and backlog), the
recovery partitions' size after each, and how long the day-old process took to resume its
states before reading input. The backlog's jukeboxes get `--events / --jukeboxes` events
each, their event time advancing at the fleet's rate per jukebox (1.2 a minute); with the
defaults a 5-second epoch touches most of them once, as the fleet's epochs do.

    python -m bench.steady_flow [--events 100000] [--jukeboxes 40000] [--samples 100]
"""

from __future__ import annotations

import argparse
import pickle
import random
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bytewax.operators as op
import redis
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig
from bytewax.run import cli_main
from bytewax.testing import TestingSource
from rich.console import Console
from rich.table import Table

from bench.feature_flow import Drain, cpu_summary, drain, synthetic_records
from bench.recovery import DiscardSink, HeldSnapshot, dir_bytes
from bench.state_memory import device_states, jukebox_events
from dataflows.flow import DeviceLogic
from dataflows.local_stack import LocalStack, create_topics
from dataflows.records import RawRecord
from dataflows.recovery_partitions import create_partitions
from dataflows.settings import FlowSettings
from dataflows.status import metric_sum
from schemas.events import PlayEvent
from schemas.topics import Topics
from tests.integration.flow_process import FlowProcess, produce_records, wait_until

console = Console()
PER_MINUTE = 1.2  # events a minute per jukebox: the fleet's average (20,000/s over 1,000,000)
ENGINE_PARTITIONS = FlowSettings.model_fields["recovery_partitions_per_process"].default
# The drains and their epoch length. At 60 s, a drain of the default backlog closes at most
# one epoch: the row shows a day-old process nearly without the snapshots 5 s epochs write.
EPOCHS = {"new": 5.0, "day-old": 5.0, "day-old-60s": 60.0}


def day_old_snapshots(jukeboxes: int, samples: int, ending: datetime) -> list[tuple[str, tuple]]:
    """(jukebox id, device snapshot as `jukebox run` writes it) for `jb-0` ... : `samples`
    states built from a day at 1.2 events a minute ending at `ending`, each copied under
    several ids."""
    rnd = random.Random(7)
    start = ending - timedelta(days=1)
    events = [e for j in range(samples) for e in jukebox_events(f"sample-{j}", PER_MINUTE, 1440, rnd, start)]
    built, _held = device_states(events)
    sampled = [pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL) for state in built.values()]
    out = []
    for n in range(jukeboxes):
        logic = DeviceLogic(None, scoring=True)
        logic.state = pickle.loads(sampled[n % len(sampled)])
        logic.state.jukebox_id = f"jb-{n}"
        out.append((f"jb-{n}", logic.snapshot()))
    return out


def write_device_states(recovery_dir: Path, snapshots: list[tuple[str, tuple]], partitions: int = 1) -> None:
    """A recovery directory of `partitions` partitions (`jukebox run` makes
    `JUKEBOX_FLOW_RECOVERY_PARTITIONS_PER_PROCESS` of them) whose device step
    (`jukebox.device_features`, as `dataflows.live` names it) holds `snapshots`."""
    recovery_dir.mkdir(parents=True)
    create_partitions(recovery_dir, partitions)
    flow = Dataflow("jukebox")
    keyed = op.input("warm_up", flow, TestingSource(snapshots, batch_size=5000))  # not "records": its partitions would clash
    op.output("out", op.stateful_batch("device_features", keyed, HeldSnapshot), DiscardSink())
    cli_main(flow, epoch_interval=timedelta(0), recovery_config=RecoveryConfig(str(recovery_dir)))


def warm_up_records(topics: Topics, jukeboxes: int, before: datetime) -> list[RawRecord]:
    """One play for each jukebox in the 30 s before `before`: produced ahead of the backlog,
    so each jukebox's state is built (and a resumed one unpickled) before the timing starts."""
    records = []
    for n in range(jukeboxes):
        at = before - timedelta(seconds=30 * (1 - n / jukeboxes))
        play = PlayEvent(event_id=f"warm-{n}", jukebox_id=f"jb-{n}", venue_id="v1", song_id="s0",
                         played_at=at, credits_used=1, payment_id=f"warm-pay{n}")
        records.append(RawRecord(topics.plays, f"jb-{n}".encode(), play.model_dump_json().encode(), None, None,
                                 int(at.timestamp() * 1000) + 2000))
    return records


def mean_plays_24h(redis_url: str, key_prefix: str, jukeboxes: int) -> float:
    """Mean `device_plays_24h` in Redis over jb-0 ... : whether the day-old states were resumed."""
    client = redis.Redis.from_url(redis_url)
    pipe = client.pipeline(transaction=False)
    for n in range(jukeboxes):
        pipe.hget(f"{key_prefix}:device:v1:jb-{n}", "device_plays_24h")
    values = [int(v) for v in pipe.execute() if v is not None]
    client.close()
    return sum(values) / max(len(values), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--jukeboxes", type=int, default=40_000)
    parser.add_argument("--samples", type=int, default=100, help="day-old states built (then copied)")
    parser.add_argument("--partitions", type=int, default=ENGINE_PARTITIONS,
                        help="recovery partitions of the day-old states (default: as `jukebox run` makes them)")
    args = parser.parse_args()
    # The backlog's event time advances as the fleet's does: each jukebox's events come
    # PER_MINUTE a minute, so each event moves its windows as far as it would in the fleet.
    spacing_s = 60 / (PER_MINUTE * args.jukeboxes)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=args.events * spacing_s + 60)

    console.print(f"building {args.samples} day-old device states, copied to {args.jukeboxes:,} jukeboxes ...")
    snapshots = day_old_snapshots(args.jukeboxes, args.samples, start)
    size = sum(len(snapshot[2]) for _id, snapshot in snapshots) / len(snapshots)
    with LocalStack() as stack, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        write_device_states(workdir / "day-old" / "recovery", snapshots, args.partitions)
        shutil.copytree(workdir / "day-old", workdir / "day-old-60s")
        del snapshots
        topics = Topics("steady.")
        create_topics({"bootstrap.servers": stack.kafka_bootstrap}, topics.specs())
        console.print(f"producing {args.events:,} events over {args.jukeboxes:,} jukeboxes ...")
        produce_records(stack.kafka_bootstrap, [*warm_up_records(topics, args.jukeboxes, start),
                        *synthetic_records(topics, args.events, args.jukeboxes, start, 1, spacing_s)])
        results: dict[str, tuple[Drain, int]] = {}
        start_to_drained: dict[str, float] = {}
        plays: dict[str, float] = {}
        resumed_s: dict[str, float] = {}
        for label, epoch_s in EPOCHS.items():
            env = {"JUKEBOX_KAFKA_GROUP_ID": f"steady-{label}",
                   "JUKEBOX_FLOW_RECOVERY_PARTITIONS_PER_PROCESS": str(args.partitions)}
            flow = FlowProcess(stack.kafka_bootstrap, stack.redis_url, topics, f"steady-{label}",
                               workdir / label, snapshot_interval_s=epoch_s, extra_env=env).start()
            url = f"http://127.0.0.1:{flow.metrics_port}/metrics"
            started = time.monotonic()
            try:
                if label != "new":  # Bytewax builds every resumed key's logic before it runs
                    wait_until(lambda url=url: metric_sum(url, "jukebox_entities_in_state", entity="device")
                               >= args.jukeboxes, 900, "the day-old states to load", flow.assert_running)
                    resumed_s[label] = time.monotonic() - started
                # Timed once the warm-up plays are in: each jukebox's state has been used once.
                warmed = (lambda url=url: metric_sum(url, "jukebox_events_in_total", topic=topics.plays)
                          >= args.jukeboxes)
                results[label] = (drain([flow], args.events + args.jukeboxes, stack.server_pids,
                                        ready=warmed), 0)
                start_to_drained[label] = time.monotonic() - started
            finally:
                flow.stop()
            results[label] = (results[label][0], dir_bytes(flow.recovery_dir))
            plays[label] = mean_plays_24h(stack.redis_url, flow.key_prefix, min(args.jukeboxes, 200))
            console.print(f"  {label}: {results[label][0].rate:,.0f} events/s, "
                          f"device_plays_24h {plays[label]:,.1f} on average")
        if min(plays["day-old"], plays["day-old-60s"]) < 10 * plays["new"]:  # else nothing resumed
            raise SystemExit("a day-old drain did not resume the day-old states")

    table = Table(title=f"`jukebox run`, 1 process: {args.events:,} events over "
                        f"{args.jukeboxes:,} jukeboxes (same backlog, same broker and Redis)")
    for column in ("jukebox state at the start", "epochs", "events/s", "CPU (100% = one core)",
                   "start to drained", "recovery partitions after"):
        table.add_column(column, justify="left" if column.startswith("jukebox") else "right")
    for label, (result, disk) in results.items():
        what = "none (new jukeboxes)" if label == "new" else f"a day at 1.2 events/min ({size / 1024:,.1f} KiB snapshot)"
        table.add_row(what, f"{EPOCHS[label]:.0f} s", f"{result.rate:,.0f}", cpu_summary(result),
                      f"{start_to_drained[label]:,.1f} s", f"{disk / 1e6:,.1f} MB")
    console.print(table)
    rate = {label: result.rate for label, (result, _disk) in results.items()}
    console.print(f"day-old / new: {rate['day-old'] / rate['new']:.2f}x the events/s; day-old at 60 s epochs / "
                  f"at 5 s: {rate['day-old-60s'] / rate['day-old']:.2f}x")
    console.print(f"resuming the {args.jukeboxes:,} day-old states took {resumed_s['day-old']:.1f} s from the "
                  f"process's start: {resumed_s['day-old'] / args.jukeboxes * 1e6:,.0f} µs a jukebox (a restart's "
                  "cost, before any input)")


if __name__ == "__main__":
    main()
