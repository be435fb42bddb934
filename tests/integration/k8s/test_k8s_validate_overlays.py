"""Every overlay builds with kustomize and every object validates: core kinds with kubernetes-validate,
Argo and Prometheus kinds against the CRD schemas; broken manifests fail naming object, field, reason."""

import copy
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from model_service.contract.monitoring import VERDICT_LABEL
from pipeline.deploy import alerting, crd_cache
from pipeline.deploy import validate as kv
from tests.integration.k8s.released import STATES, State, build_overlay

ROOT = Path(__file__).resolve().parents[3]
ENVS = sorted(p.name for p in (ROOT / "k8s/overlays").iterdir() if (p / "kustomization.yaml").is_file())

needs_kustomize = pytest.mark.skipif(
    not (shutil.which("kustomize") or shutil.which("kubectl")), reason="neither kustomize nor kubectl on PATH"
)
SCHEMAS = kv.schemas_dir(ROOT)
needs_schemas = pytest.mark.skipif(
    not (crd_cache.complete(SCHEMAS) if crd_cache.cache_dir() == SCHEMAS else SCHEMAS.is_dir()),
    reason=f"no CRD schemas at {SCHEMAS}: set {kv.SCHEMAS_ENV} to the CRD folder",
)


WORKLOAD = {"Rollout", "HorizontalPodAutoscaler", "PodDisruptionBudget"}


@needs_kustomize
@needs_schemas
@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("env", ENVS)
def test_every_object_of_the_overlay_validates(env: str, state: State) -> None:
    """Unreleased: no workload (docs/kubernetes.md, "The first release"); first release: the workload and
    its PostSync AnalysisRun; from the second on: the workload alone, compared with stable."""
    docs = build_overlay(env, state)
    kinds = {d["kind"] for d in docs}
    assert {
        "AnalysisTemplate",
        "ServiceMonitor",
        "PrometheusRule",
        "HTTPRoute",  # deploy.traffic_router: gateway-api, the default
    } <= kinds
    assert "Ingress" not in kinds
    if state == "unreleased":
        assert not WORKLOAD & kinds
    else:
        assert kinds >= WORKLOAD
    assert ("AnalysisRun" in kinds) == (state == "first")
    problems, skipped = kv.validate_docs(docs, env, ROOT)
    assert (problems, skipped) == ([], [])
    for rollout in (d for d in docs if d["kind"] == "Rollout"):
        assert "replicas" not in rollout["spec"]
    assert all(d["metadata"].get("namespace") for d in docs)


@needs_kustomize
@pytest.mark.parametrize("env", ENVS)
def test_the_committed_overlays_match_their_release_state(env: str) -> None:
    committed = {d["kind"] for d in kv.build(ROOT / "k8s/overlays" / env)}
    release = (ROOT / "k8s/overlays" / env / "release.yaml").read_text(encoding="utf-8")
    assert ("tag: unreleased" in release) == (not WORKLOAD & committed)


@needs_schemas
def test_the_argocd_applications_validate() -> None:
    for path in sorted((ROOT / "k8s/argocd").glob("*.yaml")):
        problems, _ = kv.validate_docs([yaml.safe_load(path.read_text())], path.name, ROOT)
        assert problems == []


@needs_kustomize
@needs_schemas
def test_broken_manifests_fail_with_object_field_and_reason() -> None:
    docs = build_overlay("dev", "second")
    service = copy.deepcopy(next(d for d in docs if d["kind"] == "Service"))
    service["spec"]["ports"][0]["port"] = "eighty"
    problems = kv.validate_core(service, "dev")
    assert problems and problems[0].obj == "Service/model-service-canary"
    assert problems[0].field == "spec.ports.0.port" and "not of type 'integer'" in problems[0].reason

    rollout = copy.deepcopy(next(d for d in docs if d["kind"] == "Rollout"))
    rollout["spec"]["strategy"]["canary"]["steps"][0]["setWeight"] = "twenty"
    rollout["spec"]["strategy"]["canary"]["unknownField"] = 1
    found = kv.validate_crd(rollout, "dev", SCHEMAS)
    fields = {(p.obj, p.field) for p in found}
    assert ("Rollout/model-service", "spec.strategy.canary.steps.0.setWeight") in fields
    assert any("unknownField" in p.reason for p in found)


@needs_kustomize
@needs_schemas
def test_a_broken_httproute_and_an_unhardened_load_job_fail() -> None:
    docs = kv.build(ROOT / "k8s/overlays/dev")
    route = copy.deepcopy(next(d for d in docs if d["kind"] == "HTTPRoute"))
    route["spec"]["rules"][0]["backendRefs"][1]["weight"] = "ten"
    route["spec"]["hostnames"] = "model.dev.example.com"
    fields = {p.field for p in kv.validate_crd(route, "dev", SCHEMAS)}
    assert {"spec.rules.0.backendRefs.1.weight", "spec.hostnames"} <= fields

    template = copy.deepcopy(next(d for d in docs if d["metadata"]["name"] == "model-service-analysis"))
    (load,) = [m for m in template["spec"]["metrics"] if "job" in m["provider"]]
    load["provider"]["job"]["spec"]["template"]["spec"]["containers"][0]["securityContext"][
        "readOnlyRootFilesystem"
    ] = False
    (problem,) = kv.policy(template, "dev")
    assert problem.field.endswith("containers.0.securityContext.readOnlyRootFilesystem")
    assert problem.field.startswith("spec.metrics.")


def test_missing_schemas_skip_with_the_variable_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(kv.SCHEMAS_ENV, str(tmp_path / "nowhere"))
    doc = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "r"}}
    _, skipped = kv.validate_docs([doc], "x", ROOT)
    assert kv.SCHEMAS_ENV in skipped[0]


