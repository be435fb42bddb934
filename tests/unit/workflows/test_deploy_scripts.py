"""The scripts CD runs: the prod preflight against a real HTTP server on 127.0.0.1, and the GitOps
push retry against real git repositories (a bare remote that another clone pushes to meanwhile)."""

from __future__ import annotations

import base64
import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests._workflows import load_script

preflight = load_script("prod_preflight")
gitops_push = load_script("gitops_push")

# --- prod preflight -------------------------------------------------------------------------------------

ENVIRONMENTS: dict[str, tuple[int, dict[str, object]]] = {}
SEEN: list[tuple[str, str]] = []


class _Api(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        SEEN.append((self.path, self.headers.get("Authorization", "")))
        status, body = ENVIRONMENTS.get(self.path, (404, {"message": "Not Found"}))
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


PATH = "/repos/o/r/environments/prod"
REVIEWED: dict[str, object] = {
    "name": "prod",
    "protection_rules": [{"type": "required_reviewers", "reviewers": [{"type": "User"}]}],
}
UNREVIEWED: dict[str, object] = {
    "name": "prod",
    "protection_rules": [{"type": "wait_timer", "wait_timer": 5}],
}


def _run(api: str, capsys: pytest.CaptureFixture[str], **extra: str) -> tuple[int, str]:
    environ = {
        "GITHUB_API_URL": api,
        "GITHUB_REPOSITORY": "o/r",
        "GH_TOKEN": "t0ken",
        "GITHUB_EVENT_NAME": "push",
        "GITHUB_REF": "refs/heads/main",
        **extra,
    }
    code = preflight.main(environ)
    return code, capsys.readouterr().out


def test_prod_with_a_required_reviewer_passes(api: str, capsys: pytest.CaptureFixture[str]) -> None:
    ENVIRONMENTS[PATH] = (200, REVIEWED)
    assert _run(api, capsys) == (
        0,
        "::notice title=prod preflight::environment `prod` has 1 required reviewer(s)\n",
    )
    assert SEEN[-1] == (PATH, "Bearer t0ken")


@pytest.mark.parametrize(
    ("answer", "reason"),
    [((200, UNREVIEWED), "has no required reviewers"), (None, "does not exist: GitHub would create it")],
)
def test_prod_without_reviewers_stops_cd_unless_the_fork_accepts_it(
    api: str, capsys: pytest.CaptureFixture[str], answer: tuple[int, dict[str, object]] | None, reason: str
) -> None:
    ENVIRONMENTS.pop(PATH, None)
    if answer:
        ENVIRONMENTS[PATH] = answer
    code, out = _run(api, capsys)
    assert code == 1 and out.startswith("::error title=prod preflight::") and reason in out
    assert "ALLOW_UNPROTECTED_PROD=true" in out and "Settings > Environments of o/r" in out
    code, out = _run(api, capsys, ALLOW_UNPROTECTED_PROD="true")
    assert code == 0 and out.startswith("::warning") and reason in out


def test_prod_approved_by_a_release_pull_request_needs_no_environment_reviewer(
    api: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ENVIRONMENTS[PATH] = (200, UNREVIEWED)
    (tmp_path / "base.yaml").write_text("promotion:\n  from: null\n  approval: environment\n")
    (tmp_path / "prod.yaml").write_text(
        "extends: base\npromotion:\n  from: staging\n\n  approval: pull_request\n"
    )
    code, out = _run(api, capsys, CONFIG_DIR=str(tmp_path))
    assert code == 0 and "a release pull request approves prod instead" in out
    assert preflight.approval(tmp_path, "base") == "environment"
    (tmp_path / "prod.yaml").write_text(
        "extends: base\ndeploy:\n  approval: pull_request\n"
    )  # not promotion's
    assert preflight.approval(tmp_path) == "environment"
    assert _run(api, capsys, CONFIG_DIR=str(tmp_path))[0] == 1


def test_a_manual_run_to_prod_from_a_branch_is_refused(api: str, capsys: pytest.CaptureFixture[str]) -> None:
    ENVIRONMENTS[PATH] = (200, REVIEWED)
    code, out = _run(api, capsys, GITHUB_EVENT_NAME="workflow_dispatch", GITHUB_REF="refs/heads/feature")
    assert code == 1 and "only from main, this one from refs/heads/feature" in out
    assert _run(api, capsys, GITHUB_EVENT_NAME="workflow_dispatch")[0] == 0


def test_an_api_error_names_the_permission(api: str, capsys: pytest.CaptureFixture[str]) -> None:
    ENVIRONMENTS[PATH] = (403, {"message": "Resource not accessible by integration"})
    code, out = _run(api, capsys)
    assert code == 1 and "answered 403" in out and "actions: read" in out


# --- GitOps push on the branch as it is now ----------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@x",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@x",
    }
    done = subprocess.run(
        ["git", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
        env={**env, "PATH": "/usr/bin:/bin"},
    )
    return done.stdout.strip()


@pytest.fixture
def repos(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A bare remote, the job's clone (at the run's commit) and another clone that pushes meanwhile."""
    remote, job, other = tmp_path / "remote.git", tmp_path / "job", tmp_path / "other"
    subprocess.run(["git", "init", "--quiet", "--bare", "--initial-branch=main", str(remote)], check=True)
    subprocess.run(["git", "clone", "--quiet", str(remote), str(other)], check=True)
    (other / "README").write_text("x\n")
    _git(other, "add", "README")
    _git(other, "commit", "--quiet", "-m", "run's commit")
    _git(other, "push", "--quiet", "origin", "HEAD:main")
    subprocess.run(["git", "clone", "--quiet", str(remote), str(job)], check=True)
    (job / "artifacts").mkdir()
    (job / "artifacts" / "state").write_text("registry\n")
    return remote, job, other


# A deploy command like `promote --gitops`: commit in the worktree and push, reading the job's state.
# The first run, like dev's deploy racing this one, lets another clone push first.
DEPLOY = """
set -e
cd "$1"
test -f artifacts/state
if [ ! -f "$2/raced" ]; then
  touch "$2/raced"
  (cd "$2/other" && echo dev > dev && git add dev && git commit -qm "deploy(dev)" && git push -q origin HEAD:main)
fi
echo staging > staging && git add staging && git commit -qm "deploy(staging)"
# As pipeline/deploy/gitops.py does: a rejected push undoes the commit, so nothing of ours is left.
git push -q origin HEAD:main || { git reset -q --hard HEAD~1; exit 1; }
"""


def test_a_push_rejected_because_the_branch_moved_is_retried_on_the_new_head(
    repos: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    remote, job, _ = repos
    worktree = tmp_path / "gitops"
    outputs = tmp_path / "github_output"
    environ = {
        "PATH": "/usr/bin:/bin",
        "GITOPS_TOKEN": "s3cret",
        "GITHUB_SERVER_URL": "http://127.0.0.1:9",
        "GITHUB_OUTPUT": str(outputs),
    }
    code = gitops_push.run(
        job,
        worktree,
        ["sh", "-c", DEPLOY, "deploy", str(worktree), str(tmp_path)],
        remote="origin",
        branch="main",
        attempts=3,
        environ=environ,
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "attempt 1/3" in out and "main moved to" in out and "attempt 2/3" in out
    log = _git(remote, "log", "--format=%s%x09%an", "main").splitlines()
    assert [line.split("\t")[0] for line in log] == ["deploy(staging)", "deploy(dev)", "run's commit"]
    assert log[0].endswith("\tgithub-actions[bot]")  # the bot identity, with no git config of the job's
    # The pushed commit is the step's output `revision`: the rollout step follows exactly this commit.
    assert outputs.read_text() == f"revision={_git(remote, 'rev-parse', 'main')}\n"
    assert "s3cret" not in (job / ".git" / "config").read_text()  # the token stays in the environment
    assert "::add-mask::" in out


def test_a_failure_while_the_branch_stood_still_is_not_retried(
    repos: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _, job, _ = repos
    code = gitops_push.run(
        job,
        tmp_path / "gitops",
        ["sh", "-c", "exit 3"],
        remote="origin",
        branch="main",
        attempts=3,
        environ={"PATH": "/usr/bin:/bin"},
    )
    out = capsys.readouterr().out
    assert code == 3 and "attempt 1/3" in out and "attempt 2/3" not in out


def test_a_command_that_pushed_and_then_failed_is_not_run_again(
    repos: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    remote, job, _ = repos
    worktree = tmp_path / "gitops"
    pushed_then_failed = (
        'cd "$1" && git commit -q --allow-empty -m revert && git push -q origin HEAD:main && exit 4'
    )
    code = gitops_push.run(
        job,
        worktree,
        ["sh", "-c", pushed_then_failed, "rollback", str(worktree)],
        remote="origin",
        branch="main",
        attempts=3,
        environ={"PATH": "/usr/bin:/bin"},
    )
    out = capsys.readouterr().out
    assert code == 4 and "attempt 2/3" not in out
    assert _git(remote, "log", "--format=%s", "main").splitlines() == ["revert", "run's commit"]


def _environments(repo: Path, message: str, **files: str) -> None:
    for name, text in files.items():
        path = repo / "environments" / f"{name}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    _git(repo, "add", "environments")
    _git(repo, "commit", "--quiet", "-m", message)
    _git(repo, "push", "--quiet", "origin", "HEAD:main")


@pytest.fixture
def configured(repos: tuple[Path, Path, Path]) -> tuple[Path, Path]:
    """The run's commit has environments/{base,dev,staging}.yaml; the job's clone is at it."""
    _, job, other = repos
    _environments(
        other,
        "environments",
        base="replicas: 1\n",
        dev="extends: base\n",
        staging="# staging\nextends: 'base'  # shared defaults\nreplicas: 2\n",
    )
    _git(job, "pull", "--quiet", "origin", "main")
    return job, other


# What the promotion sees: the environment files it is given (the head's, in the worktree).
SHOW_CONFIG = 'cat "$1/environments/dev.yaml" > "$2/seen"'


@pytest.mark.parametrize(
    ("changed", "named"),
    [
        ({"base": "replicas: 3\n"}, "environments/base.yaml"),  # extended by staging
        ({"staging": "extends: base\nreplicas: 4\n"}, "environments/staging.yaml"),
    ],
)
def test_a_promotion_refuses_when_the_environments_config_changed_since_the_run(
    configured: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    changed: dict[str, str],
    named: str,
) -> None:
    """An old run approved late must not render its release with the settings of its own commit over those
    merged since: it stops, names the file and says to re-run CD from the current branch."""
    job, other = configured
    _environments(other, "settings changed on main", **changed)
    worktree = tmp_path / "gitops"
    code = gitops_push.run(
        job,
        worktree,
        ["sh", "-c", SHOW_CONFIG, "promote", str(worktree), str(tmp_path)],
        remote="origin",
        branch="main",
        attempts=3,
        environ={"PATH": "/usr/bin:/bin"},
        same_config="staging",
    )
    out = capsys.readouterr().out
    assert code == gitops_push.REFUSED and not (tmp_path / "seen").exists(), out
    assert f"::error title=config changed since this run::{named} differ" in out
    assert "Re-run CD from the current main" in out and "Nothing was committed" in out
    # A rollback needs no such check: the same run without --same-config goes ahead.
    assert (
        gitops_push.run(
            job,
            worktree,
            ["sh", "-c", SHOW_CONFIG, "rollback", str(worktree), str(tmp_path)],
            remote="origin",
            branch="main",
            attempts=1,
            environ={"PATH": "/usr/bin:/bin"},
        )
        == 0
    )


def test_a_promotion_goes_ahead_with_the_heads_files_when_only_another_environment_changed(
    configured: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job, other = configured
    _environments(other, "dev changed on main", dev="extends: base\nreplicas: 5\n")
    worktree = tmp_path / "gitops"
    code = gitops_push.run(
        job,
        worktree,
        ["sh", "-c", SHOW_CONFIG, "promote", str(worktree), str(tmp_path)],
        remote="origin",
        branch="main",
        attempts=3,
        environ={"PATH": "/usr/bin:/bin"},
        same_config="staging",
    )
    assert code == 0, capsys.readouterr().out
    assert (tmp_path / "seen").read_text() == "extends: base\nreplicas: 5\n"  # the head's, not the run's
    assert gitops_push.changed_config(
        job, {}, "HEAD", "origin/main", config_dir="environments", name="dev"
    ) == ["environments/dev.yaml"]
    assert gitops_push.config_chain(job, {}, "HEAD", "environments", "staging") == [
        "environments/staging.yaml",
        "environments/base.yaml",
    ]


def test_the_token_becomes_an_auth_header_in_the_environment_only() -> None:
    env = gitops_push.git_environment({"GITOPS_TOKEN": "abc", "GITHUB_SERVER_URL": "https://github.com"})
    assert env["GIT_CONFIG_COUNT"] == "1"
    assert env["GIT_CONFIG_KEY_0"] == "http.https://github.com/.extraheader"
    assert env["GIT_CONFIG_VALUE_0"] == "AUTHORIZATION: basic eC1hY2Nlc3MtdG9rZW46YWJj"
    assert env["GIT_COMMITTER_NAME"] == "github-actions[bot]"
    assert "GIT_CONFIG_COUNT" not in gitops_push.git_environment({})


# --- the push credential: a GitHub App installation token -----------------------------------------------

APP_CALLS: list[tuple[str, str, str, dict[str, object]]] = []


class _AppApi(BaseHTTPRequestHandler):
    """GitHub's two App endpoints: the repository's installation, and an installation token."""

    def _answer(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        APP_CALLS.append(("GET", self.path, self.headers.get("Authorization", ""), {}))
        self._answer(200, {"id": 42})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        APP_CALLS.append(("POST", self.path, self.headers.get("Authorization", ""), body))
        self._answer(201, {"token": "ghs_installation", "expires_at": "2026-12-06T23:00:00Z"})

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_github_app_mints_the_push_credential(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """docs.github.com "Generating a JSON Web Token (JWT) for a GitHub App" (RS256; iat 60 s in the past,
    exp at most 10 minutes ahead, iss the App ID) and "Generating an installation access token": the token
    is asked for this repository only, with contents: write, and preferred over GITOPS_TOKEN."""
    key, public = tmp_path / "app.pem", tmp_path / "app.pub"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "RSA", "-out", str(key)], check=True, capture_output=True
    )
    subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(public)], check=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AppApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = gitops_push.git_environment(
            {
                "GITOPS_APP_ID": "123",
                "GITOPS_APP_PRIVATE_KEY": key.read_text(),
                "GITOPS_TOKEN": "a-pat-that-is-not-used",
                "GITHUB_API_URL": f"http://127.0.0.1:{server.server_address[1]}",
                "GITHUB_REPOSITORY": "o/r",
                "GITHUB_SERVER_URL": "https://github.com",
            }
        )
    finally:
        server.shutdown()
        server.server_close()
    (get, path, auth, _), (post, token_path, _, body) = APP_CALLS
    assert (get, path, post, token_path) == (
        "GET",
        "/repos/o/r/installation",
        "POST",
        "/app/installations/42/access_tokens",
    )
    assert body == {"repositories": ["r"], "permissions": {"contents": "write"}}
    header, claims, signature = auth.removeprefix("Bearer ").split(".")

    def decode(part: str) -> dict[str, int | str]:
        decoded: dict[str, int | str] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        return decoded

    assert decode(header) == {"alg": "RS256", "typ": "JWT"}
    payload = decode(claims)
    assert payload["iss"] == "123" and 0 < int(payload["exp"]) - int(payload["iat"]) <= 600
    (tmp_path / "sig").write_bytes(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    verified = subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", str(public), "-signature", str(tmp_path / "sig")],
        input=f"{header}.{claims}".encode(),
        capture_output=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout
    expected = base64.b64encode(b"x-access-token:ghs_installation").decode()
    assert env["GIT_CONFIG_VALUE_0"] == f"AUTHORIZATION: basic {expected}"
    assert "::add-mask::ghs_installation" in capsys.readouterr().out
