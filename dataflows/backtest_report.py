"""The backtest report of a replay: what it raised, how right it was, how fast it ran; and a diff.

`backtest_report` turns a replay's outputs into one JSON-ready dict (`report.json`):

* `run`: inputs, history fingerprint, event-time span, events, wall time, events/s and
  speed-up over real time, workers;
* `config`: every setting that can change an output (lateness, model, rules, decisions);
* `outputs`: counts and sha256 of each output file (equal digests = identical outputs);
* `alerts`: by reason, by severity, and both over event time (`timeline`);
* `labels`: per-scenario precision/recall of the alerts against the labelled fraud
  episodes (`models.evaluation.episode_metrics`, the training-time judge), when labels exist;
* `recommendations`: how often the list in force on a jukebox held the song it played next.

`summary_tables` prints it in the terminal (rich); `report_diff` / `diff_table` put two
reports side by side. The HTML rendering lives in `dataflows/backtest_html.py`.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

import orjson
from rich.table import Table

from models.evaluation import episode_metrics
from schemas.outputs import FraudAlert, RecommendationUpdate, Severity
from schemas.types import format_utc
from simulator.fraud import FraudLabel

REPORT_FORMAT = "jukebox-backtest/1"
_BUCKETS_S = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 86_400, 7 * 86_400)


def bucket_seconds(span_s: float, max_buckets: int = 48) -> int:
    """The smallest round bucket giving at most `max_buckets` buckets over `span_s`.

    >>> bucket_seconds(2 * 3600), bucket_seconds(7 * 86_400)
    (300, 21600)
    """
    for size in _BUCKETS_S:
        if span_s / size <= max_buckets:
            return size
    return _BUCKETS_S[-1]


def _number(value: float | None) -> float | None:
    """JSON has no NaN: an undefined ratio is null."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _iso_s(seconds: int) -> str:
    return format_utc(datetime.fromtimestamp(seconds, tz=UTC))


def alert_timeline(alerts: Sequence[FraudAlert], start_s: int, end_s: int) -> dict:
    """Alert counts per event-time bucket, by reason (every reason an alert names) and severity."""
    if alerts:
        times = [int(a.event_time.timestamp()) for a in alerts]
        start_s, end_s = min(start_s, min(times)), max(end_s, max(times))
    size = bucket_seconds(max(1, end_s - start_s))
    first = start_s - start_s % size
    count = (end_s - first) // size + 1
    by_reason: dict[str, list[int]] = defaultdict(lambda: [0] * count)
    by_severity: dict[str, list[int]] = {s.value: [0] * count for s in Severity}
    for alert in alerts:
        index = (int(alert.event_time.timestamp()) - first) // size
        for reason in alert.reasons:
            by_reason[reason.value][index] += 1
        by_severity[alert.severity.value][index] += 1
    return {"bucket_s": size, "start": _iso_s(first), "buckets": count,
            "by_reason": dict(sorted(by_reason.items())), "by_severity": by_severity}


def label_metrics(alerts: Sequence[FraudAlert], labels: Sequence[FraudLabel]) -> dict | None:
    """Per-scenario precision/recall of the alerts against labelled episodes."""
    if not labels:
        return None
    judged = episode_metrics(list(alerts), labels)
    return {
        "episodes": len({label.episode_id for label in labels}),
        "precision_any": _number(judged.precision_any),
        "by_scenario": {
            scenario: {"precision": _number(m.precision), "recall": _number(m.recall), "alerts": m.alerts,
                       "episodes": m.episodes, "detected_any_reason": m.detected_any_reason}
            for scenario, m in judged.by_scenario.items()
        },
    }


def recommendation_quality(updates: Sequence[RecommendationUpdate],
                           plays: Mapping[str, Sequence[tuple[int, str]]]) -> dict | None:
    """Share of plays whose song was on the jukebox's list in force (the latest update
    based on events before the play): a proxy, since simulated customers do not see lists."""
    if not updates:
        return None
    lists: dict[str, list[tuple[int, frozenset[str]]]] = defaultdict(list)
    for update in updates:
        lists[update.jukebox_id].append((int(update.based_on_event_time.timestamp()),
                                         frozenset(s.song_id for s in update.songs)))
    judged = hits = 0
    for jukebox, in_force in lists.items():
        in_force.sort(key=lambda item: item[0])
        times = [t for t, _ in in_force]
        for played_s, song in plays.get(jukebox, ()):
            index = bisect.bisect_right(times, played_s) - 1
            if index >= 0:
                judged += 1
                hits += song in in_force[index][1]
    played = {song for sequence in plays.values() for _, song in sequence}
    recommended = {s.song_id for u in updates for s in u.songs}
    return {
        "updates": len(updates), "jukeboxes": len(lists),
        "mean_list_length": sum(len(u.songs) for u in updates) / len(updates),
        "distinct_songs": len(recommended),
        "catalog_coverage_of_played": _number(len(recommended & played) / len(played) if played else None),
        "plays_judged": judged, "hit_rate": _number(hits / judged if judged else None),
        "model_versions": sorted({u.model_version for u in updates}),
    }


