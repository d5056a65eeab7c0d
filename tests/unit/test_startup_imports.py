"""Starting a command, or the engine, imports no library that only training needs.

Every `jukebox` command took ~4 s to start while the command modules imported River's
trees (which import most of River and SciPy), scikit-learn and MLflow at the top
(2026-12-04); they are now imported where they are used, and `jukebox --help` takes
~1.2 s. The anomaly detector draws River's trees without River (importing River's trees
cost a process ~1.2 s and ~175 MB, 2026-12-05).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRAINING_ONLY = ("mlflow", "river", "scipy", "sklearn")


def _loaded_after_import(module: str, watched: tuple[str, ...], then: str = "pass") -> list[str]:
    """The `watched` top-level packages loaded by a fresh interpreter that imports `module`
    and runs `then`."""
    code = (f"import json, sys, {module}; {then}; "
            f"print(json.dumps(sorted(m for m in {list(watched)!r} if m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            check=True, timeout=120)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_cli_starts_without_training_libraries():
    assert _loaded_after_import("dataflows.cli", TRAINING_ONLY) == []


def test_the_engine_module_imports_none_of_them():
    # MLflow comes in when the engine makes its registry client
    assert _loaded_after_import("dataflows.live", TRAINING_ONLY) == []


def test_a_fresh_anomaly_detector_builds_and_scores_without_them():
    then = ("d = models.anomaly.DeviceAnomalyDetector(); "
            "assert d.scores_then_learn([({n: 1.0 for n in d.bounds}, True)] * 600)[-1] is not None")
    assert _loaded_after_import("models.anomaly", TRAINING_ONLY, then) == []


@pytest.mark.parametrize(("module", "then", "library"), [
    ("models.half_space_trees", "import river.tree.padded", "river"),
    ("models.registered_model", "models.registered_model.mlflow_error()", "mlflow"),
])
def test_the_check_sees_a_library_once_it_is_used(module, then, library):
    assert library in _loaded_after_import(module, TRAINING_ONLY, then)
