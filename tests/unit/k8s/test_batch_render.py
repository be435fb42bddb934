"""The scheduled batch in an overlay: a CronJob (embedded engine) or a ScheduledSparkApplication (spark)
where an environment's YAML schedules its batch in the cluster, nothing anywhere else; what they run,
on what, with what; and the YAML mistakes refused with the file, the key and the fix."""

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.config import Config, ConfigError, known_environments, load_config
from pipeline.deploy import batch_jobs, release_file
from pipeline.deploy import render as k8s
from pipeline.deploy import validate as kv

ROOT = Path(__file__).resolve().parents[3]
CONFIG_DIR = ROOT / "environments"
BATCH_IMAGE = "ghcr.io/acme/model-cicd-batch@sha256:" + "b" * 64
SPARK_IMAGE = "ghcr.io/acme/model-cicd-spark@sha256:" + "d" * 64
RELEASE = release_file.Release(
    image="ghcr.io/acme/model-service", digest="sha256:" + "a" * 64, model_version="3"
)
IN_CLUSTER = (
    "batch.schedule=30 1 * * *",
    "batch.time_zone=Europe/Paris",
    "batch.scheduled_by=cluster",
    "batch.input=tables/portfolio",
    "batch.output=scores/{date}",
    "batch.volume_claim=batch-tables",
    "batch.secret=registry",
    f"batch.image={BATCH_IMAGE}",
    f"batch.spark.image={SPARK_IMAGE}",
    "batch.resources.limits_memory=3Gi",
    "batch.deadline_seconds=5400",
)


def in_cluster(engine: str, *more: str, env: str = "staging") -> Config:
    return load_config(env, CONFIG_DIR, [*IN_CLUSTER, f"batch.engine={engine}", *more])


def overlay(config: Config, release: release_file.Release = RELEASE) -> dict[str, Any]:
    return k8s.overlay_objects(config, release, ROOT)


