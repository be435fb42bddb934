"""An environment's scheduled batch (`batch.schedule`, docs/batch.md): where `batch.scheduled_by` is
`cluster`, the overlay's CronJob (embedded engine) or ScheduledSparkApplication (spark); where it is `cd`,
a cron of .github/workflows/batch.yml, which `render --check` holds to the environments' schedules.

Both cluster jobs run the stage itself, `python -m pipeline batch`, from the batch image (`batch.image`,
`batch.spark.image`): the service image carries the service alone, without pyarrow or the pipeline. The
job reads the environment's resolved config from a ConfigMap of the overlay (rendered with it, so the
job follows the same commit as the Rollout), finds the release in the registry as the stage does
(alias ENV, its files checked against the registered sha256) and reads and writes `batch.volume_claim`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import Config, ConfigError
from pipeline.deploy.names import APP
from pipeline.deploy.workflow_schedules import schedule_problems, workflow_crons

BATCH_APP = f"{APP}-batch"
"""Name of the scheduled batch's objects and its pods' app label (no Service of the app selects them)."""
CONFIG_MAP = f"{BATCH_APP}-config"
SPARK_ACCOUNT = f"{BATCH_APP}-spark"
"""The Spark driver's ServiceAccount: it creates and deletes its executor pods."""
IMAGE_ROOT = "/opt/model-cicd"
"""This repository's checkout in the batch image (docs/batch.md, "In the cluster")."""
CONFIG_MOUNT = "/config"
DATA_MOUNT = "/data"
WORKSPACE_MOUNT = "/workspace"
"""The stage's workspace: the release's files downloaded from the registry, the run's report."""
IN_CLUSTER_MASTER = "k8s://https://kubernetes.default.svc:443"
"""The Spark master a driver pod reaches the API server at (the operator submits in cluster mode)."""
SERVICE_USER = 10001
"""The CronJob's user, the service's: the batch image needs no user of its own."""
SPARK_USER = 185
"""The `spark` user of the Spark project's images, which spark images build on."""
WORKFLOW = Path(".github/workflows/batch.yml")
"""The CD workflow that runs the batches scheduled by `cd`."""

_HARDENED = {
    "allowPrivilegeEscalation": False,
    "runAsNonRoot": True,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
}


def cluster_job(config: Config) -> bool:
    """The environment's batch runs on a schedule in its cluster."""
    return config.batch.schedule is not None and config.batch.scheduled_by == "cluster"


def overlay_files(config: Config) -> dict[str, dict[str, Any]]:
    """File name -> object of the overlay's scheduled batch (each file is one of the overlay's resources);
    empty unless the batch is scheduled in the cluster."""
    if not cluster_job(config):
        return {}
    spec = config.batch
    if spec.secret is None and config.registry.tracking_uri is None:
        raise ConfigError(
            f"{config.name}: batch.secret: the cluster's batch finds the release in the registry, and "
            "registry.tracking_uri is null: set batch.secret to a Secret holding MLFLOW_TRACKING_URI (and "
            "its credentials), or registry.tracking_uri to a server the cluster reaches"
        )
    files: dict[str, dict[str, Any]] = {"batch-configmap.yaml": config_map(config)}
    if spec.engine == "embedded":
        files["batch-cronjob.yaml"] = cron_job(config)
        return files
    account, role, binding = spark_driver_identity(config)
    files["batch-spark-serviceaccount.yaml"] = account
    files["batch-spark-role.yaml"] = role
    files["batch-spark-rolebinding.yaml"] = binding
    files["batch-scheduledsparkapplication.yaml"] = scheduled_spark_application(config)
    return files


def config_map(config: Config) -> dict[str, Any]:
    """The environment's resolved config as the job's one environment file (`--config-dir`): it loads
    back to the same Config, so the job needs no copy of environments/ in its image."""
    resolved = yaml.safe_dump(config.model_dump(mode="json", by_alias=True), sort_keys=False)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIG_MAP},
        "data": {f"{config.name}.yaml": resolved},
    }


