"""GitHub's own rules for starting a run, checked on the YAML of .github/workflows/*.yml.

act (`nox -s act`) checks none of these: a workflow that breaks them passes locally and fails on GitHub
before any job starts, or runs with a protection silently missing. Each rule cites the GitHub docs page
that states it; each has a test on a small workflow that breaks it, so the rule itself can fail.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
WORKFLOWS = ROOT / ".github" / "workflows"
CI_DOC = ROOT / "docs" / "ci.md"
ENVIRONMENTS = ("dev", "staging", "prod")

Workflow = dict[str, Any]

# --- permissions ----------------------------------------------------------------------------------------

# https://docs.github.com/en/actions/writing-workflows/choosing-what-your-workflow-does/controlling-permissions-for-github_token
# "If you specify the access for any of these permissions, all of those that are not specified are set to
# none"; `read-all` / `write-all` set every scope. The scopes listed there:
SCOPES = (
    "actions",
    "attestations",
    "checks",
    "contents",
    "deployments",
    "discussions",
    "id-token",
    "issues",
    "models",
    "packages",
    "pages",
    "pull-requests",
    "repository-projects",
    "security-events",
    "statuses",
)
LEVELS = {"none": 0, "read": 1, "write": 2}
# https://docs.github.com/en/actions/security-for-github-actions/security-guides/automatic-token-authentication#permissions-for-the-github_token
# With no `permissions:` anywhere the token gets the repository's default: "permissive" or "restricted"
# (contents and packages read). A fork's setting is unknown, so the template may count only on the
# restricted one.
RESTRICTED_DEFAULT = {"contents": "read", "packages": "read"}


def _grants(permissions: Any) -> dict[str, str]:
    if permissions == "read-all":
        return dict.fromkeys(SCOPES, "read")
    if permissions == "write-all":
        return dict.fromkeys(SCOPES, "write")
    if isinstance(permissions, dict):
        return {str(k): str(v) for k, v in permissions.items()}
    raise AssertionError(f"permissions must be a mapping, read-all or write-all, not {permissions!r}")


def job_permissions(
    job: dict[str, Any], workflow: Workflow, inherited: dict[str, str] | None
) -> dict[str, str]:
    """What a job's token may do: its own key, else the workflow's top level, else (a called workflow) the
    caller's grant, else the restricted default. `permissions: {}` at the top grants nothing."""
    if "permissions" in job:
        return _grants(job["permissions"])
    if "permissions" in workflow:
        return _grants(workflow["permissions"])
    return dict(RESTRICTED_DEFAULT if inherited is None else inherited)


def permission_violations(workflows: dict[str, Workflow]) -> list[str]:
    """Called jobs never ask for more than the calling job grants.

    https://docs.github.com/en/actions/sharing-automations/reusing-workflows#access-and-permissions
    "The GITHUB_TOKEN permissions passed from the caller workflow can be only downgraded (not elevated)
    by the called workflow." GitHub checks this when the run starts, for every call, whatever the
    calling job's `if:` says: one violation fails the whole run with zero jobs.
    """
    found: list[str] = []
    for name, workflow in sorted(workflows.items()):
        for job_id, job in workflow.get("jobs", {}).items():
            target = str(job.get("uses", ""))
            if not target.startswith("./.github/workflows/"):
                continue
            callee = workflows[Path(target).name]
            granted = job_permissions(job, workflow, None)
            for called_id, called in callee.get("jobs", {}).items():
                asked = job_permissions(called, callee, granted)
                for scope, level in sorted(asked.items()):
                    if LEVELS[level] > LEVELS[granted.get(scope, "none")]:
                        found.append(
                            f"{name} job {job_id} grants {scope}: {granted.get(scope, 'none')}, but "
                            f"{Path(target).name} job {called_id} asks for {scope}: {level}"
                        )
    return found


# --- secrets and variables of docs/ci.md ----------------------------------------------------------------

_DOC_ROW = re.compile(r"^\|\s*((?:`[A-Z0-9_]+`(?:,\s*)?)+)\s*\|\s*([^|]+)\|", re.MULTILINE)


def documented(doc: str) -> dict[str, str]:
    """{NAME: `secrets` or `vars`} for every row of the secrets-and-variables table of docs/ci.md."""
    out: dict[str, str] = {}
    for names, kind in _DOC_ROW.findall(doc):
        context = "secrets" if kind.strip().startswith("secret") else "vars"
        for name in re.findall(r"`([A-Z0-9_]+)`", names):
            out[name] = context
    return out


