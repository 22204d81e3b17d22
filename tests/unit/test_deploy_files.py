"""The deployment files (deploy/Dockerfile, deploy/compose, deploy/k8s) checked without Docker or a cluster.

* Kubernetes: ``deploy/k8s`` is rendered the way ``kubectl apply -k`` would (a small reader of the
  kustomization features used there; compared with ``kubectl kustomize`` where kubectl exists), every
  built-in object is validated against the official JSON schemas bundled by ``kubernetes-validate`` for
  one Kubernetes version, the KEDA ScaledObjects get a structural check, and cross-checks tie the
  objects to each other and to the code: probes, references, selectors, images, the roles running the
  pipeline's components, their secrets, and the autoscaling caps recomputed from the topic catalogue.
* Compose: ``docker compose config -q`` where the compose plugin exists; everywhere, the parsed file is
  checked for the services, the KRaft quorum, mounts, scaling, secrets and the Prometheus scrape jobs.
* The Dockerfile: base image, non-root user, ``bizbus`` entrypoint, health check, build context.

Every checker returns a list of problems; each is shown to find a fault in a mutated copy.
"""

from __future__ import annotations

import contextlib
import copy
import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bizbus.catalogue import load_catalogue
from bizbus.host.pipeline import Pipeline, load_pipeline
from bizbus.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
K8S_VERSION = "1.30"  # the oldest Kubernetes the manifests are meant for (kubernetes-validate bundles 1.25+)

LAG_METRIC = "bizbus_consumer_lag_records"
HEALTH, READY = "/healthz", "/readyz"
ROLES = ("sources", "flows", "sinks")
SECRETISH = re.compile(r"PASSWORD|SECRET|TOKEN|AES_KEY|USER_INFO|API_KEY")


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


# -- the code's view: settings, metrics, pipeline ---------------------------------------------------------


def settings_env_names() -> set[str]:
    """Every environment variable name bizbus.settings.Settings reads."""
    names: set[str] = set()
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        choices = getattr(alias, "choices", None)
        if choices:
            names.update(str(c) for c in choices)
        else:
            names.add(f"BIZBUS_{field_name.upper()}")
    return names


def metric_names() -> set[str]:
    """Names of the Prometheus series bizbus.metrics defines (counters with their ``_total``)."""
    from prometheus_client.metrics import MetricWrapperBase

    from bizbus import metrics

    names: set[str] = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            name = value._name  # prometheus_client keeps the series name there
            names.add(name)
            if value._type == "counter":
                names.add(f"{name}_total")
    return names


def load_pipeline_at(path: Path) -> Pipeline:
    """The pipeline as a container sees it: relative paths (mappings) from the repository root, which holds
    the same deploy/examples as the image's working directory /srv/bizbus."""
    with contextlib.chdir(ROOT):
        return load_pipeline(path)


def only_args(args: list[str]) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--only"]


def env_vars_named(config: Any) -> set[str]:
    """Environment variables a component config names in its ``*_env`` fields (secrets)."""
    return {v for k, v in config.model_dump().items() if k.endswith("_env") and v}


def needs_pgpassword(config: Any) -> bool:
    fields = config.model_dump()
    return any(fields.get(k) for k in ("dsn", "state_dsn"))


def role_problems(
    pipeline: Pipeline, roles: dict[str, list[str] | None], env: dict[str, set[str]]
) -> list[str]:
    """Does every enabled connector run in the right role, with the secrets it names?

    ``roles``: role -> the ``--only`` names of its worker (None for the flows role); ``env``: role -> the
    environment variable names its containers get.
    """
    problems: list[str] = []
    comps = {c.name: c for c in pipeline.components}
    placed: set[str] = set()
    for role, names in roles.items():
        if names is None:
            continue
        want = {"sources": {"source", "monitor"}, "sinks": {"sink", "monitor"}}.get(role, set())
        for name in names:
            c = comps.get(name)
            if c is None:
                problems.append(f"{role}: --only {name}: no such component in {pipeline.path.name}")
                continue
            if c.type.kind not in want:
                problems.append(f"{role}: --only {name} is a {c.type.kind}, not run by this role")
                continue
            placed.add(name)
            if not c.enabled:
                continue
            missing = sorted(env_vars_named(c.config) - env.get(role, set()))
            if missing:
                problems.append(f"{role}: {name} reads {', '.join(missing)}, which its containers do not get")
            if needs_pgpassword(c.config) and "PGPASSWORD" not in env.get(role, set()):
                problems.append(f"{role}: {name} connects to PostgreSQL but its containers get no PGPASSWORD")
    for c in pipeline.enabled():
        if c.type.kind != "flow" and c.name not in placed:
            problems.append(f"enabled connector {c.name} is run by no role")
    return problems


def scaling_cap(pipeline: Pipeline, catalogue: Any, role: str, only: list[str]) -> int:
    """Most pods of a role that can hold a partition: the widest input topic's partition count (per pod:
    ``tasks_max`` consumers of a sink, one Faust consumer of the flows). The groups use the range assignor
    per topic, so pods beyond that stay idle."""
    if role == "flows":
        from bizbus.streams.runtime.plan import plan_flows

        inputs = plan_flows(pipeline).input_topics  # with the projects every flows worker keeps
        return max(catalogue.get(t).partitions for t in inputs)
    caps = []
    for c in pipeline.enabled():
        if c.name in only and c.type.kind == "sink":
            widest = max(catalogue.get(t).partitions for t in c.config.topics)
            caps.append(math.ceil(widest / c.config.tasks_max))
    return max(caps)


def lag_groups(pipeline: Pipeline, role: str, only: list[str]) -> set[str]:
    """Consumer groups whose lag says a role has too few pods."""
    if role == "flows":
        from bizbus.streams.runtime.plan import plan_flows

        return {plan_flows(pipeline).app_id}
    return {f"bizbus-sink-{c.name}" for c in pipeline.enabled() if c.name in only and c.type.kind == "sink"}


# == Kubernetes =============================================================================================

