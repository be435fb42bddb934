"""The monitor's way back into the pipeline, against a local stand-in of the GitHub API that enforces
GitHub's documented rules (tests/_github_api.py): a failing verdict opens one issue per environment and
then comments on it, never a second one; retraining is dispatched where monitoring.retrain allows, once per
open issue, and refused by the API when cd.yml at the ref cannot take it."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.adapters.github_api import GitHub
from pipeline.config import load_config
from pipeline.console import Reporter
from pipeline.errors import StageError
from pipeline.stages.monitor import Verdict, marker, report_on_github
from tests._github_api import GitHubStandIn, bare_remote, serving
from tests._workflows import ROOT

REPOSITORY = "acme/model-cicd"
ENVIRON = {"GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": REPOSITORY, "GITHUB_RUN_ID": "77"}
FAILING = [Verdict("drift", "pass", "PASS 31/31"), Verdict("evaluate", "fail", "roc_auc 0.61 < min 0.95")]
PASSING = [Verdict("drift", "pass", "PASS 31/31"), Verdict("evaluate", "pass", "PASS 3/3 on 240 labels")]


def _remote(tmp_path: Path, cd_yml: str) -> Path:
    return bare_remote(tmp_path / "remote.git", {".github/workflows/cd.yml": cd_yml})


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[GitHubStandIn, GitHub]]:
    cd_yml = (ROOT / ".github/workflows/cd.yml").read_text(encoding="utf-8")
    stand_in = GitHubStandIn(_remote(tmp_path, cd_yml), REPOSITORY, {"token": "github-actions[bot]"})
    with serving(stand_in) as url:
        yield stand_in, GitHub(url, REPOSITORY, "token")


def _report(env: str, verdicts: list[Verdict], github: GitHub, **monitoring: object) -> str:
    config = load_config(env, ROOT / "environments")
    config = config.model_copy(update={"monitoring": config.monitoring.model_copy(update=monitoring)})
    out = io.StringIO()
    report_on_github(config, verdicts, github, Reporter(out, out), ENVIRON)
    return out.getvalue()


def test_a_failing_verdict_opens_one_issue_then_comments_on_it_and_says_it_passes_again(
    api: tuple[GitHubStandIn, GitHub],
) -> None:
    stand_in, github = api
    said = _report("prod", FAILING, github)
    [issue] = stand_in.issues.values()
    assert issue["title"] == "breast-cancer-classifier in prod: evaluate failing"
    assert issue["labels"] == ["model-monitor"]
    assert marker(load_config("prod", ROOT / "environments")) in issue["body"]
    assert "| evaluate | FAIL | roc_auc 0.61 < min 0.95 |" in issue["body"]
    assert "https://github.com/acme/model-cicd/actions/runs/77" in issue["body"]
    assert (
        "not dispatched (monitoring.retrain is false" in issue["body"] and "opened monitor issue #1" in said
    )
    assert stand_in.dispatches == []

    _report("prod", FAILING, github)  # the next scheduled run, still failing
    assert len(stand_in.issues) == 1
    [comment] = stand_in.comments[issue["number"]]
    assert comment["body"].startswith("Still failing: evaluate.")

    _report("staging", FAILING, github)  # another environment: its own issue
    assert len(stand_in.issues) == 2

    _report("prod", PASSING, github)
    assert stand_in.comments[issue["number"]][-1]["body"].startswith("The checks pass again.")
    assert len(stand_in.issues) == 2


def test_retraining_is_dispatched_once_per_open_issue_where_allowed(
    api: tuple[GitHubStandIn, GitHub],
) -> None:
    stand_in, github = api
    _report("staging", FAILING, github, retrain=True)
    _report("staging", FAILING, github, retrain=True)
    assert stand_in.dispatches == [
        {"workflow": "cd.yml", "ref": "main", "inputs": {"environment": "staging"}}
    ]
    [issue] = stand_in.issues.values()
    assert "Retraining: dispatched cd.yml on `main` up to staging" in issue["body"]

    _report("prod", PASSING, github, retrain=True)  # nothing fails: nothing is dispatched
    assert len(stand_in.dispatches) == 1


def test_a_dispatch_the_workflow_cannot_take_is_refused_and_no_issue_claims_it(tmp_path: Path) -> None:
    # GitHub refuses inputs a workflow_dispatch trigger does not declare (422): cd.yml without `environment`.
    stand_in = GitHubStandIn(
        _remote(tmp_path, "on:\n  workflow_dispatch: {}\njobs: {}\n"), REPOSITORY, {"token": "bot"}
    )
    with serving(stand_in) as url, pytest.raises(StageError, match=r"HTTP 422: .*Unexpected inputs provided"):
        _report("dev", FAILING, GitHub(url, REPOSITORY, "token"), retrain=True)
    assert stand_in.issues == {}


def test_without_a_token_the_monitor_says_what_to_set() -> None:
    with pytest.raises(StageError, match=r"monitor --report-to-github .* needs GITHUB_REPOSITORY and"):
        GitHub.from_environment({}, purpose="monitor --report-to-github reports on GitHub")


def test_an_issue_whose_labels_github_dropped_is_still_found_and_not_duplicated(tmp_path: Path) -> None:
    cd_yml = (ROOT / ".github/workflows/cd.yml").read_text(encoding="utf-8")
    stand_in = GitHubStandIn(_remote(tmp_path, cd_yml), REPOSITORY, {"token": "bot"}, push_access=False)
    with serving(stand_in) as url:
        github = GitHub(url, REPOSITORY, "token")
        _report("prod", FAILING, github)
        _report("prod", FAILING, github)
    [issue] = stand_in.issues.values()
    assert issue["labels"] == []  # dropped, as GitHub does without push access
    assert len(stand_in.comments[issue["number"]]) == 1
