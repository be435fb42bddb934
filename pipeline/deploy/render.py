"""Render k8s/overlays/<env> and k8s/argocd/<env>.yaml from an environment's Config and its rollout plan.

Pure functions build plain dicts; `dump` writes them as YAML with the key order they were built in, so
rendering is deterministic and `render --check` can compare text. The rollout steps and the analysis
come from `plan(config)`, the same object the local rehearsal executes, never from the YAML directly.

The one piece of state an overlay holds is `release.yaml`: the image (digest or tag) and the model
version that `promote --gitops` wrote last. Rendering reads it and keeps it.

Over 400 lines on purpose: every object of an overlay is built here, one function each, so one file
shows what an environment deploys; what stands alone lives beside it (argocd.py, release_file.py,
argo_analysis.py, analysis_load.py, batch_jobs.py, dashboard.py, fallback_rules.py).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.adapters.service_process import capture_settings, service_settings
from pipeline.config import ClusterTiming, Config, ConfigError, Task, known_environments, load_config
from pipeline.console import Reporter
from pipeline.deploy import alerting, batch_jobs, shadow, workflow_schedules
from pipeline.deploy.analysis_load import load_config_map, load_job_metric, sends_load
from pipeline.deploy.argo_analysis import (
    analysis_args,
    analysis_metrics,
    blue_green,
    canary_steps,
    cluster_timing,
    drift_rules,
    first_release_metrics,
    smoke_metric,
)
from pipeline.deploy.argocd import application, deployer
from pipeline.deploy.dashboard import dashboard_config_map
from pipeline.deploy.fallback_rules import fallback_rules
from pipeline.deploy.names import (
    ANALYSIS_TEMPLATE,
    APP,
    DEPLOYER_DIR,
    FIRST_RELEASE_FILE,
    FIRST_RELEASE_RUN,
    GENERATED,
    K8S_DIR,
    LOAD_APP,
    PLACEHOLDER_REPO_URL,
    PLUGIN,
    RELEASE_FILE,
    SHADOW_FILE,
    SMOKE_TEMPLATE,
    TEMPLATE_REPOSITORY,
)
from pipeline.deploy.release_file import Release, dump, dump_all, read_release, release_text
from pipeline.ml.data import load_dataset
from pipeline.release.gating import release_rollout
from pipeline.rollout.analysis import for_task
from pipeline.rollout.plan import (
    SHADOW_ROUTE,
    Plan,
    Promote,
    Smoke,
    header_routes,
    plan,
)

# --- overlay ---------------------------------------------------------------------------------------


def _op(op: str, path: str, value: Any) -> dict[str, Any]:
    return {"op": op, "path": path, "value": value}


def signature_settings(config: Config) -> dict[str, str]:
    """The deployed service's model signature check (`service.signatures`). The cluster's only: a local run
    serves the folder it just exported, signed or not (docs/service.md, Model signatures)."""
    service = config.service
    if service.signatures == "off":
        return {}
    return {
        "MODEL_SERVICE_SIGNATURES": service.signatures,
        "MODEL_SERVICE_SIGNING_PUBLIC_KEYS": ",".join(service.signing_public_keys),
    }


CAPTURE_MOUNT_PATH = "/var/lib/model-service/capture"
"""Where the service's capture volume is mounted in the pod (the root filesystem is read-only)."""
CAPTURE_HEADROOM_MIB = 64
"""The emptyDir's room beyond the capture files: labels.sqlite, its WAL, the live-quality file."""