KUSTOMIZE_KEYS = {"apiVersion", "kind", "namespace", "resources", "configMapGenerator", "images"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass", "StorageClass"}
CRD_KINDS = {("keda.sh/v1alpha1", "ScaledObject")}


def _env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def render_kustomization(folder: Path) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize folder`` makes, for the features deploy/k8s uses (without the hash
    suffix of generated ConfigMaps). An unknown kustomization key fails, so nothing is silently ignored."""
    kz = yaml.safe_load((folder / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = set(kz) - KUSTOMIZE_KEYS
    assert not unknown, f"kustomization.yaml uses {sorted(unknown)}: teach render_kustomization() about them"
    objects = [d for res in kz.get("resources", []) for d in _docs(folder / res)]
    for gen in kz.get("configMapGenerator", []):
        data: dict[str, str] = {}
        for f in gen.get("files", []):
            data[Path(f).name] = (folder / f).read_text(encoding="utf-8")
        for f in gen.get("envs", []):
            data.update(_env_file(folder / f))
        objects.append(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data}
        )
    images = {i["name"]: f"{i.get('newName', i['name'])}:{i['newTag']}" for i in kz.get("images", [])}
    for obj in objects:
        if kz.get("namespace") and obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = kz["namespace"]
        for c in _containers(obj):
            c["image"] = images.get(c["image"], c["image"])
    return objects


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return obj["spec"]["template"]["spec"]
    return None


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = _pod_spec(obj)
    return [] if spec is None else [*spec.get("initContainers", []), *spec["containers"]]


def _named(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _role(obj: dict[str, Any]) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@pytest.fixture(scope="module")
def k8s() -> list[dict[str, Any]]:
    return render_kustomization(K8S)


@pytest.fixture(scope="module")
def secret_templates() -> dict[str, dict[str, Any]]:
    return _named(_docs(K8S / "secrets.example.yaml"), "Secret")


@pytest.fixture(scope="module")
def k8s_pipeline() -> Pipeline:
    return load_pipeline_at(K8S / "config" / "pipeline.yaml")


def schema_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Built-in objects against the official schemas (strict: unknown fields are errors)."""
    import kubernetes_validate as kv

    problems: list[str] = []
    for obj in objects:
        where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        if (obj.get("apiVersion"), obj.get("kind")) in CRD_KINDS:
            continue  # no official schema: structural checks below
        try:
            kv.validate(obj, K8S_VERSION, strict=True)
        except kv.ValidationError as exc:
            problems.append(f"{where}: {'.'.join(map(str, exc.path)) or '(root)'}: {exc.message}")
        except kv.SchemaNotFoundError:
            problems.append(f"{where}: no schema for {obj.get('apiVersion')} {obj.get('kind')} in Kubernetes "
                            f"{K8S_VERSION} (a CRD? add it to CRD_KINDS with a structural check)")  # fmt: skip
    return problems


def _needs_schemas() -> None:
    pytest.importorskip("kubernetes_validate", reason="the Kubernetes schemas come with the dev extra: "
                        "pip install -e '.[dev]' (package kubernetes-validate)")  # fmt: skip


def test_kubernetes_objects_match_the_official_schemas(k8s, secret_templates) -> None:
    _needs_schemas()
    alternatives = [d for f in sorted((K8S / "alternatives").glob("*.yaml")) for d in _docs(f)]
    everything = [*k8s, *secret_templates.values(), *alternatives]
    kinds = {o["kind"] for o in everything}
    assert {"Namespace", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "Job", "ScaledObject",
            "HorizontalPodAutoscaler", "Secret", "ServiceAccount"} <= kinds  # fmt: skip
    assert schema_problems(everything) == []


def test_schema_validation_catches_unknown_fields_and_wrong_types(k8s) -> None:
    _needs_schemas()
    typo = copy.deepcopy(_named(k8s, "Deployment")["bizbus-sinks"])
    container = typo["spec"]["template"]["spec"]["containers"][0]
    container["livenesProbe"] = container.pop("livenessProbe")
    assert schema_problems([typo]) == [
        "Deployment/bizbus-sinks: spec.template.spec.containers.0: Additional properties are not allowed "
        "('livenesProbe' was unexpected)"
    ]
    wrong_type = copy.deepcopy(_named(k8s, "Deployment")["bizbus-sinks"])
    wrong_type["spec"]["replicas"] = "two"
    assert schema_problems([wrong_type]) == [
        "Deployment/bizbus-sinks: spec.replicas: 'two' is not of type 'integer', 'null'"
    ]
    crd_like = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert "no schema" in schema_problems([crd_like])[0]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed: the kustomize build of "
                    "deploy/k8s is checked where kubectl exists (any recent kubectl; no cluster needed)")  # fmt: skip
def test_kubectl_kustomize_builds_the_same_objects(k8s) -> None:
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    built = [d for d in yaml.safe_load_all(out.stdout) if d]

    def key(o: dict[str, Any]) -> tuple[str, str, str]:
        name = o["metadata"]["name"]
        if o["kind"] == "ConfigMap":
            name = re.sub(r"-[a-z0-9]{10}$", "", name)  # the content hash kustomize appends
        return o["kind"], name, o["metadata"].get("namespace", "")

    assert sorted(map(key, built)) == sorted(map(key, k8s))
    assert {c["image"] for o in built for c in _containers(o)} == {
        c["image"] for o in k8s for c in _containers(o)
    }
    ours = {o["metadata"]["name"]: o["data"] for o in k8s if o["kind"] == "ConfigMap"}
    for o in built:
        if o["kind"] == "ConfigMap":
            assert o["data"] == ours[key(o)[1]]


def test_k8s_topic_catalogue_is_a_current_copy() -> None:
    copy_ = K8S / "config" / "topics.yaml"
    assert copy_.read_text(encoding="utf-8") == (DEPLOY / "topics.yaml").read_text(encoding="utf-8"), (
        "deploy/k8s/config/topics.yaml differs from deploy/topics.yaml (kustomize reads files only below "
        "deploy/k8s): run `bizbus docs`"
    )
    load_catalogue(copy_)