def test_an_embedded_schedule_ships_a_cronjob_that_runs_the_stage_on_the_volume() -> None:
    files = overlay(in_cluster("embedded"))
    assert {"batch-configmap.yaml", "batch-cronjob.yaml"} <= set(files["kustomization.yaml"]["resources"])
    cron = files["batch-cronjob.yaml"]
    spec = cron["spec"]
    assert (spec["schedule"], spec["timeZone"], spec["concurrencyPolicy"]) == (
        "30 1 * * *",
        "Europe/Paris",
        "Forbid",
    )
    job = spec["jobTemplate"]["spec"]
    assert (job["activeDeadlineSeconds"], job["backoffLimit"]) == (5400, 0)
    [container] = job["template"]["spec"]["containers"]
    assert container["image"] == BATCH_IMAGE  # pinned by digest, as the YAML gives it
    assert container["command"] == [
        "python", "-m", "pipeline", "batch", "--env", "staging", "--config-dir", "/config",
        "--workdir", "/workspace", "--input", "/data/tables/portfolio", "--output", "/data/scores/{date}",
    ]  # fmt: skip
    assert container["resources"] == {
        "requests": {"cpu": "1", "memory": "1Gi"},
        "limits": {"cpu": "2", "memory": "3Gi"},
    }
    assert container["envFrom"] == [{"secretRef": {"name": "registry"}}]
    volumes = {v["name"]: v for v in job["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "batch-tables"}
    assert volumes["config"]["configMap"] == {"name": batch_jobs.CONFIG_MAP}
    # Its pods are not the service's: no Service, PodDisruptionBudget or NetworkPolicy of the app selects them.
    assert job["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == batch_jobs.BATCH_APP
    assert kv.policy(cron, "staging") == []


def test_the_jobs_config_map_loads_back_to_the_environments_config(tmp_path: Path) -> None:
    config = in_cluster("embedded")
    [(name, text)] = overlay(config)["batch-configmap.yaml"]["data"].items()
    (tmp_path / name).write_text(text, encoding="utf-8")
    assert load_config("staging", tmp_path) == config


def test_a_spark_schedule_ships_a_scheduled_spark_application_with_its_drivers_role() -> None:
    config = in_cluster(
        "spark",
        "batch.spark.executor_instances=6",
        "batch.spark.executor.memory=4g",
        'batch.spark.conf={"spark.sql.shuffle.partitions": "64"}',
    )
    files = overlay(config)
    scheduled = files["batch-scheduledsparkapplication.yaml"]
    assert (scheduled["kind"], scheduled["spec"]["schedule"]) == ("ScheduledSparkApplication", "30 1 * * *")
    template = scheduled["spec"]["template"]
    assert (template["image"], template["sparkVersion"], template["type"]) == (SPARK_IMAGE, "4.0.1", "Python")
    assert template["mainApplicationFile"] == "local:///opt/model-cicd/pipeline/__main__.py"
    assert template["sparkConf"] == {"spark.sql.shuffle.partitions": "64"}
    assert template["arguments"][-2:] == ["--master", batch_jobs.IN_CLUSTER_MASTER]
    assert "/data/tables/portfolio" in template["arguments"]
    executor, driver = template["executor"], template["driver"]
    assert (executor["instances"], executor["cores"], executor["memory"]) == (6, 1, "4g")
    assert (driver["cores"], driver["memory"], driver["memoryOverhead"]) == (1, "1g", "512m")
    assert driver["serviceAccount"] == batch_jobs.SPARK_ACCOUNT
    assert [m["mountPath"] for m in executor["volumeMounts"]] == ["/data"]  # they share the volume
    role = files["batch-spark-role.yaml"]
    assert role["kind"] == "Role" and {"pods", "services"} <= set(role["rules"][0]["resources"])
    binding = files["batch-spark-rolebinding.yaml"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": batch_jobs.SPARK_ACCOUNT, "namespace": config.deploy.namespace}
    ]
    assert "batch-cronjob.yaml" not in files
    assert kv.policy(scheduled, "staging") == []


@pytest.mark.parametrize("env", known_environments(CONFIG_DIR))
def test_no_batch_object_where_no_batch_is_scheduled_in_the_cluster(env: str) -> None:
    """The committed environments: none schedules in the cluster (staging's runs in CD)."""
    config = load_config(env, CONFIG_DIR)
    assert not batch_jobs.cluster_job(config)
    assert not [name for name in overlay(config) if name.startswith("batch-")]


def test_an_unreleased_overlay_ships_no_batch() -> None:
    """Nothing serves the environment yet: no release for the job to score with."""
    unreleased = release_file.Release(image="ghcr.io/acme/model-service")
    assert not [name for name in overlay(in_cluster("embedded"), unreleased) if name.startswith("batch-")]


SCHEDULED = {"schedule": "0 2 * * *", "scheduled_by": "cluster", "input": "in", "output": "out"}


@pytest.mark.parametrize(
    ("section", "key", "fix"),
    [
        ({"schedule": "0 2 * * *", "output": None}, "batch", "output"),
        ({**SCHEDULED, "volume_claim": "tables"}, "batch", "set image"),
        ({**SCHEDULED, "image": "ghcr.io/acme/batch:1"}, "batch", "set volume_claim"),
        ({**SCHEDULED, "engine": "spark", "volume_claim": "tables"}, "batch", "set spark.image"),
        (
            {**SCHEDULED, "input": "/mnt/in", "volume_claim": "tables", "image": "ghcr.io/acme/batch:1"},
            "batch",
            "relative to the volume's root",
        ),
        ({"scheduled_by": "kubernetes"}, "batch.scheduled_by", "cd"),
        ({"volume_claim": "Tables_1"}, "batch.volume_claim", "[a-z0-9]"),
    ],
)
def test_a_wrong_batch_section_is_refused_naming_file_key_and_fix(
    tmp_path: Path, section: dict[str, Any], key: str, fix: str
) -> None:
    config_dir = tmp_path / "environments"
    shutil.copytree(CONFIG_DIR, config_dir)
    qa = config_dir / "qa.yaml"
    qa.write_text(yaml.safe_dump({"extends": "staging", "batch": section}), encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_config("qa", config_dir)
    message = str(refused.value)
    assert f"{qa}: {key}" in message and fix in message, message


def test_a_cluster_job_without_a_way_to_the_registry_is_refused_at_render() -> None:
    """The job finds the release in the registry: with neither a Secret nor registry.tracking_uri it
    would look in an empty sqlite file of its own."""
    config = in_cluster("embedded", "batch.secret=null")
    with pytest.raises(
        ConfigError, match=r"staging: batch\.secret: .* set batch\.secret to a Secret holding"
    ):
        overlay(config)
    served = in_cluster("embedded", "batch.secret=null", "registry.tracking_uri=http://mlflow.ml.svc:5000")
    assert (
        "envFrom"
        not in overlay(served)["batch-cronjob.yaml"]["spec"]["jobTemplate"]["spec"]["template"]["spec"][
            "containers"
        ][0]
    )


def test_policy_refuses_an_unpinned_or_unhardened_batch() -> None:
    cron = overlay(in_cluster("embedded", "batch.image=ghcr.io/acme/batch:latest"))["batch-cronjob.yaml"]
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    pod["securityContext"]["runAsNonRoot"] = False
    del pod["containers"][0]["resources"]["limits"]["memory"]
    fields = {p.field: p.reason for p in kv.policy(cron, "staging")}
    where = "spec.jobTemplate.spec.template.spec"
    assert "pin a tag or digest" in fields[f"{where}.containers.0.image"]
    assert fields[f"{where}.securityContext.runAsNonRoot"] == "must be true"
    assert fields[f"{where}.containers.0.resources.limits.memory"] == "must be set"
    spark = overlay(in_cluster("spark", "batch.spark.image=apache/spark"))[
        "batch-scheduledsparkapplication.yaml"
    ]
    spark["spec"]["template"]["executor"]["securityContext"]["allowPrivilegeEscalation"] = True
    fields = {p.field: p.reason for p in kv.policy(spark, "staging")}
    assert "pin a tag or digest" in fields["spec.template.image"]
    assert fields["spec.template.executor.securityContext.allowPrivilegeEscalation"] == "must be false"


def test_the_rendered_files_are_yaml_the_overlay_lists() -> None:
    files = k8s.render_environment(in_cluster("spark"), RELEASE, ROOT)
    kustomization = yaml.safe_load(files["k8s/overlays/staging/kustomization.yaml"])
    batch = sorted(name for name in kustomization["resources"] if name.startswith("batch-"))
    assert batch == sorted(
        name.rsplit("/", 1)[-1] for name in files if name.rsplit("/", 1)[-1].startswith("batch-")
    )
