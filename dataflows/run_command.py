"""`jukebox run`: the feature (and fraud) dataflow against configured Kafka and Redis."""

from __future__ import annotations

from pathlib import Path

import typer
from bytewax.run import cli_main
from rich.console import Console

from dataflows.garbage_collector import tune_garbage_collector
from dataflows.live import (
    ConfigurationError,
    cluster_place,
    epoch_interval,
    feature_store,
    live_flow,
    recovery_config,
    recovery_partition_count,
    source_resume,
)
from dataflows.metrics import METRICS, start_metrics_server
from dataflows.recovery_partitions import record_cluster_shape
from dataflows.settings import JukeboxSettings
from dataflows.stop_signals import stop_on_signals
from online_store.redis_store import StoreError

console = Console(stderr=True)


def check_store_reachable(settings: JukeboxSettings) -> None:
    """Fail at start-up on a wrong password or an unreachable Redis (the flow's own
    store connects per worker, at its first write)."""
    store = feature_store(settings)
    try:
        store.check_reachable()
    finally:
        store.close()


def run_command(
    workers: int = typer.Option(None, "--workers", "-w", help="Worker threads in this process"),
    process_id: int = typer.Option(None, "--process-id", "-i", help="This process's index in a cluster"),
    addresses: str = typer.Option(None, "--addresses", "-a", help="host:port of every process, ';'-separated"),
    recovery_dir: Path = typer.Option(None, help="Recovery snapshot directory (overrides settings)"),
) -> None:
    """Run the dataflow: Kafka in, features to Redis, alerts and dead letters to Kafka."""
    from dataflows.cli import load_settings

    settings = load_settings()
    workers = workers or settings.flow.workers
    address_list = addresses.split(";") if addresses else None
    try:
        member, processes = cluster_place(process_id, addresses)
        recovery_dir = recovery_dir or settings.flow.recovery_dir
        flow = live_flow(settings, member=member, members=processes,
                         resume=source_resume(settings, recovery_dir, creates_partitions=True))
        check_store_reachable(settings)
        recovery = recovery_config(recovery_dir, recovery_partition_count(
            settings.flow.recovery_partitions_per_process, workers, processes))
        if member == 0:  # the process that lists the parts of a cluster of another size
            record_cluster_shape(recovery_dir, processes, workers)
    except (ConfigurationError, StoreError, ValueError) as exc:
        console.print(f"[red]cannot start:[/red] {exc}")
        raise typer.Exit(2) from None
    if settings.flow.metrics_port is not None:
        endpoint = start_metrics_server(settings.flow.metrics_port)
        console.print(f"metrics on :{endpoint.port}/metrics")
    if recovery is not None:
        METRICS.watch_recovery_dir(Path(recovery.db_dir))
    console.print(f"consuming from {settings.kafka.bootstrap} with {workers} worker(s)"
                  f"{'' if recovery is None else ', recovery on'}")
    tune_garbage_collector()
    stop_on_signals()
    cli_main(flow, workers_per_process=workers, process_id=process_id, addresses=address_list,
             epoch_interval=epoch_interval(settings), recovery_config=recovery)
