"""The few GitHub REST calls the pipeline makes: a release pull request (open it, set commit statuses on its
head), and the monitor's issue and retraining dispatch (`pipeline monitor --report-to-github`).

Where to and as whom come from the environment a workflow step has: GITHUB_API_URL (`https://api.github.com`
on github.com; a stand-in's URL under act), GITHUB_REPOSITORY (`owner/name`) and a token: GITOPS_API_TOKEN
(the GitOps credential scripts/gitops_push.py hands on) or GITHUB_TOKEN. A pull request opened with a
workflow's own GITHUB_TOKEN starts no workflow (docs.github.com, "Triggering a workflow from a workflow"),
so its required check would never report: the GitOps credential opens it.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.errors import StageError

TOKEN_VARIABLES = ("GITOPS_API_TOKEN", "GITHUB_TOKEN")
TIMEOUT_S = 30.0
DESCRIPTION_LIMIT = 140
"""GitHub truncates a commit status' description beyond this."""


@dataclass(frozen=True)
class GitHub:
    api_url: str
    repository: str
    token: str

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, *, purpose: str = "promotion.approval is pull_request"
    ) -> GitHub:
        """The API of this workflow run; StageError naming what is missing and what needs it."""
        environ = os.environ if environ is None else environ
        token = next((environ[name] for name in TOKEN_VARIABLES if environ.get(name)), "")
        repository = environ.get("GITHUB_REPOSITORY", "")
        missing = [
            name
            for name, value in (("GITHUB_REPOSITORY", repository), (" or ".join(TOKEN_VARIABLES), token))
            if not value
        ]
        if missing:
            raise StageError(
                f"{purpose}: that needs {' and '.join(missing)} (set in a workflow step: GITOPS_TOKEN, the "
                "GitOps App or the job's GITHUB_TOKEN, docs/ci.md)"
            )
        return cls(environ.get("GITHUB_API_URL", "https://api.github.com").rstrip("/"), repository, token)

    def call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            f"{self.api_url}/repos/{self.repository}{path}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={
                "Accept": "application/vnd.github+json",
                "Authorization": f"Bearer {self.token}",
                "X-GitHub-Api-Version": "2022-11-28",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                text = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise StageError(f"GitHub API {method} {path}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise StageError(f"GitHub API {method} {path}: {self.api_url} did not answer: {exc}") from None
        return json.loads(text) if text else None

    def set_status(self, sha: str, context: str, state: str, description: str) -> None:
        """A commit status (`success`, `failure` or `pending`) under `context` on commit `sha`."""
        body = {"state": state, "context": context, "description": description[:DESCRIPTION_LIMIT]}
        self.call("POST", f"/statuses/{sha}", body)

    def open_pull_request(self, head: str, base: str, title: str, body: str) -> tuple[int, str]:
        """Open a pull request of branch `head` into `base`; its number and web address."""
        found = self.call("POST", "/pulls", {"title": title, "head": head, "base": base, "body": body})
        return int(found["number"]), str(found.get("html_url", ""))

    def find_issue(self, label: str, marker: str) -> dict[str, Any] | None:
        """The open issue whose body carries `marker` (the newest when several), or None. Those labelled
        `label` are searched first; then every open issue, since GitHub silently drops the labels of a new
        issue when its author lacks push access ("Create an issue")."""
        for query in (f"&labels={urllib.parse.quote(label)}", ""):
            page = 1
            while True:
                found = self.call("GET", f"/issues?state=open{query}&per_page=100&page={page}")
                for issue in found:
                    if "pull_request" not in issue and marker in (issue.get("body") or ""):
                        return dict(issue)
                if len(found) < 100:
                    break
                page += 1
        return None

    def open_issue(self, title: str, body: str, labels: list[str]) -> tuple[int, str]:
        """Open an issue; its number and web address."""
        found = self.call("POST", "/issues", {"title": title, "body": body, "labels": labels})
        return int(found["number"]), str(found.get("html_url", ""))

    def comment_issue(self, number: int, body: str) -> str:
        """Comment on issue `number`; the comment's web address."""
        found = self.call("POST", f"/issues/{number}/comments", {"body": body})
        return str(found.get("html_url", ""))

    def dispatch_workflow(self, workflow: str, ref: str, inputs: Mapping[str, str]) -> None:
        """Start `workflow` (its file name) on branch `ref` with `inputs` (a `workflow_dispatch` event)."""
        self.call("POST", f"/actions/workflows/{workflow}/dispatches", {"ref": ref, "inputs": dict(inputs)})
