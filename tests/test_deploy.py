"""deploy/ (Kubernetes) and docker-compose.yml: valid against their schemas, offline, and in
agreement with the code (queue names, settings, images, ports, probe paths, job timeouts).

Schemas: Kubernetes' from the `kubernetes-validate` wheel (no network); KEDA's ScaledObject from
its CRD vendored in tests/schemas/ (see the header there).
"""

from __future__ import annotations

import copy
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema
import kubernetes_validate
import pytest
import yaml
from redis import Redis
from rq import Queue

from core.queues import ALL_QUEUES
from core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
KEDA_CRD = Path(__file__).with_name("schemas") / "keda.sh_scaledobjects.yaml"
# Oldest Kubernetes minor we claim to support, and the newest whose schemas the wheel ships.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
# Files in deploy/ that `kubectl apply -k` must not apply (placeholders, one-off helpers).
NOT_IN_KUSTOMIZATION = {"secret.example.yaml", "models-loader.yaml"}
# Metadata keys of KEDA's redis scaler (pkg/scalers/redis_scaler.go, `keda:"name=..."` tags of
# redisMetadata and redisConnectionInfo at the vendored tag): the CRD types metadata as a free
# map of strings, so a misspelt key would only show up as a scaler error in the cluster.
KEDA_REDIS_KEYS = {
    "address", "addresses", "host", "hosts", "port", "ports", "username", "password",
    "sentinelUsername", "sentinelPassword", "sentinelMaster", "unsafeSsl", "enableTLS",
    "listLength", "activationListLength", "listName", "databaseIndex",
}
# FRAMERS_* names the manifests use that are read outside core/settings.py (the model store root).
NON_SETTINGS_ENV = ("FRAMERS_MODEL_STORE",)


# ---------------------------------------------------------------- loading