def capture_volume(config: Config) -> dict[str, Any]:
    """The capture's volume: the environment's PersistentVolumeClaim, else an emptyDir (lost with the pod)
    sized for `max_files` full files and the label store."""
    capture = config.capture
    if capture.volume_claim is not None:
        return {"name": "capture", "persistentVolumeClaim": {"claimName": capture.volume_claim}}
    mib = -(-capture.max_files * capture.max_file_bytes // 1_048_576) + CAPTURE_HEADROOM_MIB
    return {"name": "capture", "emptyDir": {"sizeLimit": f"{mib}Mi"}}


def config_map(config: Config) -> dict[str, Any]:
    data = {
        **service_settings(config),
        "MODEL_SERVICE_SHUTDOWN_DELAY_S": str(config.deploy.shutdown_delay_seconds),
        "MODEL_SERVICE_GRACEFUL_TIMEOUT_S": str(config.deploy.graceful_timeout_seconds),
        **signature_settings(config),
        **capture_settings(config, CAPTURE_MOUNT_PATH),
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{APP}-config"},
        "data": dict(sorted(data.items())),
    }


def rollout_patch(
    config: Config, rollout_plan: Plan, release: Release, *, shadowed: bool = False
) -> list[dict[str, Any]]:
    """The Rollout's patch; `shadowed`: the canary starts with the shadow steps (pipeline/deploy/shadow.py)."""
    deploy = config.deploy
    res = deploy.resources
    container = "/spec/template/spec/containers/0"
    checksum = hashlib.sha256(json.dumps(config_map(config), sort_keys=True).encode()).hexdigest()[:16]
    ops = [
        _op("add", "/spec/template/metadata/labels/model-version", release.model_version or "none"),
        _op(
            "add",
            "/spec/template/metadata/annotations",
            {
                # A changed ConfigMap changes the pod template, so Argo Rollouts rolls it out like an image.
                "checksum/config": checksum,
                "model.version": release.model_version or "none",
                "git.sha": release.git_sha or "none",
            },
        ),
        _op(
            "replace",
            "/spec/template/spec/terminationGracePeriodSeconds",
            deploy.shutdown_delay_seconds + deploy.graceful_timeout_seconds + 5,
        ),
        _op(
            "replace",
            f"{container}/resources",
            {
                "requests": {"cpu": res.requests_cpu, "memory": res.requests_memory},
                "limits": {"cpu": res.limits_cpu, "memory": res.limits_memory},
            },
        ),
    ]
    if config.service.auth == "api-key":
        secret = {"secretKeyRef": {"name": deploy.api_key_secret, "key": "api-key-sha256"}}
        ops.append(
            _op("add", f"{container}/env/-", {"name": "MODEL_SERVICE_API_KEY_SHA256", "valueFrom": secret})
        )
    if release.model_sha256:  # the registry's record of the release's ONNX file, checked at start
        env = {"name": "MODEL_SERVICE_EXPECTED_SHA256", "value": release.model_sha256}
        ops.append(_op("add", f"{container}/env/-", env))
    if config.capture.enabled:  # the capture folder (docs/monitoring.md, In the cluster)
        ops.append(_op("add", "/spec/template/spec/volumes/-", capture_volume(config)))
        mount = {"name": "capture", "mountPath": CAPTURE_MOUNT_PATH}
        ops.append(_op("add", f"{container}/volumeMounts/-", mount))
    if config.rollout.rollback_window:  # back to a recent release: no steps, no analysis (docs/rollout.md)
        ops.append(_op("add", "/spec/rollbackWindow", {"revisions": config.rollout.rollback_window}))
    if rollout_plan.strategy == "canary":
        routing = traffic_routing(config, rollout_plan, shadowed=shadowed)
        ops.append(_op("add", "/spec/strategy/canary/trafficRouting", routing))
        shadow_steps = shadow.shadow_steps(config, analysis_args()) if shadowed else None
        ops.append(_op("replace", "/spec/strategy/canary/steps", canary_steps(rollout_plan, shadow_steps)))
        delay = next(a.scale_down_delay_seconds for a in rollout_plan.actions if isinstance(a, Promote))
        ops.append(_op("add", "/spec/strategy/canary/scaleDownDelaySeconds", max(delay, 30)))
    else:
        for key, value in blue_green(rollout_plan).items():
            ops.append(_op("add", f"/spec/strategy/blueGreen/{key}", value))
    return ops


def _pointer(*parts: str) -> str:
    """A JSON pointer from keys (RFC 6901: `~` and `/` escaped), e.g. a label key with a slash."""
    return "/" + "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


def _label_ops(labels: Mapping[str, str]) -> list[dict[str, Any]]:
    return [_op("add", _pointer("metadata", "labels", key), value) for key, value in sorted(labels.items())]


def traffic_routing(config: Config, rollout_plan: Plan, *, shadowed: bool = False) -> dict[str, Any]:
    """spec.strategy.canary.trafficRouting: the Gateway API plugin on the HTTPRoute, or ingress-nginx.

    Header routes and the shadow mirror are managed routes (Argo removes them at the rollout's end); the
    plugin honours header routes only on routes listed under `httpRoutes` with `useHeaderRoutes`."""
    headers = header_routes(rollout_plan)
    if config.deploy.traffic_router == "nginx":
        if headers:  # Argo's nginx router has no setHeaderRoute: the step would silently do nothing
            raise ConfigError(
                f"environments/{config.name}.yaml: rollout.steps: set_header_route needs "
                "deploy.traffic_router: gateway-api (ingress-nginx has no header routes in Argo Rollouts)"
            )
        return {"nginx": {"stableIngress": APP}}
    managed = [*([SHADOW_ROUTE] if shadowed else []), *headers]
    if not headers:
        plugin: dict[str, Any] = {"httpRoute": APP, "namespace": config.deploy.namespace}
    else:
        plugin = {
            "httpRoutes": [{"name": APP, "useHeaderRoutes": True}],
            "namespace": config.deploy.namespace,
        }
    routing: dict[str, Any] = {"plugins": {PLUGIN: plugin}}
    if managed:
        routing["managedRoutes"] = [{"name": name} for name in managed]
    return routing


def route_patch(config: Config) -> list[dict[str, Any]]:
    """Where users come in: the HTTPRoute's Gateway and hostname, or the Ingress rule's host."""
    deploy = config.deploy
    if deploy.traffic_router == "nginx":
        ops = [_op("replace", "/spec/rules/0/host", deploy.host)]
        if (
            deploy.tls is not None
        ):  # ingress-nginx then redirects plain HTTP to HTTPS (its ssl-redirect default)
            ops.append(
                _op("add", "/spec/tls", [{"hosts": [deploy.host], "secretName": deploy.tls.secret_name}])
            )
        return ops
    gateway = deploy.gateway
    # group and kind are the CRD's defaults, written out (validate.default_problems says why).
    parent = {
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "name": gateway.name,
        "namespace": gateway.namespace,
    }
    if deploy.tls is not None and deploy.tls.listener is not None:  # the HTTPS listener, with its certificate
        parent["sectionName"] = deploy.tls.listener
    return [
        _op("replace", "/spec/parentRefs", [parent]),
        _op("replace", "/spec/hostnames", [deploy.host]),
    ]


def _namespace_peer(namespace: str, app: str | None = None) -> dict[str, Any]:
    peer: dict[str, Any] = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}
    if app is not None:
        peer["podSelector"] = {"matchLabels": {"app.kubernetes.io/name": app}}
    return peer


