"""The demo calls `jukebox train fraud`'s function directly: every option must be passed,
or typer's OptionInfo default (truthy) leaks in as a value."""

from __future__ import annotations

import inspect

import dataflows.train
from dataflows.demo import _ensure_champion
from models.registry import local_tracking_uri


def test_the_demo_passes_every_training_option(monkeypatch, tmp_path):
    options = set(inspect.signature(dataflows.train.train_fraud).parameters)
    calls: list[dict] = []
    monkeypatch.setattr(dataflows.train, "train_fraud", lambda **kwargs: calls.append(kwargs))
    _ensure_champion(local_tracking_uri(tmp_path))
    assert len(calls) == 1 and set(calls[0]) == options
