"""RedisFeatureStore.write next to a raw redis-py pipeline of the same fields, in one run.

The store pays for its guarantees (the event-time-guarded Lua upsert, TTLs, encoding);
the raw pipeline of plain HSETs is the floor any Redis writer pays. Printed: rows/s of
each and their ratio, for 1,000-row batches of every device feature, the CPU the writing
process spent per row (what the engine pays; Redis's own work is not in it) and Redis's
own time per row (INFO commandstats: the upsert script, or the HSET).

    python -m bench.store_write [--batches 50]
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

import redis
from rich.console import Console
from rich.table import Table

from dataflows.local_stack import LocalStack
from online_store.definitions import features_of
from online_store.feature_row import FeatureRow
from online_store.redis_store import RedisFeatureStore

T0 = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)


def _values(n: int) -> dict:
    values: dict = {}
    for feature in features_of("device"):
        values[feature.name] = {"int": n, "float": n / 7}.get(
            feature.value_type, f'{{"KES":"{n}.50","XOF":"{n}"}}')  # json: revenue by currency
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=50)
    args = parser.parse_args()
    batches = [[FeatureRow("device", f"jb-{b}-{i}", 1, T0 + timedelta(milliseconds=i), _values(i))
                for i in range(1000)] for b in range(args.batches)]
    rows = args.batches * 1000
    with LocalStack() as stack:
        client = redis.Redis.from_url(stack.redis_url)
        store = RedisFeatureStore(client, "bench")
        written = T0 + timedelta(seconds=5)
        client.config_resetstat()  # the server's time per command, from INFO commandstats
        started, cpu = time.perf_counter(), time.process_time()
        for batch in batches:
            store.write(batch, written)
        store_rate = rows / (time.perf_counter() - started)
        store_cpu_us = (time.process_time() - cpu) / rows * 1e6
        store_server_us = client.info("commandstats")["cmdstat_evalsha"]["usec_per_call"]
        client.config_resetstat()
        started, cpu = time.perf_counter(), time.process_time()
        for batch in batches:
            pipe = client.pipeline(transaction=False)
            for row in batch:
                pipe.hset(f"raw:device:{row.entity_id}", mapping={k: str(v) for k, v in row.values.items()})
            pipe.execute()
        raw_rate = rows / (time.perf_counter() - started)
        raw_cpu_us = (time.process_time() - cpu) / rows * 1e6
        raw_server_us = client.info("commandstats")["cmdstat_hset"]["usec_per_call"]
    table = Table(title=f"{rows:,} device rows in 1,000-row batches")
    for column in ("writer", "rows/s", "vs raw pipeline", "writer CPU µs/row", "Redis µs/row"):
        table.add_column(column, justify="right" if column != "writer" else "left")
    table.add_row("raw redis-py pipeline (HSET)", f"{raw_rate:,.0f}", "1.00", f"{raw_cpu_us:.1f}",
                  f"{raw_server_us:.1f}")
    table.add_row("RedisFeatureStore.write (guarded)", f"{store_rate:,.0f}", f"{store_rate / raw_rate:.2f}",
                  f"{store_cpu_us:.1f}", f"{store_server_us:.1f}")
    Console().print(table)


if __name__ == "__main__":
    main()
