"""Entrypoint of one process of a Bytewax cluster (Kubernetes: deploy/k8s/statefulset.yaml).

    python -m bytewax.run dataflows.cluster:flow -i <process id> -a "<host:port;...>" \\
        -w <workers> -r <recovery dir> -s <snapshot s> -b <backup s>

`bytewax.run` imports this module and runs its `flow`, so importing it reads the
settings, starts this process's metrics endpoint and builds the live flow. Nothing
else imports it: `dataflows.live` stays free of import-time side effects.
"""

from __future__ import annotations

import sys

from dataflows.live import (
    ConfigurationError,
    cluster_member,
    live_flow,
    recovery_arguments,
    source_resume,
)
from dataflows.metrics import METRICS, start_metrics_server
from dataflows.recovery_partitions import record_cluster_shape
from dataflows.settings import JukeboxSettings
from dataflows.stop_signals import stop_on_signals


def _fail(message: str) -> None:
    print(f"jukebox cluster process cannot start: {message}", file=sys.stderr)
    raise SystemExit(2)


try:
    settings = JukeboxSettings()
except ValueError as exc:  # pydantic names the variable and the problem, never a secret value
    _fail(f"invalid JUKEBOX_* configuration: {exc}")

try:
    member, members = cluster_member(sys.argv[1:])
    recovery_dir, backup_interval_s = recovery_arguments(sys.argv[1:])
    flow = live_flow(settings, member=member, members=members,
                     resume=source_resume(settings, recovery_dir, backup_interval_s))
    if member == 0:  # the process that lists the parts of a cluster of another size
        record_cluster_shape(recovery_dir, members, settings.flow.workers)  # `-w` gets this setting
except ConfigurationError as exc:
    _fail(str(exc))

if settings.flow.metrics_port is not None:
    start_metrics_server(settings.flow.metrics_port)
if settings.flow.recovery_dir is not None:  # the directory `-r` gets (statefulset.yaml)
    METRICS.watch_recovery_dir(settings.flow.recovery_dir)
stop_on_signals()  # as `jukebox run` does; here the process is often a container's PID 1