def probe_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Liveness on /healthz on the public listener (BIZBUS_HTTP_PORT), readiness on /readyz on the admin
    listener (BIZBUS_ADMIN_PORT, bound to the pod IP); no Service exposes the admin port."""
    env = {k: v for o in objects if o["kind"] == "ConfigMap" for k, v in o.get("data", {}).items()}
    http_port = int(env.get("BIZBUS_HTTP_PORT", "8088"))
    admin_port = int(env.get("BIZBUS_ADMIN_PORT", "8089"))
    problems: list[str] = []
    if env.get("BIZBUS_ADMIN_HOST", "127.0.0.1") in ("127.0.0.1", "localhost"):
        problems.append("BIZBUS_ADMIN_HOST is loopback: the kubelet's readiness probe and Prometheus cannot reach it")
    for svc in _named(objects, "Service").values():
        for p in svc["spec"].get("ports", []):
            if p.get("targetPort") in ("admin", admin_port) or p.get("port") == admin_port:
                problems.append(f"Service/{svc['metadata']['name']}: exposes the admin listener")
    for dep in _named(objects, "Deployment").values():
        for c in _containers(dep):
            where = f"Deployment/{dep['metadata']['name']} container {c['name']}"
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            if http_port not in ports.values():
                problems.append(f"{where}: no containerPort {http_port} (BIZBUS_HTTP_PORT)")
            if ports.get("admin") != admin_port:
                problems.append(f"{where}: no containerPort admin {admin_port} (BIZBUS_ADMIN_PORT)")
            for probe, path, want in (
                ("livenessProbe", HEALTH, http_port),
                ("readinessProbe", READY, admin_port),
                ("startupProbe", HEALTH, http_port),
            ):
                get = c.get(probe, {}).get("httpGet")
                if get is None:
                    if probe != "startupProbe":
                        problems.append(f"{where}: no {probe} with httpGet")
                    continue
                port = ports.get(get["port"]) if isinstance(get["port"], str) else get["port"]
                if get.get("path") != path or port != want:
                    problems.append(f"{where}: {probe} asks {get.get('path')} on port {get['port']} "
                                    f"(want {path} on {want})")  # fmt: skip
    return problems


def test_probes_point_at_health_and_readiness(k8s) -> None:
    assert probe_problems(k8s) == []
    broken = copy.deepcopy(k8s)
    dep = _named(broken, "Deployment")["bizbus-flows"]
    dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] = "/ready"
    assert probe_problems(broken) == [
        "Deployment/bizbus-flows container bizbus: readinessProbe asks /ready on port admin (want /readyz on 8089)"
    ]
    svc = _named(broken, "Service")["bizbus-webhooks"]
    svc["spec"]["ports"].append({"name": "admin", "port": 8089, "targetPort": "admin"})
    assert "Service/bizbus-webhooks: exposes the admin listener" in probe_problems(broken)
    dep["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = 8080
    assert any("no containerPort 8088" in p for p in probe_problems(broken))


def reference_problems(objects: list[dict[str, Any]], secrets: dict[str, dict[str, Any]]) -> list[str]:
    """Every ConfigMap, Secret and ServiceAccount a pod names exists (Secrets: in the template)."""
    have = {kind: set(_named(objects, kind)) for kind in ("ConfigMap", "ServiceAccount")}
    have["Secret"] = set(_named(objects, "Secret")) | set(secrets)
    problems: list[str] = []
    for obj in objects:
        spec = _pod_spec(obj)
        if spec is None:
            continue
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        refs: list[tuple[str, str]] = []
        if spec.get("serviceAccountName"):
            refs.append(("ServiceAccount", spec["serviceAccountName"]))
        for v in spec.get("volumes", []):
            if "configMap" in v:
                refs.append(("ConfigMap", v["configMap"]["name"]))
            if "secret" in v:
                refs.append(("Secret", v["secret"]["secretName"]))
        for c in _containers(obj):
            for src in c.get("envFrom", []):
                refs += [("ConfigMap", src["configMapRef"]["name"])] if "configMapRef" in src else []
                refs += [("Secret", src["secretRef"]["name"])] if "secretRef" in src else []
            for e in c.get("env", []):
                ref = e.get("valueFrom", {})
                refs += [("ConfigMap", ref["configMapKeyRef"]["name"])] if "configMapKeyRef" in ref else []
                refs += [("Secret", ref["secretKeyRef"]["name"])] if "secretKeyRef" in ref else []
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            missing = mounts - {v["name"] for v in spec.get("volumes", [])}
            problems += [f"{where}: volumeMount {m} has no volume" for m in sorted(missing)]
        problems += [
            f"{where}: {kind} {name} does not exist" for kind, name in refs if name not in have[kind]
        ]
    return problems


def test_every_referenced_configmap_secret_and_account_exists(k8s, secret_templates) -> None:
    assert reference_problems(k8s, secret_templates) == []
    broken = copy.deepcopy(k8s)
    c = _named(broken, "Deployment")["bizbus-sinks"]["spec"]["template"]["spec"]["containers"][0]
    c["envFrom"][2]["secretRef"]["name"] = "bizbus-sink"
    c["volumeMounts"].append({"name": "cache", "mountPath": "/cache"})
    assert reference_problems(broken, secret_templates) == [
        "Deployment/bizbus-sinks: volumeMount cache has no volume",
        "Deployment/bizbus-sinks: Secret bizbus-sink does not exist",
    ]


def selector_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Deployment selectors match their pods; Services, PDBs and autoscalers find a Deployment."""
    deps = _named(objects, "Deployment")
    pods = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in deps.items()}
    problems: list[str] = []
    for name, dep in deps.items():
        if not _matches(dep["spec"]["selector"].get("matchLabels", {}), pods[name]):
            problems.append(f"Deployment/{name}: selector does not match its pod labels")
    for kind, sel in (("Service", lambda o: o["spec"].get("selector", {})),
                      ("PodDisruptionBudget", lambda o: o["spec"]["selector"].get("matchLabels", {}))):  # fmt: skip
        for name, obj in _named(objects, kind).items():
            hits = [d for d, labels in pods.items() if _matches(sel(obj), labels)]
            if len(hits) != 1:
                problems.append(f"{kind}/{name}: selector matches {len(hits)} Deployments (want 1)")
    for kind in ("ScaledObject", "HorizontalPodAutoscaler"):
        for name, obj in _named(objects, kind).items():
            target = obj["spec"]["scaleTargetRef"]["name"]
            if target not in deps:
                problems.append(f"{kind}/{name}: scaleTargetRef {target} is no Deployment")
    pdbs = [
        o["spec"]["selector"].get("matchLabels", {}) for o in _named(objects, "PodDisruptionBudget").values()
    ]
    problems += [
        f"Deployment/{n}: no PodDisruptionBudget" for n in deps if not any(_matches(s, pods[n]) for s in pdbs)
    ]
    return problems


