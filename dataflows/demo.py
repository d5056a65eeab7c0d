"""`jukebox demo`: the main job, end to end, on the embedded local stack.

Starts the broker and Redis, makes sure a fraud model is champion in the local
MLflow store (training a small one the first time), simulates a fleet with fraud
scenarios and messy delivery, runs `jukebox run` over it as a real process, and
shows what came out: features with their ages, alerts against the ground truth,
dead letters by reason. Everything it started is stopped on exit or Ctrl-C.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import redis
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dataflows.features_cli import features_table
from dataflows.local_stack import LocalStack, create_topics, free_port
from dataflows.simulate import publish_records
from dataflows.status import ScrapeFailed, metric_sum, scraped
from dataflows.topic_reader import read_topic
from models.registry import FraudModelRegistry, local_tracking_uri
from online_store.redis_store import RedisFeatureStore
from online_store.store_format import entity_key
from schemas.topics import Topics
from simulator.simulation import Simulation

console = Console()


def _ensure_champion(tracking_uri: str) -> str:
    registry = FraudModelRegistry(tracking_uri)
    version = registry.champion_version()
    if version is not None:
        return version
    console.print("[b]No fraud model yet:[/b] training a small one (once; `jukebox train fraud` for a real one)")
    from dataflows.train import train_fraud

    train_fraud(jukeboxes=300, days=1.0, seed=0, fraud_rate=0.3, tracking_uri=tracking_uri,
                n_estimators=60, min_gain=0.0, on_retraining_request=False)
    return registry.champion_version() or "none"


def demo(
    jukeboxes: int = typer.Option(1000, min=10, help="Simulated fleet size"),
    hours: float = typer.Option(6.0, min=0.5, help="Simulated hours of traffic"),
    seed: int = typer.Option(7, help="Simulation seed"),
    fraud_rate: float = typer.Option(0.3, min=0.0, max=1.0, help="Fraud episodes per jukebox-day"),
) -> None:
    """Run the whole engine on the embedded local stack and show what it found."""
    from dataflows.cli import load_settings

    settings = load_settings()
    data_dir = settings.data_dir.resolve()
    tracking = settings.models.mlflow_tracking_uri or local_tracking_uri(data_dir)
    version = _ensure_champion(tracking)
    with LocalStack() as stack, tempfile.TemporaryDirectory(prefix="jukebox-demo-") as workdir:
        topics = Topics(settings.kafka.topic_prefix)
        create_topics({"bootstrap.servers": stack.kafka_bootstrap}, topics.specs())
        console.print(f"local stack: broker {stack.kafka_bootstrap}, redis {stack.redis_url}; "
                      f"fraud model jukebox-fraud v{version}")
        start = (datetime.now(UTC) - timedelta(hours=hours)).replace(second=0, microsecond=0)
        simulation = Simulation(jukeboxes=jukeboxes, seed=seed, start=start,
                                duration=timedelta(hours=hours), fraud_rate=fraud_rate,
                                include_catalog=True)
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,.0f}"),
                      TimeElapsedColumn(), console=console) as progress:
            task = progress.add_task(f"simulating {jukeboxes:,} jukeboxes x {hours:g} h", total=None)
            report = publish_records({"bootstrap.servers": stack.kafka_bootstrap}, topics,
                                     simulation.records(),
                                     on_progress=lambda n, _r: progress.update(task, completed=n))
            if not report.ok:
                console.print(f"[red]simulator deliveries failed:[/red] {dict(report.failed)}")
                raise typer.Exit(1)
            inputs = sum(n for t, n in report.delivered.items() if t in topics.inputs)
            progress.update(task, total=report.produced, completed=report.produced)

            port = free_port()
            env = {**os.environ, "JUKEBOX_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
                   "JUKEBOX_REDIS_URL": stack.redis_url, "JUKEBOX_FLOW_METRICS_PORT": str(port),
                   "JUKEBOX_FLOW_RECOVERY_DIR": str(Path(workdir) / "recovery"),
                   "JUKEBOX_MODELS_MLFLOW_TRACKING_URI": tracking}
            log = open(Path(workdir) / "flow.log", "wb")  # noqa: SIM115 - lives as long as the process it logs
            flow = subprocess.Popen([sys.executable, "-m", "dataflows.cli", "run"], env=env,
                                    stdout=log, stderr=subprocess.STDOUT)
            try:
                run = progress.add_task("dataflow: events processed", total=inputs)
                url = f"http://127.0.0.1:{port}/metrics"
                while (done := metric_sum(url, "jukebox_events_in_total")) < inputs:
                    if flow.poll() is not None:
                        raise typer.Exit(_failed(Path(workdir) / "flow.log"))
                    progress.update(run, completed=done)
                    time.sleep(0.3)
                progress.update(run, completed=inputs)
                wait_for_quiet_outputs(url)
            finally:
                flow.terminate()
                flow.wait(20)
                log.close()
        _show_results(stack, topics, settings.redis.key_prefix, start + timedelta(hours=hours))


OUTPUT_COUNTERS = ("jukebox_alerts_total", "jukebox_dead_letters_total", "jukebox_late_events_total",
                   "jukebox_recommendation_updates_total", "jukebox_redis_write_rows_total")


def wait_for_quiet_outputs(url: str, quiet_s: float = 1.5, timeout_s: float = 20.0) -> None:
    """Once every input is read, the last micro-batch's alerts, recommendations and Redis
    writes are still on their way: wait until the engine's output counters stop moving."""
    last, quiet_since, deadline = None, time.monotonic(), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            page = scraped(url, timeout_s=2.0)
        except ScrapeFailed:
            return  # the flow is gone: the caller reports its exit
        now = tuple(page.sum(name) for name in OUTPUT_COUNTERS)
        if now != last:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            return
        time.sleep(0.25)


