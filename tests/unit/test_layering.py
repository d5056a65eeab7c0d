"""The layer map, enforced: each package imports only the layers above it.

schemas <- simulator <- online_store <- models <- dataflows; only dataflows imports
bytewax or confluent_kafka; only online_store/redis_store.py imports redis; nothing
below dataflows reads the environment or the wall clock.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ORDER = ["schemas", "simulator", "online_store", "models", "dataflows"]
ENGINE_ONLY = {"bytewax", "confluent_kafka"}
REDIS_MODULES = {"online_store/redis_store.py"}
FORBIDDEN_CALLS_BELOW_DATAFLOWS = {"datetime.now", "datetime.utcnow", "time.time", "os.getenv", "os.environ"}


def _modules(package: str):
    return sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _dotted_uses(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    uses = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            uses.add(f"{node.value.id}.{node.attr}")
    return uses


@pytest.mark.parametrize("package", ORDER)
def test_packages_import_only_layers_above(package):
    allowed = set(ORDER[: ORDER.index(package) + 1])
    forbidden = set(ORDER) - allowed
    for path in _modules(package):
        bad = _imports(path) & forbidden
        assert not bad, f"{path.relative_to(ROOT)} imports lower layer(s) {bad}"


@pytest.mark.parametrize("package", ORDER[:-1])
def test_engine_and_clients_stay_out_of_pure_layers(package):
    for path in _modules(package):
        rel = str(path.relative_to(ROOT))
        imports = _imports(path)
        assert not imports & ENGINE_ONLY, f"{rel} imports {imports & ENGINE_ONLY}"
        if rel not in REDIS_MODULES:
            assert "redis" not in imports, f"{rel} imports redis (only {REDIS_MODULES} may)"


@pytest.mark.parametrize("package", ORDER[:-1])
def test_no_wall_clock_or_environment_below_dataflows(package):
    for path in _modules(package):
        bad = _dotted_uses(path) & FORBIDDEN_CALLS_BELOW_DATAFLOWS
        assert not bad, f"{path.relative_to(ROOT)} uses {bad}: take time and config as arguments"


def test_the_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("import bytewax\nfrom datetime import datetime\nnow = datetime.now()\n")
    assert "bytewax" in _imports(bad) and "datetime.now" in _dotted_uses(bad)
