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
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
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


def act_command(
    root: Path,
    event: str,
    *,
    event_path: Path | None = None,
    workflow: str | None = None,
    artifact_dir: Path,
    act: str = "act",
    extra: Sequence[str] = (),
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
    # act runs the jobs in a copy of the tree with no ../shared beside it: hand on the CRD schema folder
    # (render --check would otherwise download the pinned files, as on a fork).
    schemas = os.environ.get(SCHEMAS_ENV) or str(root.parent / "shared" / "schemas" / "crds")
    if Path(schemas).is_dir():
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
    with tempfile.TemporaryDirectory(prefix="act-artifacts-") as artifacts:
        command = act_command(
            root,
            args.event,
            event_path=args.event_path,
            workflow=args.workflow,
            artifact_dir=Path(artifacts),
            act=act,
            extra=args.act_args,
        )
        sys.stderr.write(f"$ {' '.join(command)}\n")
        if args.dry_run:
            return 0
        env = {**os.environ, "ACT_DISABLE_VERSION_CHECK": "1"}
        return subprocess.run(command, cwd=root, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
