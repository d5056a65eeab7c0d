"""`jukebox train ...`: train models on simulated labelled history and register them in MLflow.

`jukebox train fraud` simulates a labelled history, builds point-in-time rows
with the online feature logic, trains and exports the fraud classifier (ONNX,
parity-checked), logs and registers it, and moves the `champion` alias only when
the new version beats the current champion on the same holdout.

`jukebox train fraud --on-retraining-request` first reads the model-events topic
(explicit partition assignment, no consumer group) and trains only when a
`retraining_requested` event for `jukebox-fraud` is newer than the champion's
registration; otherwise it says so and exits 0 (a cron job or CI can run it often).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from dataflows.recs_live import topic_records
from dataflows.train_recs import train_recs
from models.evaluation import AlertReplay, holdout_alert_replay
from models.model_drift import retraining_request
from models.onnx_export import ParityError
from models.recs_catalog import CatalogError
from models.registry import FraudModelRegistry, local_tracking_uri
from models.training import FraudTrainer, TrainedFraudModel
from models.training_set import HistoryStats, labelled_training_set
from online_store.admission import AdmissionPolicy
from schemas.outputs import ModelEvent
from schemas.topics import Topics
from simulator.simulation import Simulation

train_app = typer.Typer(no_args_is_help=True, help="Train models and register them in MLflow.")
train_app.command("recs")(train_recs)
out = Console()
err = Console(stderr=True)


def _num(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.3f}"


def metrics_table(trained: TrainedFraudModel, replay: AlertReplay) -> Table:
    """Per scenario: the alerts the engine would publish (rules + model + decision, judged
    per episode) and the model alone (PR-AUC over rows)."""
    m = trained.metrics
    table = Table(
        title=f"Held-out jukeboxes: {len(trained.holdout):,} rows, "
        f"model alert threshold {m.threshold:.3f}"
    )
    table.add_column("scenario", no_wrap=True, min_width=len("account_on_distant_jukeboxes"))
    # two-line headers: at 80 columns one-line ones were cut ("episod…", "preci…")
    for column in ("epi-\nsodes", "alert\nprecision", "alert\nrecall", "model\nPR-AUC", "fraud\nrows"):
        table.add_column(column, justify="right", min_width=5)
    for scenario in sorted(set(m.by_scenario) | set(replay.by_scenario)):
        a, s = replay.by_scenario.get(scenario), m.by_scenario.get(scenario)
        table.add_row(
            scenario,
            f"{a.episodes:,}" if a else "0",
            _num(a.precision) if a else "—",
            _num(a.recall) if a else "—",
            _num(s.pr_auc) if s else "—",
            f"{s.positives:,}" if s else "0",
        )
    table.add_row(
        "[b]any fraud[/b]",
        f"{sum(a.episodes for a in replay.by_scenario.values()):,}",
        _num(replay.precision_any),
        "",
        _num(m.overall.pr_auc),
        f"{m.overall.positives:,}",
        end_section=True,
    )
    table.caption = (
        "alert precision: alerts naming the scenario that fall in one of its episodes (or the "
        "3 h after); alert recall: episodes with such an alert; model PR-AUC: that scenario's "
        "rows against all clean rows."
    )
    return table


def model_events(values: Iterable[bytes | None]) -> list[ModelEvent]:
    """The decodable `ModelEvent`s among raw topic values (anything else is skipped)."""
    events = []
    for value in values:
        if value is None:
            continue
        try:
            events.append(ModelEvent.model_validate_json(value))
        except ValidationError:
            continue
    return events


def pending_retraining_request(
    registry: FraudModelRegistry, values: Iterable[bytes | None]
) -> tuple[ModelEvent | None, str | None, datetime | None]:
    """(the request to act on or None, the champion version, its registration time)."""
    champion = registry.champion_version()
    registered_at = registry.registered_at(champion) if champion is not None else None
    return retraining_request(model_events(values), registry.name, registered_at), champion, registered_at


def _check_retraining_request(settings, uri: str) -> bool:
    """Whether a retraining request is pending; prints why or why not."""
    topic = Topics(settings.kafka.topic_prefix).model_events
    if not settings.kafka.bootstrap:
        err.print("[red]--on-retraining-request needs JUKEBOX_KAFKA_BOOTSTRAP[/red]")
        raise typer.Exit(1)
    try:
        records = topic_records(settings.kafka.client_config(), topic)
    except CatalogError as exc:
        err.print(f"[red]cannot read the model events:[/red] {exc}")
        raise typer.Exit(1) from None
    request, champion, registered_at = pending_retraining_request(
        FraudModelRegistry(uri), (value for _p, _o, _k, value in records))
    since = f"champion v{champion} (registered {registered_at:%Y-%m-%d %H:%M:%S}Z)" if champion else "no champion"
    if request is None:
        out.print(f"no retraining request on {topic} newer than {since}: nothing to do")
        return False
    out.print(
        f"retraining requested: {request.feature} of {request.model} v{request.model_version} drifted "
        f"(PSI {request.psi:.3f}, JS {request.js_divergence:.3f}, KS {request.ks_statistic:.3f}) "
        f"in the window ending {request.window_end:%Y-%m-%d %H:%M:%S}Z; {since}"
    )
    return True


@train_app.command("fraud")
def train_fraud(
    jukeboxes: int = typer.Option(1000, min=10, help="Simulated fleet size"),
    days: float = typer.Option(2.0, min=0.05, help="Simulated days of history"),
    seed: int = typer.Option(0, help="Simulation seed (the model seed is fixed)"),
    fraud_rate: float = typer.Option(
        0.2, min=0.0, max=1.0, help="Share of jukeboxes with a fraud episode per simulated day"
    ),
    tracking_uri: str | None = typer.Option(
        None, help="MLflow tracking URI (default: settings, else a local store under data_dir)"
    ),
    n_estimators: int = typer.Option(150, min=1, help="Trees in the forest"),
    min_gain: float = typer.Option(0.0, min=0.0, help="PR-AUC gain needed to replace the champion"),
    on_retraining_request: bool = typer.Option(
        False, "--on-retraining-request",
        help="Train only if the model-events topic holds a retraining request newer than the "
        "champion; otherwise exit 0",
    ),
) -> None:
    """Simulate, train, export to ONNX, register `jukebox-fraud`; promote only if better."""
    from dataflows.cli import load_settings  # dataflows.cli imports this module to register it

    settings = load_settings()
    uri = (
        tracking_uri or settings.models.mlflow_tracking_uri or local_tracking_uri(settings.data_dir)
    )
    if on_retraining_request and not _check_retraining_request(settings, uri):
        return
    simulation = Simulation(
        jukeboxes=jukeboxes, seed=seed, duration=timedelta(days=days), fraud_rate=fraud_rate
    )
    admission = AdmissionPolicy(
        settings.features.allowed_lateness_s, settings.features.max_future_skew_s
    )
    stats = HistoryStats()
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=False) as progress:
        task = progress.add_task(f"simulating {jukeboxes:,} jukeboxes x {days:g} days", total=None)

        def tick(n: int) -> None:
            if n % 5000 == 0:
                progress.update(task, completed=n)

        data = labelled_training_set(simulation.records(), admission, stats=stats, on_record=tick)
        progress.update(
            task,
            completed=stats.records,
            total=stats.records,
            description=f"history: {stats.rows:,} rows, {stats.labels:,} fraud labels",
        )
        fit = progress.add_task(
            f"training a {n_estimators}-tree forest, exporting ONNX", total=None
        )
        try:
            trained = FraudTrainer(n_estimators=n_estimators).fit(data)
        except (ValueError, ParityError) as exc:
            progress.stop()
            err.print(f"[red]training failed:[/red] {exc}")
            raise typer.Exit(1) from None
        progress.update(fit, total=1, completed=1)
        replay_task = progress.add_task(
            "replaying held-out alerts through the ONNX model", total=None
        )
        replay = holdout_alert_replay(trained, stats.fraud_labels)
        progress.update(replay_task, total=1, completed=1)
        register = progress.add_task(f"registering in {_redacted(uri)}", total=None)
        try:
            outcome = FraudModelRegistry(uri).register(
                trained,
                params={
                    "sim_jukeboxes": jukeboxes,
                    "sim_days": days,
                    "sim_seed": seed,
                    "sim_fraud_rate": fraud_rate,
                    "rows_ambiguous": stats.excluded_tail,
                },
                min_gain=min_gain,
                metrics=replay.as_flat(),
            )
        except Exception as exc:  # noqa: BLE001 - MLflow raises many types; say which and stop, non-zero
            progress.stop()
            err.print(f"[red]registering failed:[/red] {type(exc).__name__}: {exc}")
            raise typer.Exit(1) from None
        progress.update(register, total=1, completed=1)
    out.print(metrics_table(trained, replay))
    overall = trained.metrics.overall
    out.print(
        f"model on held-out rows at its threshold: precision {_num(overall.precision)}, "
        f"recall {_num(overall.recall)}; "
        f"rows: {stats.rows:,} ({stats.excluded_tail:,} ambiguous, left out of training), "
        f"decode errors {stats.decode_errors:,}, not admitted {stats.not_admitted:,}; "
        f"ONNX parity max |diff| {trained.parity_max_abs_diff:.1e}; sha256 {trained.sha256[:16]}"
    )
    verdict = (
        "[green]promoted to champion[/green]"
        if outcome.promoted
        else "[yellow]not promoted[/yellow]"
    )
    out.print(
        f"jukebox-fraud version {outcome.version} (run {outcome.run_id}): {verdict}"
        f" — {outcome.reason}"
    )


def _redacted(uri: str) -> str:
    """A tracking URI without credentials (http://user:pass@host -> http://***@host)."""
    scheme, sep, rest = uri.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri
