"""`jukebox replay`: backtest the dataflows over recorded history, in an isolated namespace.

    jukebox replay --input history.jsonl --labels labels.jsonl --out runs/base
    jukebox replay --input history.jsonl --rule looping_top_song_share=0.5 --out runs/loose
    jukebox replay --kafka --start 2026-11-27T16:00Z --end 2026-11-27T18:00Z --out runs/friday
    jukebox replay diff runs/base/report.json runs/loose/report.json --html diff.html

The history (files from `jukebox record` or `jukebox simulate --jsonl`, or a bounded
range of the input topics) goes through the live flow factory in one deterministic
order (dataflows/record.py), on event time; every output is byte-identical whatever
`--workers` and `--batch-size` (dataflows/replay_order.py); see dataflows/replay_run.py
for the engine. The outputs land in `--out` (sorted JSON Lines, `report.json`, `report.html`)
and optionally in Redis under `<namespace>:<key prefix>` (`--redis`) and in the
topics `<namespace>.<topic>` (`--publish`): never in a live key or topic.

Overrides make two configurations comparable on the same history: the model
(`--model models:/jukebox-fraud/3`, `@alias`, a `.onnx` file, or `none`), rule and
decision thresholds (`--rule NAME=VALUE`, `--decision NAME=VALUE`), the anomaly
detector, and feature admission (`--allowed-lateness`, `--max-future-skew`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import orjson
import typer
from bytewax.errors import BytewaxRuntimeError
from confluent_kafka import KafkaException
from rich.console import Console

from dataflows.backtest_html import diff_html, report_html
from dataflows.backtest_report import backtest_report, diff_table, summary_tables
from dataflows.flow import FlowConfig
from dataflows.fraud_steps import FraudConfig
from dataflows.garbage_collector import tune_garbage_collector
from dataflows.kafka_sink import ConfirmedProducer, DeliveryFailed
from dataflows.live import feature_store, flow_config
from dataflows.local_stack import create_topics
from dataflows.record import (
    HistoryError,
    HistoryStats,
    file_history,
    history_progress,
    kafka_history,
    line_count,
    merged_history,
    offset_ranges_from_text,
    position_text,
    time_ms_from_text,
)
from dataflows.records import OutMessage, RawRecord
from dataflows.replay_models import replay_scorer
from dataflows.replay_order import MAX_BATCH
from dataflows.replay_recs import replay_recs_config
from dataflows.replay_run import (
    OUTPUT_ATTRS,
    ReplayNamespace,
    ReplayRun,
    feature_lines,
    messages_by_output,
    run_replay,
    write_lines,
)
from dataflows.settings import JukeboxSettings
from dataflows.simulate import duration_from_text
from models.anomaly import DeviceAnomalyDetector
from models.decision import DecisionPolicy
from models.fraud_scorer import FraudScorer
from models.rules import RulePolicy
from online_store.admission import AdmissionPolicy
from online_store.redis_store import RedisFeatureStore
from online_store.store import FeatureStore, InMemoryFeatureStore
from schemas.topics import Topics
from schemas.types import format_utc
from simulator.fraud import FraudLabel

console = Console(stderr=True)
replay_app = typer.Typer(help="Backtest the dataflows over recorded history, in an isolated namespace.",
                         invoke_without_command=True)
P = TypeVar("P")


# --- configuration overrides ---------------------------------------------------------------
def policy_with(policy: P, assignments: list[str], option: str) -> P:
    """A frozen policy with `NAME=VALUE` overrides, each coerced to its field's type.

    >>> policy_with(RulePolicy(), ["looping_min_plays_1h=20"], "--rule").looping_min_plays_1h
    20.0
    """
    types = {f.name: type(getattr(policy, f.name)) for f in fields(policy)}
    changes = {}
    for assignment in assignments:
        name, _, text = assignment.partition("=")
        name = name.strip().replace("-", "_")
        if name not in types:
            raise typer.BadParameter(f"{name!r} is not one of: {', '.join(types)}", param_hint=option)
        try:
            changes[name] = types[name](text)
        except ValueError:
            raise typer.BadParameter(f"{assignment!r}: {text!r} is not a {types[name].__name__}",
                                     param_hint=option) from None
    try:
        return replace(policy, **changes)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


def replay_fraud_config(scorer: FraudScorer | None, rules: RulePolicy, decisions: DecisionPolicy,
                        anomaly: bool, keep_policy_threshold: bool, clock: datetime) -> FraudConfig:
    """Fraud steps on event time only: a fixed scorer, alerts stamped with their event time."""
    return FraudConfig(scorer=lambda _now: scorer, emitted_at=lambda event_time: event_time,
                       now=lambda: clock, rules=rules, decisions=decisions,
                       anomaly=DeviceAnomalyDetector if anomaly else None,
                       keep_policy_threshold=keep_policy_threshold)


def config_summary(config: FlowConfig, model: dict | None) -> dict:
    """Everything in the config that can change an output, for the report and the diff."""
    fraud = config.fraud
    return {
        "topics_prefix": config.topics.prefix,
        "admission": asdict(config.admission),
        "limits": asdict(config.limits),
        "fraud": None if fraud is None else {
            "model": model, "rules": asdict(fraud.rules), "decisions": asdict(fraud.decisions),
            "keep_policy_threshold": fraud.keep_policy_threshold, "anomaly": fraud.anomaly is not None,
        },
    }


# --- inputs --------------------------------------------------------------------------------
def file_inputs(paths: list[Path], topics: Topics) -> Callable[[], Iterator[RawRecord]]:
    for path in paths:
        if not path.is_file():
            raise typer.BadParameter(f"{path} is not a file", param_hint="--input")
    return lambda: merged_history([file_history(path, topics) for path in paths])


def labels_from(paths: list[Path]) -> list[FraudLabel]:
    labels = []
    for path in paths:
        for number, line in enumerate(path.read_bytes().splitlines(), 1):
            if line.strip():
                try:
                    labels.append(FraudLabel.from_json(line))
                except (ValueError, TypeError, KeyError) as exc:
                    raise typer.BadParameter(f"{path}:{number}: not a fraud label ({exc})",
                                             param_hint="--labels") from None
    return labels


def fingerprinted(records: Iterator[RawRecord], digest: hashlib._Hash) -> Iterator[RawRecord]:
    """Pass records through, hashing what a replay depends on (two reports compare it)."""
    for raw in records:
        digest.update(f"{raw.timestamp_ms}|{raw.topic}|{raw.partition}|{raw.offset}|".encode())
        digest.update(raw.key or b"")
        digest.update(b"|")
        digest.update(raw.value or b"")
        yield raw


# --- outputs -------------------------------------------------------------------------------
def write_outputs(out: Path, run: ReplayRun, topics: Topics,
                  stores: list[FeatureStore]) -> tuple[dict[str, list[bytes]], dict[str, str], dict[str, int]]:
    """Sorted output files in `out`; returns the values per output, file digests, entity counts."""
    out.mkdir(parents=True, exist_ok=True)
    outputs = messages_by_output(run.messages, topics)
    digests = {}
    for attr, values in outputs.items():
        write_lines(out / f"{attr}.jsonl", values)
        digests[f"{attr}.jsonl"] = hashlib.sha256(b"".join(v + b"\n" for v in values)).hexdigest()
    lines = feature_lines(stores, run.written_at)
    write_lines(out / "features.jsonl", lines)
    digests["features.jsonl"] = hashlib.sha256(b"".join(line + b"\n" for line in lines)).hexdigest()
    counts = {"device": 0, "customer": 0}
    for line in lines:
        counts[orjson.loads(line)["entity"]] += 1
    return outputs, digests, counts


def publish_outputs(client_config: dict[str, str], namespace: ReplayNamespace,
                    messages: list[OutMessage], outputs: dict[str, list[bytes]]) -> int:
    """Produce every output, in file order, to the namespace's topics; confirmed or raises."""
    create_topics(client_config, [s for s in namespace.topics.specs()
                                  if any(s.name == getattr(namespace.topics, a) for a in OUTPUT_ATTRS)])
    keyed = {(m.topic, m.value): m for m in messages}
    producer = ConfirmedProducer(client_config)
    batch = []
    for attr, values in outputs.items():
        live_name = getattr(namespace.live_topics, attr)
        for value in values:
            message = keyed[(live_name, value)]
            batch.append(OutMessage(namespace.output_topic(live_name), message.key, value, message.headers))
    producer.publish(batch)
    producer.close()
    return len(batch)


def _check_topics_free(client_config: dict[str, str], namespace: ReplayNamespace) -> None:
    """Refuse a namespace whose output topics already exist: a replay never mixes with another."""
    from confluent_kafka.admin import AdminClient

    existing = set(AdminClient(client_config).list_topics(timeout=10).topics)
    taken = sorted(existing & {getattr(namespace.topics, attr) for attr in OUTPUT_ATTRS})
    if taken:
        console.print(f"[red]topics {', '.join(taken)} already exist:[/red] a replay never mixes with "
                      "earlier output; choose another --namespace")
        raise typer.Exit(2)


def _namespace_store(settings: JukeboxSettings, namespace: ReplayNamespace) -> Callable[[], FeatureStore]:
    if settings.redis.url is None:
        console.print("[red]--redis needs JUKEBOX_REDIS_URL[/red]")
        raise typer.Exit(2)

    def store() -> RedisFeatureStore:
        return feature_store(settings, namespace.key_prefix)

    probe = store()
    try:
        for entity in ("device", "customer"):
            if next(iter(probe.scan_entities(entity)), None) is not None:
                console.print(f"[red]Redis already holds {entity} keys under {namespace.key_prefix!r}:[/red] "
                              "a replay never mixes with earlier data; choose another --namespace")
                raise typer.Exit(2)
    finally:
        probe.close()
    return store


