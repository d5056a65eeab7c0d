"""`jukebox status`: a terminal view of a running engine, read from its metrics endpoint.

Rates need two scrapes: a one-shot status takes two, `--sample-seconds` apart
(0 = one scrape, totals only); `--watch` rescrapes every `--interval` and shows
rates over the last interval. Latency quantiles are interpolated from histogram
buckets the way Prometheus' `histogram_quantile` does it.
"""

from __future__ import annotations

import math
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

import typer
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from dataflows.features_cli import age_text

DEFAULT_METRICS_URL = "http://127.0.0.1:9108/metrics"

Labels = tuple[tuple[str, str], ...]
K = TypeVar("K")


class ScrapeFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Scrape:
    """One scrape: sample name -> {sorted label pairs -> value}, and when it was taken."""

    samples: dict[str, dict[Labels, float]]
    taken_at: float  # monotonic seconds

    def series(self, name: str) -> dict[Labels, float]:
        return self.samples.get(name, {})

    def total(self, name: str, by: str, **where: str) -> dict[str, float]:
        """Sum of `name` grouped by the label `by`, over samples matching `where`."""
        out: dict[str, float] = defaultdict(float)
        for labels, value in self.series(name).items():
            d = dict(labels)
            if all(d.get(k) == v for k, v in where.items()):
                out[d.get(by, "")] += value
        return dict(out)

    def sum(self, name: str, **where: str) -> float:
        return sum(self.total(name, "", **where).values())