@needs_kustomize
@pytest.mark.parametrize("env", ENVS)
def test_metrics_port_is_scraped_by_prometheus_only_and_never_routed(env: str) -> None:
    """Issue 21, finding 5: the Ingress/HTTPRoute reach the API port only, the ServiceMonitor scrapes the
    metrics port, and the NetworkPolicy admits the metrics port from the Prometheus namespace alone."""
    docs = build_overlay(env, "second")
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    (rollout,) = by_kind["Rollout"]
    (container,) = rollout["spec"]["template"]["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert set(ports) == {"http", "metrics"}
    env_vars = {var["name"]: var.get("value") for var in container["env"]}
    assert env_vars["MODEL_SERVICE_METRICS_PORT"] == str(ports["metrics"])
    assert env_vars["MODEL_SERVICE_PORT"] == str(ports["http"])
    services = {s["metadata"]["name"]: s for s in by_kind["Service"]}
    routed = {
        ref["name"]
        for route in by_kind.get("HTTPRoute", [])
        for rule in route["spec"]["rules"]
        for ref in rule["backendRefs"]
    } | {
        path["backend"]["service"]["name"]
        for ingress in by_kind.get("Ingress", [])
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert routed
    for name in routed:  # what users reach targets the API port, never the metrics port
        assert {port["targetPort"] for port in services[name]["spec"]["ports"]} == {"http"}, name
    (monitor,) = by_kind["ServiceMonitor"]
    (endpoint,) = monitor["spec"]["endpoints"]
    scraped = [
        s
        for s in services.values()
        if s["metadata"]["labels"].items() >= monitor["spec"]["selector"]["matchLabels"].items()
    ]
    assert [s["metadata"]["name"] for s in scraped] == ["model-service-metrics"]
    (scraped_port,) = scraped[0]["spec"]["ports"]
    assert (endpoint["port"], scraped_port["name"], scraped_port["targetPort"]) == ("metrics",) * 3
    (policy,) = by_kind["NetworkPolicy"]
    rules = {port["port"]: rule["from"] for rule in policy["spec"]["ingress"] for port in rule["ports"]}
    assert set(rules) == {"http", "metrics"}
    namespace = {
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for peer in rules["metrics"]
    }
    assert namespace == {"monitoring"}
    assert [peer["podSelector"]["matchLabels"] for peer in rules["metrics"]] == [
        {"app.kubernetes.io/name": "prometheus"}
    ]
    assert not any(
        peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "prometheus"
        for peer in rules["http"]
    )


@needs_kustomize
@pytest.mark.parametrize("env", ENVS)
def test_queries_select_only_labels_the_metrics_port_scrape_gives(env: str) -> None:
    """The scrape moved from the `http` to the `metrics` endpoint, which changes its `endpoint` (and could
    change `job`/`service`) label: no query may select on those, only on the service's own labels and the
    ones the ServiceMonitor adds whatever the port (namespace, the pod-template hash)."""
    docs = kv.build(ROOT / "k8s/overlays" / env)
    queries = [
        metric["provider"]["prometheus"]["query"]
        for doc in docs
        if doc["kind"] == "AnalysisTemplate"
        for metric in doc["spec"]["metrics"]
        if "prometheus" in metric["provider"]
    ] + [
        rule["expr"]
        for doc in docs
        if doc["kind"] == "PrometheusRule"
        for group in doc["spec"]["groups"]
        for rule in group["rules"]
        # kube-state-metrics' and cAdvisor's series carry their own labels (container, resource, reason).
        if not any(series in rule["expr"] for series in alerting.CLUSTER_SERIES)
    ]
    assert queries
    selected = {
        name for query in queries for name in re.findall(r'[{,]\s*([a-z_]+)\s*(?:=~|!~|!=|=)\s*"', query)
    }
    service_labels = {"route", "status", "le", "feature", "bin", "class", "name", "version", "sha256"}
    service_labels.add(VERDICT_LABEL)  # the live-quality gauges the metrics port appends
    assert selected <= service_labels | {"namespace", "rollouts_pod_template_hash"}, selected
    assert "namespace" in selected and "rollouts_pod_template_hash" in selected


@pytest.mark.parametrize("env", ENVS)
def test_the_cd_identity_may_only_follow_and_sync_its_environment(env: str) -> None:
    """What the CD follower does (pipeline/deploy/argo.py): get the environment's Application and patch
    its `operation` (a sync at the pushed revision), get the Rollout; `kubectl argo rollouts get -w` also
    lists and watches rollouts and analysisruns. Nothing else: no Secrets, no writes to the workload."""
    docs = [d for d in yaml.safe_load_all((ROOT / "k8s/deployer" / f"{env}.yaml").read_text()) if d]
    problems, _ = kv.validate_docs(docs, env, ROOT)
    assert problems == []
    roles = {d["metadata"]["namespace"]: d["rules"] for d in docs if d["kind"] == "Role"}
    app = yaml.safe_load((ROOT / "k8s/argocd" / f"{env}.yaml").read_text())
    assert roles[app["metadata"]["namespace"]] == [
        {
            "apiGroups": ["argoproj.io"],
            "resources": ["applications"],
            "resourceNames": [app["metadata"]["name"]],
            "verbs": ["get", "watch", "patch"],
        }
    ]
    assert roles[app["spec"]["destination"]["namespace"]] == [
        {
            "apiGroups": ["argoproj.io"],
            "resources": ["rollouts", "analysisruns"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    (account,) = [d for d in docs if d["kind"] == "ServiceAccount"]
    for binding in (d for d in docs if d["kind"] == "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", **account["metadata"]}]
    report = kv.validate_tree(ROOT)  # render --check validates the deploy identities too
    assert not [p for p in report.problems if "deployer" in p.source]