def network_peers(config: Config) -> list[dict[str, Any]] | None:
    """Who may call the API port: the ingress (Gateway proxies or ingress-nginx), the Argo Rollouts
    controller (the smoke test's web metric) and, when the environment sends it, the in-cluster load;
    None: any source (`deploy.gateway.proxy_from_anywhere`). Prometheus is not among them: it reaches the
    metrics port only (`metrics_peers`)."""
    deploy = config.deploy
    if deploy.traffic_router == "nginx":
        peers = [_namespace_peer(deploy.ingress_namespace, "ingress-nginx")]
    else:
        gateway = deploy.gateway
        if gateway.proxy_from_anywhere:
            return None
        # Gateway implementations label their proxies differently: each whole namespace is admitted.
        peers = [_namespace_peer(ns) for ns in gateway.proxy_namespaces or [gateway.namespace]]
        peers += [{"ipBlock": {"cidr": cidr}} for cidr in gateway.proxy_cidrs]
    peers.append(_namespace_peer(deploy.rollouts_namespace, "argo-rollouts"))
    if sends_load(config, plan(config)):
        peers.append({"podSelector": {"matchLabels": {"app.kubernetes.io/name": LOAD_APP}}})
    return peers


def _model_task(config: Config, root: Path) -> Task:
    """`model.task`, or the one train infers from the data: the analysis never waits for a metric the
    model cannot produce (a regression has no classes)."""
    return config.model.task or load_dataset(config.data, root).task