def parsed_scrape(text: str, taken_at: float) -> Scrape:
    samples: dict[str, dict[Labels, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return Scrape(dict(samples), taken_at)


def scraped(
    url: str, timeout_s: float = 5.0, clock: Callable[[], float] = time.monotonic
) -> Scrape:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            text = response.read().decode("utf-8")
    except (urllib.error.URLError, OSError) as exc:
        raise ScrapeFailed(f"cannot scrape {url}: {getattr(exc, 'reason', exc)}") from None
    try:
        return parsed_scrape(text, clock())
    except ValueError as exc:
        raise ScrapeFailed(f"{url} did not return Prometheus text format: {exc}") from None


def metric_sum(url: str, sample: str, timeout_s: float = 2.0, **where: str) -> float:
    """The sum of a metric's samples (those with every label in `where`) on a metrics page;
    0 while the page is not served (a flow still starting, or gone)."""
    try:
        return scraped(url, timeout_s=timeout_s).sum(sample, **where)
    except ScrapeFailed:
        return 0.0


def per_second(
    current: Mapping[K, float], previous: Mapping[K, float] | None, elapsed_s: float
) -> dict[K, float | None]:
    """Counter rates between two scrapes; None without a previous scrape. A counter that
    went down restarted, so its whole current value counts as the increase."""
    if previous is None or elapsed_s <= 0:
        return {key: None for key in current}
    rates: dict[K, float | None] = {}
    for key, now in current.items():
        before = previous.get(key, 0.0)
        rates[key] = (now - before if now >= before else now) / elapsed_s
    return rates


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """Quantile from cumulative `(le, count)` buckets, interpolated linearly within a bucket.

    >>> histogram_quantile(0.5, [(0.25, 0), (0.5, 10), (float("inf"), 10)])
    0.375
    >>> histogram_quantile(0.99, [(0.1, 0), (float("inf"), 0)]) is None
    True
    """
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for upper_bound, count in ordered:
        if count >= rank:
            if math.isinf(upper_bound):
                return lower_bound  # the highest finite bound is all we know
            if count == lower_count:
                return upper_bound
            share = (rank - lower_count) / (count - lower_count)
            return lower_bound + (upper_bound - lower_bound) * share
        lower_bound, lower_count = upper_bound, count
    return lower_bound


def histogram_buckets(
    scrape: Scrape, name: str, previous: Scrape | None = None, **where: str
) -> list[tuple[float, float]]:
    """Cumulative buckets of histogram `name` (summed over other labels); with `previous`,
    only the observations made since it."""

    def cumulative(s: Scrape) -> dict[float, float]:
        out: dict[float, float] = defaultdict(float)
        for labels, value in s.series(f"{name}_bucket").items():
            d = dict(labels)
            if all(d.get(k) == v for k, v in where.items()):
                out[float(d["le"])] += value
        return out

    now = cumulative(scrape)
    if previous is not None:
        before = cumulative(previous)
        if all(now[le] >= before.get(le, 0.0) for le in now):
            now = {le: now[le] - before.get(le, 0.0) for le in now}
    return sorted(now.items())


@dataclass
class StatusView:
    """Renders a scrape (and rates against the previous one) as rich tables."""

    url: str
    current: Scrape
    previous: Scrape | None = None
    error: str | None = None
    _elapsed: float = field(init=False)

    def __post_init__(self) -> None:
        self._elapsed = self.current.taken_at - self.previous.taken_at if self.previous else 0.0

    def _rates(
        self, name: str, by: str, **where: str
    ) -> tuple[dict[str, float], dict[str, float | None]]:
        now = self.current.total(name, by, **where)
        before = self.previous.total(name, by, **where) if self.previous else None
        return now, per_second(now, before, self._elapsed)

    def renderable(self) -> RenderableType:
        parts: list[RenderableType] = [self._header()]
        if self.error:
            parts.append(Panel(self.error, title="last scrape failed", style="red"))
        parts += [self._inputs(), self._failures(), self._alerts(), self._recommendations(),
                  self._models(), self._latency()]
        return Group(*parts)

    def _header(self) -> RenderableType:
        version = next(iter(self.current.total("jukebox_build_info", "version")), "?")
        entities = self.current.total("jukebox_entities_in_state", "entity")
        state = ", ".join(f"{k} {_count(v)}" for k, v in sorted(entities.items())) or "-"
        window = f"rates over {self._elapsed:.1f}s" if self.previous else "totals only (one scrape)"
        return Panel(f"engine {version}   entities in state: {state}   {window}",
                     title=f"jukebox status - {self.url}")

    def _inputs(self) -> Table:
        events, rates = self._rates("jukebox_events_in_total", "topic")
        lag = self.current.total("jukebox_event_time_lag_seconds", "topic")
        consumer_lag = self.current.total("jukebox_kafka_consumer_lag_messages", "topic")
        decode, _ = self._rates("jukebox_decode_failures_total", "topic")
        late, _ = self._rates("jukebox_late_events_total", "topic")
        table = Table(title="Inputs", title_justify="left")
        for column in ("topic", "events", "per s", "time\nlag", "kafka\nlag", "decode\nerrors", "late"):
            # numbers never wrap (a lag of "5h" over "25m" misreads); a long topic name may
            table.add_column(column, justify="left" if column == "topic" else "right",
                             no_wrap=column != "topic", overflow="fold")
        for topic in sorted(set(events) | set(lag) | set(consumer_lag)):
            table.add_row(topic, _count(events.get(topic)), _rate(rates.get(topic)),
                          _seconds(lag.get(topic)), _count(consumer_lag.get(topic)),
                          _count(decode.get(topic)), _count(late.get(topic)))
        return table

    def _failures(self) -> Table:
        table = Table(title="Dead letters and sink failures", title_justify="left")
        for column in ("what", "topic", "reason", "total", "per s"):
            table.add_column(column, justify="right" if column in ("total", "per s") else "left")
        dead = self.current.series("jukebox_dead_letters_total")
        before = self.previous.series("jukebox_dead_letters_total") if self.previous else None
        rates = per_second(dead, before, self._elapsed)
        for labels, value in sorted(dead.items()):
            d = dict(labels)
            table.add_row("dead letter", d.get("topic", ""), d.get("reason", ""), _count(value),
                          _rate(rates[labels]))
        failures, failure_rates = self._rates("jukebox_sink_delivery_failures_total", "topic")
        for topic, value in sorted(failures.items()):
            table.add_row("[red]delivery failed[/red]", topic, "", _count(value),
                          _rate(failure_rates[topic]))
        return table

    def _alerts(self) -> Table:
        series = self.current.series("jukebox_alerts_total")
        before = self.previous.series("jukebox_alerts_total") if self.previous else None
        rates = per_second(series, before, self._elapsed)
        table = Table(title="Fraud alerts", title_justify="left")
        for column in ("reason", "severity", "total", "per min"):
            table.add_column(column, justify="right" if column in ("total", "per min") else "left")
        for labels, value in sorted(series.items(), key=lambda kv: -kv[1]):
            if value <= 0:
                continue
            d = dict(labels)
            rate = rates[labels]
            table.add_row(d["reason"], d["severity"], _count(value),
                          _rate(None if rate is None else rate * 60))
        return table

    def _recommendations(self) -> Text:
        """What the firmware receives: updates sent, and those held back as unchanged."""
        updates, rates = self._rates("jukebox_recommendation_updates_total", "result")
        if not updates:  # an engine that predates the metric
            return Text("recommendation updates: -")
        sent = rates.get("sent")
        per_s = "" if sent is None else f" ({_rate(sent)}/s)"
        return Text(f"recommendation updates: {_count(updates.get('sent', 0))} sent{per_s}, "
                    f"{_count(updates.get('suppressed', 0))} suppressed (ranking unchanged)")

    def _models(self) -> Table:
        loaded = self.current.total("jukebox_model_loaded", "model")
        versions: dict[str, list[str]] = defaultdict(list)
        for labels, value in self.current.series("jukebox_model_info").items():
            d = dict(labels)
            if value > 0:
                versions[d["model"]].append(d["version"])
        failures = self.current.total("jukebox_model_reload_failures_total", "model")
        psi = self.current.series("jukebox_drift_psi")
        worst: dict[str, tuple[float, str]] = {}
        for labels, value in psi.items():
            d = dict(labels)
            if value > worst.get(d["model"], (-1.0, ""))[0]:
                worst[d["model"]] = (value, d["feature"])
        table = Table(title="Models", title_justify="left")
        for column in ("model", "version", "loaded", "reload failures", "max PSI (feature)"):
            table.add_column(column)
        for model in sorted(set(loaded) | set(versions)):
            is_loaded = loaded.get(model, 0) > 0
            drift = worst.get(model)
            table.add_row(
                model, ", ".join(sorted(versions.get(model, []))) or "-",
                "[green]yes[/green]" if is_loaded else "[red]no[/red]",
                _count(failures.get(model)),
                f"{drift[0]:.3f} ({drift[1]})" if drift else "-",
            )
        return table

    def _latency(self) -> RenderableType:
        since = f"last {self._elapsed:.1f}s" if self.previous else "since start"
        table = Table(title=f"Latency and writes ({since})", title_justify="left")
        for column in ("what", "p50", "p99", "mean", "count"):
            table.add_column(column, justify="left" if column == "what" else "right")
        rows = [("redis write", "jukebox_redis_write_duration_seconds", {})]
        scorers = self.current.total("jukebox_scoring_duration_seconds_count", "scorer")
        rows += [(f"score {scorer}", "jukebox_scoring_duration_seconds", {"scorer": scorer})
                 for scorer in sorted(scorers)]
        for label, name, where in rows:
            buckets = histogram_buckets(self.current, name, self.previous, **where)
            count = buckets[-1][1] if buckets else 0.0
            total = self.current.sum(f"{name}_sum", **where)
            before = self.previous.sum(f"{name}_sum", **where) if self.previous else 0.0
            total -= before if before <= total else 0.0  # else: the engine restarted
            table.add_row(label, _seconds(histogram_quantile(0.5, buckets)),
                          _seconds(histogram_quantile(0.99, buckets)),
                          _seconds(total / count if count else None), _count(count))
        written = self.current.total("jukebox_redis_write_rows_total", "result")
        batches = self.current.sum("jukebox_redis_write_batches_total")
        summary = Text(f"redis: {_count(batches)} batches, {_count(written.get('applied'))} rows "
                       f"applied, {_count(written.get('stale'))} stale (event-time guard)")
        return Group(table, summary)


def _count(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _seconds(value: float | None) -> str:
    """A latency or a lag, short enough for a narrow column.

    >>> [_seconds(v) for v in (0.0031, 2.5, 75, 19_512.3, None)]
    ['3.1 ms', '2.5 s', '1m 15s', '5h 25m', '-']
    """
    if value is None:
        return "-"
    if abs(value) < 1:
        return f"{value * 1000:.1f} ms"
    if abs(value) < 60:
        return f"{value:.1f} s"
    return age_text(timedelta(seconds=value))


def show_status(url: str, console: Console, sample_seconds: float) -> None:
    first = scraped(url)
    previous = None
    if sample_seconds > 0:
        time.sleep(sample_seconds)
        previous, first = first, scraped(url)
    console.print(StatusView(url, first, previous).renderable())


def watch_status(
    url: str,
    console: Console,
    interval_s: float,
    refreshes: int | None = None,
    scrape: Callable[[str], Scrape] = scraped,
) -> None:
    """Rescrape every `interval_s` until Ctrl-C (or `refreshes` times); a failed scrape is
    shown and retried, since the engine may be restarting."""
    current = scrape(url)
    previous: Scrape | None = None
    done = 0
    with Live(StatusView(url, current).renderable(), console=console, auto_refresh=False) as live:
        while refreshes is None or done < refreshes:
            time.sleep(interval_s)
            error = None
            try:
                previous, current = current, scrape(url)
            except ScrapeFailed as exc:
                error = str(exc)
            live.update(StatusView(url, current, previous, error).renderable(), refresh=True)
            done += 1


def status(
    metrics_url: str = typer.Option(DEFAULT_METRICS_URL, help="The engine's metrics endpoint"),
    watch: bool = typer.Option(False, "--watch", help="Refresh until Ctrl-C"),
    interval: float = typer.Option(2.0, min=0.1, help="Seconds between refreshes with --watch"),
    sample_seconds: float = typer.Option(
        1.0, min=0.0, help="One-shot: seconds between the two scrapes for rates (0: totals only)"
    ),
) -> None:
    """Show a running engine's inputs, lag, dead letters, alerts, models and latency."""
    console = Console()
    try:
        if watch:
            watch_status(metrics_url, console, interval)
        else:
            show_status(metrics_url, console, sample_seconds)
    except ScrapeFailed as exc:
        Console(stderr=True).print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass
