"""`jukebox train recs` end to end on a small fleet: it prints the held-out comparison with the
popularity baseline and registers (and promotes) the model in a real local MLflow store."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from dataflows.cli import app
from models.recs_registry import RecsModelRegistry
from models.registry import local_tracking_uri

pytestmark = pytest.mark.integration


def test_train_recs_prints_the_evaluation_and_promotes(tmp_path, monkeypatch):
    monkeypatch.setenv("JUKEBOX_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    catalog = tmp_path / "songs.jsonl"
    result = CliRunner().invoke(app, ["train", "recs", "--jukeboxes", "150", "--days", "2.5", "--rank", "8",
                                      "--catalog-out", str(catalog)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "HR@10" in out and "NDCG@10" in out and "popularity =" in out.lower()  # the baseline, named
    line = next(line for line in out.splitlines() if line.startswith("│ all"))
    cells = [cell.strip() for cell in line.strip("│ ").split("│")]
    samples, hr, hr_pop, _hr_lift, ndcg, ndcg_pop, ndcg_lift = cells[1:]
    assert int(samples.replace(",", "")) > 50 and float(ndcg) > float(ndcg_pop) and float(hr) >= float(hr_pop)
    assert ndcg_lift.startswith("+") and ndcg_lift.endswith("%")
    assert "jukebox-recs version 1" in out and "promoted to champion" in out
    assert RecsModelRegistry(local_tracking_uri(tmp_path)).champion_version() == "1"
    assert len(catalog.read_bytes().splitlines()) == 2000
