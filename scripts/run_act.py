"""Run the GitHub Actions workflows on this machine with act, offline (what `nox -s act` calls).

    python scripts/run_act.py [--event push|pull_request|workflow_dispatch] [--event-path FILE]
                              [--workflow FILE] [--dry-run] [-- ACT_ARGS...]
    python scripts/run_act.py --check        # every action pinned as locked, with an act stand-in (nox -s lint)

act runs in self-hosted mode (`.actrc`: `-P ubuntu-latest=-self-hosted`): steps run on this host.
It copies the working tree for `actions/checkout` by itself, but clones every other remote action at
job set-up, which fails offline. So each pinned `uses: owner/name@sha` of the workflows and of the
local composite actions is mapped with `--local-repository owner/name@sha=DIR` to a stand-in
`.github/act/actions/owner/name/action.yml`. Every pin must be the commit and tag recorded for that action
in `.github/actions.lock.yml` (`uses: owner/name@SHA # TAG`). The event file (`.github/act/EVENT.json`) carries
`"act": true` (jobs that cannot run here are guarded with `!github.event.act`) and the small profile
that keeps `nox -s act` short (`act_profile`, read by ci.yml). The upload/download-artifact
stand-ins hand files between jobs through `$ACT_ARTIFACT_DIR`, a fresh temporary folder per run.

Every run gets a private Docker engine (scripts/dockerd.sh, state under /var/tmp/model-cicd-act-dockerd)
with the Debian base image (scripts/base-image.sh), started here and stopped at the end: ci.yml's
`image` job builds and smoke-tests the image on it (`DOCKER_HOST`; the base image through the event's
`act_profile.image_args`, as no image can be pulled here).
`workflow_dispatch` (cd.yml) runs the release path with more real local parts: a container registry on
127.0.0.1 (`docker-registry serve`, the CNCF distribution registry; `vars.IMAGE_REGISTRY`) and a bare git
repository as the GitOps remote. act runs in a clone of this repository (with the working tree's
uncommitted files copied in) whose `origin` is that bare remote, so the deploy's GitOps commits land
there and never in this repository; the summary at the end names the pushed digest and the commits.

Over 400 lines on purpose: everything act needs offline (stand-ins, engine, registry, GitOps remote,
artifacts) is one script a person runs and reads top to bottom.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = Path(".github/workflows")
LOCAL_ACTIONS = Path(".github/actions")
EVENTS = Path(".github/act")
STAND_INS = Path(".github/act/actions")
LOCK = Path(".github/actions.lock.yml")
SCHEMAS_ENV = "K8S_SCHEMAS_DIR"
"""The CRD schema folder render --check reads (pipeline/deploy/validate.py)."""
EVENT_WORKFLOW = {"push": "ci.yml", "pull_request": "ci.yml", "workflow_dispatch": "cd.yml"}
"""The workflow each event runs by default (a push to main would also start cd.yml on GitHub)."""
BUILT_IN = frozenset({"actions/checkout"})
"""Actions act handles itself in self-hosted mode: checkout copies the working tree."""

LOCAL_RELEASE_EVENTS = frozenset({"workflow_dispatch"})
"""Events whose workflow pushes an image and commits to GitOps: run against the registry and remote."""
DOCKERD_DIR = "/var/tmp/model-cicd-act-dockerd"
"""State folder of the Docker engine run_act starts (its own, not the one the image tests use)."""
BASE_IMAGE = "model-cicd-base:bookworm"
SLUG_REMOTE = "act-slug"
SLUG_URL = "https://github.com/act-local/model-cicd.git"
"""act names `github.repository` after a remote's URL (`--remote-name`); nothing is fetched from it."""

_USES = re.compile(r"^\s*(?:-\s+)?uses:\s*['\"]?([^\s'\"#]+)['\"]?[ \t]*(?:#[ \t]*(\S+))?", re.MULTILINE)
_LOCK_LINE = re.compile(r"^([\w.-]+/[\w.-]+):\s*\{tag:\s*(\S+),\s*sha:\s*([0-9a-f]{40})\}\s*$", re.MULTILINE)
_SHA = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True, order=True)
class ActionRef:
    """One remote `uses: owner/name[/subpath]@ref`, and the file that uses it."""

    repo: str
    ref: str
    source: Path
    tag: str = ""
    """The version comment after the pin (`# v7.0.1`)."""

    @property
    def pinned(self) -> bool:
        return bool(_SHA.fullmatch(self.ref))

    def stand_in(self, root: Path) -> Path:
        return root / STAND_INS / self.repo


