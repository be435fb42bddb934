"""A local stand-in of the GitHub REST API for one repository, enforcing the rules the repository's files
declare as GitHub does, and recording every call.

It serves what a release pull request needs (pipeline/release/approval.py, scripts/release_evidence.py):
open and read pull requests and their files, commit statuses and combined status, reviews, and merging; and
what the monitor needs (pipeline/stages/monitor.py): list, open and comment on issues, and dispatch a
workflow, refused (422) unless the workflow file at that ref has a `workflow_dispatch` trigger declaring
every input given. A
merge is refused (405) unless the base branch's rulesets (`.github/rulesets/*.json` at the base, as a fork
imports them) hold: under `pull_request`, the approvals counted and, with `require_code_owner_review`, an
approval from a code owner (the last matching line of `.github/CODEOWNERS`, teams resolved through `teams`)
of every changed file that has one; under `required_status_checks`, each context's latest status on the
head is `success`. Authors cannot approve their own pull request (422). The merge is a real `--no-ff`
merge pushed to the bare repository that plays the remote.

Documented by GitHub: "Create a workflow dispatch event" (204; the workflow must have a
workflow_dispatch trigger; inputs it does not declare are refused), "List repository issues" (pull requests
are issues too, marked by `pull_request`), "About code owners" (the last matching pattern takes precedence; code owner review
on branches that require it), "Available rules for rulesets" (require a pull request before merging,
require status checks to pass), "Merge a pull request" (405 when the pull request is not mergeable).
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

RULESETS = ".github/rulesets"
CODEOWNERS = ".github/CODEOWNERS"


@dataclass
class PullRequest:
    number: int
    title: str
    head: str
    base: str
    body: str
    author: str
    head_sha: str
    state: str = "open"
    merged: bool = False
    merge_commit_sha: str | None = None
    reviews: list[dict[str, Any]] = field(default_factory=list)

    def json(self, repository: str) -> dict[str, Any]:
        return {
            "number": self.number,
            "title": self.title,
            "body": self.body,
            "state": self.state,
            "merged": self.merged,
            "merge_commit_sha": self.merge_commit_sha,
            "html_url": f"https://github.com/{repository}/pull/{self.number}",
            "user": {"login": self.author},
            "head": {"ref": self.head, "sha": self.head_sha},
            "base": {"ref": self.base},
        }


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _git(remote: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "--git-dir", str(remote), *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise Refused(422, f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def owners_of(codeowners: str, path: str) -> list[str]:
    """The owners CODEOWNERS gives `path`: the last matching line wins (an empty owner list unowns)."""
    found: list[str] = []
    for raw in codeowners.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        pattern, *owners = line.split()
        if _matches(pattern, path):
            found = owners
    return found


def _matches(pattern: str, path: str) -> bool:
    anchored = pattern.startswith("/")
    pattern = pattern.lstrip("/")
    if pattern.endswith("/"):
        return path.startswith(pattern) if anchored else f"/{pattern}" in f"/{path}"
    if anchored:
        return fnmatch.fnmatch(path, pattern) or path.startswith(f"{pattern}/")
    return any(fnmatch.fnmatch(part, pattern) for part in [path, *path.split("/")])


@dataclass
class GitHubStandIn:
    """The API of `repository`, whose git remote is the bare repository `remote`. `tokens` maps a bearer
    token to its user's login; `teams` maps `@org/team` to its members."""

    remote: Path
    repository: str
    tokens: Mapping[str, str]
    teams: Mapping[str, set[str]] = field(default_factory=dict)
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    """(user, method, path) of every call, in order."""
    pulls: dict[int, PullRequest] = field(default_factory=dict)
    statuses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    issues: dict[int, dict[str, Any]] = field(default_factory=dict)
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    dispatches: list[dict[str, Any]] = field(default_factory=list)
    """(workflow, ref, inputs) of every accepted workflow dispatch."""
    push_access: bool = True
    """Without it GitHub silently drops the labels of a new issue ("Create an issue": only users with push
    access can set labels)."""

    # --- the rules -----------------------------------------------------------------------------------

    def _file(self, ref: str, path: str) -> str | None:
        done = subprocess.run(
            ["git", "--git-dir", str(self.remote), "show", f"{ref}:{path}"],
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout if done.returncode == 0 else None

    def rulesets(self, base: str) -> list[dict[str, Any]]:
        """The active branch rulesets of the base branch's own files that target it."""
        listed = subprocess.run(
            ["git", "--git-dir", str(self.remote), "ls-tree", "--name-only", f"{base}:{RULESETS}"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        found = []
        for name in listed.splitlines():
            text = self._file(base, f"{RULESETS}/{name}")
            ruleset = json.loads(text or "{}")
            include = ruleset.get("conditions", {}).get("ref_name", {}).get("include", [])
            targets = "~DEFAULT_BRANCH" in include or "~ALL" in include or f"refs/heads/{base}" in include
            if ruleset.get("enforcement") == "active" and ruleset.get("target") == "branch" and targets:
                found.append(ruleset)
        return found

    def changed_files(self, pull: PullRequest) -> list[str]:
        return _git(self.remote, "diff", "--name-only", f"{pull.base}...{pull.head_sha}").splitlines()

    def _approvers(self, pull: PullRequest, dismiss_stale: bool) -> set[str]:
        latest: dict[str, dict[str, Any]] = {}
        for review in pull.reviews:
            if review["state"] in {"APPROVED", "CHANGES_REQUESTED"}:
                latest[review["user"]] = review
        return {
            user
            for user, review in latest.items()
            if review["state"] == "APPROVED" and (not dismiss_stale or review["commit_id"] == pull.head_sha)
        }

    def violations(self, pull: PullRequest) -> list[str]:
        """Why `pull` may not merge now (empty: it may), worded as GitHub words them."""
        problems = []
        for ruleset in self.rulesets(pull.base):
            for rule in ruleset.get("rules", []):
                parameters = rule.get("parameters", {})
                if rule["type"] == "pull_request":
                    approvers = self._approvers(pull, bool(parameters.get("dismiss_stale_reviews_on_push")))
                    needed = int(parameters.get("required_approving_review_count", 0))
                    if len(approvers) < needed:
                        problems.append(
                            f"At least {needed} approving review is required by reviewers with write access."
                        )
                    if parameters.get("require_code_owner_review"):
                        codeowners = self._file(pull.base, CODEOWNERS) or ""
                        for path in self.changed_files(pull):
                            owners = owners_of(codeowners, path)
                            members = (
                                set().union(*(self.teams.get(o, {o.lstrip("@")}) for o in owners))
                                if owners
                                else set()
                            )
                            if owners and not approvers & members:
                                problems.append(
                                    f"Waiting on code owner review from {' '.join(owners)} ({path})."
                                )
                elif rule["type"] == "required_status_checks":
                    latest = {s["context"]: s for s in self.statuses.get(pull.head_sha, [])}
                    for check in parameters.get("required_status_checks", []):
                        status = latest.get(check["context"])
                        if status is None:
                            problems.append(f'Required status check "{check["context"]}" is expected.')
                        elif status["state"] != "success":
                            problems.append(
                                f'Required status check "{check["context"]}" is {status["state"]}.'
                            )
        return list(dict.fromkeys(problems))

    # --- the endpoints -------------------------------------------------------------------------------

    def handle(self, user: str, method: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        """The answer (status, JSON) to one call; `Refused` carries GitHub's refusal."""
        self.calls.append((user, method, path))
        route, _, query = path.partition("?")
        route = route.removeprefix(f"/repos/{self.repository}")
        routes: dict[tuple[str, str], Callable[[re.Match[str]], tuple[int, Any]]] = {
            ("POST", r"/pulls"): lambda _: (201, self._open(user, body)),
            ("GET", r"/pulls/(\d+)"): lambda m: (200, self._pull(int(m[1])).json(self.repository)),
            ("GET", r"/pulls/(\d+)/files"): lambda m: (200, self._files(self._pull(int(m[1])), query)),
            ("POST", r"/pulls/(\d+)/reviews"): lambda m: (
                200,
                self._review(user, self._pull(int(m[1])), body),
            ),
            ("PUT", r"/pulls/(\d+)/merge"): lambda m: (200, self._merge(self._pull(int(m[1])))),
            ("POST", r"/statuses/([0-9a-f]{40})"): lambda m: (201, self._status(user, m[1], body)),
            ("GET", r"/commits/([0-9a-f]{40})/status"): lambda m: (200, self._combined(m[1])),
            ("GET", r"/issues"): lambda _: (200, self._list_issues(query)),
            ("POST", r"/issues"): lambda _: (201, self._open_issue(user, body)),
            ("POST", r"/issues/(\d+)/comments"): lambda m: (201, self._comment(user, int(m[1]), body)),
            ("POST", r"/actions/workflows/([^/]+)/dispatches"): lambda m: self._dispatch(m[1], body),
        }
        for (verb, pattern), answer in routes.items():
            if verb == method and (match := re.fullmatch(pattern, route)):
                return answer(match)
        raise Refused(404, f"Not Found: {method} {path}")

    def _list_issues(self, query: str) -> list[dict[str, Any]]:
        params = dict(item.partition("=")[::2] for item in query.split("&") if item)
        wanted = {label for label in urllib.parse.unquote(params.get("labels", "")).split(",") if label}
        state, page = params.get("state", "open"), int(params.get("page", "1"))
        per_page = int(params.get("per_page", "30"))
        found = [
            issue
            for issue in sorted(self.issues.values(), key=lambda issue: -int(issue["number"]))
            if (state == "all" or issue["state"] == state) and wanted <= set(issue["labels"])
        ]
        return [
            {**issue, "labels": [{"name": name} for name in issue["labels"]]}
            for issue in found[(page - 1) * per_page : page * per_page]
        ]

    def _open_issue(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        if not body.get("title"):
            raise Refused(422, "Validation Failed: title is missing")
        number = len(self.issues) + len(self.pulls) + 1
        self.issues[number] = {
            "number": number,
            "title": body["title"],
            "body": body.get("body", ""),
            "labels": list(body.get("labels", [])) if self.push_access else [],
            "state": "open",
            "user": {"login": user},
            "html_url": f"https://github.com/{self.repository}/issues/{number}",
        }
        return {**self.issues[number], "labels": [{"name": n} for n in self.issues[number]["labels"]]}

    def _comment(self, user: str, number: int, body: dict[str, Any]) -> dict[str, Any]:
        if number not in self.issues:
            raise Refused(404, f"issue {number}: Not Found")
        comment = {"user": {"login": user}, "body": body.get("body", "")}
        self.comments.setdefault(number, []).append(comment)
        index = len(self.comments[number])
        return {**comment, "html_url": f"{self.issues[number]['html_url']}#issuecomment-{index}"}

    def _dispatch(self, workflow: str, body: dict[str, Any]) -> tuple[int, None]:
        ref = str(body.get("ref", ""))
        text = self._file(ref, f".github/workflows/{workflow}")
        if text is None:
            raise Refused(404, f"Not Found: workflow {workflow} at {ref}")
        data = yaml.safe_load(text) or {}
        triggers = data.get("on", data.get(True)) or {}
        if not isinstance(triggers, dict) or "workflow_dispatch" not in triggers:
            raise Refused(422, "Workflow does not have 'workflow_dispatch' trigger")
        declared = set((triggers["workflow_dispatch"] or {}).get("inputs") or {})
        unexpected = sorted(set(body.get("inputs") or {}) - declared)
        if unexpected:
            raise Refused(422, f"Unexpected inputs provided: {unexpected}")
        self.dispatches.append({"workflow": workflow, "ref": ref, "inputs": dict(body.get("inputs") or {})})
        return 204, None

    def _files(self, pull: PullRequest, query: str) -> list[dict[str, str]]:
        page = dict(item.partition("=")[::2] for item in query.split("&") if item).get("page", "1")
        return [{"filename": name} for name in self.changed_files(pull)] if page == "1" else []

    def _status(self, user: str, sha: str, body: dict[str, Any]) -> dict[str, Any]:
        status = {
            "context": body["context"],
            "state": body["state"],
            "description": body.get("description", ""),
        }
        self.statuses.setdefault(sha, []).append({**status, "creator": user})
        return status

    def _combined(self, sha: str) -> dict[str, Any]:
        latest = {s["context"]: s for s in self.statuses.get(sha, [])}
        states = {s["state"] for s in latest.values()}
        failed, waiting = states & {"failure", "error"}, "pending" in states or not states
        combined = "failure" if failed else "pending" if waiting else "success"
        return {"state": combined, "sha": sha, "statuses": list(latest.values())}

    def _pull(self, number: int) -> PullRequest:
        if number not in self.pulls:
            raise Refused(404, f"pull request {number}: Not Found")
        return self.pulls[number]

    def _open(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        head = _git(self.remote, "rev-parse", f"refs/heads/{body['head']}")
        number = len(self.pulls) + 1
        self.pulls[number] = PullRequest(
            number, body["title"], body["head"], body["base"], body.get("body", ""), user, head
        )
        return self.pulls[number].json(self.repository)

    def _review(self, user: str, pull: PullRequest, body: dict[str, Any]) -> dict[str, Any]:
        state = {"APPROVE": "APPROVED", "REQUEST_CHANGES": "CHANGES_REQUESTED", "COMMENT": "COMMENTED"}[
            body["event"]
        ]
        if user == pull.author and state != "COMMENTED":
            raise Refused(422, "Unprocessable Entity: Can not approve your own pull request")
        review = {"user": user, "state": state, "commit_id": pull.head_sha}
        pull.reviews.append(review)
        return review

    def _merge(self, pull: PullRequest) -> dict[str, Any]:
        if pull.merged:
            raise Refused(405, "Pull Request is not mergeable")
        problems = self.violations(pull)
        if problems:
            raise Refused(405, "Repository rule violations found\n\n" + "\n".join(problems))
        with tempfile.TemporaryDirectory(prefix="stand-in-merge-") as work:
            subprocess.run(
                ["git", "clone", "--quiet", "--branch", pull.base, str(self.remote), work], check=True
            )
            identity = ["-c", "user.name=GitHub", "-c", "user.email=noreply@github.com"]
            message = f"Merge pull request #{pull.number} from {self.repository.split('/')[0]}/{pull.head}\n\n{pull.title}"
            subprocess.run(
                ["git", *identity, "merge", "--quiet", "--no-ff", "-m", message, pull.head_sha],
                cwd=work,
                check=True,
            )
            subprocess.run(
                ["git", "push", "--quiet", "origin", f"HEAD:refs/heads/{pull.base}"], cwd=work, check=True
            )
            pull.merge_commit_sha = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True, check=True
            ).stdout.strip()
        pull.merged, pull.state = True, "closed"
        return {"merged": True, "sha": pull.merge_commit_sha, "message": "Pull Request successfully merged"}


def bare_remote(folder: Path, files: Mapping[str, str]) -> Path:
    """A bare repository at `folder` whose branch main holds `files` (path -> text) in one commit."""
    work = folder.with_name(f"{folder.name}-work")
    for path, text in files.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(text, encoding="utf-8")
    git = ["git", "-c", "user.name=dev", "-c", "user.email=dev@example.com", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    subprocess.run([*git, "-C", str(work), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-q", "-m", "files"], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(folder)], check=True)
    return folder


@contextmanager
def serving(stand_in: GitHubStandIn) -> Iterator[str]:
    """Serve `stand_in` on a free loopback port; yield its API URL."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, method: str) -> None:
            token = self.headers.get("Authorization", "").removeprefix("Bearer ").removeprefix("token ")
            user = stand_in.tokens.get(token)
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            try:
                if user is None:
                    raise Refused(401, "Bad credentials")
                status, answer = stand_in.handle(user, method, self.path, body)
            except Refused as exc:
                status, answer = exc.status, {"message": str(exc)}
            data = b"" if answer is None else json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer("GET")

        def do_POST(self) -> None:
            self._answer("POST")

        def do_PUT(self) -> None:
            self._answer("PUT")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