def test_selectors_match_labels(k8s) -> None:
    assert selector_problems(k8s) == []
    assert {_role(d) for d in _named(k8s, "Deployment").values()} == set(ROLES)
    sources = _named(k8s, "Service")["bizbus-webhooks"]["spec"]["selector"]
    assert sources["app.kubernetes.io/component"] == "sources"
    broken = copy.deepcopy(k8s)
    _named(broken, "PodDisruptionBudget")["bizbus-flows"]["spec"]["selector"]["matchLabels"][
        "app.kubernetes.io/component"
    ] = "flow"
    _named(broken, "ScaledObject")["bizbus-sinks"]["spec"]["scaleTargetRef"]["name"] = "bizbus-sink"
    assert selector_problems(broken) == [
        "PodDisruptionBudget/bizbus-flows: selector matches 0 Deployments (want 1)",
        "ScaledObject/bizbus-sinks: scaleTargetRef bizbus-sink is no Deployment",
        "Deployment/bizbus-flows: no PodDisruptionBudget",
    ]


def pod_problems(objects: list[dict[str, Any]]) -> list[str]:
    """One image everywhere (pinned), non-root, resources, read-only root, scrape annotations."""
    problems: list[str] = []
    images = {c["image"] for o in objects for c in _containers(o)}
    if len(images) != 1:
        problems.append(f"containers use {len(images)} images: {sorted(images)}")
    problems += [f"image {i} is not pinned to a tag" for i in images if ":" not in i or i.endswith(":latest")]
    for obj in objects:
        spec = _pod_spec(obj)
        if spec is None:
            continue
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        pod_sc = spec.get("securityContext", {})
        if not pod_sc.get("runAsNonRoot") or pod_sc.get("runAsUser", 0) == 0:
            problems.append(f"{where}: pod does not run as a non-root user")
        for c in _containers(obj):
            sc, res = c.get("securityContext", {}), c.get("resources", {})
            if sc.get("allowPrivilegeEscalation") is not False or not sc.get("readOnlyRootFilesystem"):
                problems.append(f"{where}: container {c['name']} may escalate or write its root filesystem")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                problems.append(f"{where}: container {c['name']} keeps Linux capabilities")
            for part in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(res.get(part, {})):
                    problems.append(f"{where}: container {c['name']} has no cpu and memory {part}")
        if obj["kind"] == "Deployment":
            ann = obj["spec"]["template"]["metadata"].get("annotations", {})
            port = str(  # Prometheus scrapes the admin listener
                next(p["containerPort"] for p in spec["containers"][0]["ports"] if p.get("name") == "admin")
            )
            if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != port:
                problems.append(f"{where}: pods are not annotated for scraping on port {port}")
    return problems


def test_pods_are_non_root_sized_and_scraped(k8s) -> None:
    assert pod_problems(k8s) == []
    broken = copy.deepcopy(k8s)
    job = _named(broken, "Job")["bizbus-bootstrap"]
    job["spec"]["template"]["spec"]["securityContext"]["runAsUser"] = 0
    job["spec"]["template"]["spec"]["containers"][0]["image"] = "bizbus:latest"
    del _named(broken, "Deployment")["bizbus-sources"]["spec"]["template"]["spec"]["containers"][0][
        "resources"
    ]["limits"]
    assert set(pod_problems(broken)) == {
        "containers use 2 images: ['bizbus:latest', 'registry.example.com/platform/bizbus:0.1.0']",
        "image bizbus:latest is not pinned to a tag",
        "Job/bizbus-bootstrap: pod does not run as a non-root user",
        "Deployment/bizbus-sources: container bizbus has no cpu and memory limits",
    }


def _k8s_roles(objects: list[dict[str, Any]]) -> dict[str, list[str]]:
    """role -> the container args of its Deployment."""
    return {
        _role(d): d["spec"]["template"]["spec"]["containers"][0]["args"]
        for d in _named(objects, "Deployment").values()
    }


def _k8s_env(objects: list[dict[str, Any]], secrets: dict[str, dict[str, Any]]) -> dict[str, set[str]]:
    """role -> the environment variable names its containers get (ConfigMaps and Secret templates)."""
    maps = {n: set(o.get("data", {})) for n, o in _named(objects, "ConfigMap").items()}
    keys = {n: set(s.get("stringData", {})) | set(s.get("data", {})) for n, s in secrets.items()}
    out: dict[str, set[str]] = {}
    for dep in _named(objects, "Deployment").values():
        names: set[str] = set()
        for c in _containers(dep):
            for src in c.get("envFrom", []):
                if "configMapRef" in src:
                    names |= maps.get(src["configMapRef"]["name"], set())
                if "secretRef" in src:
                    names |= keys.get(src["secretRef"]["name"], set())
            names |= {e["name"] for e in c.get("env", [])}
        out[_role(dep)] = names
    return out


