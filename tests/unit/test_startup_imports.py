"""Starting a command, or the engine, imports no library that only training needs.

Every `jukebox` command took ~4 s to start while the command modules imported River's
trees (which import most of River and SciPy), scikit-learn and MLflow at the top
(2026-12-04); they are now imported where they are used, and `jukebox --help` takes
~1.2 s. A restarted engine that resumes its anomaly detector never builds River's trees.
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
    # MLflow comes in when the engine makes its registry client; River when it builds a
    # fresh detector's trees
    assert _loaded_after_import("dataflows.live", TRAINING_ONLY) == []


@pytest.mark.parametrize(("module", "then", "library"), [
    ("models.half_space_trees", "models.half_space_trees.HalfSpaceForest(('a',), n_trees=1, height=1)",
     "river"),
    ("models.registered_model", "models.registered_model.mlflow_error()", "mlflow"),
])
def test_the_check_sees_a_library_once_it_is_used(module, then, library):
    assert library in _loaded_after_import(module, TRAINING_ONLY, then)