def environment_scoped(doc: str) -> set[str]:
    """Names the doc says live in a GitHub Environment (its kind column says `per environment`)."""
    return {
        name
        for names, kind in _DOC_ROW.findall(doc)
        if "per environment" in kind
        for name in re.findall(r"`([A-Z0-9_]+)`", names)
    }


def _step_text(workflows: dict[str, Workflow]) -> str:
    """Everything a step sees: the steps, and the job-level `env:` that every step of the job gets."""
    jobs = [job for wf in workflows.values() for job in wf.get("jobs", {}).values()]
    return yaml.safe_dump([[job.get("env", {}), job.get("steps", [])] for job in jobs])


def unread(workflows: dict[str, Workflow], doc: str) -> list[str]:
    """Documented secrets and variables that no step reads (a job-level `if:` or a pass-through to a
    called workflow reads nothing: the value must reach a `run`, `with` or `env` of a step)."""
    text = _step_text(workflows)
    return sorted(
        f"{context}.{name}"
        for name, context in documented(doc).items()
        if not re.search(rf"\b{context}\.{name}\b", text)
    )


def scoped_in_job_if(workflows: dict[str, Workflow], doc: str) -> list[str]:
    """Environment-scoped values in a job-level `if:`.

    https://docs.github.com/en/actions/reference/workflows-and-actions/contexts#context-availability
    `jobs.<job_id>.if` is evaluated before the job's environment applies (and `secrets` is not
    available there at all); https://docs.github.com/en/actions/reference/workflows-and-actions/variables
    environment-level variables reach only the jobs running under that environment. So an
    environment-scoped `vars.X` reads as empty there and the job is skipped silently.
    """
    scoped = environment_scoped(doc)
    return sorted(
        f"{name}: job {job_id} has {context}.{value} in its if:"
        for name, wf in workflows.items()
        for job_id, job in wf.get("jobs", {}).items()
        for context, value in re.findall(r"\b(vars|secrets)\.([A-Z0-9_]+)", str(job.get("if", "")))
        if value in scoped or context == "secrets"
    )


# --- environments ---------------------------------------------------------------------------------------


def approvals(workflows: dict[str, Workflow]) -> dict[str, list[str]]:
    """{environment: [jobs that reference it]} over the whole call graph.

    https://docs.github.com/en/actions/reference/workflows-and-actions/deployments-and-environments
    Every job that references an environment with required reviewers waits for its own approval, and a
    job that references an environment that does not exist creates it, with no protection rules. So each
    environment is named by exactly one job: one approval per environment.
    """
    out: dict[str, list[str]] = {}
    for name, wf in sorted(workflows.items()):
        if "workflow_call" in (wf.get("on") or {}):
            continue  # counted through its callers, with their `with: environment:`
        for job_id, job in wf.get("jobs", {}).items():
            target = str(job.get("uses", ""))
            if target.startswith("./.github/workflows/"):
                callee_name = Path(target).name
                given = (job.get("with") or {}).get("environment")
                for called_id, called in workflows[callee_name].get("jobs", {}).items():
                    env = called.get("environment")
                    if env is None:
                        continue
                    env = env.get("name") if isinstance(env, dict) else env
                    resolved = given if str(env).replace(" ", "") == "${{inputs.environment}}" else env
                    out.setdefault(str(resolved), []).append(f"{name}:{job_id} -> {callee_name}:{called_id}")
            elif job.get("environment") is not None:
                env = job["environment"]
                env = env.get("name") if isinstance(env, dict) else env
                out.setdefault(str(env), []).append(f"{name}:{job_id}")
    return out


# --- the committed workflows ----------------------------------------------------------------------------


