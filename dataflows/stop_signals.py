"""Ctrl-C and SIGTERM stop an engine process at once, with one line on stderr.

Stopping is a crash by design: a restart resumes from the last snapshot and publishes
again what the broker had not confirmed (the fault suite's SIGKILL tests prove nothing is
lost then). Without these handlers Bytewax turns Ctrl-C into a Rust panic and a traceback
(exit 1), and SIGTERM ends the process silently, or not at all when it is a container's
PID 1 (the kernel drops signals an init process does not handle), so Kubernetes waited
out the grace period before killing it.
"""

from __future__ import annotations

import os
import signal
import sys


def stop_at_once(signum: int, _frame: object) -> None:
    print(f"stopped ({signal.Signals(signum).name}); a restart resumes from the last snapshot",
          file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + signum)  # the shell's convention: 130 for Ctrl-C, 143 for SIGTERM


def stop_on_signals() -> None:
    """Install `stop_at_once` for SIGINT and SIGTERM; an ignored SIGINT (a shell's
    background job) stays ignored."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, stop_at_once)