def test_roles_run_every_connector_with_its_secrets(k8s, secret_templates, k8s_pipeline) -> None:
    args = _k8s_roles(k8s)
    assert args["flows"] == ["flows", "run"]
    assert args["sources"][0] == args["sinks"][0] == "worker"
    roles = {"sources": only_args(args["sources"]), "sinks": only_args(args["sinks"]), "flows": None}
    env = _k8s_env(k8s, secret_templates)
    assert role_problems(k8s_pipeline, roles, env) == []
    env["sources"] -= {"JIRA_WEBHOOK_SECRET", "PGPASSWORD"}
    assert role_problems(k8s_pipeline, {**roles, "sinks": ["erp", "jira"]}, env) == [
        "sources: jira reads JIRA_WEBHOOK_SECRET, which its containers do not get",
        "sources: jira connects to PostgreSQL but its containers get no PGPASSWORD",
        "sources: dingtalk connects to PostgreSQL but its containers get no PGPASSWORD",
        "sinks: --only jira is a source, not run by this role",
    ]


def env_name_problems(names: set[str], pipeline: Pipeline | None = None) -> list[str]:
    """bizbus-looking variables that nothing reads (a typo is otherwise silently ignored): neither a setting
    nor a secret the pipeline's components name in their ``*_env`` fields."""
    named = {n for c in pipeline.components for n in env_vars_named(c.config)} if pipeline else set()
    known = settings_env_names() | named
    ours = {n for n in names if n.startswith(("BIZBUS_", "KAFKA_", "SCHEMA_REGISTRY_"))}
    return [f"{n} is no bizbus setting (docs/reference.md lists them)" for n in sorted(ours - known)]


def test_environment_names_are_real_settings(k8s) -> None:
    names = set(_named(k8s, "ConfigMap")["bizbus-env"]["data"])
    assert {
        "KAFKA_BOOTSTRAP_SERVERS",
        "SCHEMA_REGISTRY_URL",
        "BIZBUS_PIPELINE_FILE",
        "BIZBUS_TOPICS_FILE",
    } <= names
    assert env_name_problems(names) == []
    assert env_name_problems(names | {"BIZBUS_HTTP_PROT"}) == [
        "BIZBUS_HTTP_PROT is no bizbus setting (docs/reference.md lists them)"
    ]
    # the files the variables name are the keys of the ConfigMap mounted where they point
    env = _named(k8s, "ConfigMap")["bizbus-env"]["data"]
    files = [Path(env["BIZBUS_PIPELINE_FILE"]), Path(env["BIZBUS_TOPICS_FILE"])]
    config = _named(k8s, "ConfigMap")["bizbus-config"]["data"]
    assert {f.name for f in files} <= set(config)
    assert config["pipeline.yaml"] == (K8S / "config" / "pipeline.yaml").read_text(encoding="utf-8")
    for obj in [*_named(k8s, "Deployment").values(), *_named(k8s, "Job").values()]:
        mounts = {
            m["mountPath"] for c in _containers(obj) for m in c["volumeMounts"] if m["name"] == "config"
        }
        assert mounts == {str(f.parent) for f in files}, obj["metadata"]["name"]


def autoscaler_problems(objects: list[dict[str, Any]], pipeline: Pipeline, catalogue: Any) -> list[str]:
    """KEDA ScaledObjects and HPAs: scale a Deployment on the lag of that role's own consumer groups, up to
    the partition count (more pods than partitions stay idle)."""
    deps = _named(objects, "Deployment")
    known_metrics = metric_names()
    problems: list[str] = []
    for obj in [
        *_named(objects, "ScaledObject").values(),
        *_named(objects, "HorizontalPodAutoscaler").values(),
    ]:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        dep = deps.get(obj["spec"]["scaleTargetRef"]["name"])
        if dep is None:
            problems.append(f"{where}: scaleTargetRef names no Deployment")
            continue
        role = _role(dep)
        args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        only = only_args(args)
        want_groups, cap = lag_groups(pipeline, role, only), scaling_cap(pipeline, catalogue, role, only)
        if obj["kind"] == "ScaledObject":
            if obj["apiVersion"] != "keda.sh/v1alpha1":
                problems.append(f"{where}: apiVersion {obj['apiVersion']} (want keda.sh/v1alpha1)")
            low, high = obj["spec"].get("minReplicaCount", 0), obj["spec"].get("maxReplicaCount")
            queries = [
                t["metadata"].get("query", "")
                for t in obj["spec"].get("triggers", [])
                if t["type"] == "prometheus"
            ]
            if not queries:
                problems.append(f"{where}: no prometheus trigger")
            series = [(name, dict(re.findall(r'(\w+)="([^"]*)"', labels)))
                      for q in queries for name, labels in re.findall(r"([a-zA-Z_:][\w:]*)\{([^}]*)\}", q)]  # fmt: skip
        else:
            low, high = obj["spec"].get("minReplicas", 1), obj["spec"]["maxReplicas"]
            series = [(m["external"]["metric"]["name"], m["external"]["metric"].get("selector", {}).get("matchLabels", {}))
                      for m in obj["spec"]["metrics"] if m["type"] == "External"]  # fmt: skip
        for name, labels in series:
            if name not in known_metrics:
                problems.append(f"{where}: metric {name} is not defined in bizbus/metrics.py")
            elif name == LAG_METRIC and labels.get("group") not in want_groups:
                problems.append(f"{where}: lag of group {labels.get('group')!r}; {role} pods consume as "
                                f"{sorted(want_groups)}")  # fmt: skip
        if not any(name == LAG_METRIC for name, _ in series):
            problems.append(f"{where}: does not scale on {LAG_METRIC}")
        if low < 1:
            problems.append(f"{where}: may scale to zero (no pod would report the lag)")
        if high != cap:
            problems.append(
                f"{where}: at most {high} replicas; the widest input topic allows {cap} busy pods"
            )
    return problems


