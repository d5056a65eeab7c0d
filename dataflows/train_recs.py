"""`jukebox train recs`: simulate play history, train the recommender, evaluate it on
held-out future plays against a popularity baseline, export ONNX, register it in
MLflow, and promote it to `jukebox-recs@champion` only when it is better.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from models.onnx_export import ParityError
from models.recommender import scores
from models.recs_catalog import RecsCatalog, write_catalog_jsonl
from models.recs_features import InputBuilder
from models.recs_history import EvalSample, crowd_shifts, play_history
from models.recs_registry import RecsModelRegistry
from models.recs_rules import RecsPolicy, SongRanker
from models.recs_training import RecsTrainer, TrainedRecsModel, evaluate, popularity_rows
from models.registry import local_tracking_uri
from online_store.venue_taste import TastePolicy
from simulator.catalog import SongCatalog
from simulator.fleet import Fleet
from simulator.simulation import DEFAULT_START, Simulation

out = Console()
err = Console(stderr=True)


def _pct(lift: float) -> str:
    return f"{lift:+.1%}"


def comparison_table(trained: TrainedRecsModel, groups: dict[str, tuple[float, float, float, float, int]]) -> Table:
    t = trained.test
    start, end = trained.split_times[1], trained.data_range[1]
    table = Table(title=f"Held-out future plays ({start:%a %H:%M} - {end:%a %H:%M} UTC): "
                        f"top {trained.settings['top_n']} vs songs played in the next hour")
    # two-line headers, so that 80 columns cut none ("popula…")
    for column in ("venues", "samples", "model\nHR@10", "popular\nHR@10", "lift",
                   "model\nNDCG@10", "popular\nNDCG@10", "lift"):
        table.add_column(column, justify="right" if column != "venues" else "left",
                         no_wrap=column != "venues")
    table.add_row("[b]all[/b]", f"{t.model.samples:,}", f"{t.model.hit_rate:.3f}", f"{t.popularity.hit_rate:.3f}",
                  _pct(t.hit_rate_lift), f"{t.model.ndcg:.4f}", f"{t.popularity.ndcg:.4f}", _pct(t.ndcg_lift),
                  end_section=True)
    for name, (hr, hr_pop, ndcg, ndcg_pop, n) in groups.items():
        table.add_row(name, f"{n:,}", f"{hr:.3f}", f"{hr_pop:.3f}", _pct(hr / hr_pop - 1 if hr_pop else 0.0),
                      f"{ndcg:.4f}", f"{ndcg_pop:.4f}", _pct(ndcg / ndcg_pop - 1 if ndcg_pop else 0.0))
    table.caption = ("Both rankings obey the same rules: licensed in the venue's country, not played there "
                     "in the last N hours, at most 2 songs per artist. Popularity = the country's most "
                     "played songs in the training period.")
    return table


def group_metrics(trained: TrainedRecsModel, catalog: RecsCatalog, history, shifted: set[str],
                  rules: RecsPolicy) -> dict[str, tuple[float, float, float, float, int]]:
    """Model vs popularity on the test samples of venues whose crowd shifted, and the rest."""
    params, ranker = trained.params, SongRanker(trained.params.vocab.song_ids, catalog, rules)
    train_end = trained.split_times[0].timestamp()
    train = [p for p in history.plays if p.played_at.timestamp() < train_end]
    builder, groups = InputBuilder(params.vocab), {}
    for name, keep in (("crowd shifted", True), ("stable crowd", False)):
        samples: list[EvalSample] = [s for s in trained.holdout if (s.snapshot.venue_id in shifted) == keep]
        if not samples:
            continue
        inputs = builder.tensors([s.snapshot for s in samples], [s.trending for s in samples])
        model = evaluate(scores(params, inputs), samples, ranker)
        baseline = evaluate(popularity_rows(train, history.countries(), samples, params.vocab.song_ids),
                            samples, ranker)
        groups[name] = (model.hit_rate, baseline.hit_rate, model.ndcg, baseline.ndcg, model.samples)
    return groups


def train_recs(
    jukeboxes: int = typer.Option(600, min=20, help="Simulated fleet size"),
    days: float = typer.Option(5.0, min=1.0, help="Simulated days of play history"),
    seed: int = typer.Option(0, help="Simulation seed (the model's seed is fixed)"),
    shift_share: float = typer.Option(
        0.25, min=0.0, max=1.0, help="Share of venues whose crowd turns to another genre during the run"),
    rank: int = typer.Option(32, min=1, help="Rank of the co-occurrence factorisation"),
    interval_s: int = typer.Option(300, min=1, help="Scoring interval per venue (event time), as served"),
    tracking_uri: str | None = typer.Option(
        None, help="MLflow tracking URI (default: settings, else a local store under data_dir)"),
    min_gain: float = typer.Option(0.0, min=0.0, help="NDCG@10 gain needed to replace the champion"),
    catalog_out: Path | None = typer.Option(None, help="Also write the song catalog as JSON Lines here"),
) -> None:
    """Simulate, train, evaluate vs popularity, export ONNX, register `jukebox-recs`; promote only if better."""
    from dataflows.cli import load_settings  # dataflows.cli imports the train commands
    from dataflows.train import _redacted  # dataflows.train registers this command

    settings = load_settings()
    uri = tracking_uri or settings.models.mlflow_tracking_uri or local_tracking_uri(settings.data_dir)
    duration = timedelta(days=days)
    fleet, songs = Fleet(jukeboxes, seed), SongCatalog(seed=seed)
    shifts = crowd_shifts(fleet, songs, DEFAULT_START, duration, shift_share, seed)
    simulation = Simulation(jukeboxes=jukeboxes, seed=seed, duration=duration, fraud_rate=0.0,
                            taste_shifts=shifts, include_labels=False)
    catalog = RecsCatalog(simulation.catalog.songs)
    rules = RecsPolicy(interval_s=interval_s)
    trainer = RecsTrainer(rank=rank, taste=TastePolicy(interval_s=interval_s), rules=rules)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.completed:,.0f}"), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=False) as progress:
        task = progress.add_task(f"simulating {jukeboxes:,} jukeboxes x {days:g} days "
                                 f"({len(shifts)} crowd shifts)", total=None)

        def tick(n: int) -> None:
            if n % 5000 == 0:
                progress.update(task, completed=n)

        history = play_history(simulation.records(), on_record=tick)
        progress.update(task, total=1, completed=1,
                        description=f"history: {len(history.plays):,} plays at {len(history.venues):,} venues")
        fit = progress.add_task("training", total=None)
        try:
            trained = trainer.fit(history, catalog, on_step=lambda text: progress.update(fit, description=text))
        except (ValueError, ParityError) as exc:
            progress.stop()
            err.print(f"[red]training failed:[/red] {exc}")
            raise typer.Exit(1) from None
        progress.update(fit, total=1, completed=1, description="trained, exported, tested")
        register = progress.add_task(f"registering in {_redacted(uri)}", total=None)
        try:
            outcome = RecsModelRegistry(uri).register(
                trained, catalog, rules, min_gain=min_gain,
                params={"sim_jukeboxes": jukeboxes, "sim_days": days, "sim_seed": seed,
                        "sim_shift_share": shift_share, "sim_crowd_shifts": len(shifts)})
        except Exception as exc:  # noqa: BLE001 - MLflow raises many types; say which and stop, non-zero
            progress.stop()
            err.print(f"[red]registering failed:[/red] {type(exc).__name__}: {exc}")
            raise typer.Exit(1) from None
        progress.update(register, total=1, completed=1)
    shifted = {s.venue_id for s in shifts}
    out.print(comparison_table(trained, group_metrics(trained, catalog, history, shifted, rules)))
    b = trained.params.blend
    out.print(f"blend tuned on {trained.validation.model.samples:,} validation samples: alpha {b.alpha:g}, "
              f"gamma {b.gamma:g}, w_language {b.w_language:g}, w_artist {b.w_artist:g}, "
              f"w_collab {b.w_collab:g}, w_trending {b.w_trending:g}; ONNX parity max |diff| "
              f"{trained.parity_max_abs_diff:.1e}; {len(trained.onnx_bytes) / 1e6:.1f} MB; "
              f"sha256 {trained.sha256[:16]}")
    if catalog_out is not None:
        count = write_catalog_jsonl(catalog_out, catalog.songs)
        out.print(f"catalog: {count:,} songs written to {catalog_out}")
    verdict = "[green]promoted to champion[/green]" if outcome.promoted else "[yellow]not promoted[/yellow]"
    out.print(f"jukebox-recs version {outcome.version} (run {outcome.run_id}): {verdict} — {outcome.reason}")
