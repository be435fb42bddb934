"""Traffic for the cluster's analysis: the load test's locustfile, run by Argo Rollouts as a Job metric
against the new version (canary or preview) and stable, so their metrics have data to compare."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from model_service.contract.card import V2_DATATYPES
from pipeline.config import ClusterTiming, Config
from pipeline.deploy.names import (
    APP,
    LOAD_APP,
    LOAD_CONFIGMAP,
    LOAD_GRACE_S,
    LOAD_MOUNT,
    LOCUSTFILE,
)
from pipeline.ml.data import load_dataset
from pipeline.ml.onnx_model import input_layout
from pipeline.rollout.plan import Analyze, Plan


def sends_load(config: Config, rollout_plan: Plan) -> bool:
    """The environment asks for analysis traffic and its plan analyses (a blue-green plan may only smoke-test)."""
    return config.deploy.analysis_traffic.enabled and any(
        isinstance(a, Analyze) for a in rollout_plan.actions
    )


def new_version_service(rollout_plan: Plan) -> str:
    """The Service that reaches only the version under analysis."""
    return f"{APP}-canary" if rollout_plan.strategy == "canary" else f"{APP}-preview"


def load_profile(config: Config, timing: ClusterTiming, root: Path) -> dict[str, Any]:
    """The locustfile's profile: the load test's users, traffic and payload rows, at a constant rate for as
    long as the analysis measures (the step/spike shapes are for the SLO test, not for a comparison)."""
    spec = config.loadtest
    data = load_dataset(config.data, root, config.model.task)
    profile = spec.profile.model_copy(
        update={"shape": "constant", "duration_s": float(timing.load), "spike_users": None}
    )
    traffic = spec.traffic
    if config.model.trainer is not None and "v2_infer" in traffic.weights:
        # A trainer's model may take one input per column even on numeric data: its v2 inputs are known
        # from its card only, after training, while the manifests are rendered before. v1 rows fit any.
        weights = {route: weight for route, weight in traffic.weights.items() if route != "v2_infer"}
        traffic = traffic.model_copy(update={"weights": weights or {"v1_instances": 1.0}})
    position = {name: j for j, name in enumerate(data.features)}
    inputs = [
        {
            "name": spec_input["name"],
            "datatype": V2_DATATYPES[spec_input["dtype"]],
            "columns": [position[name] for name in spec_input["features"]],
        }
        # The built-in families' layout (export): one float matrix, or one input per column with strings.
        for spec_input in input_layout(data.columns, per_column=not data.numeric)
    ]
    return {
        "environment": config.name,
        "model_name": config.model.name,
        "inputs": inputs,
        "features": data.features,
        "rows": data.test_rows(),
        "profile": profile.model_dump(mode="json"),
        "traffic": traffic.model_dump(mode="json"),
    }


def load_config_map(config: Config, timing: ClusterTiming, root: Path) -> dict[str, Any]:
    profile = json.dumps(load_profile(config, timing, root), separators=(",", ":"))
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": LOAD_CONFIGMAP},
        "data": {"locustfile.py": LOCUSTFILE.read_text(encoding="utf-8"), "profile.json": profile},
    }


def _load_container(name: str, service: str, config: Config) -> dict[str, Any]:
    env: list[dict[str, Any]] = [
        {"name": "LOADTEST_PROFILE", "value": f"{LOAD_MOUNT}/profile.json"},
        {"name": "HOME", "value": "/tmp"},
    ]
    if config.service.auth == "api-key":
        key = {"secretKeyRef": {"name": config.deploy.api_key_secret, "key": "loadtest-api-key"}}
        env.append({"name": "LOADTEST_API_KEY", "valueFrom": key})
        # Kubernetes expands $(VAR) from variables defined before this one.
        env.append({"name": "LOADTEST_HEADERS", "value": '{"Authorization": "Bearer $(LOADTEST_API_KEY)"}'})
    elif config.service.jwt is not None:
        # A token with the predict and model:read scopes, kept fresh in the Secret out of band (docs/service.md,
        # Auth); read when the Job's pod starts, so each analysis run takes the current one.
        token = {"secretKeyRef": {"name": config.service.jwt.loadtest_token_secret, "key": "token"}}
        env.append({"name": "LOADTEST_TOKEN", "valueFrom": token})
        env.append({"name": "LOADTEST_HEADERS", "value": '{"Authorization": "Bearer $(LOADTEST_TOKEN)"}'})
    return {
        "name": name,
        "image": config.deploy.analysis_traffic.image,
        "command": [
            "locust",
            "-f",
            f"{LOAD_MOUNT}/locustfile.py",
            "--headless",
            "--only-summary",
            "--host",
            f"http://{service}.{{{{args.namespace}}}}.svc",
            # Failed requests are the analysis' to judge (error-ratio), not a reason to fail the Job.
            "--exit-code-on-error",
            "0",
        ],
        "env": env,
        "resources": {
            "requests": {"cpu": "250m", "memory": "128Mi"},
            "limits": {"cpu": "1", "memory": "256Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "loadtest", "mountPath": LOAD_MOUNT, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


def load_job_metric(config: Config, rollout_plan: Plan, timing: ClusterTiming) -> dict[str, Any]:
    """A Job metric that sends the environment's load to the new version and to the stable one (the
    `*-vs-stable` and prediction-shift metrics compare the two) for `timing.load` seconds; it passes when
    Locust ran (exit 0), whatever the answers: those are judged by the Prometheus metrics."""
    containers = [
        _load_container("new", new_version_service(rollout_plan), config),
        _load_container("stable", f"{APP}-stable", config),
    ]
    pod = {
        "metadata": {"labels": {"app.kubernetes.io/name": LOAD_APP, "app.kubernetes.io/part-of": APP}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": containers,
            "volumes": [
                {"name": "loadtest", "configMap": {"name": LOAD_CONFIGMAP}},
                {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
            ],
        },
    }
    return {
        "name": "load",
        "failureLimit": 0,
        "provider": {
            "job": {
                "metadata": {"labels": {"app.kubernetes.io/name": LOAD_APP}},
                "spec": {
                    "backoffLimit": 0,
                    "activeDeadlineSeconds": timing.load + LOAD_GRACE_S,
                    "template": pod,
                },
            }
        },
    }