def load_docs(path: Path) -> list[dict[str, Any]]:
    """The non-empty YAML documents of one file."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def manifest_files() -> list[Path]:
    return sorted(p for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")


def all_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in manifest_files() for doc in load_docs(path)]


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    """{metadata.name: doc} of every manifest of this kind in deploy/."""
    return {d["metadata"]["name"]: d for _, d in all_docs() if d["kind"] == kind}


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc["spec"]["template"]["spec"] if "template" in doc["spec"] else doc["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def framers_deployments() -> dict[str, dict[str, Any]]:
    """Deployments running one of our images (not Redis or helpers)."""
    return {n: d for n, d in by_kind("Deployment").items() if containers(d)[0]["image"].startswith("framers-")}


def env_value(container: dict[str, Any], name: str) -> str | None:
    for item in container.get("env", []):
        if item["name"] == name:
            return item.get("value")
    return None


def config_data() -> dict[str, str]:
    return by_kind("ConfigMap")["framers-config"]["data"]


def strict_openapi(schema: Any) -> Any:
    """The schema with additionalProperties false wherever it lists properties and does not
    allow unknown fields: the API server prunes (or, with strict field validation, refuses)
    unknown fields, so a misspelt key such as `pollinginterval` must fail here."""
    if isinstance(schema, list):
        return [strict_openapi(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict_openapi(v) for k, v in schema.items()}
    open_ended = "additionalProperties" in out or out.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in out and not open_ended:
        out["additionalProperties"] = False
    return out


def keda_validator() -> jsonschema.protocols.Validator:
    crd = load_docs(KEDA_CRD)[0]
    version = next(v for v in crd["spec"]["versions"] if v["storage"])
    schema = strict_openapi(version["schema"]["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema)


# ---------------------------------------------------------------- schemas


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in manifest_files()}
    assert listed == on_disk - NOT_IN_KUSTOMIZATION
    used_images = {c["image"].split(":")[0] for _, d in all_docs() if d["kind"] in ("Deployment", "StatefulSet")
                   for c in containers(d)}
    assert {i["name"] for i in kustomization["images"]} == {i for i in used_images if i.startswith("framers-")}
    namespace = kustomization["namespace"]
    assert by_kind("Namespace") == {namespace: by_kind("Namespace")[namespace]}
    for path in NOT_IN_KUSTOMIZATION:  # applied by hand: they must name the namespace themselves
        assert all(d["metadata"]["namespace"] == namespace for d in load_docs(DEPLOY / path))


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_valid_against_kubernetes_schemas(version: str) -> None:
    checked = 0
    for path, doc in all_docs():
        if doc["apiVersion"].startswith("keda.sh/"):
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name} {doc['kind']}/{doc['metadata']['name']} (Kubernetes {version}): {exc.message}")
        checked += 1
    assert checked >= 12


def test_scaledobjects_valid_against_keda_crd() -> None:
    validator = keda_validator()
    objects = by_kind("ScaledObject")
    assert set(objects) == {"worker-cpu", "worker-gpu"}
    for name, doc in objects.items():
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
        assert not errors, f"ScaledObject {name}: {errors}"
        spec = doc["spec"]
        # The CRD's CEL rule (x-kubernetes-validations), which jsonschema does not run.
        assert spec["minReplicaCount"] <= spec["maxReplicaCount"]
        for trigger in spec["triggers"]:
            assert set(trigger["metadata"]) <= KEDA_REDIS_KEYS, trigger["metadata"]


def test_keda_schema_rejects_a_misspelt_field() -> None:
    """The check above can fail: a typo and a wrong type are refused."""
    validator = keda_validator()
    doc = copy.deepcopy(by_kind("ScaledObject")["worker-gpu"])
    doc["spec"]["pollinginterval"] = doc["spec"].pop("pollingInterval")
    assert any("pollinginterval" in e.message for e in validator.iter_errors(doc))
    doc = copy.deepcopy(by_kind("ScaledObject")["worker-gpu"])
    doc["spec"]["triggers"][0]["metadata"]["listLength"] = 4  # must be a string
    assert list(validator.iter_errors(doc))


def test_kubernetes_schema_rejects_a_misspelt_field() -> None:
    doc = copy.deepcopy(by_kind("Deployment")["gateway"])
    doc["spec"]["template"]["spec"]["terminationGracePeriod"] = 10
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSIONS[0], strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with its built-in kustomize) is not installed")
def test_kustomize_build_is_valid() -> None:
    """`kubectl kustomize deploy/` renders offline, and what it renders is valid too."""
    rendered = subprocess.run(["kubectl", "kustomize", str(DEPLOY)], capture_output=True, text=True, timeout=60,
                              check=True).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    expected = sum(len(load_docs(DEPLOY / name)) for name in yaml.safe_load(
        (DEPLOY / "kustomization.yaml").read_text())["resources"])
    assert len(docs) == expected
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "framers"
        if not doc["apiVersion"].startswith("keda.sh/"):
            kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose missing (scripts/bootstrap.sh)")
def test_docker_compose_config_is_valid() -> None:
    result = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- agreement with the code


def test_scaledobjects_watch_the_real_queues() -> None:
    """Every listName is RQ's list of a queue of core/queues.py, each worker pool is scaled on
    exactly the queues it serves, and every queue is served by some pool."""
    unconnected = Redis()  # RQ wants a client to build a Queue; no command is sent
    queue_keys = {Queue(name, connection=unconnected).key: name for name in ALL_QUEUES}  # RQ's own key format
    deployments = framers_deployments()
    served: set[str] = set()
    for so in by_kind("ScaledObject").values():
        target = deployments[so["spec"]["scaleTargetRef"]["name"]]
        worker = containers(target)[0]
        queues = (env_value(worker, "FRAMERS_WORKER_QUEUES") or ",".join(Settings().worker_queues)).split(",")
        assert set(queues) <= set(ALL_QUEUES)
        # Priority order of core/queues.py (webhooks, reconstruct, compress) is kept.
        assert queues == [q for q in ALL_QUEUES if q in queues]
        watched = [queue_keys[t["metadata"]["listName"]] for t in so["spec"]["triggers"]]
        assert sorted(watched) == sorted(queues), so["metadata"]["name"]
        served |= set(queues)
    assert served == set(ALL_QUEUES)


def test_scaledobjects_reach_the_redis_of_the_config() -> None:
    namespace = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["namespace"]
    redis_url = urlparse(config_data()["FRAMERS_REDIS_URL"])
    service = by_kind("Service")[redis_url.hostname]
    port = service["spec"]["ports"][0]["port"]
    assert redis_url.port == port
    for so in by_kind("ScaledObject").values():
        for trigger in so["spec"]["triggers"]:
            meta = trigger["metadata"]
            assert trigger["type"] == "redis"
            assert meta["address"] == f"{redis_url.hostname}.{namespace}.svc.cluster.local:{port}"
            assert meta["databaseIndex"] == redis_url.path.strip("/")
            assert int(meta["listLength"]) >= 1 and int(meta["activationListLength"]) >= 0


def test_every_framers_env_name_is_read_by_the_code() -> None:
    settings_env = {f"FRAMERS_{name.upper()}" for name in Settings.model_fields}
    packages = ("framers", "workers", "service", "core")
    source = "\n".join(p.read_text() for d in packages for p in (ROOT / d).rglob("*.py"))
    others = {name for name in NON_SETTINGS_ENV if f'"{name}"' in source}
    assert others == set(NON_SETTINGS_ENV), "an env name the manifests use is no longer read by the code"
    secret = load_docs(DEPLOY / "secret.example.yaml")[0]
    names = set(config_data()) | set(secret["stringData"])
    for deployment in framers_deployments().values():
        for container in containers(deployment):
            for item in container.get("env", []):
                names.add(item["name"])
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    unknown = {n for n in names if n.startswith("FRAMERS_")} - settings_env - others
    assert not unknown, f"not read by the code: {sorted(unknown)}"


def test_config_values_pass_settings_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every pod's environment (ConfigMap + its own env + the example Secret) is accepted by
    Settings, as the pod would do at startup."""
    secret = load_docs(DEPLOY / "secret.example.yaml")[0]["stringData"]
    for name, deployment in framers_deployments().items():
        container = containers(deployment)[0]
        env = {**config_data()}
        for item in container.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            env[item["name"]] = secret[ref["key"]] if ref else item["value"]
        with monkeypatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            settings = Settings()
        assert settings.storage_backend == "s3", f"{name}: pods on many machines need shared storage"
        if name == "gateway":
            assert settings.auth_enabled  # the gateway is reached from other machines