def test_autoscaling_follows_consumer_lag_up_to_the_partition_count(k8s, k8s_pipeline) -> None:
    catalogue = load_catalogue(K8S / "config" / "topics.yaml")
    hpas = _docs(K8S / "alternatives" / "hpa-external-lag.yaml")
    for objects in (k8s, [*_named(k8s, "Deployment").values(), *hpas]):
        assert autoscaler_problems(objects, k8s_pipeline, catalogue) == []
    assert len(_named(k8s, "ScaledObject")) == len(hpas) == 2
    broken = copy.deepcopy(k8s)
    flows = _named(broken, "ScaledObject")["bizbus-flows"]
    flows["spec"]["maxReplicaCount"] = 12
    sinks = _named(broken, "ScaledObject")["bizbus-sinks"]
    trigger = sinks["spec"]["triggers"][0]["metadata"]
    trigger["query"] = trigger["query"].replace("bizbus-sink-erp", "bizbus-sink-tryton")
    assert autoscaler_problems(broken, k8s_pipeline, catalogue) == [
        "ScaledObject/bizbus-flows: at most 12 replicas; the widest input topic allows 6 busy pods",
        "ScaledObject/bizbus-sinks: lag of group 'bizbus-sink-tryton'; sinks pods consume as ['bizbus-sink-erp']",
    ]
    trigger["query"] = trigger["query"].replace(LAG_METRIC, "bizbus_consumer_lag")
    assert (
        "metric bizbus_consumer_lag is not defined" in autoscaler_problems(broken, k8s_pipeline, catalogue)[1]
    )


# == docker compose =========================================================================================

KAFKA_BROKERS = ("kafka-1", "kafka-2", "kafka-3")
COMPOSE_SERVICES = {*KAFKA_BROKERS, "schema-registry", "postgres", "prometheus", "grafana", "bizbus-bootstrap",
                    *(f"bizbus-{r}" for r in ROLES)}  # fmt: skip
SCALED = tuple(f"bizbus-{r}" for r in ROLES)
REF = re.compile(r"^\$\{[A-Z0-9_]+(:?[-?][^}]*)?\}$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _host_port(spec: Any) -> str:
    """The host port of a compose port mapping ('' when Docker picks one)."""
    if isinstance(spec, dict):
        return str(spec.get("published", ""))
    parts = str(spec).split(":")
    return parts[-2] if len(parts) >= 2 else ""


def _bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for v in service.get("volumes", []):
        src, target = (v.get("source", ""), v["target"]) if isinstance(v, dict) else tuple(v.split(":")[:2])
        if src.startswith((".", "/")):
            out.append((src, target))
    return out


def _long_running_bizbus(doc: dict[str, Any]) -> list[str]:
    return [n for n, s in doc["services"].items() if n.startswith("bizbus-") and s.get("restart") != "no"]


def compose_problems(doc: dict[str, Any], base: Path = COMPOSE_DIR) -> list[str]:
    services: dict[str, dict[str, Any]] = doc.get("services", {})
    problems = [f"service {s} is missing" for s in sorted(COMPOSE_SERVICES - set(services))]
    # Kafka: three combined broker+controller nodes forming one quorum
    brokers = {n: _env(services[n]) for n in KAFKA_BROKERS if n in services}
    ids = [e.get("KAFKA_NODE_ID", "") for e in brokers.values()]
    if len(set(ids)) != len(KAFKA_BROKERS):
        problems.append(f"Kafka node ids are not unique: {', '.join(ids)}")
    want_voters = {f"{e.get('KAFKA_NODE_ID')}@{n}" for n, e in brokers.items()}
    for name, env in brokers.items():
        if not services[name].get("image", "").startswith("apache/kafka:3.9."):
            problems.append(f"{name}: image {services[name].get('image')} (want apache/kafka:3.9.x)")
        if set(env.get("KAFKA_PROCESS_ROLES", "").split(",")) != {"broker", "controller"}:
            problems.append(f"{name}: KAFKA_PROCESS_ROLES must be broker,controller (KRaft combined)")
        voters = env.get("KAFKA_CONTROLLER_QUORUM_VOTERS", "").split(",")
        ctl_port = re.search(r"CONTROLLER://[^,]*:(\d+)", env.get("KAFKA_LISTENERS", ""))
        if (
            {v.rsplit(":", 1)[0] for v in voters} != want_voters
            or not ctl_port
            or any(not v.endswith(f":{ctl_port.group(1)}") for v in voters)
        ):
            problems.append(f"{name}: quorum voters {voters} are not the three brokers' controller listeners")
        for key, want in (("KAFKA_DEFAULT_REPLICATION_FACTOR", "3"), ("KAFKA_MIN_INSYNC_REPLICAS", "2"),
                          ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "3")):  # fmt: skip
            if env.get(key) != want:
                problems.append(f"{name}: {key}={env.get(key)} (want {want})")
    if len({e.get("CLUSTER_ID") for e in brokers.values()}) != 1:
        problems.append("the brokers do not share one CLUSTER_ID")
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        for dep, cond in deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps):
            if dep not in services:
                problems.append(f"{name}: depends on {dep}, which is no service")
            elif cond.get("condition") == "service_healthy" and "healthcheck" not in services[dep]:
                problems.append(f"{name}: waits for {dep} to be healthy, which has no healthcheck")
        for src, _target in _bind_mounts(svc):
            if not (base / src).resolve().exists():
                problems.append(f"{name}: bind mount {src} does not exist")
        for s in svc.get("secrets", []):
            if (s if isinstance(s, str) else s["source"]) not in doc.get("secrets", {}):
                problems.append(f"{name}: secret {s} is not defined")
        for key, value in _env(svc).items():
            if SECRETISH.search(key) and not key.endswith("_FILE") and value and not REF.match(value):
                problems.append(f"{name}: {key} has a literal value; use ${{{key}}} from .env or a secret")
        if "healthcheck" not in svc and svc.get("restart") != "no":
            problems.append(f"{name}: no healthcheck")
    for name in SCALED:
        svc = services.get(name, {})
        if "container_name" in svc:
            problems.append(f"{name}: container_name prevents --scale")
        problems += [
            f"{name}: fixed host port ({p}) prevents --scale" for p in svc.get("ports", []) if _host_port(p)
        ]
        admin = _env(svc).get("BIZBUS_ADMIN_PORT", "8089")
        problems += [  # only the public listener (webhooks, /healthz) may be published
            f"{name}: publishes the admin listener ({p})" for p in svc.get("ports", [])
            if str(p.get("target", "") if isinstance(p, dict) else str(p).split(":")[-1]).split("/")[0] == admin
        ]  # fmt: skip
    return problems


