"""The engine under test: `jukebox run` as a real process, plus what the suite measures
about it (exit code, resident memory from /proc, the metrics page, its log)."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from dataflows.status import metric_sum
from tests.integration.flow_process import FlowProcess


def proc_status_kib(pid: int, field_name: str) -> int:
    """A memory figure (VmRSS, VmHWM...) of a live process, in KiB, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise KeyError(f"{field_name} not in /proc/{pid}/status")


@dataclass
class EngineProcess(FlowProcess):
    """`FlowProcess` with its own data directory and working directory (MLflow's local
    store and any relative path stay in the test's tmp dir) and extra `JUKEBOX_*`
    variables (Kafka client options, Redis credentials, retry settings)."""

    extra_env: dict[str, str] = field(default_factory=dict)
    started_at: float = field(default=0.0, init=False)

    def env(self) -> dict[str, str]:
        return {**super().env(), "JUKEBOX_DATA_DIR": str(self.workdir / "data"),
                "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **self.extra_env}

    def start(self) -> EngineProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "flow.log", "ab")  # noqa: SIM115 - lives as long as the process it logs
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dataflows.cli", "run"], env=self.env(), stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.workdir,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def rss_mib(self) -> float:
        """Resident memory; 0 once the process has exited (a zombie has no VmRSS)."""
        try:
            return proc_status_kib(self.pid, "VmRSS") / 1024
        except (KeyError, FileNotFoundError):
            return 0.0

    def peak_rss_mib(self) -> float:
        try:
            return proc_status_kib(self.pid, "VmHWM") / 1024
        except (KeyError, FileNotFoundError):
            return 0.0

    def metrics_page(self, timeout_s: float = 5.0) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.read().decode()

    def metric_total(self, name: str) -> float:
        """Sum of every sample named `name` on the metrics page (0 when absent, or while the
        page is not served yet)."""
        return metric_sum(f"http://127.0.0.1:{self.metrics_port}/metrics", name, timeout_s=5.0)

    def wait_exit(self, timeout_s: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout_s)