def workflow_files(root: Path) -> list[Path]:
    """The workflows and local composite actions whose `uses:` entries act will resolve."""
    files = [*(root / WORKFLOWS).glob("*.yml"), *(root / WORKFLOWS).glob("*.yaml")]
    files += [*(root / LOCAL_ACTIONS).glob("*/action.yml"), *(root / LOCAL_ACTIONS).glob("*/action.yaml")]
    return sorted(files)


def remote_actions(root: Path) -> list[ActionRef]:
    """Every remote action reference, in file order; local (`./`) and `docker://` ones are skipped."""
    found: list[ActionRef] = []
    for path in workflow_files(root):
        for target, tag in _USES.findall(path.read_text(encoding="utf-8")):
            if target.startswith(("./", "docker://")) or "@" not in target:
                continue
            name, ref = target.rsplit("@", 1)
            repo = "/".join(name.split("/")[:2])  # owner/name/sub/path -> owner/name
            found.append(ActionRef(repo, ref, path.relative_to(root), tag))
    return found


def lock(root: Path) -> dict[str, tuple[str, str]]:
    """{owner/name: (tag, sha)} from .github/actions.lock.yml (one `owner/name: {tag: T, sha: S}` a line)."""
    path = root / LOCK
    if not path.is_file():
        return {}
    return {repo: (tag, sha) for repo, tag, sha in _LOCK_LINE.findall(path.read_text(encoding="utf-8"))}


def problems(root: Path) -> list[str]:
    """What would break the workflows on GitHub (unpinned) or under act (no stand-in)."""
    out: list[str] = []
    locked = lock(root)
    for action in sorted(set(remote_actions(root))):
        where = f"{action.source}: {action.repo}@{action.ref}"
        if not action.pinned:
            out.append(f"{where}: pin by full commit SHA with a version comment")
        elif action.repo not in locked:
            out.append(
                f"{where}: not in {LOCK}; add `{action.repo}: {{tag: TAG, sha: SHA}}` after verifying it"
            )
        elif (action.tag, action.ref) != locked[action.repo]:
            tag, sha = locked[action.repo]
            out.append(f"{where} # {action.tag or '(no comment)'}: {LOCK} has {sha} # {tag}")
        if action.repo in BUILT_IN:
            continue
        if not (action.stand_in(root) / "action.yml").is_file():
            out.append(f"{where}: no act stand-in {STAND_INS / action.repo / 'action.yml'}")
    return out