def test_compose_file_has_the_cluster_and_scalable_bizbus_services(compose) -> None:
    assert compose_problems(compose) == []
    sources = compose["services"]["bizbus-sources"]
    assert sources["command"][0] == "worker" and compose["services"]["bizbus-flows"]["command"] == [
        "flows",
        "run",
    ]
    assert compose["services"]["bizbus-bootstrap"]["command"] == [
        "bizbus topics apply && bizbus schemas register"
    ]
    for name in SCALED:
        assert (
            compose["services"][name]["depends_on"]["bizbus-bootstrap"]["condition"]
            == "service_completed_successfully"
        )


def _mutate(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    *parents, last = path.split("/")
    node = out
    for p in parents:
        node = node[p]
    node[last] = value
    return out


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        ("services/bizbus-sinks/container_name", "sinks", "bizbus-sinks: container_name prevents --scale"),
        ("services/bizbus-sources/ports", ["8088:8088"], "bizbus-sources: fixed host port (8088:8088) prevents --scale"),
        ("services/bizbus-sinks/ports", ["127.0.0.1::8089"], "bizbus-sinks: publishes the admin listener (127.0.0.1::8089)"),
        ("services/kafka-3/environment/KAFKA_NODE_ID", 2, "Kafka node ids are not unique: 1, 2, 2"),
        ("services/kafka-2/environment/KAFKA_CONTROLLER_QUORUM_VOTERS", "1@kafka-1:9093,2@kafka-2:9093",
         "kafka-2: quorum voters ['1@kafka-1:9093', '2@kafka-2:9093'] are not the three brokers' controller listeners"),
        ("services/kafka-1/environment/KAFKA_MIN_INSYNC_REPLICAS", 1, "kafka-1: KAFKA_MIN_INSYNC_REPLICAS=1 (want 2)"),
        ("services/bizbus-sinks/environment/PGPASSWORD", "hunter2",
         "bizbus-sinks: PGPASSWORD has a literal value; use ${PGPASSWORD} from .env or a secret"),
        ("services/grafana/volumes", ["../grafana/dashbords:/var/lib/grafana/dashboards:ro"],
         "grafana: bind mount ../grafana/dashbords does not exist"),
        ("services/bizbus-flows/depends_on", {"bizbus-bootstrapp": {"condition": "service_completed_successfully"}},
         "bizbus-flows: depends on bizbus-bootstrapp, which is no service"),
    ],
)  # fmt: skip
def test_compose_checker_finds_a_broken_copy(compose, path, value, problem) -> None:
    assert problem in compose_problems(_mutate(compose, path, value))


def prometheus_problems(prom: dict[str, Any], doc: dict[str, Any], base: Path = COMPOSE_DIR) -> list[str]:
    """Prometheus loads the generated rule file and finds every replica of every long-running bizbus service."""
    problems: list[str] = []
    mounts = _bind_mounts(doc["services"]["prometheus"])
    for rule in prom.get("rule_files", []):
        host = next(
            (base / src / Path(rule).relative_to(t) for src, t in mounts if Path(rule).is_relative_to(t)),
            None,
        )
        if host is None or not host.resolve().is_file():
            problems.append(f"rule file {rule} is not a mounted file of the repository")
    if not any(str(r).endswith("bizbus-alerts.yml") for r in prom.get("rule_files", [])):
        problems.append("the rule file bizbus-alerts.yml is not loaded")
    port = int(_env(doc["services"]["bizbus-sinks"]).get("BIZBUS_ADMIN_PORT", "8089"))  # the admin listener
    scraped = {(n, sd.get("port")) for job in prom.get("scrape_configs", []) for sd in job.get("dns_sd_configs", [])
               for n in sd.get("names", [])}  # fmt: skip
    for service in _long_running_bizbus(doc):
        if (service, port) not in scraped:
            problems.append(f"no dns_sd_configs scrape of {service}:{port}")
    return problems


def test_prometheus_scrapes_every_bizbus_service_and_loads_the_rules(compose) -> None:
    prom = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    assert sorted(_long_running_bizbus(compose)) == sorted(SCALED)
    assert prometheus_problems(prom, compose) == []
    broken = copy.deepcopy(prom)
    broken["scrape_configs"] = [j for j in broken["scrape_configs"] if j["job_name"] != "bizbus-sinks"]
    broken["rule_files"] = ["/etc/prometheus/rules/bizbus.yml"]
    assert prometheus_problems(broken, compose) == [
        "rule file /etc/prometheus/rules/bizbus.yml is not a mounted file of the repository",
        "the rule file bizbus-alerts.yml is not loaded",
        "no dns_sd_configs scrape of bizbus-sinks:8089",
    ]


def test_grafana_is_provisioned_from_the_repository(compose) -> None:
    targets = {t: src for src, t in _bind_mounts(compose["services"]["grafana"])}
    assert targets["/var/lib/grafana/dashboards"] == "../grafana/dashboards"
    for kind in ("dashboards", "datasources"):
        assert (
            COMPOSE_DIR / targets[f"/etc/grafana/provisioning/{kind}"]
        ).resolve() == DEPLOY / "grafana" / "provisioning" / kind
    assert list((DEPLOY / "grafana" / "dashboards").glob("*.json")), (
        "no dashboard JSON in deploy/grafana/dashboards"
    )


