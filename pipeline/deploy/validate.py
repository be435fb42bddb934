"""Offline validation of k8s/: build every overlay with kustomize, validate each object, apply our policy.

- core kinds: `kubernetes-validate --strict` against every version in SUPPORTED_KUBERNETES;
- Argo (Rollout, AnalysisTemplate, Application), Prometheus (ServiceMonitor, PrometheusRule), Gateway API
  (HTTPRoute) and Spark operator (ScheduledSparkApplication) kinds: jsonschema on the CRD's openAPIV3Schema
  from K8S_SCHEMAS_DIR, else the same upstream files downloaded by crd_cache
  (pinned by commit and sha256: a fork checks as we do);
- policy: what schemas miss: hardened pods, limits, probes, pinned images, no removed API versions.

Every problem names the source, the object (Kind/name), the field and the reason.

Over 400 lines on purpose: the three layers read the same built objects and report through one
`Problem`; each layer is one block of functions, in the order above.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from pipeline.deploy import crd_cache

SUPPORTED_KUBERNETES = ("1.30.0", "1.33.0", "1.36.0")
"""Kubernetes versions every core object is validated against (oldest and newest supported, and one between)."""
SCHEMAS_ENV = "K8S_SCHEMAS_DIR"
CRD_KINDS = {
    ("gateway.networking.k8s.io", "HTTPRoute"),
    ("argoproj.io", "Rollout"),
    ("argoproj.io", "AnalysisTemplate"),
    ("argoproj.io", "AnalysisRun"),
    ("argoproj.io", "Application"),
    ("monitoring.coreos.com", "ServiceMonitor"),
    ("monitoring.coreos.com", "PrometheusRule"),
    ("sparkoperator.k8s.io", "ScheduledSparkApplication"),
    ("sparkoperator.k8s.io", "SparkApplication"),
}
REMOVED_APIS = {
    "extensions/v1beta1": "1.16/1.22",
    "apps/v1beta1": "1.16",
    "apps/v1beta2": "1.16",
    "networking.k8s.io/v1beta1": "1.22",
    "policy/v1beta1": "1.25",
    "autoscaling/v2beta1": "1.25",
    "autoscaling/v2beta2": "1.26",
    "batch/v1beta1": "1.25",
}
CRD_GROUPS = {"argoproj.io", "monitoring.coreos.com", "gateway.networking.k8s.io", "sparkoperator.k8s.io"}
"""API groups validated against CRD schemas (every other group is a core Kubernetes one)."""
POD_KINDS = {"Rollout", "Deployment", "StatefulSet", "DaemonSet", "Job"}
SPARK_KINDS = {"SparkApplication", "ScheduledSparkApplication"}


class ToolMissing(Exception):
    """A validator cannot run here (no kustomize, no schemas); the message says what to install or set."""


@dataclass(frozen=True)
class Problem:
    source: str
    obj: str
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.obj}: {self.field or '(object)'}: {self.reason}"


def schemas_dir(root: Path) -> Path:
    """K8S_SCHEMAS_DIR (a folder of the pinned files), else the download cache."""
    configured = os.environ.get(SCHEMAS_ENV)
    if configured:
        return Path(configured)
    return crd_cache.cache_dir()


@cache
def _download_problem(directory: Path) -> str | None:
    """Fill the cache once per folder; the reason it failed, or None."""
    try:
        crd_cache.ensure(directory)
    except crd_cache.CrdDownloadError as exc:
        return str(exc)
    return None


def ensure_schemas(root: Path) -> Path:
    """The schema folder, downloaded and verified first when it is the cache; ToolMissing if it cannot be."""
    directory = schemas_dir(root)
    if not os.environ.get(SCHEMAS_ENV) and directory == crd_cache.cache_dir():
        problem = _download_problem(directory)
        if problem:
            raise ToolMissing(f"no {SCHEMAS_ENV} set and the pinned download failed: {problem}")
    return directory


def _name(doc: dict[str, Any]) -> str:
    return f"{doc.get('kind', '?')}/{(doc.get('metadata') or {}).get('name', '?')}"


# --- kustomize -------------------------------------------------------------------------------------


def kustomize_command() -> list[str]:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    raise ToolMissing("neither `kustomize` nor `kubectl` is on PATH; install one to build the overlays")


class _YamlLoader(yaml.SafeLoader):
    """Safe YAML, reading a bare `=` as the string it is: the AlertmanagerConfig CRD lists `- =` among its
    matchType values and kustomize writes a matcher's `matchType: =` bare, which YAML 1.1 (PyYAML) parses
    as the `value` tag that SafeLoader refuses."""


_YamlLoader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))  # type: ignore[arg-type]


def build(directory: Path) -> list[dict[str, Any]]:
    """`kustomize build DIRECTORY` as a list of objects; a failure raises ValueError with kustomize's reason."""
    result = subprocess.run(
        [*kustomize_command(), str(directory)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ValueError(f"{directory}: kustomize build failed: {result.stderr.strip()}")
    return [doc for doc in yaml.load_all(result.stdout, Loader=_YamlLoader) if doc]


# --- schemas ---------------------------------------------------------------------------------------


def _plain_schema(node: Any) -> Any:
    """OpenAPI v3 of a CRD -> strict JSON schema: drop x-kubernetes-*, int-or-string becomes integer|string,
    unknown keys fail where the CRD lists properties and does not preserve unknown fields."""
    if isinstance(node, list):
        return [_plain_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _plain_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.pop("anyOf", None)
        out["type"] = ["integer", "string"]
    if node.get("nullable") and "type" in out and isinstance(out["type"], str):
        out["type"] = [out["type"], "null"]
    out.pop("nullable", None)
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False  # strict, like kubectl's field validation: unknown keys fail
    return out


@cache
def crd_schemas(directory: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(group, version, kind) -> JSON schema, from every CRD file in `directory`."""
    if not directory.is_dir():
        raise ToolMissing(f"no CRD schemas at {directory}; set {SCHEMAS_ENV} to a folder of CRD YAML files")
    found: dict[tuple[str, str, str], dict[str, Any]] = {}
    for path in sorted(directory.glob("*.yaml")):
        for crd in yaml.load_all(path.read_text(encoding="utf-8"), Loader=_YamlLoader):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                schema = version.get("schema", {}).get("openAPIV3Schema")
                if schema:
                    found[(spec["group"], version["name"], spec["names"]["kind"])] = _plain_schema(schema)
    return found


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """`value` with the structural schema's `default:`s filled in, as the API server does on create and
    update (Kubernetes docs, "Extend the Kubernetes API with CustomResourceDefinitions" > "Defaulting":
    absent fields under `properties`, in `items` and in `additionalProperties` get their default, then the
    defaulted value is walked too). Returns a new value; `value` is not changed."""
    if isinstance(value, dict):
        out = dict(value)
        properties: dict[str, Any] = schema.get("properties") or {}
        for key, sub in properties.items():
            if key not in out and "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
        extra = schema.get("additionalProperties")
        for key, item in out.items():
            sub = properties.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                out[key] = apply_defaults(item, sub)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(item, schema["items"]) for item in value]
    return value


def _differences(before: Any, after: Any, path: str) -> Iterator[tuple[str, Any]]:
    """(field path, defaulted value) of every field the defaulting added."""
    if isinstance(before, dict) and isinstance(after, dict):
        for key, value in after.items():
            where = f"{path}.{key}" if path else str(key)
            if key not in before:
                yield where, value
            else:
                yield from _differences(before[key], value, where)
    elif isinstance(before, list) and isinstance(after, list):
        for n, (old, new) in enumerate(zip(before, after, strict=True)):
            yield from _differences(old, new, f"{path}.{n}")


def default_problems(doc: dict[str, Any], source: str, directory: Path) -> list[Problem]:
    """Fields the API server would default on this object: Argo CD's legacy diff compares a CRD's lists
    as whole values, so a list item missing a defaulted field stays OutOfSync after every sync
    (argoproj/argo-cd#22151). Each must be written out with its default."""
    if doc.get("kind") == "AnalysisRun":
        doc = _as_template(doc)
    group, _, version = str(doc.get("apiVersion", "")).rpartition("/")
    schema = crd_schemas(directory).get((group, version, str(doc.get("kind"))))
    if schema is None:
        return []
    return [
        Problem(
            source,
            _name(doc),
            field,
            f"the API server defaults it to {json.dumps(value)}: write it out (Argo CD would stay OutOfSync)",
        )
        for field, value in _differences(doc, apply_defaults(doc, schema), "")
    ]


ANALYSIS_RUN_SPEC_KEYS = {"args", "dryRun", "measurementRetention", "metrics", "terminate", "ttlStrategy"}
"""spec keys of the AnalysisRun CRD (argo-rollouts manifests/crds/analysis-run-crd.yaml at the pinned commit)."""


def _as_template(run: dict[str, Any]) -> dict[str, Any]:
    """An AnalysisRun checked as the AnalysisTemplate its spec repeats: the AnalysisRun CRD is not among the
    pinned schemas, and its `metrics` and `args` have the template's schema (the CRDs share the types)."""
    spec = run.get("spec") or {}
    shared = {key: spec[key] for key in ("args", "metrics", "dryRun", "measurementRetention") if key in spec}
    return {**run, "kind": "AnalysisTemplate", "spec": shared}


def validate_crd(doc: dict[str, Any], source: str, directory: Path) -> list[Problem]:
    import jsonschema  # noqa: PLC0415  (k8s dependency group)

    if doc.get("kind") == "AnalysisRun":
        unknown = sorted(set(doc.get("spec") or {}) - ANALYSIS_RUN_SPEC_KEYS)
        found = [Problem(source, _name(doc), f"spec.{key}", "not a field of AnalysisRun") for key in unknown]
        as_template = validate_crd(_as_template(doc), source, directory)
        return found + [replace(problem, obj=_name(doc)) for problem in as_template]
    group, _, version = str(doc.get("apiVersion", "")).rpartition("/")
    schema = crd_schemas(directory).get((group, version, str(doc.get("kind"))))
    if schema is None:
        return [
            Problem(
                source,
                _name(doc),
                "apiVersion",
                f"no CRD schema for {doc.get('apiVersion')} {doc.get('kind')} in {directory}: add its file "
                f"(pipeline/deploy/crd_cache.py PINNED) there, or set {SCHEMAS_ENV} to a folder holding it",
            )
        ]
    validator = jsonschema.Draft7Validator(schema)
    found = [
        Problem(source, _name(doc), ".".join(str(p) for p in error.absolute_path), error.message)
        for error in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    ]
    if doc.get("kind") == "ScheduledSparkApplication":
        # The operator creates a SparkApplication from the template at each run, which the API server
        # checks against the SparkApplication CRD: a template it refuses fails every run, not the sync.
        as_run = [
            replace(problem, obj=_name(doc), field="spec.template" + problem.field.removeprefix("spec"))
            for problem in validate_crd(_scheduled_run(doc), source, directory)
        ]
        found = list(dict.fromkeys(found + as_run))  # the two CRDs share the spec's types: once each
    return found


def _scheduled_run(scheduled: dict[str, Any]) -> dict[str, Any]:
    """The SparkApplication a ScheduledSparkApplication creates at each run: its template as the spec."""
    template = (scheduled.get("spec") or {}).get("template") or {}
    return {
        "apiVersion": scheduled.get("apiVersion"),
        "kind": "SparkApplication",
        "metadata": scheduled.get("metadata") or {},
        "spec": template,
    }


def validate_core(
    doc: dict[str, Any], source: str, versions: Iterable[str] = SUPPORTED_KUBERNETES
) -> list[Problem]:
    import kubernetes_validate  # noqa: PLC0415  (k8s dependency group)

    problems = []
    for version in versions:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            cause = exc.args[0] if exc.args else exc  # the jsonschema error: where and why
            field = ".".join(str(p) for p in getattr(cause, "absolute_path", []))
            message = getattr(cause, "message", str(exc).splitlines()[0])
            problems.append(Problem(source, _name(doc), field, f"Kubernetes {version}: {message}"))
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(
                Problem(
                    source, _name(doc), "apiVersion", f"Kubernetes {version} has no {doc.get('apiVersion')}"
                )
            )
    return problems


# --- policy ----------------------------------------------------------------------------------------


def _containers(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    pod = (((doc.get("spec") or {}).get("template") or {}).get("spec")) or {}
    for kind in ("initContainers", "containers"):
        for n, container in enumerate(pod.get(kind) or []):
            yield f"spec.template.spec.{kind}.{n}", container


def policy(doc: dict[str, Any], source: str) -> list[Problem]:
    """Checks the schemas cannot express: hardening, limits, probes, pinned images, live API versions."""
    out: list[Problem] = []
    obj = _name(doc)
    api = str(doc.get("apiVersion", ""))
    if api in REMOVED_APIS:
        out.append(Problem(source, obj, "apiVersion", f"{api} was removed in Kubernetes {REMOVED_APIS[api]}"))
    if doc.get("kind") in {"AnalysisTemplate", "AnalysisRun"}:
        for n, metric in enumerate((doc.get("spec") or {}).get("metrics") or []):
            job = ((metric.get("provider") or {}).get("job") or {}).get("spec")
            if job is not None:
                # An analysis Job's pods run beside the service: the same hardening applies.
                job_doc = {"kind": "Job", "metadata": doc.get("metadata"), "spec": job}
                out.extend(
                    Problem(p.source, p.obj, f"spec.metrics.{n}.provider.job.{p.field}", p.reason)
                    for p in policy(job_doc, source)
                )
        return out
    if doc.get("kind") == "CronJob":
        # Its Job's pods are checked as a Job's: the schedule adds nothing to harden.
        job = ((doc.get("spec") or {}).get("jobTemplate") or {}).get("spec") or {}
        as_job = policy({"kind": "Job", "metadata": doc.get("metadata"), "spec": job}, source)
        return out + [replace(p, obj=obj, field=f"spec.jobTemplate.{p.field}") for p in as_job]
    if doc.get("kind") in SPARK_KINDS:
        return out + _spark_policy(doc, source)
    if doc.get("kind") not in POD_KINDS:
        return out
    spec = doc.get("spec") or {}
    if doc.get("kind") == "Rollout" and "replicas" in spec:
        out.append(
            Problem(source, obj, "spec.replicas", "set while the HorizontalPodAutoscaler owns replicas")
        )
    pod = (spec.get("template") or {}).get("spec") or {}
    pod_sc = pod.get("securityContext") or {}
    if pod_sc.get("runAsNonRoot") is not True:
        out.append(Problem(source, obj, "spec.template.spec.securityContext.runAsNonRoot", "must be true"))
    if (pod_sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        out.append(
            Problem(
                source,
                obj,
                "spec.template.spec.securityContext.seccompProfile.type",
                "must be RuntimeDefault",
            )
        )
    if pod.get("automountServiceAccountToken") is not False:
        out.append(Problem(source, obj, "spec.template.spec.automountServiceAccountToken", "must be false"))
    serving = doc.get("kind") != "Job"  # a Job runs to completion: no probes to answer
    for where, container in _containers(doc):
        out.extend(_container_policy(source, obj, where, container, serving=serving))
    return out


def _spark_policy(doc: dict[str, Any], source: str) -> list[Problem]:
    """A Spark application's driver and executor pods, hardened as the Spark operator's own examples are
    (non-root, no privilege escalation, every capability dropped, RuntimeDefault seccomp; the root file
    system stays writable: Spark writes its work and local folders there), each with cores and memory;
    its image pinned; init containers checked as any other container."""
    obj = _name(doc)
    scheduled = doc.get("kind") == "ScheduledSparkApplication"
    spec = ((doc.get("spec") or {}).get("template") if scheduled else doc.get("spec")) or {}
    where = "spec.template" if scheduled else "spec"
    out: list[Problem] = []
    image = str(spec.get("image", ""))
    if "@sha256:" not in image and image.rsplit("/", 1)[-1].partition(":")[2] in {"", "latest"}:
        out.append(Problem(source, obj, f"{where}.image", f"{image!r}: pin a tag or digest, never latest"))
    for role in ("driver", "executor"):
        pod = spec.get(role) or {}
        sc = pod.get("securityContext") or {}
        drop = (sc.get("capabilities") or {}).get("drop") or []
        checks = {
            "securityContext.allowPrivilegeEscalation": (
                sc.get("allowPrivilegeEscalation") is False,
                "must be false",
            ),
            "securityContext.runAsNonRoot": (sc.get("runAsNonRoot") is True, "must be true"),
            "securityContext.capabilities.drop": ("ALL" in drop, "must include ALL"),
            "securityContext.seccompProfile.type": (
                (sc.get("seccompProfile") or {}).get("type") == "RuntimeDefault",
                "must be RuntimeDefault",
            ),
            "cores": (bool(pod.get("cores")), "must be set"),
            "memory": (bool(pod.get("memory")), "must be set"),
        }
        out.extend(
            Problem(source, obj, f"{where}.{role}.{key}", reason)
            for key, (ok, reason) in checks.items()
            if not ok
        )
        for n, container in enumerate(pod.get("initContainers") or []):
            out.extend(
                _container_policy(source, obj, f"{where}.{role}.initContainers.{n}", container, serving=False)
            )
    return out


def _container_policy(
    source: str, obj: str, where: str, container: dict[str, Any], *, serving: bool
) -> list[Problem]:
    out: list[Problem] = []
    image = str(container.get("image", ""))
    tag = image.rsplit("/", 1)[-1].partition(":")[2]
    if "@sha256:" not in image and tag in {"", "latest"}:
        out.append(Problem(source, obj, f"{where}.image", f"{image!r}: pin a tag or digest, never latest"))
    sc = container.get("securityContext") or {}
    checks = {
        "allowPrivilegeEscalation": (sc.get("allowPrivilegeEscalation") is False, "must be false"),
        "readOnlyRootFilesystem": (sc.get("readOnlyRootFilesystem") is True, "must be true"),
        "privileged": (not sc.get("privileged"), "must not be true"),
        "capabilities.drop": (
            "ALL" in ((sc.get("capabilities") or {}).get("drop") or []),
            "must include ALL",
        ),
    }
    out.extend(
        Problem(source, obj, f"{where}.securityContext.{key}", reason)
        for key, (ok, reason) in checks.items()
        if not ok
    )
    limits = (container.get("resources") or {}).get("limits") or {}
    requests = (container.get("resources") or {}).get("requests") or {}
    for resource in ("cpu", "memory"):
        if resource not in limits:
            out.append(Problem(source, obj, f"{where}.resources.limits.{resource}", "must be set"))
        if resource not in requests:
            out.append(Problem(source, obj, f"{where}.resources.requests.{resource}", "must be set"))
    if serving and ".containers." in f"{where}.":
        for probe in ("livenessProbe", "readinessProbe"):
            if probe not in container:
                out.append(Problem(source, obj, f"{where}.{probe}", "must be set"))
    return out


# --- all of it -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    problems: list[Problem]
    skipped: list[str]
    checked: int


def validate_docs(docs: Iterable[dict[str, Any]], source: str, root: Path) -> tuple[list[Problem], list[str]]:
    problems: list[Problem] = []
    skipped: list[str] = []
    for doc in docs:
        group = str(doc.get("apiVersion", "")).rpartition("/")[0]
        problems.extend(policy(doc, source))
        if (group, doc.get("kind")) in CRD_KINDS or group in CRD_GROUPS:
            try:
                directory = ensure_schemas(root)
                problems.extend(validate_crd(doc, source, directory))
                problems.extend(default_problems(doc, source, directory))
            except ToolMissing as exc:
                skipped.append(f"{source}: {_name(doc)}: CRD schema not checked: {exc}")
        else:
            problems.extend(validate_core(doc, source))
    return problems, sorted(set(skipped))


def validate_tree(root: Path) -> Report:
    """Build every overlay, validate every object in them, every Argo CD Application and every CD
    deploy identity (k8s/deployer)."""
    problems: list[Problem] = []
    skipped: list[str] = []
    checked = 0
    overlays = sorted(
        p for p in (root / "k8s" / "overlays").iterdir() if (p / "kustomization.yaml").is_file()
    )
    for overlay in overlays:
        source = overlay.relative_to(root).as_posix()
        try:
            docs = build(overlay)
        except ToolMissing as exc:
            skipped.append(f"{source}: not built: {exc}")
            continue
        except ValueError as exc:
            problems.append(Problem(source, "kustomization", "", str(exc)))
            continue
        found, skips = validate_docs(docs, source, root)
        problems.extend(found)
        skipped.extend(skips)
        checked += len(docs)
    for path in sorted(
        [*(root / "k8s" / "argocd").glob("*.yaml"), *(root / "k8s" / "deployer").glob("*.yaml")]
    ):
        docs = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
        found, skips = validate_docs(docs, path.relative_to(root).as_posix(), root)
        problems.extend(found)
        skipped.extend(skips)
        checked += len(docs)
    return Report(problems, skipped, checked)