def _recommendations_table(values: list[bytes]) -> Table:
    """How many updates went out, to how many jukeboxes, and the latest list of one of them."""
    updates = [orjson.loads(v) for v in values]
    latest = {u["jukebox_id"]: u for u in updates}
    versions = Counter(u["model_version"] for u in updates)
    table = Table(title=f"recommendation updates: {len(updates):,} to {len(latest):,} jukeboxes "
                        f"(model {', '.join(sorted(versions)) or 'none'})")
    table.add_column("jukebox")
    table.add_column("rank", justify="right")
    table.add_column("song")
    table.add_column("score", justify="right")
    if latest:
        jukebox, update = min(latest.items())
        for rank, song in enumerate(update["songs"][:5], 1):
            table.add_row(jukebox if rank == 1 else "", str(rank), song["song_id"], f"{song['score']:.3f}")
    return table


def _failed(log: Path) -> int:
    console.print("[red]the dataflow stopped:[/red]")
    console.print(log.read_text(errors="replace")[-3000:])
    return 1


def _show_results(stack: LocalStack, topics: Topics, key_prefix: str, now: datetime) -> None:
    alerts = [orjson.loads(v) for v in read_topic(stack.kafka_bootstrap, topics.fraud_alerts)]
    labels = [orjson.loads(v) for v in read_topic(stack.kafka_bootstrap, topics.labels)]
    dead = Counter(orjson.loads(v)["reason"] for v in read_topic(stack.kafka_bootstrap, topics.dead_letters))
    late = Counter(orjson.loads(v)["reason"] for v in read_topic(stack.kafka_bootstrap, topics.late_events))

    flagged = {label["jukebox_id"] for label in labels}
    table = Table(title=f"fraud alerts ({len(alerts):,}) vs labelled episodes")
    for column in ("first reason", "alerts", "on a labelled\njukebox", "severity\nhigh+"):
        table.add_column(column, justify="right" if column != "first reason" else "left",
                         no_wrap=column == "first reason")  # a reason is read whole
    by_reason: dict[str, list[dict]] = {}
    for alert in alerts:
        by_reason.setdefault(alert["reasons"][0], []).append(alert)
    for reason, group in sorted(by_reason.items()):
        hits = sum(1 for a in group if a["jukebox_id"] in flagged)
        high = sum(1 for a in group if a["severity"] in ("high", "critical"))
        table.add_row(reason, f"{len(group):,}", f"{hits:,}", f"{high:,}")
    console.print(table)
    scenarios = Counter(label["scenario"] for label in labels)
    alerted = {a["jukebox_id"] for a in alerts}
    caught = Counter(label["scenario"] for label in labels if label["jukebox_id"] in alerted)
    recall = Table(title="labelled fraud: jukeboxes alerted on")
    recall.add_column("scenario")
    recall.add_column("jukeboxes", justify="right")
    recall.add_column("alerted", justify="right")
    for scenario, n in sorted(scenarios.items()):
        recall.add_row(scenario, f"{n:,}", f"{caught[scenario]:,}")
    console.print(recall)
    console.print(_recommendations_table(read_topic(stack.kafka_bootstrap, topics.recommendations)))
    rejected = Table(title="records not used")
    rejected.add_column("topic")
    rejected.add_column("reason")
    rejected.add_column("count", justify="right")
    for reason, n in sorted(dead.items()):
        rejected.add_row("dead letters", reason, f"{n:,}")
    for reason, n in sorted(late.items()):
        rejected.add_row("late events", reason, f"{n:,}")
    console.print(rejected)
    store = RedisFeatureStore(redis.Redis.from_url(stack.redis_url), key_prefix)
    shown = sorted(alerted)[:1] + sorted(set(store.scan_entities("device")) - alerted)[:1]
    for jukebox in shown:
        found = store.read("device", jukebox, now)
        if found is not None:
            console.print(features_table(found, entity_key(key_prefix, "device", jukebox), console.width))
    console.print("[green]demo finished[/green]: `jukebox stack up` + `jukebox simulate` + "
                  "`jukebox run` do the same step by step.")
