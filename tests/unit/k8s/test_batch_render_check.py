"""`render` then `render --check` on a copy of the repository where staging schedules its batch in the
cluster on the embedded engine and prod on Spark: both overlays build with kustomize and every object
validates offline, the CronJob as a core kind and the ScheduledSparkApplication against the Spark
operator's pinned CRDs (its template also as the SparkApplication each run creates)."""

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.config import load_config
from pipeline.console import Reporter
from pipeline.deploy import crd_cache, names, release_file
from pipeline.deploy import render as k8s
from pipeline.deploy import validate as kv
from pipeline.deploy.workflow_schedules import MONITOR_WORKFLOW

ROOT = Path(__file__).resolve().parents[3]
SHARED = Path(os.environ.get(kv.SCHEMAS_ENV) or crd_cache.cache_dir())
STAGED = SHARED.parent / "crds-next"
"""Where a local folder of the pinned files may keep kinds added later (the Spark operator's) beside it."""
PINNED = [
    SHARED / crd.name if (SHARED / crd.name).is_file() else STAGED / crd.name for crd in crd_cache.PINNED
]
pytestmark = [
    pytest.mark.skipif(
        not all(path.is_file() for path in PINNED),
        reason=f"the pinned CRD files are not all in {SHARED} (or {STAGED}); set {kv.SCHEMAS_ENV}",
    ),
    pytest.mark.skipif(
        not (shutil.which("kustomize") or shutil.which("kubectl")),
        reason="neither kustomize nor kubectl on PATH",
    ),
]
RELEASE = release_file.Release(
    image="ghcr.io/acme/model-service", digest="sha256:" + "a" * 64, model_version="3"
)
CLUSTER = {
    "schedule": "0 2 * * *",
    "scheduled_by": "cluster",
    "input": "tables/in",
    "output": "scores/{date}",
    "volume_claim": "batch-tables",
    "secret": "registry",
    "image": "ghcr.io/acme/model-cicd-batch@sha256:" + "b" * 64,
    "spark": {"image": "ghcr.io/acme/model-cicd-spark@sha256:" + "d" * 64},
}


@pytest.fixture(scope="module")
def schemas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder with every pinned file, as a fork's download cache holds them (parsed once per module)."""
    folder = tmp_path_factory.mktemp("crds")
    for path in PINNED:
        (folder / path.name).symlink_to(path)
    return folder


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """environments/ and k8s/ (base, components) of the repository, staging's and prod's batches in the
    cluster, both released, rendered."""
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(ROOT / "environments", root / "environments")
    for folder in ("base", "components"):
        shutil.copytree(ROOT / "k8s" / folder, root / "k8s" / folder)
    # The monitor's crons, which render --check holds to monitoring.schedule (batch.yml's are CD's, not asked here).
    (root / MONITOR_WORKFLOW).parent.mkdir(parents=True)
    shutil.copy(ROOT / MONITOR_WORKFLOW, root / MONITOR_WORKFLOW)
    for env, engine in (("staging", "embedded"), ("prod", "spark")):
        path = root / "environments" / f"{env}.yaml"
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        data["batch"] = {**CLUSTER, "engine": engine}
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        config = load_config(env, root / "environments")
        release = root / "k8s/overlays" / env / names.RELEASE_FILE
        release.parent.mkdir(parents=True)
        release.write_text(release_file.release_text(config, RELEASE), encoding="utf-8")
    assert k8s.render(root, root / "environments", check=False, reporter=Reporter())
    return root


def scheduled_spark(repo: Path) -> dict[str, Any]:
    [found] = [d for d in kv.build(repo / "k8s/overlays/prod") if d["kind"] == "ScheduledSparkApplication"]
    return found


def test_render_check_passes_with_both_cluster_batches(
    repo: Path, schemas: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(kv.SCHEMAS_ENV, str(schemas))
    overlays = repo / "k8s/overlays"
    assert (overlays / "staging/batch-cronjob.yaml").is_file()
    assert (overlays / "prod/batch-scheduledsparkapplication.yaml").is_file()
    assert not list((overlays / "dev").glob("batch-*"))
    assert k8s.render(repo, repo / "environments", check=True, reporter=Reporter()), capsys.readouterr()
    kinds = {doc["kind"] for env in ("staging", "prod") for doc in kv.build(overlays / env)}
    assert {"CronJob", "ScheduledSparkApplication", "Role", "RoleBinding"} <= kinds


def test_a_broken_spark_template_is_named_by_field(repo: Path, schemas: Path) -> None:
    scheduled = scheduled_spark(repo)
    scheduled["spec"]["template"]["driver"]["cores"] = "one"
    scheduled["spec"]["template"]["mode"] = "local"
    del scheduled["spec"]["template"]["sparkVersion"]
    problems = kv.validate_crd(scheduled, "prod", schemas)
    fields = {p.field for p in problems}
    assert {"spec.template.driver.cores", "spec.template.mode", "spec.template"} <= fields, problems
    assert all(p.obj == "ScheduledSparkApplication/model-service-batch" for p in problems)
    assert len(problems) == len(set(problems))  # the two CRDs' same findings, once each


def test_without_the_spark_schema_the_check_names_the_fix(repo: Path, tmp_path: Path) -> None:
    only_crds = tmp_path / "no-spark"
    only_crds.mkdir()
    for path in PINNED:
        if not path.name.startswith("spark-operator"):
            (only_crds / path.name).symlink_to(path)
    [problem] = kv.validate_crd(scheduled_spark(repo), "prod", only_crds)
    assert "no CRD schema for sparkoperator.k8s.io/v1beta2 ScheduledSparkApplication" in problem.reason
    assert "crd_cache.py PINNED" in problem.reason and kv.SCHEMAS_ENV in problem.reason