def test_worker_grace_period_covers_the_longest_job() -> None:
    """A worker told to stop (scale-down, rollout) finishes its job before SIGKILL."""
    data = config_data()
    longest = max(int(data.get("FRAMERS_COMPRESS_TIMEOUT_S", Settings().compress_timeout_s)),
                  int(data.get("FRAMERS_RECONSTRUCT_TIMEOUT_S", Settings().reconstruct_timeout_s)))
    for name, deployment in framers_deployments().items():
        if name == "gateway":
            continue
        assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= longest + 30, name


def dockerfile_builds() -> dict[str, dict[str, str]]:
    """{image tag: {dockerfile, build args, extras}} from the `docker build ... -t NAME .` lines
    documented at the top of docker/*.Dockerfile."""
    builds: dict[str, dict[str, str]] = {}
    for path in (ROOT / "docker").glob("*.Dockerfile"):
        text = path.read_text()
        for match in re.finditer(r"docker build -f (\S+)((?: --build-arg \S+)*) -t ([\w.-]+) \.", text):
            args = dict(a.split("=", 1) for a in match.group(2).split(" --build-arg ") if "=" in a)
            default = re.search(r'^ARG EXTRAS=(\S+)', text, re.M)
            literal = re.search(r'pip install "\.\[([\w,]+)\]"', text)
            extras = args.get("EXTRAS") or (literal.group(1) if literal else default.group(1) if default else "")
            builds[match.group(3)] = {"dockerfile": match.group(1), "text": text, "extras": extras}
    return builds


