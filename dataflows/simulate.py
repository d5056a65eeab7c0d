"""`jukebox simulate`: seeded fleet traffic into Kafka, every delivery confirmed.

The simulator (`simulator/`) is pure: it yields `SimRecord`s in delivery order.
This module is its producing edge: `publish_records` sends them with an
idempotent producer, the record's arrival time as the Kafka timestamp, and a
delivery callback that counts what the broker acknowledged, per topic. Nothing
is dropped quietly: the command exits 1 if any delivery failed.
"""

from __future__ import annotations

import base64
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import IO

import orjson
import typer
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dataflows.local_stack import create_topics
from schemas.topics import Topics
from simulator.event_json import timestamp_text
from simulator.fraud import SCENARIOS
from simulator.records import SimRecord
from simulator.simulation import Simulation

console = Console(stderr=True)
_SCENARIO_HELP = f"Only these fraud scenarios (repeatable): {', '.join(SCENARIOS)}"

SIMULATOR_PRODUCER_DEFAULTS = {
    "enable.idempotence": "true",  # broker-side dedup of retries; ordered per partition
    "acks": "all",
    "linger.ms": "20",
    "batch.num.messages": "10000",
    "queue.buffering.max.messages": "500000",
    "partitioner": "murmur2_random",  # the Java clients' partitioner: same key, same partition
}


@dataclass
class DeliveryReport:
    """What the broker acknowledged, per topic name."""

    delivered: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    first_error: dict[str, str] = field(default_factory=dict)
    unacknowledged: int = 0  # still queued when the flush timed out
    produced: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed and self.unacknowledged == 0

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        topic = msg.topic() or "?"
        if err is None:
            self.delivered[topic] += 1
        else:
            self.failed[topic] += 1
            self.first_error.setdefault(topic, err.str())

    def problem(self) -> str | None:
        """A one-paragraph explanation of what went wrong, or None."""
        if self.ok:
            return None
        parts = [f"{sum(self.failed.values())} of {self.produced} records failed delivery"]
        parts += [f"{topic}: {count} ({self.first_error[topic]})" for topic, count in self.failed.items()]
        if self.unacknowledged:
            parts.append(f"{self.unacknowledged} still unacknowledged when the flush timed out")
        return "; ".join(parts)


@lru_cache(maxsize=1)
def lz4_available() -> bool:
    """Does this librdkafka build compress with lz4? (A client that never connects tells.)"""
    try:
        Producer({"compression.type": "lz4", "log_level": "0"})
    except KafkaException:
        return False
    return True


def simulator_producer_config(client_config: dict[str, str]) -> dict[str, str]:
    """Reliable producer settings under the deployment's client options (which win)."""
    config = dict(SIMULATOR_PRODUCER_DEFAULTS)
    if lz4_available():
        config["compression.type"] = "lz4"
    config.update(client_config)
    return config


def publish_records(
    producer_config: dict[str, str],
    topics: Topics,
    records: Iterable[SimRecord],
    *,
    rate: float = 0.0,
    flush_timeout_s: float = 60.0,
    on_progress: Callable[[int, SimRecord], None] | None = None,
    progress_every: int = 2000,
) -> DeliveryReport:
    """Produce every record to its topic with its key and timestamp; wait for the acks.

    `rate` caps records per second (0 = as fast as the broker takes them). Returns
    the delivery report; the caller decides how loudly to fail (never silently).
    """
    report = DeliveryReport()
    producer = Producer(producer_config)
    names = {attr: getattr(topics, attr) for attr in ("plays", "payments", "locations", "venues",
                                                      "labels", "song_catalog")}
    started = time.monotonic()
    record = None
    try:
        for count, record in enumerate(records, 1):
            while True:
                try:
                    producer.produce(names[record.topic_attr], record.value, record.key,
                                     timestamp=record.timestamp_ms, on_delivery=report.on_delivery)
                    break
                except BufferError:  # local queue full: serve delivery callbacks, then retry
                    producer.poll(0.05)
            report.produced = count
            if count % progress_every == 0:
                producer.poll(0)
                if on_progress is not None:
                    on_progress(count, record)
            if rate > 0:
                ahead = started + count / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
    finally:
        report.unacknowledged = producer.flush(flush_timeout_s)
    if on_progress is not None and record is not None:
        on_progress(report.produced, record)
    return report


