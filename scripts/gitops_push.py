"""Run a GitOps command (`promote --gitops`, `rollback --gitops`) on the branch as it is now, retrying
when someone else pushed first.

    python scripts/gitops_push.py --worktree DIR [--remote origin] [--branch main] [--attempts 3] \
        [--same-config ENV [--config-dir environments]] \
        -- nox --non-interactive -s promote -- --workdir DIR --config-dir DIR/environments --env ENV --gitops

A deploy job checks out the commit that started the run, but by the time staging or prod deploys, dev
has already pushed its overlay commit to the branch: a commit made on the old checkout is rejected as
non-fast-forward. So the command runs in a worktree DIR at the branch's current head (fetched again
before every attempt), with the run's code. When the command fails, left nothing committed in DIR (a
rejected push is undone) and the branch moved meanwhile, it is run again on the new head; otherwise
the failure is the command's own and its exit code is returned at once.

A promotion re-renders the environment's overlay from its config. With `--same-config ENV` the command
runs only when `environments/ENV.yaml` and every file it extends (base.yaml) are the same at the run's
commit (the repository's HEAD) and at the branch head; the command is then given the head's files
(DIR/environments), so the overlay is rendered with the settings on the branch. When they differ, an
old run (say, a prod approval given late) would write its release with settings that were changed
since: it refuses, naming the files, and says to re-run CD from the current branch. A rollback (a
revert of the last promotion) needs no such check.

On success the worktree's head (the commit the command pushed) is written as the step output `revision`
(to GITHUB_OUTPUT), which `rollout --target kubernetes --revision` follows.

The job's workspace state (`artifacts/`, `.mlflow/`) is linked into DIR, so the registry the command
moves is the job's. The push credential, passed to git as an HTTP header in the environment (never
written to .git/config): with GITOPS_APP_ID and GITOPS_APP_PRIVATE_KEY, a GitHub App installation token
minted here for this repository with `contents: write` (it expires after an hour and needs no renewal;
the App can be on a protected branch's bypass list, docs/ci.md); else GITOPS_TOKEN. Commits carry a bot
identity unless one is set.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import posixpath
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

SHARED = ("artifacts", ".mlflow")
"""Workspace folders of the job that the command in the worktree reads and writes."""
BOT_NAME = "github-actions[bot]"
BOT_EMAIL = "41898282+github-actions[bot]@users.noreply.github.com"
EXTENDS = re.compile(r"^extends:[ \t]*['\"]?([^'\"#\s]+)", re.MULTILINE)
"""The top-level `extends: NAME` of an environment file (pipeline/config/loader.py): NAME.yaml in the
same folder. Read with a pattern: this script runs on the job's bare Python, without PyYAML."""
REFUSED = 1


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def app_jwt(app_id: str, private_key: str, now: float) -> str:
    """The JWT a GitHub App authenticates with: RS256, `iat` 60 s in the past, `exp` within 10 minutes,
    `iss` the App's ID (docs.github.com, "Generating a JSON Web Token (JWT) for a GitHub App"). Signed by
    `openssl dgst -sha256 -sign` (on every runner): the job's Python has no crypto package."""
    header = _b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    claims = _b64url(json.dumps({"iat": int(now) - 60, "exp": int(now) + 540, "iss": app_id}).encode())
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as key:  # created 0600
        key.write(private_key.strip() + "\n")
        key.flush()
        signed = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", key.name],
            input=f"{header}.{claims}".encode(),
            capture_output=True,
            check=False,
        )
    if signed.returncode != 0:
        raise SystemExit(
            f"GITOPS_APP_PRIVATE_KEY is not a usable PEM private key: {signed.stderr.decode()[-300:]}"
        )
    return f"{header}.{claims}.{_b64url(signed.stdout)}"