def dead_letter_reasons(values: Iterable[bytes]) -> dict:
    reasons = Counter(orjson.loads(v).get("reason", "?") for v in values)
    return {"total": sum(reasons.values()), "by_reason": dict(sorted(reasons.items()))}


def backtest_report(
    run: dict,
    config: dict,
    outputs: Mapping[str, Sequence[bytes]],
    output_digests: Mapping[str, str],
    features: Mapping[str, int],
    labels: Sequence[FraudLabel],
    plays: Mapping[str, Sequence[tuple[int, str]]],
) -> dict:
    """The report as a JSON-ready dict. `run` carries `first_ms`/`last_ms` (arrival span)."""
    alerts = [FraudAlert.model_validate_json(v) for v in outputs.get("fraud_alerts", ())]
    updates = [RecommendationUpdate.model_validate_json(v) for v in outputs.get("recommendations", ())]
    start_s, end_s = run["first_ms"] // 1000, run["last_ms"] // 1000
    reasons = Counter(r.value for a in alerts for r in a.reasons)
    return {
        "format": REPORT_FORMAT,
        "run": run,
        "config": config,
        "outputs": {
            "alerts": len(alerts),
            "recommendations": len(updates),
            "dead_letters": dead_letter_reasons(outputs.get("dead_letters", ())),
            "late_events": dead_letter_reasons(outputs.get("late_events", ())),
            "features": dict(features),
            "sha256": dict(output_digests),
        },
        "alerts": {
            "by_reason": dict(reasons.most_common()),
            "by_severity": {s.value: sum(a.severity is s for a in alerts) for s in Severity},
            "by_primary_reason": dict(Counter(a.reasons[0].value for a in alerts).most_common()),
            "jukeboxes": len({a.jukebox_id for a in alerts}),
            "timeline": alert_timeline(alerts, start_s, end_s),
        },
        "labels": label_metrics(alerts, labels),
        "recommendations": recommendation_quality(updates, plays),
    }