def stage_arguments(config: Config) -> list[str]:
    """`python -m pipeline` arguments of the scheduled run: input and output on the volume."""
    spec = config.batch
    assert spec.input is not None and spec.output is not None  # BatchSpec: a schedule names both
    return [
        "batch",
        "--env",
        config.name,
        "--config-dir",
        CONFIG_MOUNT,
        "--workdir",
        WORKSPACE_MOUNT,
        "--input",
        f"{DATA_MOUNT}/{spec.input}",
        "--output",
        f"{DATA_MOUNT}/{spec.output}",
    ]


def _environment(config: Config) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """(env, envFrom) of the stage's container: the checkout importable, the registry's Secret."""
    env = [
        {"name": "PYTHONPATH", "value": IMAGE_ROOT},
        # Run as a file by spark-submit, pipeline/__main__.py must not put its own folder on sys.path.
        {"name": "PYTHONSAFEPATH", "value": "1"},
        {"name": "HOME", "value": WORKSPACE_MOUNT},
    ]
    secret = config.batch.secret
    return env, ([{"secretRef": {"name": secret}}] if secret else [])


def _volumes(config: Config) -> list[dict[str, Any]]:
    claim = config.batch.volume_claim
    return [
        {"name": "data", "persistentVolumeClaim": {"claimName": claim}},
        {"name": "config", "configMap": {"name": CONFIG_MAP}},
        {"name": "workspace", "emptyDir": {"sizeLimit": "1Gi"}},
    ]


def _mounts(*, data_only: bool = False) -> list[dict[str, Any]]:
    data = {"name": "data", "mountPath": DATA_MOUNT}
    if data_only:
        return [data]
    return [
        data,
        {"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True},
        {"name": "workspace", "mountPath": WORKSPACE_MOUNT},
    ]


def _schedule(config: Config) -> dict[str, Any]:
    spec = config.batch
    return {"schedule": spec.schedule, **({"timeZone": spec.time_zone} if spec.time_zone else {})}


def cron_job(config: Config) -> dict[str, Any]:
    """The embedded engine on `batch.schedule`: one pod, one run at a time, never retried (a failed check
    is an answer, and its output folder is kept without `_SUCCESS`)."""
    spec = config.batch
    res = spec.resources
    env, env_from = _environment(config)
    labels = {"app.kubernetes.io/name": BATCH_APP, "app.kubernetes.io/part-of": APP}
    container: dict[str, Any] = {
        "name": "batch",
        "image": spec.image,
        "command": ["python", "-m", "pipeline", *stage_arguments(config)],
        "env": env,
        **({"envFrom": env_from} if env_from else {}),
        "resources": {
            "requests": {"cpu": res.requests_cpu, "memory": res.requests_memory},
            "limits": {"cpu": res.limits_cpu, "memory": res.limits_memory},
        },
        "securityContext": {**_HARDENED, "readOnlyRootFilesystem": True},
        "volumeMounts": [*_mounts(), {"name": "tmp", "mountPath": "/tmp"}],
    }
    pod = {
        "metadata": {"labels": labels},
        "spec": {
            "restartPolicy": "Never",
            # The service's account: a private registry's pull secret is on it (deploy.image_pull_secret).
            "serviceAccountName": APP,
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": SERVICE_USER,
                "runAsGroup": SERVICE_USER,
                "fsGroup": SERVICE_USER,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": [*_volumes(config), {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
        },
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": BATCH_APP},
        "spec": {
            **_schedule(config),
            # A run still going when the next is due: the next is skipped, never run beside it.
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": labels},
                "spec": {"backoffLimit": 0, "activeDeadlineSeconds": spec.deadline_seconds, "template": pod},
            },
        },
    }