NO_TRAFFIC_RULE: dict[str, Any] = {
    "alert": "ModelServiceNoTraffic",
    "expr": 'sum by (namespace) (rate(model_service_requests_total{route="/v1/predict"}[15m])) == 0\n',
    "for": "15m",
    "labels": {"severity": "ticket"},
    "annotations": {
        "summary": "model-service in {{ $labels.namespace }} served no predictions for 15 minutes"
    },
}
"""Rendered only where users are expected (deploy.expected_user_rps): elsewhere it would always fire."""


def traffic_note(config: Config) -> str:
    """What the environment's canary analysis needs of its users, for `render` to print."""
    needed = config.user_rps_needed
    if needed is None:
        source = (
            "in-cluster analysis traffic" if config.deploy.analysis_traffic.enabled else "no canary analysis"
        )
        return f"{config.name}: the analysis needs no user traffic ({source})"
    return (
        f"{config.name}: the canary analysis needs {needed:.1f} user predictions/s "
        f"(min_requests {config.rollout.analysis.min_requests} per {config.cluster_timing.window}s window at "
        f"{config.analysed_canary_weight}% canary weight); "
        f"deploy.expected_user_rps: {config.deploy.expected_user_rps:g}"
    )


def metrics_peers(config: Config) -> list[dict[str, Any]]:
    """Who may call the metrics port: Prometheus, in `deploy.prometheus.namespace`."""
    return [_namespace_peer(config.deploy.prometheus.namespace, "prometheus")]


