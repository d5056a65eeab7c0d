"""Feature flow throughput and event-to-Redis latency, next to raw Kafka pass-through.

Everything runs in one go on the same embedded broker and Redis:

1. pass-through: a confluent-kafka consumer reads the backlog and produces every
   record to another topic with confirmed delivery (the floor any Python Kafka
   job pays on this machine);
2. backlog: `jukebox run` (1 process) drains the same backlog into Redis; the
   throughput is measured from the process's own `jukebox_events_in_total`;
3. latency: events (the backlog's honest mix, over at most 50,000 jukeboxes new to the
   flow) are produced at a fixed rate (default: 80 % of the drain rate just measured, a
   load the flow can keep up with) with event time = send time, and each
   jukebox's latency is its Redis `_written_ms` minus the send time of its last event
   (p50/p99 over jukeboxes);
4. scale-out: a 2-process cluster (`jukebox run -i/-a`) drains the same backlog again,
   into a fresh key prefix: what the second process adds;
5. apart: two independent `jukebox run` processes (no cluster), each on topics of its
   own holding half the backlog's events over half its jukeboxes: what partitioning the
   fleet by jukebox across processes would give without the cluster's exchange between
   them. Not a mode the engine offers: customers, venues and the fleet's anomaly detector
   span jukeboxes, so it would need repartition topics (docs/scaling.md).

Each drain also reports the CPU each process used while it ran (flow processes, broker,
Redis; from /proc, so Linux only): whether a rate is bound by the flow or by its
neighbours on the same cores, and the flow's CPU time per event.

    python -m bench.feature_flow [--events 200000] [--jukeboxes 200000] [--rate EVENTS_PER_S]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from rich.console import Console
from rich.table import Table

from dataflows.local_stack import LocalStack, create_topics, free_port
from dataflows.records import RawRecord
from dataflows.recovery_partitions import create_partitions
from dataflows.status import metric_sum
from schemas.events import PaymentEvent, PlayEvent
from schemas.topics import Topics, TopicSpec
from tests.integration.flow_process import FlowProcess, produce_records

console = Console()


class HonestTraffic:
    """Plays (80%) and payments (20%) of `jukeboxes` jukebox ids `<prefix>-<n>` picked at
    random, each paying for what it plays: a payment buys 4 credits (80 KES) and the
    jukebox's next 4 events are plays of one credit each naming it; a jukebox starts with
    0-4 credits left from a payment made before the traffic. `tag` makes the event and
    payment ids unique. Plays naming a new unknown payment each would look like fraud
    (`device_unbacked_payments_1h`), and every event of such a jukebox would build an
    alert; payments drawn at random, each of one credit (before 2026-12-04, 15:00 UTC),
    left a warm jukebox ~47 credits unpaid an hour, so the sustained unpaid-credits rule
    held on its every row."""

    def __init__(self, seed: int, jukeboxes: int, prefix: str = "jb", tag: str | None = None) -> None:
        self.rnd, self.jukeboxes, self.prefix = random.Random(seed), jukeboxes, prefix
        self.tag = str(seed) if tag is None else tag
        self.paid: dict[str, str] = {}  # jukebox -> its latest payment id
        self.credits: dict[str, int] = {}  # jukebox -> credits left of it

    def event(self, i: int, at: datetime) -> PlayEvent | PaymentEvent:
        """The `i`-th event, at event time `at`."""
        rnd, tag = self.rnd, self.tag
        jb = f"{self.prefix}-{rnd.randrange(self.jukeboxes)}"
        left = self.credits.setdefault(jb, rnd.randrange(5))
        if left:
            self.credits[jb] = left - 1
            return PlayEvent(event_id=f"p{tag}-{i}", jukebox_id=jb, venue_id="v1",
                             song_id=f"s{rnd.randrange(2000)}", played_at=at, credits_used=1,
                             payment_id=self.paid.get(jb, f"before-{jb}"))
        self.paid[jb], self.credits[jb] = f"pay{tag}-{i}", 4
        return PaymentEvent(event_id=f"m{tag}-{i}", payment_id=self.paid[jb], jukebox_id=jb, venue_id="v1",
                            customer_id=f"c{rnd.randrange(max(1, self.jukeboxes // 2))}", amount="80",
                            currency="KES", method="mobile_money", status="succeeded", occurred_at=at)


def topic_of(topics: Topics, event: PlayEvent | PaymentEvent) -> str:
    return topics.plays if type(event) is PlayEvent else topics.payments


def synthetic_records(topics: Topics, count: int, jukeboxes: int, start: datetime, seed: int,
                      spacing_s: float) -> list[RawRecord]:
    """`HonestTraffic` at `spacing_s` of event time apart; arrival = event time + 2 s."""
    traffic = HonestTraffic(seed, jukeboxes)
    records = []
    for i in range(count):
        at = start + timedelta(seconds=i * spacing_s)
        event = traffic.event(i, at)
        records.append(RawRecord(topic_of(topics, event), event.jukebox_id.encode(),
                                 event.model_dump_json().encode(), None, None, int(at.timestamp() * 1000) + 2000))
    return records


def passthrough_rate(bootstrap: str, topics: Topics, total: int) -> float:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench", "enable.auto.commit": False})
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5,
                         "compression.type": "lz4"})
    metadata = consumer.list_topics(timeout=10).topics
    consumer.assign([TopicPartition(t, p, 0) for t in (topics.plays, topics.payments)
                     for p in metadata[t].partitions])
    out = "bench.passthrough"
    failures: list = []
    seen = 0
    started = time.perf_counter()
    while seen < total:
        for message in consumer.consume(1000, 1.0):
            if message.error():
                continue
            while True:
                try:
                    producer.produce(out, message.value(), message.key(),
                                     on_delivery=lambda err, _m: err and failures.append(err))
                    break
                except BufferError:
                    producer.poll(0.05)
            seen += 1
        producer.poll(0)
    producer.flush(60)
    elapsed = time.perf_counter() - started
    consumer.close()
    assert not failures, failures[:3]
    return total / elapsed


def events_in(metrics_url: str) -> float:
    return metric_sum(metrics_url, "jukebox_events_in_total")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # after "(name)"
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Drain:
    rate: float  # events/s of the processes together
    seconds: float
    cpu_share: dict[str, float]  # process -> CPU used / wall time while draining (1.0 = one core)


def drain(flows: list[FlowProcess], total: int, neighbours: dict[str, int], timeout_s: float = 600,
          ready: Callable[[], bool] | None = None) -> Drain:
    """Events/s of the processes together, from their first counted event (or from when
    `ready()` first holds, if later) to the last."""
    urls = [f"http://127.0.0.1:{flow.metrics_port}/metrics" for flow in flows]
    pids = {**{f"flow {i}": flow.process.pid for i, flow in enumerate(flows)}, **neighbours}
    first_at = first_count = None
    cpu_at_first: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for flow in flows:
            flow.assert_running()
        count = sum(events_in(url) for url in urls)
        now = time.monotonic()
        if first_at is None and count > 0 and (ready is None or ready()):
            first_at, first_count = now, count
            cpu_at_first = {name: cpu_seconds(pid) for name, pid in pids.items()}
        if count >= total:
            wall = now - first_at
            share = {name: (cpu_seconds(pid) - cpu_at_first[name]) / wall for name, pid in pids.items()}
            return Drain((count - first_count) / wall, wall, share)
        time.sleep(1.0)  # a scrape is a thread in the flow process: poll as Prometheus would, not 10x a second
    raise TimeoutError(f"flow did not drain {total} events in {timeout_s}s")


def cpu_summary(result: Drain) -> str:
    """'flow 0 83%, broker 3%, redis 16%; 195 µs of flow CPU per event'."""
    shares = ", ".join(f"{name} {share:.0%}" for name, share in result.cpu_share.items())
    flow_cpu = sum(share for name, share in result.cpu_share.items() if name.startswith("flow"))
    return f"{shares}; {flow_cpu / result.rate * 1e6:,.0f} µs of flow CPU per event"


def cluster(bootstrap: str, redis_url: str, topics: Topics, key_prefix: str, workdir: Path,
            processes: int) -> list[FlowProcess]:
    """`jukebox run -i/-a` processes sharing one recovery directory (one partition each)."""
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
    recovery = workdir / "recovery"
    recovery.mkdir(parents=True, mode=0o700)
    create_partitions(recovery, processes)  # as `jukebox run` makes them
    return [FlowProcess(bootstrap, redis_url, topics, key_prefix, workdir / f"p{i}", snapshot_interval_s=5.0,
                        extra_env={"JUKEBOX_FLOW_RECOVERY_DIR": str(recovery)},
                        args=["-i", str(i), "-a", addresses]).start() for i in range(processes)]


def latency_ms(bootstrap: str, flow: FlowProcess, client: redis.Redis, topics: Topics, rate: int,
               seconds: int, jukeboxes: int) -> list[float]:
    # 20 ms batches, as the simulator sends: the embedded broker's CPU per request grows with
    # the batches it holds (tests/faults/test_sustained_load.py), and 1 ms batches measured it.
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    traffic = HonestTraffic(99, jukeboxes, prefix="lat", tag="lat")
    last_sent: dict[str, int] = {}
    started = time.perf_counter()
    sent = 0
    while time.perf_counter() - started < seconds:
        due = int((time.perf_counter() - started) * rate)
        while sent < due:
            now = datetime.now(UTC)
            event = traffic.event(sent, now)
            jb, ms = event.jukebox_id, int(now.timestamp() * 1000)
            producer.produce(topic_of(topics, event), event.model_dump_json().encode(), jb.encode(), timestamp=ms)
            last_sent[jb] = ms
            sent += 1
        producer.poll(0)
        time.sleep(0.002)
    producer.flush(30)
    time.sleep(3)  # let the last micro-batches land
    pipe = client.pipeline(transaction=False)
    ids = sorted(last_sent)
    for jb in ids:
        pipe.hget(f"{flow.key_prefix}:device:v1:{jb}", "_written_ms")
    written = pipe.execute()
    return [int(w) - last_sent[jb] for jb, w in zip(ids, written, strict=True) if w is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--jukeboxes", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=None,
                        help="events/s during the latency phase (default: 80%% of the drain rate)")
    parser.add_argument("--latency-seconds", type=int, default=20)
    args = parser.parse_args()

    with LocalStack() as stack, tempfile.TemporaryDirectory() as workdir:
        topics = Topics("bench.")
        create_topics({"bootstrap.servers": stack.kafka_bootstrap},
                      [*topics.specs(), TopicSpec("bench.passthrough", 8, False, "-", "-")])
        start = datetime.now(UTC) - timedelta(hours=2)
        console.print(f"producing {args.events:,} events over {args.jukeboxes:,} jukeboxes ...")
        produce_records(stack.kafka_bootstrap,
                        synthetic_records(topics, args.events, args.jukeboxes, start, 1, 0.02))
        raw = passthrough_rate(stack.kafka_bootstrap, topics, args.events)
        client = redis.Redis.from_url(stack.redis_url)
        flow = FlowProcess(stack.kafka_bootstrap, stack.redis_url, topics, "bench", Path(workdir),
                           snapshot_interval_s=5.0).start()
        try:
            one = drain([flow], args.events, stack.server_pids)
            rate = args.rate or int(0.8 * one.rate)
            # at most 50,000 jukeboxes, new to the flow: as many as `--jukeboxes` when fewer
            latencies = latency_ms(stack.kafka_bootstrap, flow, client, topics, rate,
                                   args.latency_seconds, jukeboxes=min(args.jukeboxes, 50_000))
        finally:
            flow.stop()
        # The same backlog again with two processes (a fresh key prefix and recovery directory).
        drained = args.events  # the latency phase's events come after the backlog
        pair = cluster(stack.kafka_bootstrap, stack.redis_url, topics, "bench2", Path(workdir) / "two", 2)
        try:
            two = drain(pair, drained, stack.server_pids)
        finally:
            for process in pair:
                process.stop()
        halves = [Topics(f"bench-{half}.") for half in "ab"]
        create_topics({"bootstrap.servers": stack.kafka_bootstrap}, [*halves[0].specs(), *halves[1].specs()])
        for seed, half in enumerate(halves, start=2):
            produce_records(stack.kafka_bootstrap,
                            synthetic_records(half, args.events // 2, args.jukeboxes // 2, start, seed, 0.02))
        apart = [FlowProcess(stack.kafka_bootstrap, stack.redis_url, half, f"bench-{i}", Path(workdir) / f"apart{i}",
                             snapshot_interval_s=5.0).start() for i, half in enumerate(halves)]
        try:
            independent = drain(apart, args.events // 2 * 2, stack.server_pids)
        finally:
            for process in apart:
                process.stop()
        used_memory = client.info("memory")["used_memory"]
        keys = client.dbsize()

    table = Table(title="feature flow vs raw Kafka pass-through (same broker, same run)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("raw pass-through (consume+produce, confirmed)", f"{raw:,.0f} ev/s")
    table.add_row("feature flow: backlog drain", f"{one.rate:,.0f} ev/s ({one.seconds:.1f}s)")
    table.add_row("  CPU while draining (100% = one core)", cpu_summary(one))
    table.add_row("ratio flow / pass-through", f"{one.rate / raw:.2f}")
    table.add_row("feature flow: backlog drain, 2 processes", f"{two.rate:,.0f} ev/s ({two.seconds:.1f}s)")
    table.add_row("  CPU while draining", cpu_summary(two))
    table.add_row("what the second process adds (2 / 1 process)", f"{two.rate / one.rate:.2f}x")
    table.add_row("2 independent processes, half the jukeboxes each", f"{independent.rate:,.0f} ev/s "
                  f"({independent.seconds:.1f}s)")
    table.add_row("  CPU while draining", cpu_summary(independent))
    table.add_row("what they add (2 apart / 1 process)", f"{independent.rate / one.rate:.2f}x")
    table.add_row("fleet peak target", "20,000 ev/s")
    if latencies:
        q = statistics.quantiles(latencies, n=100)
        table.add_row(f"event→Redis latency at {rate:,} ev/s offered (p50 / p99)",
                      f"{statistics.median(latencies):,.0f} / {q[98]:,.0f} ms")
    table.add_row("Redis memory per key (device+customer)", f"{used_memory / max(keys, 1):,.0f} B")
    console.print(table)
    if args.events >= 2 * args.jukeboxes:
        console.print(f"The drains are backlogs of {args.events / args.jukeboxes:,.0f} events a jukebox: a batch's "
                      "rows of one jukebox coalesce into one Redis write, and an epoch's snapshot of it covers "
                      "several of its events. A live fleet brings a jukebox's events ~50 s apart: for a "
                      "process's live capacity, see tests/faults/test_sustained_load.py.")


if __name__ == "__main__":
    main()
