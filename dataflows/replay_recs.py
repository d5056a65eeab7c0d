"""The recommendation steps of a replay: a fixed model (or trending alone), the catalog
from a file or its topic, and updates stamped with the event time they are based on, so
two replays of the same history publish byte-identical lists."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer
from rich.console import Console

from dataflows.recs_live import load_catalog
from dataflows.recs_step import TRENDING_VERSION, RecsConfig
from dataflows.replay_models import replay_recs_scorer
from dataflows.settings import JukeboxSettings
from models.recs_catalog import CatalogError

console = Console(stderr=True)


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
