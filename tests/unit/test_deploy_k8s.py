"""Kubernetes manifests: shape, security, and the cluster wiring actually working.

No Kubernetes JSON Schemas are installed (no kubernetes-validate / kubeconform schemas
in the environment, and nothing may be downloaded), so each kind we ship is checked
against a hand-written JSON Schema *subset* of the Kubernetes API: the fields we use,
their types, and `additionalProperties: false` wherever a misspelt key would be
silently ignored by the API server (containers, securityContext, probes, ...).

The pod's shell scripts are executed for real: the init container's with the real
`python -m dataflows.recovery_partitions` (Bytewax's partitions, the engine's page size), the engine's with a stand-in `python` whose arguments
are then parsed by Bytewax 0.21.1's own `bytewax.run` argument parser.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from dataflows.recovery_partitions import COMPLETE, PAGE_SIZE, STAGING
from models.recs_catalog import write_catalog_jsonl
from simulator.catalog import SongCatalog

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _all() -> dict[str, dict]:
    out = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in _docs(path):
            if "kind" in doc and doc["kind"] != "Kustomization":
                out[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return out


MANIFESTS = _all()
STATEFULSET = MANIFESTS["StatefulSet/jukebox-engine"]
POD = STATEFULSET["spec"]["template"]["spec"]
ENGINE = next(c for c in POD["containers"] if c["name"] == "engine")
INIT = next(c for c in POD["initContainers"] if c["name"] == "init-recovery")
CONFIG = MANIFESTS["ConfigMap/jukebox-engine-config"]["data"]

# --- a JSON Schema subset of the Kubernetes API -------------------------------------------

STR, INT, BOOL = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
QUANTITY = {"anyOf": [{"type": "string", "pattern": r"^[0-9.]+(m|Ki|Mi|Gi|Ti|k|M|G)?$"}, INT]}
STR_MAP = {"type": "object", "additionalProperties": STR}
LABEL_SELECTOR = {"type": "object", "additionalProperties": False, "required": ["matchLabels"],
                  "properties": {"matchLabels": STR_MAP}}


def strict(required: list[str], **properties) -> dict:
    return {"type": "object", "additionalProperties": False, "required": required,
            "properties": properties}


def array(items: dict, min_items: int = 0) -> dict:
    return {"type": "array", "items": items, "minItems": min_items}


METADATA = strict(["name"], name=STR, namespace=STR, labels=STR_MAP, annotations=STR_MAP)
PORT_REF = {"anyOf": [INT, STR]}
PROBE = strict(
    [], httpGet=strict(["path", "port"], path=STR, port=PORT_REF, scheme=STR),
    initialDelaySeconds=INT, periodSeconds=INT, timeoutSeconds=INT, failureThreshold=INT,
    successThreshold=INT,
)
SECURITY_CONTEXT = strict(
    [], allowPrivilegeEscalation=BOOL, readOnlyRootFilesystem=BOOL, runAsNonRoot=BOOL,
    runAsUser=INT, runAsGroup=INT, privileged=BOOL,
    capabilities=strict([], drop=array(STR), add=array(STR)),
    seccompProfile=strict(["type"], type=STR),
)
RESOURCES = strict(["requests", "limits"],
                   requests={"type": "object", "additionalProperties": QUANTITY},
                   limits={"type": "object", "additionalProperties": QUANTITY})
ENV_VAR = strict(["name"], name=STR, value=STR, valueFrom=strict(
    [], fieldRef=strict(["fieldPath"], fieldPath=STR),
    configMapKeyRef=strict(["name", "key"], name=STR, key=STR),
    secretKeyRef=strict(["name", "key"], name=STR, key=STR)))
ENV_FROM = strict([], configMapRef=strict(["name"], name=STR), secretRef=strict(["name"], name=STR))
CONTAINER = strict(
    ["name", "image", "resources", "securityContext"],
    name=STR, image=STR, imagePullPolicy={"enum": ["Always", "IfNotPresent", "Never"]},
    command=array(STR), args=array(STR), env=array(ENV_VAR), envFrom=array(ENV_FROM),
    ports=array(strict(["containerPort"], name=STR, containerPort=INT,
                       protocol={"enum": ["TCP", "UDP"]})),
    resources=RESOURCES, startupProbe=PROBE, livenessProbe=PROBE, readinessProbe=PROBE,
    securityContext=SECURITY_CONTEXT,
    volumeMounts=array(strict(["name", "mountPath"], name=STR, mountPath=STR, readOnly=BOOL,
                              subPath=STR)),
)
POD_SPEC = strict(
    ["containers"],
    automountServiceAccountToken=BOOL, terminationGracePeriodSeconds=INT,
    serviceAccountName=STR,
    securityContext=strict([], runAsNonRoot=BOOL, runAsUser=INT, runAsGroup=INT, fsGroup=INT,
                           fsGroupChangePolicy={"enum": ["OnRootMismatch", "Always"]},
                           seccompProfile=strict(["type"], type=STR)),
    affinity={"type": "object"}, topologySpreadConstraints=array({"type": "object"}),
    initContainers=array(CONTAINER), containers=array(CONTAINER, 1),
    volumes=array(strict(["name"], name=STR,
                         emptyDir=strict([], sizeLimit=QUANTITY, medium=STR),
                         secret=strict(["secretName"], secretName=STR, defaultMode=INT,
                                       optional=BOOL),
                         configMap=strict(["name"], name=STR),
                         persistentVolumeClaim=strict(["claimName"], claimName=STR))),
)
SCHEMAS = {
    ("apps/v1", "StatefulSet"): strict(
        ["apiVersion", "kind", "metadata", "spec"], apiVersion=STR, kind=STR, metadata=METADATA,
        spec=strict(
            ["serviceName", "replicas", "selector", "template"],
            serviceName=STR, replicas=INT,
            podManagementPolicy={"enum": ["OrderedReady", "Parallel"]},
            updateStrategy=strict(["type"], type={"enum": ["RollingUpdate", "OnDelete"]}),
            selector=LABEL_SELECTOR,
            template=strict(["metadata", "spec"], metadata=strict([], labels=STR_MAP,
                                                                 annotations=STR_MAP),
                            spec=POD_SPEC),
            volumeClaimTemplates=array(strict(
                ["metadata", "spec"], metadata=strict(["name"], name=STR, labels=STR_MAP),
                spec=strict(["accessModes", "resources"], accessModes=array(STR, 1),
                            storageClassName=STR,
                            resources=strict(["requests"], requests=strict(["storage"],
                                                                           storage=QUANTITY))))),
        )),
    ("v1", "Service"): strict(
        ["apiVersion", "kind", "metadata", "spec"], apiVersion=STR, kind=STR, metadata=METADATA,
        spec=strict(["selector", "ports"], clusterIP=STR, publishNotReadyAddresses=BOOL,
                    selector=STR_MAP,
                    ports=array(strict(["port"], name=STR, port=INT, targetPort=PORT_REF,
                                       protocol=STR), 1))),
    ("policy/v1", "PodDisruptionBudget"): strict(
        ["apiVersion", "kind", "metadata", "spec"], apiVersion=STR, kind=STR, metadata=METADATA,
        spec=strict(["selector"], maxUnavailable=PORT_REF, minAvailable=PORT_REF,
                    selector=LABEL_SELECTOR)),
    ("v1", "ConfigMap"): strict(["apiVersion", "kind", "metadata", "data"], apiVersion=STR,
                                kind=STR, metadata=METADATA, data=STR_MAP),
    ("v1", "Secret"): strict(["apiVersion", "kind", "metadata"], apiVersion=STR, kind=STR,
                             metadata=METADATA, type=STR, stringData=STR_MAP, data=STR_MAP),
    ("v1", "Namespace"): strict(["apiVersion", "kind", "metadata"], apiVersion=STR, kind=STR,
                                metadata=strict(["name"], name=STR, labels=STR_MAP)),
}


@pytest.mark.parametrize("key", sorted(MANIFESTS))
def test_manifest_matches_the_kubernetes_schema_subset(key):
    doc = MANIFESTS[key]
    schema = SCHEMAS[(doc["apiVersion"], doc["kind"])]
    jsonschema.validate(doc, schema)


def test_the_schema_subset_catches_a_misspelt_security_field():
    broken = yaml.safe_load(yaml.safe_dump(STATEFULSET))
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFileSystem"] = True  # capital S: ignored by the API
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMAS[("apps/v1", "StatefulSet")])


def test_kustomization_lists_every_manifest_but_the_secret_example():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files - {"secret.example.yaml"}
    image = kustomization["images"][0]
    assert ENGINE["image"] == f"{image['name']}:{image['newTag']}"


def test_images_are_pinned_and_never_latest():
    for container in POD["containers"] + POD["initContainers"]:
        name, _, tag = container["image"].rpartition(":")
        assert name and tag and tag != "latest", container["image"]


@pytest.mark.parametrize("container", ["engine", "init-recovery"])
def test_containers_run_as_non_root_with_a_read_only_root_and_no_escalation(container):
    spec = ENGINE if container == "engine" else INIT
    ctx = spec["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"]["drop"] == ["ALL"]
    assert POD["securityContext"]["runAsNonRoot"] is True and POD["securityContext"]["runAsUser"] > 0
    assert POD["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert {"cpu", "memory"} <= set(spec["resources"]["limits"])
    mounts = {m["mountPath"] for m in spec["volumeMounts"]}
    assert "/tmp" in mounts  # the only writable scratch space on a read-only root


def test_probes_and_scrape_annotations_use_the_metrics_port():
    port = int(CONFIG["JUKEBOX_FLOW_METRICS_PORT"])
    named = {p["name"]: p["containerPort"] for p in ENGINE["ports"]}
    assert named["metrics"] == port
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = ENGINE[probe]["httpGet"]
        assert get["path"] == "/metrics" and named.get(get["port"], get["port"]) == port
    annotations = STATEFULSET["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port


def test_cluster_wiring_is_consistent():
    service = MANIFESTS["Service/jukebox-engine"]
    pdb = MANIFESTS["PodDisruptionBudget/jukebox-engine"]
    labels = STATEFULSET["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"]
    assert STATEFULSET["spec"]["serviceName"] == service["metadata"]["name"]
    for selector in (service["spec"]["selector"], pdb["spec"]["selector"]["matchLabels"],
                     STATEFULSET["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    env = {e["name"]: e.get("value") for e in ENGINE["env"]}
    assert int(env["CLUSTER_PROCESSES"]) == STATEFULSET["spec"]["replicas"]
    assert env["STATEFULSET_NAME"] == STATEFULSET["metadata"]["name"]
    assert env["SERVICE_NAME"] == service["metadata"]["name"]
    cluster_port = {p["name"]: p["port"] for p in service["spec"]["ports"]}["cluster"]
    assert int(env["CLUSTER_PORT"]) == cluster_port
    # every process of the first deploy gets its share of the partitions
    assert int(CONFIG["RECOVERY_PARTITIONS"]) == (
        STATEFULSET["spec"]["replicas"] * int(CONFIG["JUKEBOX_FLOW_RECOVERY_PARTITIONS_PER_PROCESS"]))
    assert CONFIG["RECOVERY_INIT_POLICY"] == "never"  # the safe default; see docs/operations.md
    assert STATEFULSET["spec"]["podManagementPolicy"] == "Parallel"
    assert STATEFULSET["spec"]["updateStrategy"]["type"] == "OnDelete"
    assert pdb["spec"]["maxUnavailable"] == 1


def test_recovery_snapshots_live_on_the_claim_template():
    claim = STATEFULSET["spec"]["volumeClaimTemplates"][0]
    recovery_dir = CONFIG["JUKEBOX_FLOW_RECOVERY_DIR"]
    for container in (ENGINE, INIT):
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts[recovery_dir] == claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    declared = {v["name"] for v in POD["volumes"]} | {claim["metadata"]["name"]}
    for container in (ENGINE, INIT):
        assert {m["name"] for m in container["volumeMounts"]} <= declared


def test_env_sources_exist():
    refs = [e for e in ENGINE["envFrom"] + INIT["envFrom"]]
    secret = _docs(K8S / "secret.example.yaml")[0]
    names = {"configMapRef": {"jukebox-engine-config"}, "secretRef": {secret["metadata"]["name"]}}
    for ref in refs:
        (kind, value), = ref.items()
        assert value["name"] in names[kind]
    for key, value in secret["stringData"].items():
        assert "REPLACE_ME" in value or ".example." in value, f"{key}: real-looking value in the example"


def _script(container: dict) -> str:
    assert container["command"] == ["/bin/sh", "-c"]
    return container["args"][0]


def _pod_env(tmp_path: Path, ordinal: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in CONFIG.items()}
    env |= {e["name"]: e["value"] for e in ENGINE["env"] if "value" in e}
    env |= {"POD_NAME": f"jukebox-engine-{ordinal}", "POD_NAMESPACE": "jukebox",
            "PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "TMPDIR": str(tmp_path)}
    env["JUKEBOX_FLOW_RECOVERY_DIR"] = str(tmp_path / "recovery")
    return env | extra


def _python_on_path(tmp_path: Path, stand_in: str | None = None) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    python = bin_dir / "python"
    python.write_text(stand_in or f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)


def _run_init(tmp_path: Path, ordinal: int, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["/bin/sh", "-c", _script(INIT)], env=_pod_env(tmp_path, ordinal, **extra),
                          capture_output=True, text=True, timeout=60, check=False)


def test_init_container_creates_exactly_this_pods_partitions_once(tmp_path):
    _python_on_path(tmp_path)
    (tmp_path / "recovery").mkdir()
    done = _run_init(tmp_path, 2, RECOVERY_INIT_POLICY="if-empty", RECOVERY_PARTITIONS="8",
                     JUKEBOX_FLOW_RECOVERY_PARTITIONS_PER_PROCESS="2")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "recovery").iterdir()) == ["part-4.sqlite3", "part-5.sqlite3"]
    for index in (4, 5):
        with sqlite3.connect(tmp_path / "recovery" / f"part-{index}.sqlite3") as db:
            assert db.execute("select part_index, part_count from parts").fetchall() == [(index, 8)]
            assert db.execute("PRAGMA page_size").fetchone() == (PAGE_SIZE,)
    again = _run_init(tmp_path, 2, RECOVERY_INIT_POLICY="if-empty", RECOVERY_PARTITIONS="8",
                      JUKEBOX_FLOW_RECOVERY_PARTITIONS_PER_PROCESS="2")
    assert again.returncode == 0 and "present" in again.stdout


def test_init_container_finishes_a_complete_copy_and_drops_an_incomplete_one(tmp_path):
    """A pod stopped while it installed its partitions: a copy marked complete is renamed
    into place; an unmarked one is dropped and the partitions are made again."""
    _python_on_path(tmp_path)
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    env = {"RECOVERY_INIT_POLICY": "if-empty", "RECOVERY_PARTITIONS": "8", "JUKEBOX_FLOW_RECOVERY_PARTITIONS_PER_PROCESS": "2"}
    assert _run_init(tmp_path, 1, **env).returncode == 0
    made = sorted(p.name for p in recovery.iterdir())
    assert made == ["part-2.sqlite3", "part-3.sqlite3"]
    staging = recovery / STAGING
    staging.mkdir()
    (recovery / "part-3.sqlite3").rename(staging / "part-3.sqlite3")  # stopped between renames
    (staging / COMPLETE).touch()
    finished = _run_init(tmp_path, 1, RECOVERY_INIT_POLICY="never", RECOVERY_PARTITIONS="8",
                         JUKEBOX_FLOW_RECOVERY_PARTITIONS_PER_PROCESS="2")
    assert finished.returncode == 0 and "present" in finished.stdout
    assert sorted(p.name for p in recovery.iterdir()) == made
    for part in made:
        (recovery / part).unlink()
    staging.mkdir()
    (staging / "part-2.sqlite3").write_bytes(b"half a copy")  # stopped while copying
    redone = _run_init(tmp_path, 1, **env)
    assert redone.returncode == 0 and "created part-2 to part-3" in redone.stdout
    assert sorted(p.name for p in recovery.iterdir()) == made
    with sqlite3.connect(recovery / "part-2.sqlite3") as db:
        assert db.execute("select part_index, part_count from parts").fetchall() == [(2, 8)]


def test_init_container_without_a_count_per_process_creates_one_partition(tmp_path):
    """Manifests from before several partitions a process do not set
    JUKEBOX_FLOW_RECOVERY_PARTITIONS_PER_PROCESS."""
    _python_on_path(tmp_path)
    (tmp_path / "recovery").mkdir()
    env = {"RECOVERY_INIT_POLICY": "if-empty", "RECOVERY_PARTITIONS": "4"}
    script = f"unset JUKEBOX_FLOW_RECOVERY_PARTITIONS_PER_PROCESS; {_script(INIT)}"
    done = subprocess.run(["/bin/sh", "-c", script], env=_pod_env(tmp_path, 3, **env),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in (tmp_path / "recovery").iterdir()] == ["part-3.sqlite3"]


def test_init_container_refuses_an_empty_volume_unless_told(tmp_path):
    _python_on_path(tmp_path)
    (tmp_path / "recovery").mkdir()
    refused = _run_init(tmp_path, 1, RECOVERY_INIT_POLICY="never", RECOVERY_PARTITIONS="8",
                        JUKEBOX_FLOW_RECOVERY_PARTITIONS_PER_PROCESS="2")
    assert refused.returncode == 1 and "restore this volume" in refused.stderr
    assert not list((tmp_path / "recovery").iterdir())
    # A process added by scaling up holds no partition: an empty volume is normal there.
    extra = _run_init(tmp_path, 4, RECOVERY_INIT_POLICY="never", RECOVERY_PARTITIONS="8",
                      JUKEBOX_FLOW_RECOVERY_PARTITIONS_PER_PROCESS="2")
    assert extra.returncode == 0 and "holds no partition" in extra.stdout


def _bytewax_args(argv: list[str], monkeypatch) -> object:
    import bytewax.run as bytewax_run

    monkeypatch.setattr(sys, "argv", ["bytewax.run", *argv])
    for var in [v for v in os.environ if v.startswith("BYTEWAX_")]:
        monkeypatch.delenv(var)
    return bytewax_run._parse_args()


def test_engine_command_is_a_valid_bytewax_cluster_invocation(tmp_path, monkeypatch):
    record = tmp_path / "argv"
    _python_on_path(tmp_path, f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    done = subprocess.run(["/bin/sh", "-c", _script(ENGINE)], env=_pod_env(tmp_path, 2),
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    argv = record.read_text().splitlines()
    assert argv[:3] == ["-m", "bytewax.run", "dataflows.cluster:flow"]
    args = _bytewax_args(argv[2:], monkeypatch)
    assert args.process_id == 2
    replicas = STATEFULSET["spec"]["replicas"]
    assert args.addresses.split(";") == [
        f"jukebox-engine-{i}.jukebox-engine.jukebox.svc.cluster.local:2101" for i in range(replicas)
    ]
    assert args.workers_per_process == int(CONFIG["JUKEBOX_FLOW_WORKERS"])
    assert str(args.recovery_directory) == str(tmp_path / "recovery")
    assert args.snapshot_interval.total_seconds() == int(CONFIG["JUKEBOX_FLOW_SNAPSHOT_INTERVAL_S"])
    assert args.backup_interval.total_seconds() == int(CONFIG["RECOVERY_BACKUP_INTERVAL_S"])


def test_the_cluster_entrypoint_builds_the_live_flow_and_fails_clearly(tmp_path):
    # A subprocess: importing dataflows.cluster reads the environment and starts an endpoint.
    code = ("import signal, dataflows.cluster as c; "
            "print(type(c.flow).__name__, signal.getsignal(signal.SIGTERM).__name__)")
    base = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    catalog = tmp_path / "catalog.jsonl"  # from a file: building the flow needs no broker
    write_catalog_jsonl(catalog, SongCatalog(seed=1).songs)
    ok = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env=base | {"JUKEBOX_KAFKA_BOOTSTRAP": "127.0.0.1:9", "JUKEBOX_REDIS_URL": "redis://127.0.0.1:9",
                    "JUKEBOX_FLOW_METRICS_PORT": "0", "JUKEBOX_MODELS_RECS_CATALOG_PATH": str(catalog)},
        check=False,
    )
    # a pod's PID 1 without a SIGTERM handler ignores SIGTERM: the pod waited out its grace period
    assert ok.returncode == 0 and ok.stdout.strip() == "Dataflow stop_at_once", ok.stderr
    missing = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=60, cwd=tmp_path, env=base, check=False)
    assert missing.returncode == 2 and "JUKEBOX_KAFKA_BOOTSTRAP is not set" in missing.stderr
    assert re.search(r"Traceback", missing.stderr) is None
