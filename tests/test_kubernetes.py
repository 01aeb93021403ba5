"""deploy/kubernetes/: every manifest against the Kubernetes schemas (kubernetes-validate, strict:
unknown fields are errors), the KEDA ScaledObject against KEDA's own CRD schema (v2.20.2, vendored
in deploy/kubernetes/schemas/), the kustomize renders (`kubectl kustomize`, when kubectl is
installed), the references between the objects and to the code, and KEDA's redis-scaler script
against arq's real queue in a real Redis.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from arq import create_pool
from arq.connections import RedisSettings

from common import redis_keys
from common.settings import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy" / "kubernetes"
BASE = DEPLOY / "base"
OVERLAYS = (BASE, DEPLOY / "example")
KEDA_CRD = DEPLOY / "schemas" / "keda-v2.20.2-scaledobjects.yaml"
# the oldest and newest minor versions the manifests are meant for (docs/kubernetes.md)
KUBERNETES_VERSIONS = ("1.30.0", "1.34.0")
# KEDA v2.20.2 pkg/scalers/redis_scaler.go: how its redis scaler measures `listName`
KEDA_REDIS_LENGTH_SCRIPT = """
local listName = KEYS[1]
local listType = redis.call('type', listName).ok
if listType == 'zset' then
    return redis.call('zcard', listName)
elseif listType == 'set' then
    return redis.call('scard', listName)
elseif listType == 'hash' then
    return redis.call('hlen', listName)
elseif listType == 'list' or listType == 'none' then
    return redis.call('llen', listName)
else
    return redis.error_reply('ERR unsupported key type: ' .. listType)
