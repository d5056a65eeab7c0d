"""Ctrl-C and SIGTERM stop `jukebox run` at once, with one line and the shell's exit code.

Stopping is a crash by design (the SIGKILL tests of the fault suite show nothing is lost
then); what this checks is how it reads: no Rust panic, no traceback, 128 + the signal.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from tests.integration.flow_process import FlowProcess, wait_until

pytestmark = pytest.mark.integration

# The engine keeps an ignored SIGINT ignored (a shell's background jobs); a terminal's
# Ctrl-C reaches a process whose SIGINT has Python's default handler, as it has here.
RUN_WITH_DEFAULT_SIGINT = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                           "sys.argv = ['jukebox', 'run']; runpy.run_module('dataflows.cli', run_name='__main__')")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "sigterm"])
def test_a_stop_signal_exits_at_once_with_one_line(signum, kafka_bootstrap, redis_url, topics,
                                                   redis_key_prefix, tmp_path):
    flow = FlowProcess(kafka_bootstrap, redis_url, topics, redis_key_prefix, tmp_path)
    tmp_path.mkdir(parents=True, exist_ok=True)
    with open(tmp_path / "flow.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-c", RUN_WITH_DEFAULT_SIGINT], env=flow.env(),
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_until(lambda: "consuming from" in flow.log(), 60, "the engine to start consuming",
                       check=lambda: None if process.poll() is None else pytest.fail(flow.log()))
            time.sleep(1.0)  # inside Bytewax's run loop
            process.send_signal(signum)
            code = process.wait(10)
        finally:
            if process.poll() is None:
                process.kill()
    out = flow.log()
    assert code == 128 + signum, out
    assert f"stopped ({signal.Signals(signum).name}); a restart resumes from the last snapshot" in out
    assert "Traceback" not in out and "panicked" not in out, out