# --- terminal --------------------------------------------------------------------------------
def _text(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def recommendation_updates(report: dict) -> int | str:
    """The updates' count, or why there is none: a replay runs the recommendation steps
    only with `--recs`, and a 0 would read as a recommender that said nothing."""
    if report["config"].get("recs") is None:
        return "not run (--recs)"
    return report["outputs"]["recommendations"]


def summary_tables(report: dict) -> list[Table]:
    """Run, alerts and (when labelled) per-scenario quality, as rich tables."""
    run, outputs, alerts = report["run"], report["outputs"], report["alerts"]
    head = Table(title="replay", show_header=False)
    head.add_column("measure")
    head.add_column("value", justify="right")
    for name, value in (
        ("events", run["events"]), ("event time", f"{run['event_time_from']} → {run['event_time_to']}"),
        ("wall time (s)", run["wall_s"]), ("events/s", run["events_per_s"]),
        ("× real time", run["speedup_vs_real_time"]), ("workers", run["workers"]),
        ("alerts", outputs["alerts"]), ("jukeboxes alerted", alerts["jukeboxes"]),
        ("dead letters", outputs["dead_letters"]["total"]), ("late events", outputs["late_events"]["total"]),
        ("recommendation updates", recommendation_updates(report)),
        ("device / customer entities", (f"{outputs['features'].get('device', 0):,} / "
                                        f"{outputs['features'].get('customer', 0):,}")),
    ):
        head.add_row(name, _text(value))
    tables = [head]
    by_reason = Table(title="alerts by reason (an alert may name several)")
    by_reason.add_column("reason")
    by_reason.add_column("alerts", justify="right")
    for reason, count in alerts["by_reason"].items():
        by_reason.add_row(reason, f"{count:,}")
    by_reason.add_row("[b]severity[/b]", "  ".join(f"{s} {n}" for s, n in alerts["by_severity"].items()))
    tables.append(by_reason)
    labels = report.get("labels")
    if labels:
        quality = Table(title=f"against {labels['episodes']} labelled episodes "
                              f"(precision of any alert: {_text(labels['precision_any'])})")
        for column in ("scenario", "episodes", "alerts", "precision", "recall", "caught (any reason)"):
            quality.add_column(column, justify="left" if column == "scenario" else "right")
        for scenario, m in labels["by_scenario"].items():
            quality.add_row(scenario, _text(m["episodes"]), _text(m["alerts"]), _text(m["precision"]),
                            _text(m["recall"]), _text(m["detected_any_reason"]))
        tables.append(quality)
    recs = report.get("recommendations")
    if recs:
        table = Table(title="recommendations", show_header=False)
        table.add_column("measure")
        table.add_column("value", justify="right")
        for name in ("updates", "jukeboxes", "mean_list_length", "distinct_songs", "plays_judged", "hit_rate"):
            table.add_row(name.replace("_", " "), _text(recs[name]))
        tables.append(table)
    return tables


# --- diff ----------------------------------------------------------------------------------
def _flat(prefix: str, value: object) -> dict[str, object]:
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for key, item in value.items():
            out.update(_flat(f"{prefix}.{key}" if prefix else str(key), item))
        return out
    return {prefix: value}


_DIFF_RUN = ("events", "wall_s", "events_per_s", "speedup_vs_real_time", "workers")
_HEADLINES = ("outputs.alerts", "outputs.dead_letters.total", "outputs.late_events.total",
              "outputs.recommendations", "outputs.features.", "alerts.jukeboxes", "alerts.by_reason.",
              "alerts.by_severity.", "labels.precision_any", "labels.by_scenario.", "recommendations.hit_rate")


def _headline(metric: str) -> bool:
    if metric.startswith("labels.by_scenario."):
        return metric.endswith((".precision", ".recall"))
    return any(metric == h or (h.endswith(".") and metric.startswith(h)) for h in _HEADLINES)


def report_diff(a: dict, b: dict, everything: bool = False) -> list[tuple[str, object, object]]:
    """(metric, A, B) rows: configuration that differs, throughput, which output files differ,
    then the headline measures (`everything`: every measure of either report)."""
    rows: list[tuple[str, object, object]] = []
    config_a, config_b = _flat("config", a["config"]), _flat("config", b["config"])
    for key in sorted(set(config_a) | set(config_b)):
        if config_a.get(key) != config_b.get(key):
            rows.append((key, config_a.get(key), config_b.get(key)))
    rows += [(f"run.{k}", a["run"].get(k), b["run"].get(k)) for k in _DIFF_RUN]
    digests_a, digests_b = a["outputs"]["sha256"], b["outputs"]["sha256"]
    for name in sorted(set(digests_a) | set(digests_b)):
        same = digests_a.get(name) == digests_b.get(name)
        rows.append((f"identical {name}", "yes" if same else "no", "yes" if same else "no"))
    for section in ("outputs", "alerts", "labels", "recommendations"):
        flat_a = _flat(section, {k: v for k, v in (a.get(section) or {}).items() if k not in ("timeline", "sha256")})
        flat_b = _flat(section, {k: v for k, v in (b.get(section) or {}).items() if k not in ("timeline", "sha256")})
        rows += [(key, flat_a.get(key), flat_b.get(key)) for key in sorted(set(flat_a) | set(flat_b))
                 if everything or _headline(key)]
    return rows


def _delta(x: object, y: object) -> str:
    if isinstance(x, int | float) and isinstance(y, int | float) and not isinstance(x, bool | str):
        d = y - x
        if d == 0:
            return ""
        return f"{d:+,}" if isinstance(d, int) else f"{d:+,.0f}" if abs(d) >= 100 else f"{d:+,.3f}"
    return "" if x == y else "≠"


def diff_table(a: dict, b: dict, name_a: str = "A", name_b: str = "B", everything: bool = False) -> Table:
    same_history = a["run"].get("history_sha256") == b["run"].get("history_sha256")
    title = "same history" if same_history else "[red]DIFFERENT histories: the comparison is not like for like[/red]"
    table = Table(title=f"{name_a} vs {name_b}: {title}")
    for column in ("measure", name_a, name_b, "Δ"):
        if column == "measure":
            table.add_column(column, no_wrap=True)
        else:
            table.add_column(column, justify="right", overflow="fold")
    for metric, x, y in report_diff(a, b, everything):
        style = "bold" if metric.startswith("config.") or (metric.startswith("identical") and x == "no") else None
        table.add_row(metric, _text(x), _text(y), _delta(x, y), style=style)
    return table
