"""Set `release/evidence` on a pull request's head: the one status check the deploy branch's ruleset requires
(.github/rulesets/release.json), so one name covers every pull request.

    python3 scripts/release_evidence.py      # in a pull_request workflow step (release-evidence.yml)

A pull request that changes no `k8s/overlays/<env>/release.yaml` deploys nothing: success. A release pull
request (`promote --gitops` with `promotion.approval: pull_request`, pipeline/release/approval.py) passes
only when each of its evidence statuses (release/gate, release/loadtest, release/canary, release/soak,
release/policy) is success on its head commit; the description names the first that is not. Reads the
event (GITHUB_EVENT_PATH) and calls the REST API (GITHUB_API_URL, GITHUB_REPOSITORY, GITHUB_TOKEN with
`pull-requests: read` and `statuses: write`). Standard library only: it runs on the runner's Python.
"""

from __future__ import annotations

import fnmatch
import json
import os
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

CONTEXT = "release/evidence"
EVIDENCE = ("release/gate", "release/loadtest", "release/canary", "release/soak", "release/policy")
RELEASE_FILES = "k8s/overlays/*/release.yaml"
PAGE = 100


def verdict(files: Sequence[str], statuses: Mapping[str, Mapping[str, Any]]) -> tuple[str, str]:
    """(state, description) of `release/evidence` for a pull request changing `files`, whose head has
    `statuses` (context -> the latest status)."""
    releases = [name for name in files if fnmatch.fnmatch(name, RELEASE_FILES)]
    if not releases:
        return "success", "no release in this pull request"
    for context in EVIDENCE:
        status = statuses.get(context)
        if status is None:
            return "failure", f"{context} is missing: open release pull requests with `promote --gitops`"
        if status.get("state") != "success":
            return "failure", f"{context} is {status.get('state')}: {status.get('description', '')}"
    return "success", f"{len(EVIDENCE)} evidence statuses passed for {', '.join(releases)}"


def _call(environ: Mapping[str, str], method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
    api = environ.get("GITHUB_API_URL", "https://api.github.com").rstrip("/")
    request = urllib.request.Request(
        f"{api}/repos/{environ['GITHUB_REPOSITORY']}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {environ['GITHUB_TOKEN']}",
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read()
    return json.loads(text) if text else None


def changed_files(environ: Mapping[str, str], number: int) -> list[str]:
    names: list[str] = []
    page = 1
    while True:
        found = _call(environ, "GET", f"/pulls/{number}/files?per_page={PAGE}&page={page}")
        names += [str(item["filename"]) for item in found]
        if len(found) < PAGE:
            return names
        page += 1


def main(environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    with Path(environ["GITHUB_EVENT_PATH"]).open(encoding="utf-8") as handle:
        pull = json.load(handle)["pull_request"]
    sha = str(pull["head"]["sha"])
    combined = _call(environ, "GET", f"/commits/{sha}/status")
    statuses = {str(item["context"]): item for item in combined.get("statuses", [])}
    state, description = verdict(changed_files(environ, int(pull["number"])), statuses)
    _call(
        environ,
        "POST",
        f"/statuses/{sha}",
        {"state": state, "context": CONTEXT, "description": description[:140]},
    )
    sys.stdout.write(f"{CONTEXT}: {state}: {description}\n")
    return 0 if state == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
