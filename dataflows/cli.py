"""The `jukebox` command line. Settings are read here, once, and passed down as parts.

Each command module registers itself below; keep command bodies thin.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import typer
from rich.console import Console

from dataflows.demo import demo
from dataflows.features_cli import features_app
from dataflows.local_stack import LocalStack, create_topics
from dataflows.record import record
from dataflows.replay import replay_app
from dataflows.run_command import run_command
from dataflows.settings import JukeboxSettings
from dataflows.simulate import simulate
from dataflows.status import status
from dataflows.train import train_app
from schemas.json_schema import JSON_DIR, json_schema_bytes, json_schemas
from schemas.topics import Topics

app = typer.Typer(
    no_args_is_help=True, add_completion=False,
    help="jukebox-streams: online features, fraud alerts and recommendations for a jukebox fleet.",
)
schemas_app = typer.Typer(no_args_is_help=True, help="Contracts: JSON Schema export and checks.")
stack_app = typer.Typer(no_args_is_help=True, help="The embedded local stack (broker + Redis).")
app.add_typer(schemas_app, name="schemas")
app.add_typer(stack_app, name="stack")
app.add_typer(features_app, name="features")
app.command("run")(run_command)
app.command("demo")(demo)
app.command("status")(status)
app.command("simulate")(simulate)
app.add_typer(train_app, name="train")
app.command("record")(record)
app.add_typer(replay_app, name="replay")
console = Console(stderr=True)


def load_settings() -> JukeboxSettings:
    try:
        return JukeboxSettings()
    except ValueError as exc:  # pydantic's message names the variable and the problem
        console.print(f"[red]invalid JUKEBOX_* configuration:[/red] {exc}")
        raise typer.Exit(2) from None


@schemas_app.command("export")
def export_schemas(
    out_dir: Path = typer.Option(JSON_DIR, help="Where to write the *.json files"),
    check: bool = typer.Option(False, help="Exit 1 if the files on disk are stale, write nothing"),
) -> None:
    """Write the JSON Schema of every contract (or check they are current)."""
    stale = []
    for name, schema in json_schemas().items():
        path = out_dir / name
        wanted = json_schema_bytes(schema)
        if not path.exists() or path.read_bytes() != wanted:
            stale.append(name)
            if not check:
                out_dir.mkdir(parents=True, exist_ok=True)
                path.write_bytes(wanted)
    if check and stale:
        console.print(f"[red]stale JSON Schemas:[/red] {', '.join(stale)}; run `jukebox schemas export`")
        raise typer.Exit(1)
    console.print(f"{'checked' if check else 'wrote'} {len(json_schemas())} schemas in {out_dir}")


@stack_app.command("up")
def stack_up() -> None:
    """Start the local broker and Redis, create the topics, wait for Ctrl-C."""
    settings = load_settings()
    with LocalStack() as stack:
        create_topics(settings.kafka.client_config(stack.kafka_bootstrap),
                      Topics(settings.kafka.topic_prefix).specs())
        console.print(f"broker  JUKEBOX_KAFKA_BOOTSTRAP={stack.kafka_bootstrap}")
        console.print(f"redis   JUKEBOX_REDIS_URL={stack.redis_url}")
        console.print("topics created; Ctrl-C stops both servers")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


def main() -> None:
    app()


if __name__ == "__main__":
    main()