def test_compose_pipeline_roles_and_secrets(compose) -> None:
    services = compose["services"]
    mounts = dict((t, s) for s, t in _bind_mounts(services["bizbus-sinks"]))
    env = _env(services["bizbus-sinks"])
    pipeline_file = (COMPOSE_DIR / mounts[env["BIZBUS_PIPELINE_FILE"]]).resolve()
    assert pipeline_file == COMPOSE_DIR / "pipeline.yaml"
    assert (COMPOSE_DIR / mounts[env["BIZBUS_TOPICS_FILE"]]).resolve() == DEPLOY / "topics.yaml"
    pipeline = load_pipeline_at(pipeline_file)
    roles = {"sources": only_args(services["bizbus-sources"]["command"]),
             "sinks": only_args(services["bizbus-sinks"]["command"]), "flows": None}  # fmt: skip
    envs = {r: set(_env(services[f"bizbus-{r}"])) for r in ROLES}
    assert role_problems(pipeline, roles, envs) == []
    for role in ROLES:
        assert env_name_problems(envs[role], pipeline) == []
    # every PostgreSQL a connector uses is the compose service
    for c in pipeline.enabled():
        for key in ("dsn", "state_dsn"):
            dsn = c.config.model_dump().get(key)
            assert dsn is None or "@postgres:5432/" in dsn, f"{c.name}.{key} = {dsn}"


def test_env_example_names_every_variable_with_placeholders_only() -> None:
    example = _env_file(COMPOSE_DIR / ".env.example")
    lines = COMPOSE_FILE.read_text(encoding="utf-8").splitlines()
    text = "\n".join(line.split(" #")[0] for line in lines if not line.lstrip().startswith("#"))
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text)) | set(re.findall(r"environment: ([A-Z0-9_]+)", text))
    assert used <= set(example), f"not in .env.example: {sorted(used - set(example))}"
    for key, value in example.items():
        if SECRETISH.search(key):
            assert value in ("", "change-me"), f".env.example: {key} must be a placeholder, not {value!r}"
    assert ".env" in (COMPOSE_DIR / ".gitignore").read_text(encoding="utf-8").split()


def _docker_compose_works() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.skipif(not _docker_compose_works(), reason="the docker compose plugin is not installed: the "
                    "parsed compose file is checked above; install docker-compose-plugin to run `config -q`")  # fmt: skip
def test_docker_compose_config_accepts_the_file() -> None:
    out = subprocess.run(["docker", "compose", "--env-file", str(COMPOSE_DIR / ".env.example"), "-f",
                          str(COMPOSE_FILE), "config", "-q"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr


# == Dockerfile =============================================================================================


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def dockerfile_problems(text: str, root: Path = ROOT) -> list[str]:
    """python:3.11-slim, a non-root USER in the final stage, ENTRYPOINT bizbus, /healthz health check,
    BIZBUS_HTTP_HOST=0.0.0.0, `pip install .`, and COPY sources that exist and pass the .dockerignore."""
    ins = dockerfile_instructions(text)
    args = {}
    for word, rest in ins:
        if word == "FROM":
            break
        if word == "ARG" and "=" in rest:
            k, _, v = rest.partition("=")
            args[k] = v
    problems: list[str] = []
    froms = [re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), rest).split()[0]
             for word, rest in ins if word == "FROM"]  # fmt: skip
    if not froms or any(f != "python:3.11-slim" for f in froms):
        problems.append(f"base images {froms} (want python:3.11-slim)")
    last_stage = ins[max(i for i, (w, _) in enumerate(ins) if w == "FROM") :] if froms else ins
    users = [rest for word, rest in last_stage if word == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append(f"the final stage runs as {users[-1] if users else 'root'} (want a non-root USER)")
    entry = [rest for word, rest in last_stage if word == "ENTRYPOINT"]
    if entry != ['["bizbus"]']:
        problems.append(f'ENTRYPOINT {entry} (want the exec form ["bizbus"])')
    env = " ".join(rest for word, rest in last_stage if word == "ENV")
    if "BIZBUS_HTTP_HOST=0.0.0.0" not in env:
        problems.append(
            "BIZBUS_HTTP_HOST=0.0.0.0 is not set (the HTTP server would only listen on localhost)"
        )
    if not any(word == "HEALTHCHECK" and HEALTH in rest for word, rest in last_stage):
        problems.append(f"no HEALTHCHECK on {HEALTH}")
    if not any(word == "RUN" and re.search(r"pip install \.(\s|$)", rest) for word, rest in ins):
        problems.append("the project is not installed with `pip install .`")
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text(encoding="utf-8").split()
    allowed = {p[1:].rstrip("/") for p in ignore if p.startswith("!")}
    for word, rest in ins:
        if word != "COPY" or "--from" in rest:
            continue
        for src in rest.split()[:-1]:
            if not (root / src).exists():
                problems.append(f"COPY {src}: not in the repository")
            elif src.rstrip("/") not in allowed:
                problems.append(f"COPY {src}: excluded by deploy/Dockerfile.dockerignore")
    return problems


def test_dockerfile_builds_a_non_root_bizbus_image() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert dockerfile_problems(text) == []
    assert dockerfile_problems(text.replace("USER 10001:10001", "USER 0")) == [
        "the final stage runs as 0 (want a non-root USER)"
    ]
    broken = text.replace('ENTRYPOINT ["bizbus"]', 'ENTRYPOINT ["python"]').replace("/healthz", "/health")
    broken = broken.replace("COPY streams/ streams/", "COPY stream/ streams/")
    assert dockerfile_problems(broken) == [
        'ENTRYPOINT [\'["python"]\'] (want the exec form ["bizbus"])',
        "no HEALTHCHECK on /healthz",
        "COPY stream/: not in the repository",
    ]


def test_compose_builds_the_image_from_the_repository(compose) -> None:
    for name in ("bizbus-bootstrap", *SCALED):
        build = compose["services"][name]["build"]
        context = (COMPOSE_DIR / build["context"]).resolve()
        assert context == ROOT and (context / build["dockerfile"]).resolve() == DOCKERFILE