def overlay_objects(config: Config, release: Release, root: Path) -> dict[str, Any]:
    """File name -> content (dict, or list of JSON-patch ops) of the overlay, without release.yaml.

    `root` is the workspace the load payloads are read from (the data section's rows)."""
    rollout_plan = for_task(plan(config), _model_task(config, root))
    timing = cluster_timing(config)
    deploy = config.deploy
    strategy = "canary" if rollout_plan.strategy == "canary" else "blue-green"
    image: dict[str, Any] = {"name": APP, "newName": release.image}
    if release.digest:
        image["digest"] = release.digest
    else:
        image["newTag"] = release.tag
    route = (
        ("patch-ingress.yaml", ("networking.k8s.io", "Ingress", APP))
        if deploy.traffic_router == "nginx"
        else ("patch-httproute.yaml", ("gateway.networking.k8s.io", "HTTPRoute", APP))
    )
    patches = {
        "patch-rollout.yaml": ("argoproj.io", "Rollout", APP),
        "patch-hpa.yaml": ("autoscaling", "HorizontalPodAutoscaler", APP),
        route[0]: route[1],
        "patch-analysis.yaml": ("argoproj.io", "AnalysisTemplate", ANALYSIS_TEMPLATE),
        "patch-networkpolicy.yaml": ("networking.k8s.io", "NetworkPolicy", APP),
        "patch-servicemonitor.yaml": ("monitoring.coreos.com", "ServiceMonitor", APP),
        "patch-prometheusrule.yaml": ("monitoring.coreos.com", "PrometheusRule", APP),
    }
    metrics = analysis_metrics(rollout_plan.analysis, timing)
    resources = ["../../base", "configmap.yaml", "grafana-dashboard.yaml"]
    shadow_metrics = (
        analysis_metrics(shadow.shadow_analysis(config, _model_task(config, root)), timing)
        if shadow.in_cluster(config)
        else []
    )
    if sends_load(config, rollout_plan):
        metrics.append(load_job_metric(config, rollout_plan, timing))
        resources.append("loadtest-configmap.yaml")
    selector_labels = deploy.prometheus.selector_labels
    files: dict[str, Any] = {
        "patch-rollout.yaml": rollout_patch(config, rollout_plan, release, shadowed=bool(shadow_metrics)),
        "patch-hpa.yaml": [
            _op("replace", "/spec/minReplicas", deploy.min_replicas),
            _op("replace", "/spec/maxReplicas", deploy.max_replicas),
            _op(
                "replace",
                "/spec/metrics/0/resource/target/averageUtilization",
                deploy.target_cpu_utilization,
            ),
        ],
        route[0]: route_patch(config),
        "patch-analysis.yaml": [
            _op("replace", "/spec/args/3/value", deploy.prometheus.address),
            _op("replace", "/spec/metrics", metrics),
        ],
        "patch-networkpolicy.yaml": [
            # A rule without `from` admits every source (NetworkPolicy API: "If this field is empty or
            # missing, this rule matches all sources").
            {"op": "remove", "path": "/spec/ingress/0/from"}
            if (api_peers := network_peers(config)) is None
            else _op("replace", "/spec/ingress/0/from", api_peers),
            _op("replace", "/spec/ingress/1/from", metrics_peers(config)),
        ],
        "patch-servicemonitor.yaml": [
            *_label_ops(selector_labels),
            _op("replace", "/spec/endpoints/0/interval", deploy.prometheus.scrape_interval),
        ],
        "patch-prometheusrule.yaml": [
            *_label_ops(selector_labels),
            # The SLO group first: NO_TRAFFIC_RULE joins it (groups/0).
            *(_op("add", "/spec/groups/-", group) for group in alerting.rule_groups(config)),
            *([_op("add", "/spec/groups/0/rules/-", NO_TRAFFIC_RULE)] if deploy.expected_user_rps else []),
            _op("add", "/spec/groups/-", drift_rules(config)),
            *([_op("add", "/spec/groups/-", rules)] if (rules := fallback_rules(config)) else []),
        ],
        "configmap.yaml": config_map(config),
        "grafana-dashboard.yaml": dashboard_config_map(config),
    }
    if sends_load(config, rollout_plan):
        files["loadtest-configmap.yaml"] = load_config_map(config, timing, root)
    if shadow_metrics:
        resources.append(SHADOW_FILE)
        files[SHADOW_FILE] = shadow.shadow_template(config, shadow_metrics)
    if (routing := alerting.alertmanager_config_object(config)) is not None:
        resources.append("alertmanager-config.yaml")
        files["alertmanager-config.yaml"] = routing
    if deploy.image_pull_secret:
        patches["patch-serviceaccount.yaml"] = ("", "ServiceAccount", APP)
        files["patch-serviceaccount.yaml"] = [
            _op("add", "/imagePullSecrets", [{"name": deploy.image_pull_secret}])
        ]
    if release.released and release.replaces is None:
        resources.append(FIRST_RELEASE_FILE)
        files[FIRST_RELEASE_FILE] = first_release_run(config, rollout_plan, timing)
    if release.released:  # the scheduled batch scores with the release serving the environment
        for name, batch_object in batch_jobs.overlay_files(config).items():
            resources.append(name)
            files[name] = batch_object
    smoke = next((a for a in rollout_plan.actions if isinstance(a, Smoke)), None)
    if smoke is not None:
        patches["patch-smoke.yaml"] = ("argoproj.io", "AnalysisTemplate", SMOKE_TEMPLATE)
        files["patch-smoke.yaml"] = [_op("replace", "/spec/metrics/0/count", smoke.requests)]
    kustomize_patches: list[dict[str, Any]] = [
        {"path": path, "target": {"group": group, "kind": kind, "name": name}}
        for path, (group, kind, name) in patches.items()
    ]
    if not release.released:
        # No image yet: no workload. A Rollout of the placeholder would become the stable ReplicaSet
        # (Argo Rollouts promotes the first one whether its pods run or not: rollout/sync.go,
        # shouldFullPromote), and the first real release would then be compared with it.
        kustomize_patches += [{"patch": dump(_deletion(*target))} for target in WORKLOAD]
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": deploy.namespace,
        "resources": resources,
        "components": [f"../../components/{strategy}", f"../../components/{deploy.traffic_router}"],
        "labels": [{"pairs": {"app.kubernetes.io/instance": f"{APP}-{config.name}", "env": config.name}}],
        "images": [image],
        "patches": kustomize_patches,
    }
    return {"kustomization.yaml": kustomization, **files}


