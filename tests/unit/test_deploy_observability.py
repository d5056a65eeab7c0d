"""Prometheus rules and scrape configs, the Grafana dashboard and its provisioning, and
the operations guide agree with each other and with the metrics the engine exports.

promtool is not available here: rule files are checked structurally, and every
`jukebox_*` identifier in an expression must be an exported sample name."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from dataflows.metrics import REGISTRY, exported_metric_names

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "jukebox.json"
OPERATIONS = ROOT / "docs" / "operations.md"

METRIC_NAME = re.compile(r"\bjukebox_[a-zA-Z0-9_]*[a-zA-Z0-9]")
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
# Label values are quoted: drop strings before looking for metric names, so a
# value like "jukebox_x" in a matcher is not mistaken for a metric.
QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')


def metric_names_in(promql: str) -> set[str]:
    """Identifiers starting with `jukebox_` outside string literals (a crude but honest PromQL read)."""
    return set(METRIC_NAME.findall(QUOTED.sub('""', promql)))


def test_the_promql_reader_finds_names_and_ignores_label_values():
    expr = 'sum by (topic) (rate(jukebox_events_in_total{job="jukebox_x"}[5m])) / jukebox_a_b'
    assert metric_names_in(expr) == {"jukebox_events_in_total", "jukebox_a_b"}


def _rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if v.get("definition")]
    return exprs


def test_every_yaml_file_under_deploy_parses():
    files = sorted(DEPLOY.rglob("*.yml")) + sorted(DEPLOY.rglob("*.yaml"))
    assert len(files) >= 10
    for path in files:
        assert list(yaml.safe_load_all(path.read_text())), path


def test_alert_rules_have_the_prometheus_rule_structure():
    document = yaml.safe_load(ALERTS.read_text())
    assert set(document) == {"groups"}
    names = set()
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"} and group["rules"], group.get("name")
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, rule
            assert isinstance(rule["alert"], str) and re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"])
            assert rule["alert"] not in names, f"duplicate alert {rule['alert']}"
            names.add(rule["alert"])
            assert isinstance(rule["expr"], str) and rule["expr"].strip()
            assert _balanced(rule["expr"]), rule["alert"]
            if "for" in rule:
                assert DURATION.match(rule["for"]), rule["for"]
            assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
            assert rule["annotations"]["summary"] and rule["annotations"]["runbook"], rule["alert"]
            assert all(isinstance(v, str) for v in rule["annotations"].values())


def _balanced(expr: str) -> bool:
    pairs, stack = {")": "(", "]": "[", "}": "{"}, []
    for ch in QUOTED.sub('""', expr):
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):
            return False
    return not stack


@pytest.mark.parametrize(
    "required",
    ["consumer lag growing", "dead letters", "no events from a country", "model not loaded",
     "drift", "sink delivery failures"],
)
def test_the_alerts_the_operators_asked_for_exist(required):
    keywords = {
        "consumer lag growing": "jukebox_kafka_consumer_lag_messages",
        "dead letters": "jukebox_dead_letters_total",
        "no events from a country": "jukebox_events_by_country_total",
        "model not loaded": "jukebox_model_loaded",
        "drift": "jukebox_drift_psi",
        "sink delivery failures": "jukebox_sink_delivery_failures_total",
    }
    assert any(keywords[required] in metric_names_in(r["expr"]) for r in _rules()), required


def test_every_metric_in_alerts_and_dashboard_is_exported():
    exported = exported_metric_names()
    used = {name for rule in _rules() for name in metric_names_in(rule["expr"])}
    used |= {name for expr in _dashboard_exprs() for name in metric_names_in(expr)}
    assert len(used) >= 15
    assert used <= exported, f"not exported by dataflows/metrics.py: {sorted(used - exported)}"


def test_every_engine_metric_is_on_the_dashboard_or_in_an_alert():
    families = {f.name for f in REGISTRY.collect()}
    used = {name for rule in _rules() for name in metric_names_in(rule["expr"])}
    used |= {name for expr in _dashboard_exprs() for name in metric_names_in(expr)}
    shown = {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in used}
    assert families <= shown, f"metrics nobody looks at: {sorted(families - shown)}"


def test_alert_runbooks_point_at_sections_of_the_operations_guide():
    anchors = {_anchor(line) for line in _headings(OPERATIONS.read_text())}
    for rule in _rules():
        path, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert path == "docs/operations.md" and anchor in anchors, rule["alert"]


def test_links_inside_the_operations_guide_resolve():
    guide = OPERATIONS.read_text()
    anchors = {_anchor(line) for line in _headings(guide)}
    links = re.findall(r"\]\(#([^)]+)\)", guide)
    assert links and set(links) <= anchors, set(links) - anchors


def _headings(markdown: str) -> list[str]:
    headings, fenced = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif line.startswith("#") and not fenced:
            headings.append(line)
    return headings


def _anchor(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.lstrip("#").strip().lower()
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text))


def test_the_operations_guide_lists_every_metric_and_alert():
    guide = OPERATIONS.read_text()
    for family in REGISTRY.collect():
        sample = f"{family.name}_total" if family.type == "counter" else family.name
        assert f"`{sample}" in guide, f"{sample} missing from docs/operations.md"
    for rule in _rules():
        assert rule["alert"] in guide, rule["alert"]


def test_dashboard_is_provisioned_and_well_formed():
    dashboard = json.loads(DASHBOARD.read_text())
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    uid = datasource["datasources"][0]["uid"]
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/jukebox.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == uid, panel["title"]
            assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
            assert all(_balanced(t["expr"]) for t in panel["targets"]), panel["title"]


def test_dashboard_covers_pipeline_health_and_the_fraud_picture():
    titles = " | ".join(p["title"].lower() for p in json.loads(DASHBOARD.read_text())["panels"])
    for topic in ("throughput", "lag", "decode", "redis", "scoring", "alerts", "severity",
                  "model", "drift"):
        assert topic in titles, topic


def test_prometheus_scrapes_the_engine_where_compose_and_kubernetes_serve_it():
    compose = yaml.safe_load((DEPLOY / "compose/compose.yaml").read_text())
    prom = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "jukebox-engine")
    host, port = job["static_configs"][0]["targets"][0].split(":")
    assert host in compose["services"]
    assert compose["services"][host]["environment"]["JUKEBOX_FLOW_METRICS_PORT"] == port
    assert prom["rule_files"] == ["/etc/prometheus/alerts.yml"]
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "../prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts
    k8s = yaml.safe_load((DEPLOY / "prometheus/prometheus-k8s.yml").read_text())
    k8s_job = next(j for j in k8s["scrape_configs"] if j["job_name"] == "jukebox-engine")
    kept = [r for r in k8s_job["relabel_configs"] if r.get("action") == "keep"]
    assert any("prometheus_io_scrape" in r["source_labels"][0] for r in kept)
    # The `up` alert refers to this job name in both setups.
    assert 'job="jukebox-engine"' in next(r["expr"] for r in _rules() if r["alert"] == "JukeboxEngineDown")
