"""monitor.yml: its crons are the environments' monitoring.schedule, its plan picks the environments a cron
or a person names, and only the job that reports may write issues and dispatch workflows."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from pipeline.config import Config, known_environments, load_config
from pipeline.deploy.workflow_schedules import MONITOR_WORKFLOW, monitor_problems, workflow_crons
from tests._workflows import ROOT, load_script

CONFIG_DIR = ROOT / "environments"
monitor_plan = load_script("monitor_plan")


def _configs(config_dir: Path = CONFIG_DIR) -> list[Config]:
    return [load_config(env, config_dir) for env in known_environments(config_dir)]


def test_the_committed_crons_are_the_environments_schedules() -> None:
    assert workflow_crons(ROOT / MONITOR_WORKFLOW) == [("0 6 * * *", None)]
    assert monitor_problems(ROOT, _configs()) == []


def test_the_plan_checks_the_environments_of_the_cron_that_fired_or_the_one_chosen() -> None:
    assert monitor_plan.plan({"SCHEDULE": "0 6 * * *"}, CONFIG_DIR) == ["prod", "staging"]
    assert monitor_plan.plan({"SCHEDULE": "0 7 * * *"}, CONFIG_DIR) == []
    assert monitor_plan.plan({"ENVIRONMENT": "dev"}, CONFIG_DIR) == ["dev"]


def test_a_schedule_the_workflow_lacks_is_named_with_the_line_to_add(tmp_path: Path) -> None:
    config_dir = tmp_path / "environments"
    shutil.copytree(CONFIG_DIR, config_dir)
    dev = config_dir / "dev.yaml"
    dev.write_text(
        dev.read_text(encoding="utf-8") + '\nmonitoring:\n  schedule: "*/30 * * * *"\n', encoding="utf-8"
    )
    (tmp_path / MONITOR_WORKFLOW).parent.mkdir(parents=True)
    shutil.copy(ROOT / MONITOR_WORKFLOW, tmp_path / MONITOR_WORKFLOW)
    [problem] = monitor_problems(tmp_path, _configs(config_dir))
    assert problem.startswith("environments/dev.yaml: monitoring.schedule '*/30 * * * *'")
    assert 'add `- cron: "*/30 * * * *"` there' in problem


def test_only_the_reporting_job_writes_issues_and_dispatches() -> None:
    workflow = yaml.safe_load((ROOT / MONITOR_WORKFLOW).read_text(encoding="utf-8"))
    assert workflow["permissions"] == {}
    jobs = workflow["jobs"]
    assert jobs["plan"]["permissions"] == {"contents": "read"}
    assert jobs["monitor"]["permissions"] == {"contents": "read", "issues": "write", "actions": "write"}
    # A workflow_dispatch made with the job's GITHUB_TOKEN starts CD (docs.github.com, "Triggering a
    # workflow from a workflow": workflow_dispatch and repository_dispatch are the exceptions).
    assert jobs["monitor"]["env"]["GITHUB_TOKEN"] == "${{ github.token }}"
    [stage] = [step for step in jobs["monitor"]["steps"] if step.get("uses") == "./.github/actions/stage"]
    assert stage["with"]["sessions"] == "monitor" and stage["with"]["args"] == "--report-to-github"
