"""The scheduled batch in CD: .github/workflows/batch.yml's crons are the environments' (render --check
names a missing or stale one and the fix), its `plan` job picks the environments the cron that fired
schedules, a run by hand scores one environment, and each run's checks become the job summary."""

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.config import Config, known_environments, load_config
from pipeline.deploy import batch_jobs
from pipeline.deploy.workflow_schedules import workflow_crons
from tests._workflows import load_script

ROOT = Path(__file__).resolve().parents[3]
CONFIG_DIR = ROOT / "environments"
batch_plan = load_script("batch_plan")


def configs(config_dir: Path = CONFIG_DIR) -> list[Config]:
    return [load_config(env, config_dir) for env in known_environments(config_dir)]


def test_the_committed_workflow_has_the_cron_of_every_environment_cd_schedules() -> None:
    scheduled = batch_jobs.cd_schedules(configs())
    assert scheduled == {("0 3 * * *", None): ["staging"]}
    assert workflow_crons(ROOT / batch_jobs.WORKFLOW) == [("0 3 * * *", None)]
    assert batch_jobs.workflow_problems(ROOT, configs()) == []


def _workflow(root: Path, schedule: list[dict[str, str]]) -> None:
    path = root / batch_jobs.WORKFLOW
    path.parent.mkdir(parents=True)
    data = yaml.safe_load((ROOT / batch_jobs.WORKFLOW).read_text(encoding="utf-8"))
    data[True]["schedule"] = schedule  # PyYAML reads the key `on` as true
    path.write_text(yaml.safe_dump({"on": data.pop(True), **data}), encoding="utf-8")


def _environments(tmp_path: Path, **batch: dict[str, Any]) -> Path:
    config_dir = tmp_path / "environments"
    shutil.copytree(CONFIG_DIR, config_dir)
    for env, section in batch.items():
        path = config_dir / f"{env}.yaml"
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        data["batch"] = {**data.get("batch", {}), **section}
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return config_dir


def test_a_schedule_the_workflow_lacks_and_a_cron_no_one_uses_are_named_with_the_fix(tmp_path: Path) -> None:
    config_dir = _environments(
        tmp_path,
        staging={"schedule": "0 4 * * *"},
        prod={"schedule": "15 1 * * 1", "time_zone": "Europe/Paris", "input": "in", "output": "out"},
        dev={"schedule": "@daily", "input": "in", "output": "out"},
    )
    _workflow(tmp_path, [{"cron": "0 3 * * *"}, {"cron": "15 1 * * 1"}])
    problems = batch_jobs.workflow_problems(tmp_path, configs(config_dir))
    workflow = str(batch_jobs.WORKFLOW)
    where = [
        "environments/dev.yaml",
        "environments/prod.yaml",
        "environments/staging.yaml",
        workflow,
        workflow,
    ]
    assert [problem.split(": ")[0] for problem in problems] == where, problems
    dev, prod, staging, stale, zoneless = problems
    assert "batch.schedule '@daily'" in dev and "GitHub takes five cron fields only" in dev
    assert "'15 1 * * 1' (Europe/Paris)" in prod
    assert 'add `- cron: "15 1 * * 1"\n    timezone: Europe/Paris` there' in prod
    assert "batch.schedule '0 4 * * *'" in staging and 'add `- cron: "0 4 * * *"` there' in staging
    assert "cron '0 3 * * *' is no environment's batch.schedule" in stale and "remove it" in stale
    assert "cron '15 1 * * 1' is no environment's" in zoneless  # prod's runs in its own time zone


def test_a_batch_scheduled_in_the_cluster_is_not_cds(tmp_path: Path) -> None:
    cluster = {
        "scheduled_by": "cluster",
        "volume_claim": "tables",
        "image": "ghcr.io/acme/batch:1",
        "secret": "registry",
    }
    config_dir = _environments(tmp_path, staging=cluster)
    assert batch_jobs.cd_schedules(configs(config_dir)) == {}
    assert batch_plan.plan({"SCHEDULE": "0 3 * * *"}, config_dir) == []


def test_the_cron_that_fired_plans_the_environments_it_schedules() -> None:
    staging = {"environment": "staging", "input": "batch/input", "output": "batch/scores/{date}"}
    assert batch_plan.plan({"SCHEDULE": "0 3 * * *"}, CONFIG_DIR) == [staging]
    assert batch_plan.plan({"SCHEDULE": "0 4 * * *"}, CONFIG_DIR) == []


def test_a_run_by_hand_scores_one_environment_on_the_table_given(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    given = {"ENVIRONMENT": "dev", "INPUT": "/tables/in", "OUTPUT": "/tables/{date}"}
    assert batch_plan.plan(given, CONFIG_DIR) == [
        {"environment": "dev", "input": "/tables/in", "output": "/tables/{date}"}
    ]
    assert batch_plan.plan({"ENVIRONMENT": "staging"}, CONFIG_DIR)[0]["input"] == "batch/input"
    with pytest.raises(batch_plan.PlanError) as refused:
        batch_plan.plan({"ENVIRONMENT": "dev", "INPUT": "/tables/in"}, CONFIG_DIR)
    assert str(refused.value) == (
        "dev: no output: give the workflow's input(s) output, or set batch.output in "
        f"{CONFIG_DIR / 'dev.yaml'}"
    )
    monkeypatch.chdir(ROOT)
    assert batch_plan.main(["plan"], {"ENVIRONMENT": "prod"}) == 2
    assert "::error::prod: no input and no output" in capsys.readouterr().err
    assert batch_plan.main(["plan"], {"SCHEDULE": "0 3 * * *"}) == 0
    out = capsys.readouterr().out
    assert (
        out.startswith("batches=") and json.loads(out.removeprefix("batches="))[0]["environment"] == "staging"
    )


SUMMARY = {
    "environment": "staging",
    "model": {
        "name": "breast-cancer",
        "version": "20261206.1",
        "registry_version": "4",
        "onnx_sha256": "ab" * 32,
    },
    "engine": "embedded",
    "rows": 1200,
    "rejected": 3,
    "status": "pass",
    "output": "/tables/scores/2026-12-07",
    "checks": [
        {
            "check": "rejects share",
            "value": 0.0025000001,
            "comparator": "<=",
            "bound": 0.01,
            "result": "pass",
            "note": "3 of 1200 rows",
        }
    ],
}


def test_the_summary_is_the_runs_evidence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    step_summary = tmp_path / "summary.md"
    assert batch_plan.main(["summary", "staging"], {"GITHUB_STEP_SUMMARY": str(step_summary)}) == 0
    assert "no result" in step_summary.read_text() and capsys.readouterr().out == ""
    older, newer = tmp_path / "reports/staging/1/batch", tmp_path / "reports/staging/2/batch"
    for folder, status in ((older, "fail"), (newer, "pass")):
        folder.mkdir(parents=True)
        (folder / "batch.json").write_text(json.dumps({**SUMMARY, "status": status}))
    os.utime(older / "batch.json", (0, 0))  # the newest run's evidence is the one summarised
    assert batch_plan.main(["summary", "staging"], {"GITHUB_STEP_SUMMARY": str(step_summary)}) == 0
    assert capsys.readouterr().out == "output=/tables/scores/2026-12-07\n"
    text = step_summary.read_text()
    assert "## batch staging: PASS" in text
    assert "registry version 4" in text and "1200 rows read, 3 rejected" in text
    assert "| rejects share | 0.0025 | <= | 0.01 | pass | 3 of 1200 rows |" in text
