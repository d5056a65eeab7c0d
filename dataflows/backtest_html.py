"""A backtest report (or the diff of two) as one self-contained HTML page with inline SVG charts.

No scripts, no external files: the page can be attached to a ticket or a pull request.
Every text taken from a report is escaped.

>>> "<svg" in bars_svg({"a": [1, 2], "b": [0, 3]}, ["10:00", "11:00"], "alerts")
True
"""

from __future__ import annotations

import html

from dataflows.backtest_report import _text, recommendation_updates, report_diff

PALETTE = ("#4269d0", "#efb118", "#ff725c", "#6cc5b0", "#3ca951", "#ff8ab7", "#a463f2", "#97bbf5",
           "#9c6b4e", "#9498a0")
SEVERITY_COLOURS = {"low": "#97bbf5", "medium": "#efb118", "high": "#ff725c", "critical": "#b40426"}
_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.2em .7em;border-bottom:1px solid #eee;text-align:right}
td:first-child,th:first-child{text-align:left}.legend span{display:inline-block;margin-right:1em}
.legend i{display:inline-block;width:.8em;height:.8em;margin-right:.3em}.bad{color:#b40426}
.cols{display:flex;gap:2em}.cols>div{flex:1;min-width:0}code{font-size:.9em}
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _legend(colours: dict[str, str]) -> str:
    items = "".join(f'<span><i style="background:{c}"></i>{_e(name)}</span>' for name, c in colours.items())
    return f'<div class="legend">{items}</div>'


def bars_svg(series: dict[str, list[int]], labels: list[str], title: str,
             colours: dict[str, str] | None = None, width: int = 1000, height: int = 220) -> str:
    """Stacked bars: one bar per label, one colour per series."""
    colours = colours or {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(series)}
    count = len(labels)
    totals = [sum(values[i] for values in series.values()) for i in range(count)]
    top = max(totals, default=0) or 1
    left, bottom, plot_h = 40, 30, height - 40
    step = (width - left - 10) / max(count, 1)
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
              f'role="img" aria-label="{_e(title)}">'),
             f'<text x="{left}" y="12" font-size="12">{_e(title)} (max {top:,} per bucket)</text>',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" stroke="#999"/>']
    for i in range(count):
        y = height - bottom
        for name, values in series.items():
            h = values[i] / top * (plot_h - 10)
            if h > 0:
                y -= h
                parts.append(f'<rect x="{left + i * step + 1:.1f}" y="{y:.1f}" width="{max(step - 2, 1):.1f}" '
                             f'height="{h:.1f}" fill="{colours[name]}"><title>{_e(labels[i])} {_e(name)}: '
                             f'{values[i]:,}</title></rect>')
        if count <= 12 or i % max(1, count // 8) == 0:
            parts.append(f'<text x="{left + i * step:.1f}" y="{height - 12}" font-size="10">'
                         f'{_e(labels[i])}</text>')
    parts.append("</svg>")
    return "".join(parts) + _legend(colours)


def pairs_svg(rows: list[tuple[str, float | None, float | None]], names: tuple[str, str],
              width: int = 1000) -> str:
    """Horizontal bar pairs in [0, 1] (e.g. precision and recall per scenario); None = no bar."""
    row_h, left = 34, 240
    height = row_h * len(rows) + 20
    colours = dict(zip(names, PALETTE[:2], strict=True))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%">']
    span = width - left - 60
    for i, (label, first, second) in enumerate(rows):
        y = i * row_h + 4
        parts.append(f'<text x="0" y="{y + 16}" font-size="12">{_e(label)}</text>')
        for j, (name, value) in enumerate(zip(names, (first, second), strict=True)):
            if value is None:
                continue
            parts.append(f'<rect x="{left}" y="{y + j * 14}" width="{value * span:.1f}" height="12" '
                         f'fill="{colours[name]}"/><text x="{left + value * span + 4:.1f}" y="{y + j * 14 + 10}" '
                         f'font-size="10">{value:.2f}</text>')
    parts.append("</svg>")
    return "".join(parts) + _legend(colours)


def _table(rows: list[tuple], header: tuple[str, ...]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(_text(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _timeline_labels(timeline: dict) -> list[str]:
    from datetime import datetime, timedelta

    start = datetime.fromisoformat(timeline["start"])
    size = timedelta(seconds=timeline["bucket_s"])
    fmt = "%m-%d %H:%M" if timeline["bucket_s"] < 86_400 else "%Y-%m-%d"
    return [(start + i * size).strftime(fmt) for i in range(timeline["buckets"])]


def _sections(report: dict) -> str:
    run, outputs, alerts = report["run"], report["outputs"], report["alerts"]
    timeline = alerts["timeline"]
    labels = _timeline_labels(timeline)
    parts = [
        "<h2>Run</h2>",
        _table([("events", run["events"]), ("event time", f"{run['event_time_from']} → {run['event_time_to']}"),
                ("wall time (s)", run["wall_s"]), ("events/s", run["events_per_s"]),
                ("× real time", run["speedup_vs_real_time"]), ("workers", run["workers"]),
                ("history sha256", run["history_sha256"][:16]), ("inputs", ", ".join(run["inputs"]))],
               ("measure", "value")),
        "<h2>Outputs</h2>",
        _table([("alerts", outputs["alerts"]), ("jukeboxes alerted", alerts["jukeboxes"]),
                ("dead letters", outputs["dead_letters"]["total"]), ("late events", outputs["late_events"]["total"]),
                ("recommendation updates", recommendation_updates(report)),
                *((f"{entity} entities", n) for entity, n in outputs["features"].items())],
               ("output", "count")),
        f"<h2>Alerts over event time ({timeline['bucket_s'] // 60} min buckets)</h2>",
        bars_svg(timeline["by_reason"], labels, "alerts by reason") if timeline["by_reason"] else "<p>no alerts</p>",
        bars_svg(timeline["by_severity"], labels, "alerts by severity", SEVERITY_COLOURS),
        _table(list(alerts["by_reason"].items()), ("reason", "alerts naming it")),
    ]
    quality = report.get("labels")
    if quality:
        rows = [(s, m["precision"], m["recall"]) for s, m in quality["by_scenario"].items()]
        parts += [f"<h2>Against {quality['episodes']} labelled episodes</h2>",
                  pairs_svg(rows, ("precision", "recall")),
                  _table([(s, m["episodes"], m["alerts"], m["precision"], m["recall"], m["detected_any_reason"])
                          for s, m in quality["by_scenario"].items()],
                         ("scenario", "episodes", "alerts", "precision", "recall", "caught by any alert"))]
    recs = report.get("recommendations")
    if recs:
        parts += ["<h2>Recommendations</h2>", _table([(k.replace("_", " "), v) for k, v in recs.items()
                                                      if not isinstance(v, list)], ("measure", "value"))]
    dead = outputs["dead_letters"]["by_reason"] | outputs["late_events"]["by_reason"]
    if dead:
        parts += ["<h2>Dead letters and late events</h2>", _table(list(dead.items()), ("reason", "records"))]
    return "".join(parts)


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{_e(title)}</h1>{body}</body></html>")


def report_html(report: dict, title: str = "jukebox backtest") -> str:
    config = "".join(f"<tr><td>{_e(k)}</td><td><code>{_e(v)}</code></td></tr>"
                     for k, v in sorted(_flat_config(report["config"]).items()))
    return _page(title, _sections(report) + f"<h2>Configuration</h2><table>{config}</table>")


def _flat_config(config: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else key
        out.update(_flat_config(value, name) if isinstance(value, dict) else {name: value})
    return out


def diff_html(a: dict, b: dict, name_a: str = "A", name_b: str = "B") -> str:
    same = a["run"].get("history_sha256") == b["run"].get("history_sha256")
    warning = "" if same else "<p class='bad'>The two reports replayed DIFFERENT histories.</p>"
    rows = "".join(f"<tr><td>{_e(m)}</td><td>{_e(_text(x))}</td><td>{_e(_text(y))}</td></tr>"
                   for m, x, y in report_diff(a, b))
    return _page(f"{name_a} vs {name_b}",
                 f"{warning}<table><tr><th>measure</th><th>{_e(name_a)}</th><th>{_e(name_b)}</th></tr>{rows}</table>"
                 f"<div class='cols'><div><h2>{_e(name_a)}</h2>{_sections(a)}</div>"
                 f"<div><h2>{_e(name_b)}</h2>{_sections(b)}</div></div>")