# --- JSON Lines: a run recorded for replays --------------------------------------------
def record_line(record: SimRecord) -> bytes:
    """One record as a JSON line: text values as text, anything else base64."""
    line: dict = {"topic": record.topic_attr, "key": record.key.decode(), "timestamp_ms": record.timestamp_ms}
    try:
        line["value"] = record.value.decode()
    except UnicodeDecodeError:
        line["value_b64"] = base64.b64encode(record.value).decode()
    if record.flags:
        line["flags"] = list(record.flags)
    return orjson.dumps(line) + b"\n"


def write_jsonl(out: IO[bytes], records: Iterable[SimRecord]) -> Iterator[SimRecord]:
    """Pass records through, writing each to `out` on the way."""
    for record in records:
        out.write(record_line(record))
        yield record


def read_jsonl(path: Path) -> Iterator[SimRecord]:
    """Records written by `write_jsonl`, in the same order, byte for byte."""
    with path.open("rb") as lines:
        for line in lines:
            item = orjson.loads(line)
            value = item["value"].encode() if "value" in item else base64.b64decode(item["value_b64"])
            yield SimRecord(item["topic"], item["key"].encode(), value, item["timestamp_ms"],
                            tuple(item.get("flags", ())))


# --- the command -------------------------------------------------------------------------
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def duration_from_text(text: str) -> timedelta:
    """`90s`, `15m`, `2h`, `1.5d` as a timedelta."""
    match = _DURATION.match(text)
    if not match:
        raise typer.BadParameter(f"{text!r}: use a number and a unit, e.g. 90s, 15m, 2h, 1d")
    return timedelta(**{_UNITS[match[2]]: float(match[1])})


def start_from_text(text: str | None) -> datetime:
    """The run's start: the given UTC time, else now rounded down to the minute."""
    if text is None:
        return datetime.now(UTC).replace(second=0, microsecond=0)
    try:
        start = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an ISO 8601 time") from None
    if start.tzinfo is None:
        raise typer.BadParameter(f"{text!r} has no UTC offset: add Z or +00:00")
    return start.astimezone(UTC)


def _split_labels(records: Iterable[SimRecord], labels_out: IO[bytes], counts: Counter) -> Iterator[SimRecord]:
    for record in records:
        if record.topic_attr == "labels":
            labels_out.write(record.value + b"\n")
            counts["labels"] += 1
        else:
            yield record


def _summary(report: DeliveryReport, seconds: float, file_labels: int) -> Table:
    table = Table(title=f"delivered in {seconds:.1f}s ({report.produced / max(seconds, 1e-9):,.0f} records/s)")
    for column in ("topic", "delivered", "failed"):
        table.add_column(column, justify="left" if column == "topic" else "right")
    for topic in sorted(set(report.delivered) | set(report.failed)):
        table.add_row(topic, f"{report.delivered[topic]:,}", f"{report.failed[topic]:,}")
    if file_labels:
        table.add_row("labels file", f"{file_labels:,}", "0")
    return table


