"""Which models a replay runs: each resolved once, before the first event, so every
event of the history meets the same version (a replay must not follow the champion)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import typer
from rich.console import Console

from dataflows.settings import JukeboxSettings
from models.fraud_scorer import FraudScorer
from models.recommender import RecsScorer
from models.recs_registry import RecsModelRegistry, load_recs_onnx_file
from models.registry import FraudModelRegistry, load_onnx_file, local_tracking_uri

console = Console(stderr=True)
T = TypeVar("T")


def model_for_replay(load: Callable[[], T], what: str, model: str, explicit: bool, fallback: str) -> T | None:
    """`load()`, resolved once for the whole replay. A model asked for explicitly must load
    (else exit 2); the configured default may be missing (a store without a champion)."""
    try:
        return load()
    except Exception as exc:  # noqa: BLE001 - whatever stops a model loading is reported the same way
        if explicit:
            console.print(f"[red]cannot load {what} {model!r}:[/red] {exc}")
            raise typer.Exit(2) from None
        console.print(f"[yellow]no {what} from {model} ({exc}); {fallback}[/yellow]")
        return None


def replay_scorer(model: str, settings: JukeboxSettings, explicit: bool) -> tuple[FraudScorer | None, dict | None]:
    """The one fixed scorer of a replay (resolved once, so every event sees the same version)."""
    if model.lower() == "none":
        return None, None

    def load():
        if model.startswith("models:/"):
            tracking = settings.models.mlflow_tracking_uri or local_tracking_uri(settings.data_dir)
            loaded = FraudModelRegistry(tracking).load(model)
        else:
            loaded = load_onnx_file(Path(model))
        return loaded, FraudScorer.from_model(loaded)

    found = model_for_replay(load, "model", model, explicit,
                             "replaying rules only, like a live flow without a champion")
    if found is None:
        return None, None
    loaded, scorer = found
    return scorer, {"uri": model, "name": scorer.name, "version": scorer.version,
                    "sha256": loaded.sha256, "threshold": scorer.threshold}


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