end
"""
# Read by the S3 client's own credential chain, not by Settings.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
# The S3 backend's settings (issue 14, items 1-2, built on another branch); the test accepts them
# until common/settings.py reads them, and then through the settings like every other name.
S3_SETTINGS = {"STORAGE", "S3_ENDPOINT_URL", "S3_BUCKET", "S3_REGION"}


def _plain_documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(BASE.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                yield path.name, doc


@cache
def _rendered(overlay: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed: renders not checked")
    done = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def _closed(schema: Any) -> Any:
    """The CRD schema with unknown fields refused: Kubernetes prunes them silently (a typo in a
    field name would just vanish), so the check treats them as errors instead."""
    if isinstance(schema, dict):
        schema = {key: _closed(value) for key, value in schema.items()}
        open_ended = schema.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in schema
        if schema.get("type") == "object" and "properties" in schema and not open_ended:
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    return schema


@cache
def _scaled_object_schema() -> dict[str, Any]:
    crd = yaml.safe_load(KEDA_CRD.read_text(encoding="utf-8"))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return _closed(version["schema"]["openAPIV3Schema"])  # type: ignore[no-any-return]


def _validate(doc: dict[str, Any]) -> None:
    if doc["apiVersion"] == "keda.sh/v1alpha1":
        assert doc["kind"] == "ScaledObject"
        jsonschema.validate(doc, _scaled_object_schema())
        return
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


def _by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return doc["spec"]["template"]["spec"]["containers"]  # type: ignore[no-any-return]


def _settings_names() -> set[str]:
    """Every environment variable common/settings.py reads."""
    source = (REPO_ROOT / "common" / "settings.py").read_text(encoding="utf-8")
    return set(re.findall(r'"([A-Z][A-Z0-9_]+)"', source))


def test_every_manifest_matches_its_schema() -> None:
    docs = list(_plain_documents())
    assert {doc["kind"] for _, doc in docs} >= {
        "Namespace", "Service", "StatefulSet", "Deployment", "HorizontalPodAutoscaler", "ScaledObject",
    }  # fmt: skip
    for name, doc in docs:
        try:
            _validate(doc)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            raise AssertionError(f"{name}: {doc['kind']}/{doc['metadata']['name']}: {exc}") from exc


def test_the_schema_checks_refuse_mistakes() -> None:
    """The checks can fail: a misspelt field, a wrong type, an unknown trigger field."""
    docs = dict(((doc["kind"], doc["metadata"]["name"]), doc) for _, doc in _plain_documents())
    gateway = docs[("Deployment", "gateway")]
    typo = {**gateway, "spec": {**gateway["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(typo)
    scaled = docs[("ScaledObject", "worker")]
    wrong_type = {**scaled, "spec": {**scaled["spec"], "maxReplicaCount": "many"}}
    with pytest.raises(jsonschema.ValidationError):
        _validate(wrong_type)
    unknown = {**scaled, "spec": {**scaled["spec"], "minReplicas": 1}}
    with pytest.raises(jsonschema.ValidationError):
        _validate(unknown)


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_kustomize_render_matches_the_schemas(overlay: Path) -> None:
    docs = _rendered(overlay)
    for doc in docs:
        _validate(doc)
    assert {doc["metadata"].get("namespace") for doc in docs if doc["kind"] != "Namespace"} == {"matting"}


def test_the_objects_fit_together_and_fit_the_code() -> None:
    docs = _rendered(DEPLOY / "example")
    config = _by_kind(docs, "ConfigMap")["matting-config"]["data"]
    secrets = _by_kind(docs, "Secret")
    deployments = _by_kind(docs, "Deployment")
    statefulsets = _by_kind(docs, "StatefulSet")
    services = _by_kind(docs, "Service")

    names: set[str] = set(config)
    for workload in [*deployments.values(), *statefulsets.values()]:
        for container in _containers(workload):
            names |= {item["name"] for item in container.get("env", [])}
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    secret = secrets[source["secretRef"]["name"]]  # every referenced Secret exists
                    names |= set(secret.get("data", {})) | set(secret.get("stringData", {}))
                else:
                    assert source["configMapRef"]["name"] == "matting-config"
    unknown = names - _settings_names() - S3_CREDENTIALS - S3_SETTINGS
    assert not unknown, f"variables no code reads: {sorted(unknown)}"
    assert {"API_TOKENS", "RESULT_SIGNING_SECRET", "WEBHOOK_SECRET"} <= set(
        secrets["matting-secrets"]["data"]
    )

    # one TRITON_URLS address per Triton pod, on the headless Service's per-pod names
    triton = statefulsets["triton"]
    assert services[triton["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"
    expected = [f"triton-{i}.triton:8001" for i in range(triton["spec"]["replicas"])]
    assert config["TRITON_URLS"].split(",") == expected
    (server,) = _containers(triton)
    assert server["resources"]["limits"]["nvidia.com/gpu"] == 1
    for probe in ("startupProbe", "readinessProbe"):
        assert "/v2/health/ready" in " ".join(server[probe]["exec"]["command"])
    assert "--model-config-name=gpu" in (REPO_ROOT / "docker" / "triton.Dockerfile").read_text()
    assert (
        "FROM nvcr.io/nvidia/tritonserver:24.10-py3"
        in (REPO_ROOT / "docker" / "triton.Dockerfile").read_text()
    )

    # KEDA scales the worker Deployment on arq's queue, one pod per WORKER_MAX_JOBS jobs
    scaled = _by_kind(docs, "ScaledObject")["worker"]
    assert scaled["spec"]["scaleTargetRef"]["name"] in deployments
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == redis_keys.ARQ_QUEUE
    assert trigger["metadata"]["listLength"] == config["WORKER_MAX_JOBS"]
    host = trigger["metadata"]["address"].split(".", 1)[0]
    assert (
        host in services
        and f"redis://{host}:6379/{trigger['metadata']['databaseIndex']}" == config["REDIS_URL"]
    )

    hpa = _by_kind(docs, "HorizontalPodAutoscaler")["gateway"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "gateway"
    for name in ("gateway", "worker", "webhooks"):
        (container,) = _containers(deployments[name])
        assert container["image"].startswith("registry.example.org/matting-app:")


async def test_kedas_redis_scaler_reads_arqs_queue(redis_port: int) -> None:
    """What KEDA's script returns for arq's real queue: queued and deferred jobs alike."""
    pool = await create_pool(RedisSettings(port=redis_port, database=11))
    try:
        await pool.flushdb()
        measure = pool.register_script(KEDA_REDIS_LENGTH_SCRIPT)
        assert await measure(keys=[redis_keys.ARQ_QUEUE]) == 0  # no key yet: 'none' reads as 0
        for index in range(3):
            assert await pool.enqueue_job("foreground_mask", f"job-{index}") is not None
        assert await pool.enqueue_job("foreground_mask", "later", _defer_by=60) is not None
        assert await pool.type(redis_keys.ARQ_QUEUE) == b"zset"
        assert await measure(keys=[redis_keys.ARQ_QUEUE]) == 4
    finally:
        await pool.flushdb()
        await pool.aclose()