def test_images_ports_and_commands_match_docker() -> None:
    builds = dockerfile_builds()
    assert builds["framers-gateway"]["dockerfile"] == "docker/gateway.Dockerfile"
    deployments = framers_deployments()
    for name, deployment in deployments.items():
        assert containers(deployment)[0]["image"] in builds, name
    gateway = containers(deployments["gateway"])[0]
    assert gateway["image"] == "framers-gateway"
    exposed = re.search(r"^EXPOSE (\d+)", builds["framers-gateway"]["text"], re.M)
    assert exposed and gateway["ports"][0]["containerPort"] == int(exposed.group(1))
    assert "--port\", \"" + exposed.group(1) in builds["framers-gateway"]["text"]
    worker_cmd = re.search(r"^CMD (\[.*\])", builds["framers-worker"]["text"], re.M)
    assert worker_cmd
    extras = {"worker-cpu": "cpu", "worker-gpu": "gpu"}
    for name, extra in extras.items():
        container = containers(deployments[name])[0]
        assert container["command"] == yaml.safe_load(worker_cmd.group(1)), name
        assert extra in builds[container["image"]]["extras"].split(","), f"{name}: image without the {extra} extra"
    gpu = containers(deployments["worker-gpu"])[0]["resources"]["limits"]
    assert int(gpu["nvidia.com/gpu"]) == 1
    assert "nvidia.com/gpu" not in containers(deployments["worker-cpu"])[0]["resources"]["limits"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert compose["gateway"]["image"].split(":")[0] == "framers-gateway"
    assert compose["worker"]["image"].split(":")[0] == "framers-worker"


def test_gateway_probes_are_real_routes() -> None:
    from service.routes.system import router

    routes = {route.path for route in router.routes}
    gateway = containers(by_kind("Deployment")["gateway"])[0]
    port_names = {p["name"] for p in gateway["ports"]}
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = gateway[probe]["httpGet"]
        assert get["path"] in routes and get["port"] in port_names
    service = by_kind("Service")["gateway"]
    assert service["spec"]["ports"][0]["targetPort"] in port_names


def test_worker_probes_run_the_liveness_module() -> None:
    import importlib.util

    for name, deployment in framers_deployments().items():
        if name == "gateway":
            continue
        container = containers(deployment)[0]
        for probe in ("startupProbe", "livenessProbe"):
            command = container[probe]["exec"]["command"]
            assert command[:2] == ["python", "-m"] and importlib.util.find_spec(command[2]) is not None


def test_every_container_has_requests_and_limits() -> None:
    for path, doc in all_docs():
        if doc["kind"] not in ("Deployment", "StatefulSet", "Pod"):
            continue
        for container in containers(doc):
            resources = container["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[kind]), f"{path.name}: {container['name']} {kind}"


def test_autoscaled_deployments_leave_replicas_to_the_autoscaler() -> None:
    targets = {h["spec"]["scaleTargetRef"]["name"] for h in by_kind("HorizontalPodAutoscaler").values()}
    targets |= {s["spec"]["scaleTargetRef"]["name"] for s in by_kind("ScaledObject").values()}
    assert targets == set(framers_deployments())
    for name in targets:
        assert "replicas" not in by_kind("Deployment")[name]["spec"], name


# ---------------------------------------------------------------- worker liveness probe


@pytest.fixture
def redis_conn(redis_url: str) -> Iterator[Any]:
    conn = Redis.from_url(redis_url)
    yield conn
    conn.flushdb()
    conn.close()


def test_liveness_reads_the_rq_heartbeat(redis_conn: Any) -> None:
    from workers.liveness import check
    from workers.worker import FramersWorker

    host = socket.gethostname()
    assert check(redis_conn, host, 180)[0] is False  # nothing registered
    worker = FramersWorker(["compress"], connection=redis_conn, name=f"{host}.123.abcdef")
    worker.register_birth()
    worker.heartbeat()
    alive, reason = check(redis_conn, host, 180)
    assert alive and worker.name in reason
    assert check(redis_conn, "otherhost", 180)[0] is False  # another pod's worker does not count
    stale = (datetime.now(UTC) - timedelta(seconds=600)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    redis_conn.hset(worker.key, "last_heartbeat", stale)
    alive, reason = check(redis_conn, host, 180)
    assert not alive and "stale" in reason


def test_liveness_does_not_blame_the_worker_for_redis() -> None:
    from service.redis_server import free_port
    from workers.liveness import check

    unreachable = Redis(port=free_port(), socket_connect_timeout=1)
    alive, reason = check(unreachable, socket.gethostname(), 180)
    assert alive and "unreachable" in reason


def test_worker_threads_match_the_cpu_limit() -> None:
    """The codec's thread budget (workers/limits.py) is the container's CPU limit: libraries
    would otherwise size their pools by the node's cores."""
    for name, deployment in framers_deployments().items():
        if name == "gateway":
            continue
        container = containers(deployment)[0]
        assert env_value(container, "FRAMERS_WORKER_THREADS") == str(container["resources"]["limits"]["cpu"]), name