WORKLOAD = (
    ("argoproj.io/v1alpha1", "Rollout", APP),
    ("autoscaling/v2", "HorizontalPodAutoscaler", APP),
    ("policy/v1", "PodDisruptionBudget", APP),
)
"""What an overlay without a release leaves out: the Rollout and what points at its pods."""


def _deletion(api_version: str, kind: str, name: str) -> dict[str, Any]:
    """A strategic-merge patch that removes the object from the build (kustomize `$patch: delete`)."""
    return {"$patch": "delete", "apiVersion": api_version, "kind": kind, "metadata": {"name": name}}


def first_release_run(config: Config, rollout_plan: Plan, timing: ClusterTiming) -> dict[str, Any]:
    """An Argo CD PostSync hook that judges an environment's first release on its own checks.

    Argo Rollouts promotes a Rollout's first ReplicaSet at once, skipping the canary steps and the
    blue-green pre-promotion analysis (rollout/sync.go shouldFullPromote: "Initial deploy";
    rollout/analysis.go: no active selector yet), and there is no stable version to compare with. So
    the run holds the smoke test (the stable Service's /readyz) and the absolute bounds over the
    namespace's pods, with the load where the environment sends it. Argo CD runs PostSync hooks once the
    synced resources are Healthy, rates an AnalysisRun Healthy when Successful and Degraded when Failed
    or Error (Unknown when Inconclusive: resource_customizations/argoproj.io/AnalysisRun/health.lua), and
    a Degraded or Unknown hook fails the sync operation (gitops-engine sync_context.go,
    getOperationPhase), which CD's follower turns into a revert."""
    smoke = next((a for a in rollout_plan.actions if isinstance(a, Smoke)), None)
    requests = smoke.requests if smoke is not None else config.rollout.blue_green.smoke_requests
    metrics = [
        smoke_metric(requests, f"{APP}-stable"),
        *first_release_metrics(rollout_plan.analysis, timing),
    ]
    if sends_load(config, rollout_plan):
        metrics.append(load_job_metric(config, rollout_plan, timing))
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisRun",
        "metadata": {
            "name": FIRST_RELEASE_RUN,
            "annotations": {
                "argocd.argoproj.io/hook": "PostSync",
                # The last run stays for `kubectl describe` until the next sync replaces it.
                "argocd.argoproj.io/hook-delete-policy": "BeforeHookCreation",
            },
        },
        "spec": {
            "args": [
                {"name": "namespace", "value": config.deploy.namespace},
                {"name": "prometheus-address", "value": config.deploy.prometheus.address},
            ],
            "metrics": metrics,
        },
    }


def render_environment(config: Config, release: Release, root: Path) -> dict[str, str]:
    """Path relative to the repository root -> text, for one environment (`root`: where data is read)."""
    header = GENERATED.format(env=config.name)
    base = f"{K8S_DIR}/overlays/{config.name}"
    objects = overlay_objects(
        release_rollout(config, breaking=release.compatibility == "breaking"), release, root
    )
    out = {f"{base}/{name}": header + dump(obj) for name, obj in objects.items()}
    out[f"{base}/{RELEASE_FILE}"] = release_text(config, release)
    out[f"{K8S_DIR}/argocd/{config.name}.yaml"] = header + dump(application(config))
    out[f"{K8S_DIR}/{DEPLOYER_DIR}/{config.name}.yaml"] = header + dump_all(deployer(config))
    return out