def load(folder: Path) -> dict[str, Workflow]:
    workflows = {}
    for path in sorted(folder.glob("*.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        # PyYAML reads the key `on` as the boolean True (YAML 1.1).
        data["on"] = data.pop(True, data.get("on"))
        workflows[path.name] = data
    return workflows


@pytest.fixture(scope="module")
def committed() -> dict[str, Workflow]:
    return load(WORKFLOWS)


@pytest.fixture(scope="module")
def committed_actions() -> dict[str, Workflow]:
    """The local composite actions, by folder name (`stage` for .github/actions/stage/action.yml)."""
    return {
        path.parent.name: yaml.safe_load(path.read_text(encoding="utf-8"))
        for path in sorted((ROOT / ".github" / "actions").glob("*/action.yml"))
    }


@pytest.fixture(scope="module")
def doc() -> str:
    return CI_DOC.read_text(encoding="utf-8")


def test_called_jobs_never_exceed_the_callers_permissions(committed: dict[str, Workflow]) -> None:
    assert permission_violations(committed) == []


def test_every_documented_secret_and_variable_is_read_by_a_step(
    committed: dict[str, Workflow], doc: str
) -> None:
    assert len(documented(doc)) >= 8, "the secrets-and-variables table of docs/ci.md was not found"
    assert unread(committed, doc) == []


def test_no_environment_scoped_value_in_a_job_level_if(committed: dict[str, Workflow], doc: str) -> None:
    assert {"KUBE_CONFIG", "KUBE_CLUSTER", "MLFLOW_TRACKING_URI"} <= environment_scoped(doc)
    assert scoped_in_job_if(committed, doc) == []


def test_each_environment_is_referenced_by_exactly_one_job(committed: dict[str, Workflow]) -> None:
    found = approvals(committed)
    # batch.yml's jobs run under environments of their own, `batch-ENV`, without reviewers: a batch
    # deploys nothing, and a nightly run must not wait for an approval.
    assert found.pop("batch-${{ matrix.environment }}") == ["batch.yml:batch"]
    # monitor.yml's likewise, `monitor-ENV`: a scheduled check deploys nothing (it may dispatch cd.yml,
    # whose deploys then wait for their own approvals).
    assert found.pop("monitor-${{ matrix.environment }}") == ["monitor.yml:monitor"]
    # release-merged.yml deploys a merged release pull request under the environment it names; the pull
    # request's code-owner review was its approval (promotion.approval: pull_request, on plans whose
    # environments have no required reviewers).
    assert found.pop("${{ needs.which.outputs.environment }}") == ["release-merged.yml:deploy"]
    assert set(found) == set(ENVIRONMENTS), found
    for env in ENVIRONMENTS:
        assert len(found[env]) == 1, f"{env} needs {len(found[env])} approvals: {found[env]}"


# --- the rules can fail ---------------------------------------------------------------------------------

CALLER = """
on: {push: {}}
permissions: {}
jobs:
  dev:
    CALLER_PERMISSIONS
    uses: ./.github/workflows/callee.yml
    with: {environment: dev}
"""
CALLEE = """
on: {workflow_call: {inputs: {environment: {type: string}}}}
permissions: {}
jobs:
  deploy:
    environment: ${{ inputs.environment }}
    permissions: {contents: write}
    if: ${{ vars.KUBE_CLUSTER != '' }}
    steps: [{run: echo, env: {TOKEN: "${{ secrets.GITOPS_TOKEN }}"}}]
  promote:
    environment: ${{ inputs.environment }}
    steps: [{run: echo}]
"""
DOC = """
| name | kind | used by | what for |
| --- | --- | --- | --- |
| `GITOPS_TOKEN` | secret | x | y |
| `KUBE_CLUSTER`, `KUBE_CONFIG` | variable (per environment) | x | y |
"""


def _synthetic(tmp_path: Path, caller_permissions: str) -> dict[str, Workflow]:
    (tmp_path / "cd.yml").write_text(
        CALLER.replace("CALLER_PERMISSIONS", caller_permissions), encoding="utf-8"
    )
    (tmp_path / "callee.yml").write_text(CALLEE, encoding="utf-8")
    return load(tmp_path)


@pytest.mark.parametrize(
    ("caller", "expected"),
    [
        ("permissions: {contents: read}", ["contents: read", "contents: write"]),
        # No key on the calling job and `{}` at the top: the call grants nothing at all.
        ("", ["contents: none", "contents: write"]),
        ("permissions: {contents: write}", []),
        ("permissions: write-all", []),
    ],
)
def test_permission_rule_flags_a_call_that_grants_less(
    tmp_path: Path, caller: str, expected: list[str]
) -> None:
    found = permission_violations(_synthetic(tmp_path, caller))
    assert len(found) == (1 if expected else 0), found
    for part in expected:
        assert part in found[0]


def test_permission_rule_counts_the_restricted_default_when_nothing_is_set(tmp_path: Path) -> None:
    workflows = _synthetic(tmp_path, "")
    del workflows["cd.yml"]["permissions"]
    [found] = permission_violations(workflows)
    assert "grants contents: read" in found


def test_variable_rules_flag_an_unread_name_and_a_scoped_job_if(tmp_path: Path) -> None:
    workflows = _synthetic(tmp_path, "")
    assert unread(workflows, DOC) == ["vars.KUBE_CLUSTER", "vars.KUBE_CONFIG"]
    assert scoped_in_job_if(workflows, DOC) == ["callee.yml: job deploy has vars.KUBE_CLUSTER in its if:"]


def test_approval_rule_counts_jobs_of_the_called_workflow(tmp_path: Path) -> None:
    assert approvals(_synthetic(tmp_path, "")) == {
        "dev": ["cd.yml:dev -> callee.yml:deploy", "cd.yml:dev -> callee.yml:promote"]
    }


# --- no deploy loop -------------------------------------------------------------------------------------


def _matches(path: str, pattern: str) -> bool:
    # https://docs.github.com/en/actions/reference/workflows-and-actions/workflow-syntax#filter-pattern-cheat-sheet
    # `**` matches any characters including `/`, `*` any but `/`.
    regex = re.escape(pattern).replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
    return re.fullmatch(regex, path) is not None


def test_the_gitops_commit_does_not_start_cd_again(committed: dict[str, Workflow]) -> None:
    """The deploy pushes its overlay to the branch CD runs on, with a token that starts workflows.

    https://docs.github.com/en/actions/reference/workflows-and-actions/workflow-syntax#onpushpull_requestpull_request_targetpathspaths-ignore
    A push whose every file matches `paths-ignore` starts no run, so the overlay commit ends the chain.
    """
    from pipeline.config import load_config  # noqa: PLC0415
    from pipeline.deploy.release_file import Release  # noqa: PLC0415
    from pipeline.deploy.render import render_environment  # noqa: PLC0415

    ignored = committed["cd.yml"]["on"]["push"]["paths-ignore"]
    release = Release(image="r/model", tag="t", digest="sha256:" + "0" * 64, model_version="1", git_sha="abc")
    for env in ENVIRONMENTS:
        written = render_environment(load_config(env, ROOT / "environments"), release, ROOT)
        assert written, env
        for path in written:
            assert any(_matches(path, p) for p in ignored), f"{path} would start CD again"
    for source in ("pipeline/cli.py", "environments/prod.yaml", "k8s/base/rollout.yaml"):
        assert not any(_matches(source, p) for p in ignored), f"{source} must start CD"


# --- checkout, artifacts, CD after CI -------------------------------------------------------------------


def _is_called(workflow: Workflow) -> bool:
    return "workflow_call" in (workflow.get("on") or {})


def _grants_by_job(workflows: dict[str, Workflow]) -> list[tuple[str, str, dict[str, Any], dict[str, str]]]:
    """(workflow, job, job, token grant) for every job as it can run: started by its own triggers (when
    the workflow has any besides workflow_call), and once per call with the caller's grant."""
    out: list[tuple[str, str, dict[str, Any], dict[str, str]]] = []
    for name, wf in sorted(workflows.items()):
        triggers = set(wf.get("on") or {}) - {"workflow_call"}
        for job_id, job in wf.get("jobs", {}).items():
            if triggers and "uses" not in job:
                out.append((name, job_id, job, job_permissions(job, wf, None)))
            target = str(job.get("uses", ""))
            if target.startswith("./.github/workflows/"):
                callee_name = Path(target).name
                callee = workflows[callee_name]
                granted = job_permissions(job, wf, None)
                for called_id, called in callee.get("jobs", {}).items():
                    where = f"{callee_name} (called by {name}:{job_id})"
                    out.append((where, called_id, called, job_permissions(called, callee, granted)))
    return out


def checkouts_without_contents(workflows: dict[str, Workflow]) -> list[str]:
    """Jobs that run actions/checkout with a token that cannot read the repository.

    https://github.com/actions/checkout#recommended-permissions: checkout needs `contents: read` (unless
    another token is given). https://docs.github.com/en/actions/writing-workflows/choosing-what-your-workflow-does/controlling-permissions-for-github_token
    "all of those that are not specified are set to none": a job that grants only `actions: read` has
    `contents: none`; in a private repository the clone then fails with "Repository not found" (a public
    one is readable anyway, which is how it goes unnoticed).
    """
    return sorted(
        f"{where} job {job_id} checks out with contents: {grant.get('contents', 'none')}"
        for where, job_id, job, grant in _grants_by_job(workflows)
        for step in job.get("steps", [])
        if str(step.get("uses", "")).startswith("actions/checkout@")
        and LEVELS[grant.get("contents", "none")] < LEVELS["read"]
    )


def _steps_by_place(
    workflows: dict[str, Workflow], actions: dict[str, Workflow]
) -> list[tuple[str, dict[str, Any]]]:
    """(where, step) for every step of the workflows' jobs and of the local composite actions."""
    return [
        (f"{name} job {job_id}", step)
        for name, wf in workflows.items()
        for job_id, job in wf.get("jobs", {}).items()
        for step in job.get("steps", [])
    ] + [
        (f"action {name}", step)
        for name, action in actions.items()
        for step in (action.get("runs") or {}).get("steps", [])
    ]


def uploads_failing_a_rerun(workflows: dict[str, Workflow], actions: dict[str, Workflow]) -> list[str]:
    """upload-artifact steps (of a job, or of a composite action a job uses) that fail when their job is
    re-run.

    https://github.com/actions/upload-artifact (v4 and later, README "Breaking Changes" and input
    `overwrite`): artifacts are immutable, "it is no longer possible to upload to the same named Artifact
    multiple times"; with `overwrite: false` (the default) "the action will fail if an artifact for the
    given name already exists". "Re-run failed jobs" runs again in the same workflow run, where the first
    attempt's artifact still exists: without `overwrite: true` the re-run fails with a 409 Conflict.
    """
    return sorted(
        f"{where}: upload of {(step.get('with') or {}).get('name', 'artifact')} lacks overwrite: true"
        for where, step in _steps_by_place(workflows, actions)
        if str(step.get("uses", "")).startswith("actions/upload-artifact@")
        and (step.get("with") or {}).get("overwrite") is not True
    )


def deploys_without_ci(workflows: dict[str, Workflow]) -> list[str]:
    """Jobs of cd.yml that can deploy (call reusable-deploy.yml) without the `ci` job (a call of ci.yml)
    among their transitive needs: a commit whose CI failed would be deployed.

    https://docs.github.com/en/actions/writing-workflows/choosing-what-your-workflow-does/using-jobs-in-a-workflow#defining-prerequisite-jobs
    a job runs only after every job in `needs` succeeded (unless its `if:` says otherwise, and
    `!failure()` does not); a called workflow's job counts as one job whose result is failure when any
    called job failed (https://docs.github.com/en/actions/sharing-automations/reusing-workflows).
    """
    jobs = workflows["cd.yml"]["jobs"]
    ci = {job_id for job_id, job in jobs.items() if job.get("uses") == "./.github/workflows/ci.yml"}

    def needs(job_id: str) -> set[str]:
        direct = jobs[job_id].get("needs") or []
        direct = [direct] if isinstance(direct, str) else direct
        return set(direct).union(*(needs(n) for n in direct))

    return sorted(
        job_id
        for job_id, job in jobs.items()
        if job.get("uses") == "./.github/workflows/reusable-deploy.yml" and not (ci and ci <= needs(job_id))
    )


def test_every_job_that_checks_out_can_read_the_repository(committed: dict[str, Workflow]) -> None:
    assert checkouts_without_contents(committed) == []


def test_every_upload_survives_a_rerun_of_its_job(
    committed: dict[str, Workflow], committed_actions: dict[str, Workflow]
) -> None:
    uploads = [
        where
        for where, step in _steps_by_place(committed, committed_actions)
        if str(step.get("uses", "")).startswith("actions/upload-artifact@")
    ]
    assert "action stage" in uploads, uploads
    assert uploads_failing_a_rerun(committed, committed_actions) == []


def test_cd_deploys_only_after_ci_passed_on_the_same_commit(committed: dict[str, Workflow]) -> None:
    assert _is_called(committed["ci.yml"])
    assert deploys_without_ci(committed) == []
    # ci.yml's own triggers leave main to CD, so a push to main runs CI once (inside CD).
    assert committed["ci.yml"]["on"]["push"] == {"branches-ignore": ["main"]}
    assert committed["cd.yml"]["on"]["push"]["branches"] == ["main"]


def test_ci_called_by_cd_has_a_concurrency_group_of_its_own_that_never_cancels(
    committed: dict[str, Workflow],
) -> None:
    """https://docs.github.com/en/actions/sharing-automations/reusing-workflows#supported-keywords-for-jobs-that-call-a-reusable-workflow
    "When a reusable workflow is triggered by a caller workflow, the github context is always associated
    with the caller workflow": ci.yml's workflow-level group evaluates with `github.workflow` = `CD`.
    A group equal to one of the caller's would deadlock the run; a called CI cancelled by a newer push
    would fail the deploy that waits for it."""
    concurrency = committed["ci.yml"]["concurrency"]

    def evaluate(expression: str, workflow: str) -> str:
        return (
            expression.replace("${{ github.workflow }}", workflow)
            .replace("${{ github.event.pull_request.number || github.ref }}", "refs/heads/main")
            .replace("${{ github.workflow == 'CI' }}", str(workflow == "CI").lower())
        )

    assert evaluate(concurrency["cancel-in-progress"], "CI") == "true"
    assert evaluate(concurrency["cancel-in-progress"], "CD") == "false"
    called_group = evaluate(concurrency["group"], committed["cd.yml"]["name"])
    assert "${{" not in called_group and called_group != evaluate(concurrency["group"], "CI")
    caller_groups = [
        str((job.get("concurrency") or {}).get("group", ""))
        for wf in (committed["cd.yml"], committed["reusable-deploy.yml"])
        for job in [wf, *wf["jobs"].values()]
    ]
    assert called_group not in caller_groups


CHECKOUT_CALLER = """
on: {push: {}}
permissions: {}
jobs:
  preflight:
    permissions: {actions: read}
    steps:
      - uses: actions/checkout@0000000000000000000000000000000000000000
      - uses: actions/upload-artifact@0000000000000000000000000000000000000000
        with: {name: report, path: r}
  ci:
    permissions: {actions: read}
    uses: ./.github/workflows/ci.yml
  dev:
    needs: preflight
    uses: ./.github/workflows/reusable-deploy.yml
"""
CHECKOUT_CALLEE = """
on: {workflow_call: {}}
permissions: {}
jobs:
  lint:
    steps: [{uses: actions/checkout@0000000000000000000000000000000000000000}]
"""


def test_the_checkout_upload_and_ci_rules_can_fail(tmp_path: Path) -> None:
    (tmp_path / "cd.yml").write_text(CHECKOUT_CALLER, encoding="utf-8")
    (tmp_path / "ci.yml").write_text(CHECKOUT_CALLEE, encoding="utf-8")
    (tmp_path / "reusable-deploy.yml").write_text("on: {workflow_call: {}}\njobs: {}\n", encoding="utf-8")
    workflows = load(tmp_path)
    assert checkouts_without_contents(workflows) == [
        "cd.yml job preflight checks out with contents: none",
        "ci.yml (called by cd.yml:ci) job lint checks out with contents: none",
    ]
    action = {"runs": {"steps": [{"uses": "actions/upload-artifact@" + "0" * 40, "with": {"name": "ws"}}]}}
    assert uploads_failing_a_rerun(workflows, {"stage": action}) == [
        "action stage: upload of ws lacks overwrite: true",
        "cd.yml job preflight: upload of report lacks overwrite: true",
    ]
    assert deploys_without_ci(workflows) == ["dev"]
    workflows["cd.yml"]["jobs"]["preflight"]["needs"] = "ci"
    assert deploys_without_ci(workflows) == []


# https://docs.github.com/en/actions/managing-workflow-runs-and-deployments/managing-workflow-runs/skipping-workflow-runs
# "Workflows that would otherwise be triggered using on: push or on: pull_request won't be triggered if you
# add any of the following strings to the commit message in a push": (the head commit of the push).
SKIP_MARKERS = ("[skip ci]", "[ci skip]", "[no ci]", "[skip actions]", "[actions skip]")


def test_gitops_commits_start_no_workflow(committed: dict[str, Workflow]) -> None:
    """The deploy's promotion and rollback commits are pushed with GITOPS_TOKEN (which starts workflows):
    their messages carry a skip marker, and CD's trigger guard (paths-ignore, above) stays as a second
    guard for a commit whose message was edited. Neither CI nor CD is triggered otherwise than by push,
    pull_request, workflow_dispatch and workflow_call, so the marker covers every trigger a push can start."""
    from pipeline.config import load_config  # noqa: PLC0415
    from pipeline.deploy.gitops import SKIP_CI, Lineage, commit_message  # noqa: PLC0415

    assert SKIP_CI in SKIP_MARKERS
    lineage = Lineage("m", "7", "abc", "r/m", None, "sha256:" + "0" * 64, "pass", "pass")
    for env in ENVIRONMENTS:
        assert SKIP_CI in commit_message(load_config(env, ROOT / "environments"), lineage)
    for name in ("ci.yml", "cd.yml"):
        assert set(committed[name]["on"]) <= {"push", "pull_request", "workflow_dispatch", "workflow_call"}