@dataclass(frozen=True)
class LocalRelease:
    """The local parts of a release run: where act runs and what the workflows push to."""

    checkout: Path
    """Clone of this repository act runs in; its `origin` is the bare GitOps remote."""
    gitops_remote: Path
    registry: str
    """`127.0.0.1:PORT` of the container registry."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run(*command: str, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> str:
    done = subprocess.run(list(command), cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {(done.stderr or done.stdout).strip()[-800:]}")
    return done.stdout.strip()


def clone_working_tree(root: Path, checkout: Path) -> None:
    """A clone of `root` at HEAD with the working tree's uncommitted changes copied in (act copies the
    working tree, so a run sees them, as it does without the local parts)."""
    _run("git", "clone", "--quiet", "--no-hardlinks", str(root), str(checkout))
    changed = _run("git", "ls-files", "--modified", "--others", "--exclude-standard", "-z", cwd=root)
    for name in filter(None, changed.split("\0")):
        source, target = root / name, checkout / name
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    for name in filter(None, _run("git", "ls-files", "--deleted", "-z", cwd=root).split("\0")):
        (checkout / name).unlink(missing_ok=True)


def _wait_http(url: str, process: subprocess.Popen[bytes], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not answer {url} within {timeout_s:.0f} s")
        time.sleep(0.2)


@contextmanager
def local_engine(root: Path) -> Iterator[str]:
    """Start the private Docker engine and make sure the base image is there; yield its DOCKER_HOST and
    stop the engine on the way out, whatever happened."""
    env = {**os.environ, "MODEL_CICD_DOCKERD_DIR": DOCKERD_DIR}
    started = False
    try:
        docker_host = _run(str(root / "scripts/dockerd.sh"), "start", env=env).rpartition("DOCKER_HOST=")[2]
        started = True
        sys.stderr.write(f"docker engine at {docker_host.strip()}; base image {BASE_IMAGE}\n")
        _run(
            str(root / "scripts/base-image.sh"),
            BASE_IMAGE,
            env={**os.environ, "DOCKER_HOST": docker_host.strip()},
        )
        yield docker_host.strip()
    finally:
        if started:
            subprocess.run(
                [str(root / "scripts/dockerd.sh"), "stop"], env=env, check=False, capture_output=True
            )


@contextmanager
def local_release(root: Path, workdir: Path) -> Iterator[LocalRelease]:
    """Start the registry, make the bare remote and the clone; stop the registry on the way out,
    whatever happened."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        port = _free_port()
        registry_dir = workdir / "registry"
        config = workdir / "registry.yml"
        config.write_text(
            json.dumps(  # YAML is a superset of JSON
                {
                    "version": 0.1,
                    "storage": {"filesystem": {"rootdirectory": str(registry_dir)}},
                    "http": {"addr": f"127.0.0.1:{port}"},
                    "log": {"level": "warn"},
                }
            ),
            encoding="utf-8",
        )
        registry_bin = shutil.which("docker-registry")
        if registry_bin is None:
            raise SystemExit("docker-registry not found: apt-get install docker-registry (.ci/run does)")
        with (workdir / "registry.log").open("wb") as log:
            started.append(
                subprocess.Popen(
                    [registry_bin, "serve", str(config)], stdout=log, stderr=log, start_new_session=True
                )
            )
        _wait_http(f"http://127.0.0.1:{port}/v2/", started[-1], "docker-registry")

        remote, checkout = workdir / "gitops.git", workdir / "checkout"
        _run("git", "init", "--quiet", "--bare", "--initial-branch", "main", str(remote))
        clone_working_tree(root, checkout)
        _run("git", "push", "--quiet", str(remote), "HEAD:refs/heads/main", cwd=checkout)
        _run("git", "remote", "set-url", "origin", str(remote), cwd=checkout)
        _run("git", "remote", "add", SLUG_REMOTE, SLUG_URL, cwd=checkout)
        sys.stderr.write(
            f"registry at 127.0.0.1:{port}; GitOps remote {remote} (main at {_head(remote)[:12]})\n"
        )
        yield LocalRelease(checkout, remote, f"127.0.0.1:{port}")
    finally:
        for process in started:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def _head(remote: Path) -> str:
    return _run("git", "--git-dir", str(remote), "rev-parse", "refs/heads/main")


