"""Before CD reaches prod: stop when prod would run unprotected, or a manual run comes from another branch.

    python scripts/prod_preflight.py     # in cd.yml's `preflight` job; reads the variables below

GitHub creates an environment that a job names but that does not exist, with no protection rules, and
runs the job at once; an existing `prod` with no required reviewers does the same. So this asks the
REST API (`GET /repos/{owner}/{repo}/environments/prod`, its `protection_rules`) before the prod job
and fails with a message that says what to set, unless the repository variable
`ALLOW_UNPROTECTED_PROD` is `true` (a fork that knowingly deploys prod without a reviewer), or prod is
approved by a release pull request instead (`promotion.approval: pull_request` in environments/prod.yaml or
a file it extends: CODEOWNERS review the merge, docs/ci.md "Approval on any plan").

Environment: GITHUB_API_URL, GITHUB_REPOSITORY, GITHUB_EVENT_NAME, GITHUB_REF (set by GitHub),
GH_TOKEN (the job token; `actions: read` is enough for this endpoint), ALLOW_UNPROTECTED_PROD, and
CONFIG_DIR (default `environments`, read from the checkout).
"""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ENVIRONMENT = "prod"
MAIN = "refs/heads/main"
ALLOW_VARIABLE = "ALLOW_UNPROTECTED_PROD"
EXTENDS = re.compile(r"^extends:[ \t]*['\"]?([^'\"#\s]+)", re.MULTILINE)
APPROVAL = re.compile(
    r"^promotion:[^\n]*\n(?:[ \t]+[^\n]*\n|[ \t]*\n)*?[ \t]+approval:[ \t]*([a-z_]+)", re.MULTILINE
)
"""`approval:` inside the top-level `promotion:` mapping. Read with patterns: this runs on the runner's bare
Python, without PyYAML (as scripts/gitops_push.py reads `extends`)."""


def approval(config_dir: Path, name: str = ENVIRONMENT) -> str:
    """`promotion.approval` of environment `name`: its file first, then the files it extends."""
    path: Path | None = config_dir / f"{name}.yaml"
    while path is not None and path.is_file():
        text = path.read_text(encoding="utf-8")
        found = APPROVAL.search(text if text.endswith("\n") else text + "\n")
        if found:
            return found[1]
        extends = EXTENDS.search(text)
        path = None if extends is None else path.parent / f"{extends[1]}.yaml"
    return "environment"


class Refused(Exception):
    """CD must stop before prod; the message says why and what to change."""


def environment(api_url: str, repository: str, token: str, name: str = ENVIRONMENT) -> dict[str, Any] | None:
    """The environment as the REST API describes it, or None when it does not exist (404)."""
    request = urllib.request.Request(
        f"{api_url.rstrip('/')}/repos/{repository}/environments/{name}",
        headers={
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {token}",
            "X-GitHub-Api-Version": "2022-11-28",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            data = json.load(response)
    except urllib.error.HTTPError as exc:
        exc.close()  # the error carries the open response
        if exc.code == 404:
            return None
        raise Refused(
            f"GET {request.full_url} answered {exc.code} {exc.reason}: the job token needs `actions: read`"
        ) from None
    if not isinstance(data, dict):
        raise Refused(f"GET {request.full_url} did not return an object")
    return data


def reviewers(env: Mapping[str, Any]) -> int:
    """How many required reviewers the environment's protection rules name."""
    return sum(
        len(rule.get("reviewers") or [])
        for rule in env.get("protection_rules") or []
        if rule.get("type") == "required_reviewers"
    )


def check(
    env: Mapping[str, Any] | None,
    *,
    event: str,
    ref: str,
    allow_unprotected: bool,
    repository: str,
    pull_request_approval: bool = False,
) -> str:
    """Raise Refused when prod must not run; return what was found."""
    if event == "workflow_dispatch" and ref != MAIN:
        raise Refused(
            f"a manual run to prod starts only from main, this one from {ref}: run CD from main, "
            f"or choose environment dev or staging"
        )
    settings = f"Settings > Environments of {repository}"
    if env is None:
        problem = f"environment `{ENVIRONMENT}` does not exist: GitHub would create it with no reviewer"
    elif reviewers(env) == 0:
        problem = f"environment `{ENVIRONMENT}` has no required reviewers"
    else:
        return f"environment `{ENVIRONMENT}` has {reviewers(env)} required reviewer(s)"
    if pull_request_approval:
        return (
            f"{problem}; a release pull request approves prod instead (promotion.approval: pull_request): "
            "CODEOWNERS review its merge"
        )
    if allow_unprotected:
        return f"{problem}; deploying anyway because the variable {ALLOW_VARIABLE} is true"
    raise Refused(
        f"{problem}. Add required reviewers to `{ENVIRONMENT}` in {settings} (docs/ci.md, fork "
        f"checklist), or set the repository variable {ALLOW_VARIABLE}=true to deploy prod unreviewed"
    )


def main(environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    repository = environ["GITHUB_REPOSITORY"]
    try:
        found = check(
            environment(
                environ.get("GITHUB_API_URL", "https://api.github.com"), repository, environ["GH_TOKEN"]
            ),
            event=environ.get("GITHUB_EVENT_NAME", ""),
            ref=environ.get("GITHUB_REF", ""),
            allow_unprotected=environ.get(ALLOW_VARIABLE, "").strip().lower() == "true",
            repository=repository,
            pull_request_approval=approval(Path(environ.get("CONFIG_DIR", "environments"))) == "pull_request",
        )
    except Refused as exc:
        sys.stdout.write(f"::error title=prod preflight::{exc}\n")
        return 1
    level = "warning" if "anyway" in found else "notice"
    sys.stdout.write(f"::{level} title=prod preflight::{found}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
