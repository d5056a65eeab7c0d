"""The recommendation steps of a replay: a fixed model (or trending alone), the catalog
from a file or its topic, and updates stamped with the event time they are based on, so
two replays of the same history publish byte-identical lists."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import typer
from rich.console import Console

from dataflows.recs_live import load_catalog
from dataflows.recs_step import TRENDING_VERSION, RecsConfig
from dataflows.settings import JukeboxSettings
from models.recommender import RecsScorer
from models.recs_catalog import CatalogError
from models.recs_registry import RecsModelRegistry, load_recs_onnx_file
from models.registry import local_tracking_uri

console = Console(stderr=True)
T = TypeVar("T")


def model_for_replay(load: Callable[[], T], what: str, model: str, explicit: bool, fallback: str) -> T | None:
    """`load()`, resolved once for the whole replay. A model asked for explicitly must load
    (else exit 2); the configured default may be missing (a store without a champion)."""
    try:
        return load()
    except Exception as exc:
        if explicit:
            console.print(f"[red]cannot load {what} {model!r}:[/red] {exc}")
            raise typer.Exit(2) from None
        console.print(f"[yellow]no {what} from {model} ({exc}); {fallback}[/yellow]")
        return None


def replay_recs_scorer(model: str, settings: JukeboxSettings, explicit: bool) -> RecsScorer | None:
    """Resolved once, so every venue sees the same version; None = rank by trending alone."""
    if model.lower() == "none":
        return None

    def load() -> RecsScorer:
        if model.startswith("models:/"):
            tracking = settings.models.mlflow_tracking_uri or local_tracking_uri(settings.data_dir)
            return RecsScorer.from_model(RecsModelRegistry(tracking).load(model))
        return RecsScorer.from_model(load_recs_onnx_file(Path(model)))

    return model_for_replay(load, "recommender", model, explicit,
                            "ranking by trending alone, like a live flow without a champion")


def replay_recs_config(settings: JukeboxSettings, catalog: Path | None, model: str | None,
                       clock: datetime) -> tuple[RecsConfig, dict]:
    """The config and its summary for the report (what can change the lists)."""
    try:
        songs = load_catalog(settings, catalog)
    except (CatalogError, OSError) as exc:
        console.print(f"[red]--recs needs the song catalog:[/red] {exc} (give --catalog FILE)")
        raise typer.Exit(2) from None
    scorer = replay_recs_scorer(model or settings.models.recs_model_uri, settings, model is not None)
    config = RecsConfig(catalog=songs, scorer=lambda _now: scorer, now=lambda: clock,
                        generated_at=lambda based_on: based_on)
    summary = {"model": None if scorer is None else {"name": scorer.name, "version": scorer.version},
               "ranked_by": TRENDING_VERSION if scorer is None else "model",
               "catalog_songs": len(songs), "catalog": str(catalog) if catalog else "topic"}
    return config, summary
