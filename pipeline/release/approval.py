"""Approval on any GitHub plan: a promotion into an environment with `promotion.approval: pull_request` is a
pull request against the deploy branch, its evidence as commit statuses on its head, merged under the
CODEOWNERS review the repository's ruleset requires (.github/rulesets/release.json, docs/ci.md).

`promote --gitops` pushes the release commit to `release/<env>/<model>-v<semver>`, sets the statuses
`release/gate`, `release/loadtest`, `release/canary`, `release/soak` and `release/policy`, and opens the pull
request; nothing moves. The workflow release-evidence.yml turns them into the one required check
`release/evidence`; once a code owner approved and it merged, release-merged.yml runs `promote
--release-commit SHA`, which checks the policy again, moves the alias and tags the merge commit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.adapters.github_api import GitHub
from pipeline.config import Config
from pipeline.stage import Check

STATUS_PREFIX = "release/"
EVIDENCE = ("gate", "loadtest", "canary", "soak", "policy")
"""The statuses a release pull request carries, in this order (`release/<name>`)."""
PASSED = {"pass", "warn"}


@dataclass(frozen=True)
class Evidence:
    name: str
    passed: bool
    description: str

    @property
    def context(self) -> str:
        return f"{STATUS_PREFIX}{self.name}"


def branch_name(config: Config, version: str, semver: str | None) -> str:
    return f"release/{config.name}/{config.model.name}-" + (f"v{semver}" if semver else f"r{version}")


def _verdict(tags: Mapping[str, Any], keys: Sequence[str]) -> tuple[str, str] | None:
    """The first of `keys` the version's tags hold, and its value."""
    return next(((key, str(tags[key])) for key in keys if tags.get(key)), None)


def evidence(config: Config, tags: Mapping[str, Any], admitted: Sequence[Check]) -> list[Evidence]:
    """What the pull request shows of the release: its gate and load test, the canary it passed (the
    environment it comes from, else its own rehearsal), its soak and the promotion policy's verdict."""
    source = config.promotion.from_
    keys = {
        "gate": [f"gate.{config.name}"],
        "loadtest": [f"loadtest.{config.name}", *([f"loadtest.{source}"] if source else []), "loadtest"],
        "canary": [*([f"rollout.{source}"] if source else []), f"rollout.{config.name}"],
    }
    found = []
    for name, names in keys.items():
        verdict = _verdict(tags, names)
        found.append(
            Evidence(name, False, f"no verdict: none of {', '.join(names)} is set")
            if verdict is None
            else Evidence(name, verdict[1] in PASSED, f"{verdict[0]}={verdict[1]}")
        )
    soak = next((check for check in admitted if check.metric == "soak_hours"), None)
    found.append(
        Evidence("soak", True, f"not required (promotion.soak_hours {config.promotion.soak_hours:g})")
        if soak is None
        else Evidence("soak", soak.passed, soak.line())
    )
    failed = [check for check in admitted if check.failed]
    found.append(
        Evidence("policy", not failed, failed[0].line() if failed else f"{len(admitted)} clause(s) hold")
    )
    return found


def body(
    config: Config, version: str, reference: str, admitted: Sequence[Check], found: Sequence[Evidence]
) -> str:
    rows = "\n".join(
        f"| `{item.context}` | {'success' if item.passed else 'failure'} | {item.description} |"
        for item in found
    )
    clauses = "\n".join(f"| {check.name} | {check.result.upper()} | {check.note} |" for check in admitted)
    return (
        f"Promotes {config.model.name} version {version} ({reference}) into **{config.name}**.\n\n"
        "Merging this deploys it: Argo CD syncs the merge commit, and release-merged.yml checks the "
        f"promotion policy again, moves alias `{config.alias}` and tags the commit. A code owner of "
        f"`k8s/overlays/{config.name}/` approves it (.github/CODEOWNERS).\n\n"
        "| status | state | evidence |\n| --- | --- | --- |\n"
        f"{rows}\n\n| clause | result | detail |\n| --- | --- | --- |\n{clauses}\n"
    )


def open_pull_request(
    github: GitHub,
    config: Config,
    *,
    version: str,
    reference: str,
    branch: str,
    commit: str,
    found: Sequence[Evidence],
    admitted: Sequence[Check],
) -> tuple[int, str]:
    """Set the evidence statuses on `commit` (before the pull request exists, so the check reading them
    sees them), then open the pull request of `branch` into the deploy branch."""
    for item in found:
        github.set_status(commit, item.context, "success" if item.passed else "failure", item.description)
    title = f"release({config.name}): {config.model.name} version {version}"
    return github.open_pull_request(
        branch, config.deploy.gitops.branch, title, body(config, version, reference, admitted, found)
    )
