"""`jukebox features get`: one entity's online features, as the models would read them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from online_store.definitions import features_of
from online_store.redis_store import RedisFeatureStore, StoreError, redis_client_from
from online_store.store import EntityFeatures
from online_store.store_format import ENTITIES, entity_key
from schemas.types import format_utc

features_app = typer.Typer(no_args_is_help=True, help="Online features in Redis.")
out = Console()
err = Console(stderr=True)


def age_text(age: timedelta) -> str:
    """Compact age: `42s`, `3m 05s`, `2h 00m`, `3d 04h`; negative ages get a minus sign."""
    sign, seconds = ("-", -age.total_seconds()) if age < timedelta(0) else ("", age.total_seconds())
    s = int(seconds)
    if s < 60:
        return f"{sign}{seconds:.3g}s" if s < 10 else f"{sign}{s}s"
    if s < 3600:
        return f"{sign}{s // 60}m {s % 60:02d}s"
    if s < 86_400:
        return f"{sign}{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{sign}{s // 86_400}d {s % 86_400 // 3600:02d}h"


def event_time_text(as_of: datetime) -> str:
    """UTC to the millisecond, with a space where a narrow column may break it.

    >>> event_time_text(datetime(2026, 12, 4, 21, 0, 14, 123456, tzinfo=UTC))
    '2026-12-04 21:00:14.123Z'
    """
    return format_utc(as_of)[:23].replace("T", " ") + "Z"


_WITH_EVENT_TIME = 110  # columns: the widest table, event times included, is ~103


def features_table(found: EntityFeatures, key: str, width: int = 200) -> Table:
    """Every declared feature of the entity; absent ones (None when written) show as —.
    Narrower than `_WITH_EVENT_TIME` columns, the event time column is left out (the age
    says the same, as now − event time) so that no feature name is cut."""
    title = f"{escape(key)}  version {found.version}  written {format_utc(found.written_at)}"
    with_time = width >= _WITH_EVENT_TIME
    table = Table(title=title, box=box.SIMPLE_HEAD,
                  caption=None if with_time else f"event times shown from {_WITH_EVENT_TIME} columns")
    columns = ("feature", "value", "unit", "age", "stale?") + (("event time",) if with_time else ())
    for column in columns:  # the name is what a reader looks for: never cut
        table.add_column(column, justify="right" if column in ("value", "age") else "left",
                         no_wrap=column not in ("value", "unit"), overflow="fold")
    for feature in features_of(found.entity):  # type: ignore[arg-type]
        reading = found.readings.get(feature.name)
        if reading is None:
            table.add_row(feature.name, "—", feature.unit, style="dim")  # rich fills the rest
            continue
        value = f"{reading.value:.6g}" if isinstance(reading.value, float) else str(reading.value)
        table.add_row(feature.name, value, feature.unit, age_text(reading.age),
                      "[red]stale[/red]" if reading.stale else "fresh",
                      *([event_time_text(reading.as_of)] if with_time else []))
    return table


@features_app.command("get")
def get_features(
    entity_id: str = typer.Argument(..., help="Jukebox id (device) or payment account (customer)"),
    entity: str = typer.Option("device", "--entity", "-e", help=f"One of: {', '.join(ENTITIES)}"),
) -> None:
    """Print an entity's stored features with their event time, age and staleness."""
    if entity not in ENTITIES:
        err.print(f"[red]unknown entity {entity!r}[/red]: expected one of {', '.join(ENTITIES)}")
        raise typer.Exit(1)
    # Imported here, not at the top: dataflows.cli imports this module to register it.
    from dataflows.cli import load_settings

    settings = load_settings().redis
    if settings.url is None:
        err.print("[red]no Redis configured[/red]: start the local stack with `jukebox stack up` "
                  "and export the JUKEBOX_REDIS_URL it prints, or set JUKEBOX_REDIS_URL")
        raise typer.Exit(2)
    try:
        key = entity_key(settings.key_prefix, entity, entity_id)
    except ValueError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(1) from None
    try:
        client = redis_client_from(
            settings.url.get_secret_value(), settings.username,
            settings.password.get_secret_value() if settings.password else None,
            settings.ssl_ca_certs, settings.ssl_certfile, settings.ssl_keyfile,
            settings.socket_timeout_s,
        )
        store = RedisFeatureStore(client, settings.key_prefix, attempts=settings.retry_attempts)
        found = store.read(entity, entity_id, now=datetime.now(UTC))
    except (ValueError, StoreError) as exc:  # messages are already redacted
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    if found is None:
        err.print(f"no features stored at {escape(key)} (never written, or expired)")
        raise typer.Exit(1)
    out.print(features_table(found, key, out.width))
