"""`python -m pipeline monitor`: the release serving an environment, checked as the schedule runs it
(.github/workflows/monitor.yml, docs/monitoring.md): `drift` on what it was asked (the running service's
counters at `monitoring.metrics_url`, else the captured rows) and `evaluate`, its live quality on the labels
that arrived (an estimate before they do).

With `--report-to-github` (the workflow), a failing verdict opens one issue per environment, labelled
`monitoring.issue_label`, or comments on the one still open, with each check's verdict and the run's
address; where `monitoring.retrain` is true, opening it also dispatches cd.yml up to the environment, so a
retrain goes through every gate as any release does. An open issue is never duplicated and retraining is
dispatched once per open issue: closing the issue re-arms both. A verdict that passes again comments on
the open issue and leaves closing it to a person.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.adapters.github_api import GitHub
from pipeline.config import Config
from pipeline.console import Reporter
from pipeline.errors import StageError
from pipeline.stage import Check, StageContext, StageResult, Status

CD_WORKFLOW = "cd.yml"
"""What retraining dispatches: CD trains, exports and promotes through every gate up to the environment."""


@dataclass(frozen=True)
class Verdict:
    """One check of the monitor: a stage, its outcome and what it said."""

    stage: str
    result: Status
    said: str
    """Its headline, or its failures."""

    def check(self) -> Check:
        return Check(scope=self.stage, metric="verdict", value=None, result=self.result, note=self.said)


def checks_of(config: Config) -> list[tuple[str, dict[str, Any]]]:
    """The stages the monitor runs, with their options: drift reads the running service where the
    environment names its metrics port, else the capture."""
    url = config.monitoring.metrics_url
    drift = {"url": url, "allow_remote": True} if url else {"from_capture": True}
    return [("drift", drift), ("evaluate", {})]


def marker(config: Config) -> str:
    """The hidden line that identifies the environment's monitor issue (titles get edited, this does not)."""
    return f"<!-- pipeline monitor: {config.model.name} {config.name} -->"


def evidence(config: Config, verdicts: Sequence[Verdict], environ: Mapping[str, str]) -> str:
    """The verdicts as Markdown, with the run that measured them."""
    lines = ["| check | verdict | what it said |", "| --- | --- | --- |"]
    lines += [f"| {v.stage} | {v.result.upper()} | {v.said.replace('|', '/')} |" for v in verdicts]
    server, repository, run_id = (
        environ.get(k, "") for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")
    )
    if server and repository and run_id:
        lines += ["", f"Run: {server}/{repository}/actions/runs/{run_id} (its report is the job's artifact)."]
    lines += ["", f"Reproduce: `nox -s monitor -- --env {config.name}` (docs/monitoring.md)."]
    return "\n".join(lines)


def report_on_github(
    config: Config,
    verdicts: Sequence[Verdict],
    github: GitHub,
    reporter: Reporter,
    environ: Mapping[str, str],
) -> None:
    """Open, or comment on, the environment's monitor issue; dispatch retraining where allowed (once per
    open issue)."""
    failing = [v.stage for v in verdicts if v.result == "fail"]
    spec = config.monitoring
    found = github.find_issue(spec.issue_label, marker(config))
    text = evidence(config, verdicts, environ)
    if not failing:
        if found is not None:
            url = github.comment_issue(int(found["number"]), f"The checks pass again.\n\n{text}")
            reporter.note(
                f"monitor issue #{found['number']} is open; the checks pass again: commented ({url})"
            )
        return
    if found is not None:
        url = github.comment_issue(int(found["number"]), f"Still failing: {', '.join(failing)}.\n\n{text}")
        reporter.note(f"monitor issue #{found['number']} is open: commented with this run's evidence ({url})")
        return
    if spec.retrain:
        ref = environ.get("GITHUB_REF_NAME") or "main"
        github.dispatch_workflow(CD_WORKFLOW, ref, {"environment": config.name})
        retrain = f"Retraining: dispatched {CD_WORKFLOW} on `{ref}` up to {config.name} (monitoring.retrain)."
    else:
        retrain = (
            f"Retraining: not dispatched (monitoring.retrain is false in environments/{config.name}.yaml)."
        )
    title = f"{config.model.name} in {config.name}: {' and '.join(failing)} failing"
    body = f"{marker(config)}\nThe scheduled checks of the release serving {config.name} fail.\n\n{text}\n\n{retrain}\n"
    number, url = github.open_issue(title, body, [spec.issue_label])
    reporter.note(f"opened monitor issue #{number}: {url}")
    reporter.note(retrain)


def run(ctx: StageContext) -> StageResult:
    c, r = ctx.config, ctx.reporter
    github = (
        GitHub.from_environment(purpose="monitor --report-to-github reports on GitHub")
        if ctx.args.report_to_github
        else None
    )  # before any check: a missing token is known now, not after them
    verdicts = []
    for name, options in checks_of(c):
        try:
            result = ctx.run_stage(name, **options)
        except StageError as exc:
            verdicts.append(Verdict(name, "fail", str(exc)))
            continue
        assert result is not None  # a stage run alone that cannot run raises StageError
        verdicts.append(Verdict(name, result.status, result.headline))
    if github is not None:
        report_on_github(c, verdicts, github, r, os.environ)
    failing = [v.stage for v in verdicts if v.result == "fail"]
    checks = [v.check() for v in verdicts]
    headline = f"{' and '.join(failing)} failing" if failing else "drift and live quality hold"
    return StageResult(status="fail" if failing else "pass", headline=headline, checks=checks)