def _api(url: str, jwt: str, body: dict[str, object] | None = None) -> dict[str, object]:
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "POST",
        headers={
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {jwt}",
            "X-GitHub-Api-Version": "2022-11-28",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        data = json.load(response)
    if not isinstance(data, dict):
        raise SystemExit(f"{url} did not return an object")
    return data


def app_token(environ: Mapping[str, str], now: float | None = None) -> str:
    """An installation token of the GitHub App GITOPS_APP_ID for this repository, limited to
    `contents: write`: GET /repos/{owner}/{repo}/installation, then POST
    /app/installations/{id}/access_tokens (docs.github.com, "Generating an installation access token
    for a GitHub App")."""
    api = environ.get("GITHUB_API_URL", "https://api.github.com").rstrip("/")
    repository = environ["GITHUB_REPOSITORY"]
    jwt = app_jwt(
        environ["GITOPS_APP_ID"], environ["GITOPS_APP_PRIVATE_KEY"], time.time() if now is None else now
    )
    installation = _api(f"{api}/repos/{repository}/installation", jwt)
    granted = _api(
        f"{api}/app/installations/{installation['id']}/access_tokens",
        jwt,
        {"repositories": [repository.split("/", 1)[1]], "permissions": {"contents": "write"}},
    )
    token = str(granted["token"])
    sys.stdout.write(f"::add-mask::{token}\n")
    return token


def git_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment for git and the command: token header, bot identity."""
    env = dict(environ)
    app = environ.get("GITOPS_APP_ID", "") and environ.get("GITOPS_APP_PRIVATE_KEY", "")
    token = app_token(environ) if app else environ.get("GITOPS_TOKEN", "")
    if token:
        server = environ.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        sys.stdout.write(f"::add-mask::{basic}\n")
        count = int(environ.get("GIT_CONFIG_COUNT", "0"))
        env[f"GIT_CONFIG_KEY_{count}"] = f"http.{server}/.extraheader"
        env[f"GIT_CONFIG_VALUE_{count}"] = f"AUTHORIZATION: basic {basic}"
        env["GIT_CONFIG_COUNT"] = str(count + 1)
        # A release pull request is opened with it (pipeline/adapters/github_api.py).
        env["GITOPS_API_TOKEN"] = token
    for key, value in (
        ("GIT_AUTHOR_NAME", BOT_NAME),
        ("GIT_AUTHOR_EMAIL", BOT_EMAIL),
        ("GIT_COMMITTER_NAME", BOT_NAME),
        ("GIT_COMMITTER_EMAIL", BOT_EMAIL),
    ):
        env.setdefault(key, value)
    return env


def _git(repo: Path, env: Mapping[str, str], *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=repo, env=dict(env), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} failed in {repo}: {done.stderr.strip()}")
    return done.stdout.strip()


def fetch_head(repo: Path, env: Mapping[str, str], remote: str, branch: str) -> str:
    _git(repo, env, "fetch", "--quiet", remote, f"refs/heads/{branch}")
    return _git(repo, env, "rev-parse", "FETCH_HEAD")


def _show(repo: Path, env: Mapping[str, str], commit: str, path: str) -> str | None:
    """`path` at `commit`, or None when it is not there."""
    done = subprocess.run(
        ["git", "show", f"{commit}:{path}"],
        cwd=repo,
        env=dict(env),
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout if done.returncode == 0 else None


def config_chain(repo: Path, env: Mapping[str, str], commit: str, config_dir: str, name: str) -> list[str]:
    """`config_dir/NAME.yaml` and the files it extends, in order, at `commit` (repository paths)."""
    chain: list[str] = []
    path: str | None = posixpath.normpath(f"{config_dir}/{name}.yaml")
    while path is not None and path not in chain:
        chain.append(path)
        text = _show(repo, env, commit, path)
        found = EXTENDS.search(text or "")
        path = posixpath.normpath(f"{posixpath.dirname(path)}/{found.group(1)}.yaml") if found else None
    return chain


def changed_config(
    repo: Path, env: Mapping[str, str], run_commit: str, head: str, *, config_dir: str, name: str
) -> list[str]:
    """The environment's config files (either commit's chain) whose content differs between the two."""
    files = dict.fromkeys(
        config_chain(repo, env, run_commit, config_dir, name)
        + config_chain(repo, env, head, config_dir, name)
    )
    return [path for path in files if _show(repo, env, run_commit, path) != _show(repo, env, head, path)]


def prepare(repo: Path, worktree: Path, env: Mapping[str, str], head: str) -> None:
    """DIR at `head`, clean, with the job's workspace folders linked in and ignored by git."""
    if (worktree / ".git").exists():
        _git(worktree, env, "checkout", "--quiet", "--force", "--detach", head)
    else:
        _git(repo, env, "worktree", "add", "--quiet", "--detach", str(worktree), head)
    exclude = (
        Path(_git(repo, env, "rev-parse", "--path-format=absolute", "--git-common-dir")) / "info" / "exclude"
    )
    exclude.parent.mkdir(parents=True, exist_ok=True)
    lines = exclude.read_text(encoding="utf-8").splitlines() if exclude.is_file() else []
    missing = [f"/{name}" for name in SHARED if f"/{name}" not in lines]
    if missing:
        exclude.write_text("\n".join([*lines, *missing]) + "\n", encoding="utf-8")
    for name in SHARED:
        source, link = repo / name, worktree / name
        source.mkdir(exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(source.resolve(), target_is_directory=True)


def record_revision(revision: str, environ: Mapping[str, str]) -> None:
    """The branch head the command left (its pushed commit) as the step output `revision`: the rollout
    step follows exactly this commit into the cluster."""
    sys.stdout.write(f"revision {revision}\n")
    output = environ.get("GITHUB_OUTPUT", "")
    if output:
        with Path(output).open("a", encoding="utf-8") as handle:
            handle.write(f"revision={revision}\n")


def run(
    repo: Path,
    worktree: Path,
    command: Sequence[str],
    *,
    remote: str,
    branch: str,
    attempts: int,
    environ: Mapping[str, str],
    same_config: str | None = None,
    config_dir: str = "environments",
) -> int:
    env = git_environment(environ)
    run_commit = _git(repo, env, "rev-parse", "HEAD")
    code = 1
    for attempt in range(1, attempts + 1):
        head = fetch_head(repo, env, remote, branch)
        changed = (
            changed_config(repo, env, run_commit, head, config_dir=config_dir, name=same_config)
            if same_config
            else []
        )
        if changed:
            sys.stdout.write(
                f"::error title=config changed since this run::{', '.join(changed)} differ between this run's "
                f"commit {run_commit[:12]} and {remote}/{branch} at {head[:12]}: promoting {same_config} now "
                f"would deploy this run's release with settings that were changed since. Nothing was "
                f"committed. Re-run CD from the current {branch} (Actions > CD > Run workflow, or the next "
                f"push), which builds and deploys with the new settings.\n"
            )
            return REFUSED
        prepare(repo, worktree, env, head)
        sys.stdout.write(f"attempt {attempt}/{attempts} on {remote}/{branch} at {head[:12]}\n")
        sys.stdout.flush()
        code = subprocess.run(list(command), cwd=repo, env=env, check=False).returncode
        if code == 0:
            record_revision(_git(worktree, env, "rev-parse", "HEAD"), environ)
            return 0
        moved = fetch_head(repo, env, remote, branch)
        if moved == head or _git(worktree, env, "rev-parse", "HEAD") != head:
            # The branch did not move, or it moved by our own push (the command failed after it):
            # the failure is the command's own, and running it again would act twice.
            return code
        sys.stdout.write(
            f"::warning::{branch} moved to {moved[:12]} during attempt {attempt}; retrying on it\n"
        )
    sys.stdout.write(f"::error::{branch} kept moving: gave up after {attempts} attempts\n")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/gitops_push.py", description=__doc__.splitlines()[0])
    parser.add_argument("--worktree", type=Path, required=True, help="folder for the branch's worktree")
    parser.add_argument("--remote", default="origin")
    parser.add_argument("--branch", default="main")
    parser.add_argument("--attempts", type=int, default=3)
    parser.add_argument(
        "--same-config", metavar="ENV", help="refuse when ENV's config differs between the run and the head"
    )
    parser.add_argument(
        "--config-dir", default="environments", help="environment files, relative to the repo"
    )
    parser.add_argument("command", nargs="+", help="the command to run (after `--`)")
    args = parser.parse_args(argv)
    return run(
        Path.cwd(),
        args.worktree.resolve(),
        args.command,
        remote=args.remote,
        branch=args.branch,
        attempts=args.attempts,
        environ=os.environ,
        same_config=args.same_config,
        config_dir=args.config_dir,
    )


if __name__ == "__main__":
    sys.exit(main())