# --- the commands --------------------------------------------------------------------------
@replay_app.callback()
def replay(
    ctx: typer.Context,
    inputs: list[Path] = typer.Option(None, "--input", "-i", help="JSON Lines history (repeatable)"),
    kafka: bool = typer.Option(False, "--kafka", help="Replay a range of the input topics instead"),
    start: str = typer.Option(None, help="--kafka: from this Kafka timestamp (ISO 8601)"),
    end: str = typer.Option(None, help="--kafka: up to (excluding) this Kafka timestamp (ISO 8601)"),
    offsets: list[str] = typer.Option(None, "--offsets", help="--kafka: topic:partition=start-end (repeatable)"),
    source_prefix: str = typer.Option(None, help="Topic prefix of the history (default: JUKEBOX_KAFKA_TOPIC_PREFIX)"),
    labels: list[Path] = typer.Option(None, "--labels", help="Fraud labels JSON Lines (repeatable)"),
    out: Path = typer.Option(None, "--out", "-o", help="Directory for outputs and the report"),
    namespace: str = typer.Option(None, help="Isolation name for Redis keys and topics (default: replay-<out dir>)"),
    redis: bool = typer.Option(False, "--redis", help="Also write features to Redis under <namespace>:<prefix>"),
    publish: bool = typer.Option(False, "--publish", help="Also publish outputs to <namespace>.<topic>"),
    fraud: bool = typer.Option(True, "--fraud/--features-only", help="Run the fraud steps"),
    model: str = typer.Option(None, help="models:/jukebox-fraud/<v>, models:/...@alias, a .onnx file, or none"),
    model_threshold: float = typer.Option(None, min=0.0, max=1.0, help="Alert threshold (beats the model's; "
                                          "default: JUKEBOX_MODELS_FRAUD_ALERT_THRESHOLD, as live)"),
    rule: list[str] = typer.Option(None, "--rule", help="Rule threshold NAME=VALUE (repeatable)"),
    decision: list[str] = typer.Option(None, "--decision", help="Decision setting NAME=VALUE (repeatable)"),
    anomaly: bool = typer.Option(True, "--anomaly/--no-anomaly", help="River anomaly detector"),
    recs: bool = typer.Option(False, "--recs/--no-recs", help="Run the recommendation steps"),
    catalog: Path = typer.Option(None, help="--recs: song catalog JSON Lines (default: its topic)"),
    recs_model: str = typer.Option(None, help="--recs: models:/jukebox-recs/<v>, @alias, .onnx, or none"),
    allowed_lateness: str = typer.Option(None, help="Feature admission, e.g. 6h (default: settings)"),
    max_future_skew: str = typer.Option(None, help="Feature admission, e.g. 5m (default: settings)"),
    workers: int = typer.Option(1, min=1, help="Worker threads"),
    batch_size: int = typer.Option(5000, min=1, max=MAX_BATCH, help="Records per source batch (speed "
                                   "only: the outputs do not depend on it)"),
    html: bool = typer.Option(True, "--html/--no-html", help="Write report.html"),
) -> None:
    """Replay recorded history through the dataflows into an isolated namespace; write a report."""
    if ctx.invoked_subcommand is not None:
        return
    from dataflows.cli import load_settings  # dataflows.cli imports this module to register it

    if out is None or (not inputs and not kafka) or (inputs and kafka):
        console.print("[red]give --out DIR and either --input FILE(s) or --kafka[/red] (see --help)")
        raise typer.Exit(2)
    settings = load_settings()
    base = flow_config(settings)
    topics = Topics(settings.kafka.topic_prefix if source_prefix is None else source_prefix)
    try:
        space = ReplayNamespace(namespace or f"replay-{out.resolve().name}", topics, settings.redis.key_prefix)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--namespace") from None
    admission = AdmissionPolicy(
        int(duration_from_text(allowed_lateness).total_seconds()) if allowed_lateness
        else base.admission.allowed_lateness_s,
        int(duration_from_text(max_future_skew).total_seconds()) if max_future_skew
        else base.admission.max_future_skew_s)
    clock = datetime.now(UTC).replace(microsecond=0)
    config = FlowConfig(topics=topics, limits=base.limits, admission=admission)
    model_info = None
    if fraud:
        decisions = policy_with(DecisionPolicy(), decision or [], "--decision")
        if model_threshold is None:  # the live flow's threshold (dataflows/live.py), unless given
            model_threshold = settings.models.fraud_alert_threshold
        if model_threshold is not None:
            decisions = replace(decisions, model_threshold=model_threshold)
        scorer, model_info = replay_scorer(model or settings.models.fraud_model_uri, settings, model is not None)
        config = replace(config, fraud=replay_fraud_config(
            scorer, policy_with(RulePolicy(), rule or [], "--rule"), decisions, anomaly,
            model_threshold is not None, clock))
    recs_info = None
    if recs:
        recs_config, recs_info = replay_recs_config(settings, catalog, recs_model, clock)
        config = replace(config, recs=recs_config)

    stats, digest = HistoryStats(), hashlib.sha256()
    if kafka:
        if not settings.kafka.bootstrap:
            console.print("[red]--kafka needs JUKEBOX_KAFKA_BOOTSTRAP[/red]")
            raise typer.Exit(2)
        try:
            ranges = offset_ranges_from_text(offsets or [])
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--offsets") from None
        start_ms, end_ms = time_ms_from_text(start, "--start"), time_ms_from_text(end, "--end")
        client = settings.kafka.client_config()
        names = [*topics.inputs, topics.labels]

        def history() -> Iterator[RawRecord]:
            return fingerprinted(kafka_history(client, names, start_ms, end_ms, ranges, stats,
                                               optional=[topics.labels]), digest)
        total, described = None, [f"kafka {settings.kafka.bootstrap} {start or ''}..{end or ''}"]
    else:
        opened = file_inputs(list(inputs), topics)

        def history() -> Iterator[RawRecord]:
            return fingerprinted(opened(), digest)
        total, described = sum(line_count(p) for p in inputs), [str(p) for p in inputs]
    store_factory = _namespace_store(settings, space) if redis else InMemoryFeatureStore
    if publish:
        _check_topics_free(settings.kafka.client_config(), space)

    progress = history_progress()
    task = progress.add_task("replay", total=total, stats="")
    began, seen = time.monotonic(), [0]

    def on_batch(batch: list[RawRecord]) -> None:
        seen[0] += len(batch)
        progress.update(task, completed=seen[0],
                        stats=position_text(seen[0], time.monotonic() - began, batch[-1].timestamp_ms))

    tune_garbage_collector()
    try:
        with progress:
            run = run_replay(history, config, workers=workers, batch_size=batch_size,
                             store_factory=store_factory, written_at=clock, on_batch=on_batch)
    except (HistoryError, KafkaException) as exc:
        console.print(f"[red]cannot read the history:[/red] {exc}")
        raise typer.Exit(1) from None
    except (KeyboardInterrupt, BytewaxRuntimeError) as exc:  # Bytewax reraises Ctrl-C as its own
        if not isinstance(exc, KeyboardInterrupt) and not isinstance(exc.__cause__, KeyboardInterrupt):
            raise
        console.print(f"replay interrupted after {seen[0]:,} events: no outputs or report written to {out}")
        raise typer.Exit(130) from None
    if run.split.events == 0:
        console.print(f"[red]no events of {', '.join(topics.inputs)} in the history[/red] "
                      f"(other topics: {dict(run.split.ignored) or 'none'}); is --source-prefix right?")
        raise typer.Exit(1)
    stores = run.feature_stores[:1] if redis else run.feature_stores  # one Redis, many in-memory stores
    outputs, digests, entities = write_outputs(out, run, topics, stores)
    if publish:
        try:
            count = publish_outputs(settings.kafka.client_config(), space, run.messages, outputs)
        except (DeliveryFailed, KafkaException) as exc:
            console.print(f"[red]publishing the outputs failed:[/red] {exc}")
            raise typer.Exit(1) from None
        console.print(f"published {count:,} messages to {space.topics.prefix}*")
    first_ms, last_ms = run.split.first_ms or 0, run.split.last_ms or 0
    run_info = {
        "inputs": described, "history_sha256": digest.hexdigest(), "namespace": space.name,
        "redis_key_prefix": space.key_prefix if redis else None,
        "topics_prefix": space.topics.prefix if publish else None,
        "started_at": format_utc(clock), "first_ms": first_ms, "last_ms": last_ms,
        "event_time_from": format_utc(datetime.fromtimestamp(first_ms / 1000, tz=UTC)),
        "event_time_to": format_utc(datetime.fromtimestamp(last_ms / 1000, tz=UTC)),
        "events": run.split.events, "records_by_topic": dict(sorted(stats.records.items())),
        "ignored_records": dict(run.split.ignored), "out_of_order_inputs": stats.out_of_order,
        "outside_time_range": stats.outside_time_range, "partitions": stats.partitions,
        "wall_s": round(run.wall_s, 3), "events_per_s": round(run.events_per_s, 1),
        "speedup_vs_real_time": round((last_ms - first_ms) / 1000 / max(run.wall_s, 1e-9), 1),
        "workers": workers, "batch_size": batch_size, "feature_rows": run.feature_rows_in,
    }
    report = backtest_report(run_info, {**config_summary(config, model_info), "recs": recs_info},
                             outputs, digests, entities,
                             [*run.split.labels, *labels_from(list(labels or []))], run.plays.by_jukebox)
    (out / "report.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    if html:
        (out / "report.html").write_text(report_html(report, f"jukebox backtest: {out.name}"))
    for table in summary_tables(report):
        console.print(table)
    console.print(f"outputs and report in {out}/")


def _report(path: Path) -> dict:
    try:
        report = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise typer.BadParameter(f"{path}: {exc}") from None
    if not isinstance(report, dict) or report.get("format") != "jukebox-backtest/1":
        raise typer.BadParameter(f"{path} is not a jukebox backtest report")
    return report


@replay_app.command("diff")
def diff(
    a: Path = typer.Argument(..., help="report.json of configuration A"),
    b: Path = typer.Argument(..., help="report.json of configuration B"),
    html: Path = typer.Option(None, "--html", help="Also write a side-by-side HTML page here"),
    everything: bool = typer.Option(False, "--all", help="Every measure, not only the headlines"),
) -> None:
    """Two backtest reports side by side: what differs in configuration, then the measures."""
    first, second = _report(a), _report(b)
    name_a, name_b = a.parent.name or str(a), b.parent.name or str(b)
    Console().print(diff_table(first, second, name_a, name_b, everything))
    if html is not None:
        html.write_text(diff_html(first, second, name_a, name_b))
        console.print(f"wrote {html}")


@replay_app.command("show")
def show(
    report: Path = typer.Argument(..., help="report.json"),
    html: Path = typer.Option(None, "--html", help="Also (re)write the HTML report here"),
) -> None:
    """Print a backtest report's summary (and optionally render its HTML)."""
    data = _report(report)
    for table in summary_tables(data):
        Console().print(table)
    if html is not None:
        html.write_text(report_html(data, f"jukebox backtest: {report.parent.name}"))