def release_summary(release: LocalRelease, start: str) -> list[str]:
    """What the run pushed: the registry's tags with their digests, and the GitOps commits on main."""
    lines = []
    with urllib.request.urlopen(f"http://{release.registry}/v2/_catalog", timeout=5) as response:
        repositories = json.load(response).get("repositories") or []
    for repository in repositories:
        with urllib.request.urlopen(
            f"http://{release.registry}/v2/{repository}/tags/list", timeout=5
        ) as response:
            tags = json.load(response).get("tags") or []
        for tag in tags:
            request = urllib.request.Request(
                f"http://{release.registry}/v2/{repository}/manifests/{tag}",
                method="HEAD",
                headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                digest = response.headers.get("Docker-Content-Digest")
            lines.append(f"registry: {release.registry}/{repository}:{tag} {digest}")
    log = _run("git", "--git-dir", str(release.gitops_remote), "log", "--format=%H %P %s", f"{start}..main")
    lines += [f"gitops: {line}" for line in reversed(log.splitlines())]
    return lines


def act_command(
    root: Path,
    event: str,
    *,
    event_path: Path | None = None,
    workflow: str | None = None,
    artifact_dir: Path,
    act: str = "act",
    extra: Sequence[str] = (),
    docker_host: str | None = None,
    release: LocalRelease | None = None,
) -> list[str]:
    """The act command line; `.actrc` in the repository adds the platform and offline flags."""
    workflow = workflow or EVENT_WORKFLOW[event]
    command = [
        act,
        event,
        "--workflows",
        str(WORKFLOWS / workflow),
        "--eventpath",
        str(event_path or root / EVENTS / f"{event}.json"),
        "--env",
        f"ACT_ARTIFACT_DIR={artifact_dir}",
    ]
    if docker_host is not None:
        command += ["--env", f"DOCKER_HOST={docker_host}"]
    if release is not None:
        command += ["--var", f"IMAGE_REGISTRY={release.registry}", "--remote-name", SLUG_REMOTE]
    # Hand on the CRD schema folder (render --check would otherwise download the pinned files).
    schemas = os.environ.get(SCHEMAS_ENV, "")
    if schemas and Path(schemas).is_dir():
        command += ["--env", f"{SCHEMAS_ENV}={schemas}"]
    for action in sorted({(a.repo, a.ref) for a in remote_actions(root) if a.repo not in BUILT_IN}):
        repo, ref = action
        command += ["--local-repository", f"{repo}@{ref}={root / STAND_INS / repo}"]
    return [*command, *extra]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/run_act.py", description=__doc__.splitlines()[0])
    parser.add_argument("--event", choices=sorted(EVENT_WORKFLOW), default="push")
    parser.add_argument("--event-path", type=Path, help="event JSON (default .github/act/EVENT.json)")
    parser.add_argument("--workflow", help="workflow file name (default: ci.yml, cd.yml for dispatch)")
    parser.add_argument("--dry-run", action="store_true", help="print the act command, run nothing")
    parser.add_argument("--check", action="store_true", help="check pins and stand-ins, run nothing")
    parser.add_argument("act_args", nargs="*", help="passed on to act (after `--`)")
    return parser


def main(argv: Sequence[str] | None = None, root: Path = ROOT) -> int:
    args = _parser().parse_args(argv)
    if args.check:
        found = problems(root)
        for line in found:
            sys.stderr.write(f"{line}\n")
        if not found:
            pins = {(a.repo, a.ref) for a in remote_actions(root)}
            sys.stderr.write(f"{len(pins)} pinned actions, each as locked in {LOCK}, each with a stand-in\n")
        return 1 if found else 0
    act = shutil.which("act") or "act"
    env = {**os.environ, "ACT_DISABLE_VERSION_CHECK": "1"}
    source = args.event_path or root / EVENTS / f"{args.event}.json"
    with tempfile.TemporaryDirectory(prefix="act-artifacts-") as artifacts:
        if args.dry_run:
            command = act_command(
                root,
                args.event,
                event_path=source,
                workflow=args.workflow,
                artifact_dir=Path(artifacts),
                act=act,
                extra=args.act_args,
            )
            sys.stderr.write(f"$ {' '.join(command)}\n")
            return 0
        with (
            tempfile.TemporaryDirectory(prefix="act-run-") as work_dir,
            local_engine(root) as docker_host,
            local_release(root, Path(work_dir))
            if args.event in LOCAL_RELEASE_EVENTS
            else nullcontext() as release,
        ):
            event = json.loads(source.read_text(encoding="utf-8"))
            event.setdefault("act_profile", {})["image_args"] = f"--set image.base_image={BASE_IMAGE}"
            event_path = Path(work_dir) / f"{args.event}.json"
            event_path.write_text(json.dumps(event), encoding="utf-8")
            command = act_command(
                root,
                args.event,
                event_path=event_path,
                workflow=args.workflow,
                artifact_dir=Path(artifacts),
                act=act,
                extra=args.act_args,
                docker_host=docker_host,
                release=release,
            )
            cwd = root if release is None else release.checkout
            sys.stderr.write(f"$ (in {cwd}) {' '.join(command)}\n")
            start = "" if release is None else _head(release.gitops_remote)
            code = subprocess.run(command, cwd=cwd, env=env, check=False).returncode
            if release is not None:
                for line in release_summary(release, start):
                    sys.stderr.write(f"{line}\n")
            return code


if __name__ == "__main__":
    sys.exit(main())