def simulate(
    jukeboxes: int = typer.Option(200, min=1, help="Fleet size"),
    seed: int = typer.Option(0, min=0, help="Same seed and options, same records byte for byte"),
    rate: float = typer.Option(0.0, min=0.0, help="Records per second to produce (0 = as fast as possible)"),
    duration: str = typer.Option(None, help="Simulated time to cover, e.g. 30m, 6h, 2d (default 1h "
                                            "unless --events is given)"),
    events: int = typer.Option(None, min=1, help="Stop after this many event records"),
    start: str = typer.Option(None, help="Simulated start, ISO 8601 UTC (default: now, to the minute)"),
    fraud_rate: float = typer.Option(0.02, min=0.0, max=1.0, help="Share of jukeboxes per day in a fraud episode"),
    scenario: list[str] = typer.Option(None, help=_SCENARIO_HELP),
    duplicate_rate: float = typer.Option(0.002, min=0.0, max=1.0, help="Share of records sent twice"),
    out_of_order_rate: float = typer.Option(0.01, min=0.0, max=1.0, help="Share of records delayed 2-90 s"),
    late_rate: float = typer.Option(0.01, min=0.0, max=1.0, help="Share of jukeboxes per day offline for hours"),
    clock_skew_rate: float = typer.Option(0.0, min=0.0, max=1.0, help="Share of device records +24 h / -8 d"),
    malformed_rate: float = typer.Option(0.001, min=0.0, max=1.0, help="Share of records deliberately broken"),
    debezium_share: float = typer.Option(0.0, min=0.0, max=1.0, help="Share of venue records as Debezium envelopes"),
    labels_file: Path = typer.Option(None, help="Write fraud labels here (JSON Lines) instead of the labels topic"),
    catalog: bool = typer.Option(False, "--catalog", help="Also publish the song catalog (compacted topic)"),
    jsonl: Path = typer.Option(None, help="Also record every record to this JSON Lines file (for replays)"),
    kafka: bool = typer.Option(True, "--kafka/--no-kafka", help="Produce to Kafka (--no-kafka: file output only)"),
    create: bool = typer.Option(False, "--create-topics", help="Create missing topics first"),
) -> None:
    """Simulate the fleet: plays, payments, locations, venues and labelled fraud, into Kafka."""
    from dataflows.cli import load_settings  # dataflows.cli imports this module to register it

    settings = load_settings()
    if kafka and settings.kafka.bootstrap is None:
        console.print("[red]no Kafka to produce to:[/red] start the local stack with `jukebox stack up` "
                      "and export the JUKEBOX_KAFKA_BOOTSTRAP it prints, or set JUKEBOX_KAFKA_BOOTSTRAP "
                      "(or use --no-kafka --jsonl FILE)")
        raise typer.Exit(2)
    if not kafka and jsonl is None and labels_file is None:
        console.print("[red]nothing to write:[/red] --no-kafka needs --jsonl FILE (and/or --labels-file)")
        raise typer.Exit(2)
    span = duration_from_text(duration) if duration else (None if events else timedelta(hours=1))
    try:
        sim = Simulation(
            jukeboxes, seed, start_from_text(start), span, events, fraud_rate=fraud_rate,
            scenarios=scenario or SCENARIOS, duplicate_rate=duplicate_rate,
            out_of_order_rate=out_of_order_rate, late_rate=late_rate, clock_skew_rate=clock_skew_rate,
            malformed_rate=malformed_rate, debezium_share=debezium_share, include_catalog=catalog,
        )
    except ValueError as exc:
        console.print(f"[red]invalid simulation options:[/red] {exc}")
        raise typer.Exit(2) from None
    topics = Topics(settings.kafka.topic_prefix)
    client_config = settings.kafka.client_config() if kafka else {}
    if kafka and create:
        create_topics(client_config, topics.specs())
    bound = f"{span} simulated" if span else f"{events:,} events"
    console.print(f"simulating {jukeboxes:,} jukeboxes ({sim.fleet.venues:,} venues), seed {seed}, "
                  f"from {timestamp_text(int(sim.start.timestamp() * 1000))}, {bound}")

    counts: Counter = Counter()
    labels_out = labels_file.open("wb") if labels_file else None
    jsonl_out = jsonl.open("wb") if jsonl else None
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(), console=console,
    )
    total_ms = span // timedelta(milliseconds=1) if span else None
    start_ms = int(sim.start.timestamp() * 1000)
    task = progress.add_task("simulate", total=total_ms or events, stats="")
    began = time.monotonic()

    def show(count: int, record: SimRecord) -> None:
        elapsed = max(time.monotonic() - began, 1e-9)
        sim_time = timestamp_text(record.timestamp_ms)[:19].replace("T", " ")
        done = max(0, record.timestamp_ms - start_ms) if total_ms else count
        progress.update(task, completed=done,
                        stats=f"{count:,} records  {count / elapsed:,.0f}/s  sim {sim_time}Z")

    records: Iterable[SimRecord] = sim.records()
    if labels_out is not None:
        records = _split_labels(records, labels_out, counts)
    if jsonl_out is not None:
        records = write_jsonl(jsonl_out, records)
    try:
        with progress:
            if kafka:
                report = publish_records(simulator_producer_config(client_config), topics, records,
                                         rate=rate, on_progress=show)
            else:
                report, record = DeliveryReport(), None
                for count, record in enumerate(records, 1):
                    report.produced = count
                    report.delivered[f"{record.topic_attr} (file)"] += 1
                    if count % 2000 == 0:
                        show(count, record)
                if record is not None:  # the last count, not the last multiple of 2,000
                    show(report.produced, record)
    except KafkaException as exc:
        console.print(f"[red]Kafka client error:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        for handle in (labels_out, jsonl_out):
            if handle is not None:
                handle.close()
    console.print(_summary(report, time.monotonic() - began, counts["labels"]))
    problem = report.problem()
    if problem:
        console.print(f"[red]delivery failed:[/red] {problem}. Records were not all written; "
                      "check the broker and the topics (`jukebox stack up` creates them) and run again: "
                      "same seed, same records.")
        raise typer.Exit(1)
