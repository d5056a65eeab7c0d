"""The compose stack, the Dockerfile, and every JUKEBOX_* variable the deployment sets.

Docker is not available here (no daemon, no compose plugin): files are checked
structurally; environment variables are checked by loading them into the real
settings object."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from dataflows.settings import JukeboxSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "compose" / "compose.yaml"
COMPOSE = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES = COMPOSE["services"]
DOCKERFILE = (DEPLOY / "Dockerfile").read_text()
ONE_SHOT = {"topics"}


def settings_variables() -> set[str]:
    """Every JUKEBOX_* name the settings object reads (the first `_` after the prefix nests)."""
    names = set()
    for field, info in JukeboxSettings.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= {f"JUKEBOX_{field}_{sub}".upper() for sub in annotation.model_fields}
        else:
            names.add(f"JUKEBOX_{field}".upper())
    return names


def deployment_variables() -> dict[str, dict[str, str]]:
    """Where each JUKEBOX_* variable is set: file -> {name: value}."""
    k8s = DEPLOY / "k8s"
    found = {
        "configmap.yaml": yaml.safe_load((k8s / "configmap.yaml").read_text())["data"],
        "secret.example.yaml": yaml.safe_load((k8s / "secret.example.yaml").read_text())["stringData"],
        "Dockerfile": dict(re.findall(r"(JUKEBOX_[A-Z_]+)=(\S+)", DOCKERFILE)),
    }
    for name, service in SERVICES.items():
        found[f"compose:{name}"] = service.get("environment") or {}
    return {where: {k: v for k, v in env.items() if k.startswith("JUKEBOX_")}
            for where, env in found.items()}


def test_the_variable_list_is_derived_from_the_real_settings():
    names = settings_variables()
    assert {"JUKEBOX_KAFKA_BOOTSTRAP", "JUKEBOX_FLOW_METRICS_PORT", "JUKEBOX_DATA_DIR",
            "JUKEBOX_MODELS_MLFLOW_TRACKING_URI"} <= names
    assert "JUKEBOX_FLOW_METRICSPORT" not in names


@pytest.mark.parametrize("where", sorted(deployment_variables()))
def test_every_jukebox_variable_set_by_a_deployment_is_a_real_setting(where, monkeypatch):
    env = deployment_variables()[where]
    unknown = set(env) - settings_variables()
    assert not unknown, f"{where} sets variables no setting reads: {sorted(unknown)}"
    for name in [v for v in os.environ if v.startswith("JUKEBOX_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    settings = JukeboxSettings()  # raises on a value of the wrong type
    if "JUKEBOX_FLOW_METRICS_PORT" in env:
        assert settings.flow.metrics_port == int(env["JUKEBOX_FLOW_METRICS_PORT"])
    if "JUKEBOX_FLOW_RECOVERY_DIR" in env:
        assert str(settings.flow.recovery_dir) == env["JUKEBOX_FLOW_RECOVERY_DIR"]
    if "JUKEBOX_DATA_DIR" in env:
        assert str(settings.data_dir) == env["JUKEBOX_DATA_DIR"]


def test_the_operations_guide_documents_every_setting():
    guide = (ROOT / "docs" / "operations.md").read_text()
    missing = [name for name in sorted(settings_variables()) if f"`{name}`" not in guide]
    assert not missing, f"docs/operations.md settings table lacks {missing}"


def test_compose_services_have_health_checks_and_pinned_images():
    expected = {"kafka", "redis", "mlflow", "prometheus", "grafana", "engine", "topics"}
    assert expected <= set(SERVICES)
    for name, service in SERVICES.items():
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and "/" not in tag, f"{name}: {image}"
        if name not in ONE_SHOT:
            check = service["healthcheck"]
            assert check["test"][0] in {"CMD", "CMD-SHELL"} and check["interval"], name
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:")
    assert "controller" in SERVICES["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft


def test_compose_dependencies_and_mounts_resolve():
    for name, service in SERVICES.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
            wanted = "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            assert condition["condition"] == wanted, f"{name} -> {dependency}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE_FILE.parent / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in COMPOSE["volumes"], f"{name} uses undeclared volume {source}"
        if "build" in service:
            build = service["build"]
            assert (COMPOSE_FILE.parent / build["context"] / build["dockerfile"]).resolve() == \
                (DEPLOY / "Dockerfile").resolve()


def test_compose_engine_is_locked_down_and_keeps_its_recovery_state():
    engine = SERVICES["engine"]
    assert engine["read_only"] is True and "/tmp" in engine["tmpfs"]
    assert "no-new-privileges:true" in engine["security_opt"] and engine["cap_drop"] == ["ALL"]
    mounts = dict(v.split(":")[1::-1] for v in engine["volumes"])
    assert engine["environment"]["JUKEBOX_FLOW_RECOVERY_DIR"] in mounts
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    assert "GRAFANA_ADMIN_PASSWORD:?" in SERVICES["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]


def test_dockerfile_is_multi_stage_non_root_and_installs_the_project():
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", DOCKERFILE, re.MULTILINE)
    assert len(stages) >= 2
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)", DOCKERFILE, re.MULTILINE).group(1)
    assert base.startswith("python:3.12-slim")
    assert all(image == "${PYTHON_IMAGE}" for image, _ in stages)
    assert "latest" not in DOCKERFILE
    user = re.findall(r"^USER\s+(\S+)", DOCKERFILE, re.MULTILINE)
    assert user and not user[-1].startswith(("root", "0"))
    assert re.search(r"pip install \.(\s|$)", DOCKERFILE), "install the project from pyproject"
    assert "compileall" in DOCKERFILE and "PYTHONDONTWRITEBYTECODE=1" in DOCKERFILE
    assert "COPY --from=build" in DOCKERFILE


def test_the_build_context_allow_list_ships_every_package():
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages | {"pyproject.toml"} <= allowed
    assert project["project"]["readme"] in allowed
    assert "*" in ignore  # everything else (data, .venv, tests) stays out of the image