def spark_driver_identity(config: Config) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """ServiceAccount, Role and RoleBinding of the Spark driver: in its namespace only, what the Spark
    operator's chart grants its drivers (executor pods, their Service, ConfigMaps and volume claims)."""
    account: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": SPARK_ACCOUNT},
    }
    if config.deploy.image_pull_secret:
        account["imagePullSecrets"] = [{"name": config.deploy.image_pull_secret}]
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": SPARK_ACCOUNT},
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["pods", "services", "configmaps", "persistentvolumeclaims"],
                "verbs": ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"],
            }
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": SPARK_ACCOUNT},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SPARK_ACCOUNT},
        "subjects": [{"kind": "ServiceAccount", "name": SPARK_ACCOUNT, "namespace": config.deploy.namespace}],
    }
    return account, role, binding


def scheduled_spark_application(config: Config) -> dict[str, Any]:
    """The spark engine on `batch.schedule`: the Spark operator creates a SparkApplication from the
    template at each run. The driver runs the stage (pipeline/__main__.py as spark-submit's file) and
    ships the model to the executors itself; the executors read and write the volume, which they share."""
    spec = config.batch
    spark = spec.spark
    env, env_from = _environment(config)
    security = {**_HARDENED, "runAsUser": SPARK_USER, "seccompProfile": {"type": "RuntimeDefault"}}
    pod_security = {"fsGroup": SPARK_USER}

    def process(name: str, *, mounts: list[dict[str, Any]]) -> dict[str, Any]:
        size = getattr(spark, name)
        return {
            "cores": size.cores,
            "memory": size.memory,
            "memoryOverhead": size.memory_overhead,
            "labels": {"app.kubernetes.io/name": BATCH_APP, "app.kubernetes.io/part-of": APP},
            "env": env,
            "securityContext": security,
            "podSecurityContext": pod_security,
            "volumeMounts": mounts,
        }

    driver = {**process("driver", mounts=_mounts()), "serviceAccount": SPARK_ACCOUNT}
    if env_from:
        driver["envFrom"] = env_from
    executor = {
        **process("executor", mounts=_mounts(data_only=True)),
        # Its Python workers import the scoring code; they have no workspace, so no HOME there.
        "env": [item for item in env if item["name"] != "HOME"],
        "instances": spark.executor_instances,
    }
    template = {
        "type": "Python",
        "pythonVersion": "3",
        "mode": "cluster",
        "image": spark.image,
        "imagePullPolicy": "IfNotPresent",
        "mainApplicationFile": f"local://{IMAGE_ROOT}/pipeline/__main__.py",
        "arguments": [*stage_arguments(config), "--master", IN_CLUSTER_MASTER],
        "sparkVersion": spark.version,
        **({"sparkConf": dict(sorted(spark.conf.items()))} if spark.conf else {}),
        "restartPolicy": {"type": "Never"},
        "volumes": _volumes(config),
        "driver": driver,
        "executor": executor,
    }
    return {
        "apiVersion": "sparkoperator.k8s.io/v1beta2",
        "kind": "ScheduledSparkApplication",
        "metadata": {"name": BATCH_APP},
        "spec": {
            **_schedule(config),
            "concurrencyPolicy": "Forbid",
            "successfulRunHistoryLimit": 3,
            "failedRunHistoryLimit": 3,
            "template": template,
        },
    }


# --- CD: .github/workflows/batch.yml ----------------------------------------------------------------


def cd_schedules(configs: Iterable[Config]) -> dict[tuple[str, str | None], list[str]]:
    """(cron, time zone) -> the environments CD runs on it, for every batch scheduled by `cd`."""
    found: dict[tuple[str, str | None], list[str]] = {}
    for config in configs:
        spec = config.batch
        if spec.schedule is not None and spec.scheduled_by == "cd":
            found.setdefault((spec.schedule, spec.time_zone), []).append(config.name)
    return found


def workflow_problems(root: Path, configs: Iterable[Config]) -> list[str]:
    """batch.yml's crons against the environments' batch schedules run by `cd`."""
    return schedule_problems(
        WORKFLOW, workflow_crons(root / WORKFLOW), cd_schedules(configs), "batch.schedule"
    )


def due(configs: Iterable[Config], schedule: str) -> list[Config]:
    """The environments CD's batch runs when the cron `schedule` fires (`github.event.schedule`)."""
    return [c for c in configs if c.batch.scheduled_by == "cd" and c.batch.schedule == schedule]