def render_all(root: Path, config_dir: Path) -> dict[str, str]:
    """Every environment file's overlay and Application; keeps each overlay's release.yaml."""
    files: dict[str, str] = {}
    for env in known_environments(config_dir):
        config = load_config(env, config_dir)
        files.update(render_environment(config, read_release(root, config), root))
    return files


def stale_files(root: Path, files: Mapping[str, str]) -> list[str]:
    """Rendered files whose committed copy is missing or differs, plus rendered-dir files no render makes."""
    stale = [
        name
        for name, text in files.items()
        if not (root / name).is_file() or (root / name).read_text(encoding="utf-8") != text
    ]
    for folder in {str(Path(name).parent) for name in files}:
        for path in sorted((root / folder).glob("*.yaml")):
            relative = path.relative_to(root).as_posix()
            if relative not in files:
                stale.append(relative)
    return sorted(set(stale))


def write_files(root: Path, files: Mapping[str, str]) -> list[str]:
    """Write what changed; return the paths written."""
    written = []
    for name, text in files.items():
        path = root / name
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(name)
    return written


def repo_url_problems(root: Path, config_dir: Path) -> list[str]:
    """A fork hosted somewhere that still points Argo CD at the placeholder repository deploys nothing:
    name the file and key, and the URL its `origin` remote gives. The template itself (its own remote) and
    a clone with no hosted remote (a local path, as in CI here) have nothing to fix."""
    done = subprocess.run(
        ["git", "remote", "get-url", "origin"], cwd=root, capture_output=True, text=True, check=False
    )
    origin = done.stdout.strip()
    if done.returncode != 0 or ("://" not in origin and "@" not in origin) or TEMPLATE_REPOSITORY in origin:
        return []
    return [
        f"{config_dir / f'{env}.yaml'}: deploy.argocd.repo_url is still the placeholder {PLACEHOLDER_REPO_URL}: "
        f"set it to this fork's repository ({origin}) in environments/base.yaml"
        for env in known_environments(config_dir)
        if load_config(env, config_dir).deploy.argocd.repo_url == PLACEHOLDER_REPO_URL
    ]


def render(root: Path, config_dir: Path, *, check: bool, reporter: Reporter) -> bool:
    """Write every overlay (or with `check`, name each stale one and validate all offline); True if fine."""
    from pipeline.deploy import validate as k8s_validate  # noqa: PLC0415  (needs the k8s dependency group)

    files = render_all(root, config_dir)
    for env in known_environments(config_dir):
        reporter.note(traffic_note(load_config(env, config_dir)))
    if not check:
        written = write_files(root, files)
        for name in written:
            reporter.note(f"wrote {name}")
        reporter.line(f"rendered {len(files)} files; {len(written)} changed")
        return True
    stale = stale_files(root, files)
    for name in stale:
        reporter.error(f"{name} is stale: it differs from what environments/ renders; run `nox -s render`")
    configs = [load_config(env, config_dir) for env in known_environments(config_dir)]
    unfit = (
        repo_url_problems(root, config_dir)
        + batch_jobs.workflow_problems(root, configs)
        + workflow_schedules.monitor_problems(root, configs)
    )
    for reason in unfit:
        reporter.error(reason)
    report = k8s_validate.validate_tree(root)
    # A check that could not run is a failure, never a pass: the summary counts it apart.
    for note in report.skipped:
        reporter.error(f"not checked: {note}")
    for problem in report.problems:
        reporter.error(str(problem))
    reporter.line(
        f"{len(files)} rendered files checked, {len(stale)} stale; {report.checked} objects: core kinds "
        f"against Kubernetes {', '.join(k8s_validate.SUPPORTED_KUBERNETES)}; Argo, Prometheus, Gateway "
        f"and Spark kinds against the CRD schemas in {k8s_validate.schemas_dir(root)}; "
        f"{len(report.problems)} problems"
        + (f"; {len(report.skipped)} checks NOT run (a failure)" if report.skipped else "")
    )
    return not stale and not unfit and not report.problems and not report.skipped
