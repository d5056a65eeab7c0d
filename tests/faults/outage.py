"""One outage, end to end: inject a fault into a busy engine, hold it, heal it, restart
the engine if it exited, and measure what happened until the outputs are exact again."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from online_store.store import FeatureStore
from schemas.topics import Topics
from tests.faults.engine import EngineProcess
from tests.faults.feed import engine_outputs
from tests.faults.verifier import Expectation, FaultReport, verdict


def wait_clean(
    expected: Expectation, store: FeatureStore, bootstrap: str, topics: Topics, timeout_s: float,
    check: Callable[[], None] = lambda: None, interval_s: float = 0.5,
    kafka_config: dict[str, str] | None = None,
) -> tuple[float, FaultReport]:
    """Poll the verifier until nothing is wrong; (seconds waited, final report). On
    timeout, fail with the last report and examples of what was still wrong."""
    started = time.monotonic()
    while True:
        check()
        found = verdict(expected, store, **engine_outputs(bootstrap, topics, kafka_config))
        if found.clean:
            return time.monotonic() - started, found
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"still wrong after {timeout_s}s: {found.summary()} "
                                 f"e.g. {list(found.examples)}")
        time.sleep(interval_s)


@dataclass(frozen=True)
class OutageOutcome:
    behaviour: str  # "stalled" (rode it out) or "exited(<code>)" (failed loudly, restarted)
    exited_after_s: float | None
    rss_before_mib: float
    rss_peak_mib: float
    clean_after_heal_s: float
    log: str  # the log of the engine that met the fault
    report: FaultReport

    @property
    def numbers(self) -> dict[str, object]:
        return {"behaviour": self.behaviour,
                "exited_after_s": None if self.exited_after_s is None else round(self.exited_after_s, 1),
                "rss_before_mib": round(self.rss_before_mib), "rss_peak_mib": round(self.rss_peak_mib),
                "clean_after_heal_s": round(self.clean_after_heal_s, 1)}

    def error_lines(self, *needles: str) -> list[str]:
        return [line for line in self.log.splitlines() if any(n in line for n in needles)]

    def logged(self, text: str) -> bool:
        """Whether the log says `text` (whitespace-insensitive: Rich wraps long lines)."""
        return " ".join(text.split()) in " ".join(self.log.split())


def ride_out(
    engine: EngineProcess,
    restart: Callable[[], EngineProcess],
    inject: Callable[[], None],
    heal: Callable[[], None],
    outage_s: float,
    expected: Expectation,
    store: FeatureStore,
    bootstrap: str,
    topics: Topics,
    catch_up_s: float = 90.0,
) -> OutageOutcome:
    """Fault for `outage_s` (sampling the engine's RSS every 0.5 s), heal, `restart()` if
    the engine exited, then wait until the verifier finds nothing wrong."""
    inject()
    started = time.monotonic()
    rss_before = rss_peak = engine.rss_mib()
    exited_after = None
    while time.monotonic() - started < outage_s:
        if engine.exit_code is not None:
            exited_after = time.monotonic() - started
            break
        rss_peak = max(rss_peak, engine.rss_mib())
        time.sleep(0.5)
    time.sleep(max(0.0, outage_s - (time.monotonic() - started)))
    heal()
    healed = time.monotonic()
    code = engine.exit_code
    running = engine if code is None else restart()
    _, found = wait_clean(expected, store, bootstrap, topics, catch_up_s, running.assert_running)
    return OutageOutcome(
        behaviour="stalled" if code is None else f"exited({code})", exited_after_s=exited_after,
        rss_before_mib=rss_before, rss_peak_mib=rss_peak,
        clean_after_heal_s=time.monotonic() - healed, log=engine.log(), report=found,
    )
