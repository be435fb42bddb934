"""GitOps promotion: the deploy is a commit. Write the image and model version into k8s/overlays/<env>,
commit with the lineage in the message, push to deploy.gitops; Argo CD syncs, Argo Rollouts rolls out.

Git only: the promote and rollback stages (pipeline/stages/promote.py) keep Git and the registry
consistent: the alias moves only after the push landed, a failed alias move pushes a revert, and a
rollback is a revert commit of the last promotion plus the alias moved back.

Over 400 lines on purpose: one file's life in Git (write, commit, push with retries, revert, read at a
commit, find the last promotion), each step a function the promote and rollback stages compose.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.console import Reporter
from pipeline.deploy.names import K8S_DIR, RELEASE_FILE
from pipeline.deploy.release_file import Release, parse_release, read_release
from pipeline.deploy.render import render_environment, write_files
from pipeline.errors import StageError

ACTION_TRAILER = "Deploy-Action"
ENV_TRAILER = "Deploy-Environment"


@dataclass(frozen=True)
class Lineage:
    """Where a deployed version comes from; every field ends up in the commit message."""

    model_name: str
    model_version: str
    git_sha: str
    image: str
    tag: str | None
    digest: str | None
    gate: str
    loadtest: str
    compatibility: str | None = None
    """Against the release serving the environment: `breaking` rolls out by rollout.breaking's plan."""
    model_sha256: str | None = None
    """The registry's `onnx_sha256` of the version (absent on versions registered before it was recorded)."""

    def release(self) -> Release:
        return Release(
            image=self.image,
            tag=self.tag or "unreleased",
            digest=self.digest,
            model_version=self.model_version,
            model_sha256=self.model_sha256,
            git_sha=self.git_sha,
            compatibility=self.compatibility,
        )


def lineage_from_tags(config: Config, version: str, tags: dict[str, Any]) -> Lineage:
    """Lineage of a registered version from its tags: `image_digest` (`repo@sha256:…`, set when the image
    was pushed) deploys by digest; otherwise `image` (`repo:tag`) names what was built."""
    image = str(tags.get("image") or "")
    if not image:
        raise StageError(
            f"version {version} has no `image` tag; run `python -m pipeline image --env {config.name}` first"
        )
    repository, tag, digest = config.image.repository, None, None
    pushed = str(tags.get("image_digest") or "")
    if "@sha256:" in pushed:
        repository, _, digest = pushed.partition("@")
    elif "@sha256:" in image:
        repository, _, digest = image.partition("@")
    elif image.startswith("sha256:"):  # recorded by `register --image sha256:…` before references were kept
        digest = image
    else:
        head, _, tail = image.rpartition(":")
        if "/" in tail or not head:
            raise StageError(f"version {version}: cannot read image reference {image!r}")
        repository, tag = head, tail
    if digest is None and config.deploy.require_digest:
        raise StageError(
            f"version {version} has no pushed image digest (image_digest unset, image={image}); "
            f"{config.name} requires one (deploy.require_digest): push the image (image.push: true) and "
            "re-run the image stage"
        )
    return Lineage(
        model_name=config.model.name,
        model_version=version,
        git_sha=str(tags.get("git_sha") or "unknown"),
        image=repository,
        tag=tag,
        digest=digest,
        gate=str(tags.get(f"gate.{config.name}") or "none"),
        loadtest=str(tags.get(f"loadtest.{config.name}") or "none"),
        model_sha256=str(tags.get("onnx_sha256") or "") or None,
    )


# --- git -------------------------------------------------------------------------------------------


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        reason = (result.stderr or result.stdout).strip().splitlines()
        raise StageError(f"git {' '.join(args)} failed in {repo}: {' | '.join(reason[-3:])}")
    return result.stdout.strip()


def require_remote(config: Config) -> str:
    remote = config.deploy.gitops.remote
    if not remote:
        raise StageError(
            f"--gitops needs a GitOps remote: set deploy.gitops.remote (a remote name or URL) and "
            f"deploy.gitops.branch in environments/{config.name}.yaml; nothing was written"
        )
    return remote


def ensure_clean(repo: Path) -> None:
    status = git(repo, "status", "--porcelain")
    if status:
        first = "; ".join(status.splitlines()[:3])
        raise StageError(f"refusing: {repo} has uncommitted changes ({first}); commit or stash them first")


def _push_or_undo(repo: Path, config: Config, reporter: Reporter) -> None:
    remote, branch = require_remote(config), config.deploy.gitops.branch
    try:
        git(repo, "push", remote, f"HEAD:refs/heads/{branch}")
    except StageError:
        git(repo, "reset", "--hard", "HEAD~1")  # the tree was clean before our commit: nothing else is lost
        raise
    reporter.note(f"pushed {git(repo, 'rev-parse', '--short', 'HEAD')} to {remote} {branch}")


SKIP_CI = "[skip ci]"
"""In every GitOps commit's subject: GitHub starts no push or pull_request workflow for a head commit whose
message holds it (docs.github.com, "Skipping workflow runs"), so a deploy commit neither re-runs CI nor
cancels the CI of the human commit it follows, and cannot start CD again (no loop)."""


def commit_message(config: Config, lineage: Lineage, trailers: Mapping[str, str] | None = None) -> str:
    what = lineage.digest or lineage.tag
    extra = "".join(f"{key}: {value}\n" for key, value in (trailers or {}).items())
    return (
        f"deploy({config.name}): {lineage.model_name} version {lineage.model_version} ({what}) {SKIP_CI}\n\n"
        f"Model: {lineage.model_name}\n"
        f"Model-Version: {lineage.model_version}\n"
        f"Git-Sha: {lineage.git_sha}\n"
        f"Image: {lineage.release().reference}\n"
        f"Gate: {lineage.gate}\n"
        f"Load-Test: {lineage.loadtest}\n"
        f"{extra}"
        f"{ENV_TRAILER}: {config.name}\n"
        f"{ACTION_TRAILER}: promote\n"
    )


def release_tag(model: str, environment: str, version: str) -> str:
    """The tag of a promotion commit: `<model>/<env>/v<version>` (the model's semver-style version)."""
    return f"{model}/{environment}/v{version}"


def write_records(repo: Path, records: Mapping[str, str | None]) -> list[str]:
    """Write (text) or remove (None) record files that are no overlay (k8s/quarantine/); the paths changed."""
    changed = []
    for name, text in records.items():
        path = repo / name
        if text is None:
            if path.is_file():
                path.unlink()
                changed.append(name)
        elif not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            changed.append(name)
    return changed


def tag_and_push(
    repo: Path, config: Config, tag: str, message: str, reporter: Reporter, *, commit: str = "HEAD"
) -> bool:
    """Tag `commit` (annotated) and push the tag; a tag that exists already (the release was promoted to
    this environment before) stays where it is, said so. Never fails the promotion: the commit is pushed."""
    found = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"refs/tags/{tag}"],
        cwd=repo,
        capture_output=True,
        check=False,
    )
    if found.returncode == 0:
        reporter.note(f"tag {tag} exists already (an earlier promotion of this release): left where it is")
        return False
    git(repo, "tag", "--annotate", tag, commit, "--message", message)
    try:
        git(repo, "push", require_remote(config), f"refs/tags/{tag}")
    except StageError as exc:
        reporter.warn(f"tag {tag} was not pushed ({exc}); the promotion commit was")
        return False
    reporter.note(f"tagged the promotion commit {tag} and pushed the tag")
    return True


def replaced(current: Release, release: Release) -> str | None:
    """What `release` replaces: the overlay's current release, or null when that is none (the first real
    release, which has no stable version to compare with); a re-promotion keeps what it said."""
    if current.reference == release.reference:
        return current.replaces
    return current.reference if current.released else None


def release_changes(
    repo: Path, config: Config, current: Release, release: Release
) -> tuple[dict[str, str], list[str]]:
    """The overlay files a promotion from `current` to `release` writes (path -> text) and removes: only
    those whose rendering differs between the two releases under this config, so a promotion never
    re-renders what it does not own (a late run cannot undo changes merged since). Refuses (StageError,
    nothing written) when one of them is not what this config renders with `current`: the environment's
    config or overlay differs between this run's commit and the branch head. A repository without the
    overlay yet gets all of it."""
    before = render_environment(config, current, repo)
    after = render_environment(config, release, repo)
    if not (repo / K8S_DIR / "overlays" / config.name / "kustomization.yaml").is_file():
        return after, []
    changed = {name: text for name, text in after.items() if before.get(name) != text}
    removed = [name for name in before if name not in after and (repo / name).is_file()]
    drifted = [
        name
        for name in [*changed, *removed]
        if ((repo / name).read_text(encoding="utf-8") if (repo / name).is_file() else None)
        != before.get(name)
    ]
    if drifted:
        raise StageError(
            f"refusing: {', '.join(drifted)} in {repo} differ from what environments/{config.name}.yaml renders "
            f"with the release they hold: the environment's config or overlay changed between this run's "
            f"commit and the branch head (or was not re-rendered). Promote from a run of the branch head, or "
            f"run `nox -s render` and commit; nothing was written"
        )
    return changed, removed


def commit_release(
    repo: Path,
    config: Config,
    lineage: Lineage,
    reporter: Reporter,
    *,
    records: Mapping[str, str | None] | None = None,
    trailers: Mapping[str, str] | None = None,
    tag: str | None = None,
) -> str:
    """Write what the release changes in the overlay (`release_changes`) and the `records` (quarantine
    files), commit it with the `trailers` and push; tag the commit `tag` when given; return the commit.
    Refuses on a dirty tree; on a failed push the commit is undone and nothing is left behind."""
    require_remote(config)
    ensure_clean(repo)
    release, written = _write_release(repo, config, lineage, records or {})
    if not written:
        reporter.note(f"k8s/overlays/{config.name} already deploys {release.reference}")
        return git(repo, "rev-parse", "HEAD")
    git(repo, "add", "--all", "--", *written)
    git(repo, "commit", "--quiet", "-m", commit_message(config, lineage, trailers))
    reporter.note(f"committed {', '.join(written)}")
    _push_or_undo(repo, config, reporter)
    if tag is not None:
        tag_and_push(repo, config, tag, commit_message(config, lineage, trailers), reporter)
    return git(repo, "rev-parse", "HEAD")


def propose_release(
    repo: Path,
    config: Config,
    lineage: Lineage,
    reporter: Reporter,
    *,
    branch: str,
    records: Mapping[str, str | None] | None = None,
    trailers: Mapping[str, str] | None = None,
) -> str:
    """The release's commit on a new branch `branch`, pushed to the GitOps remote as the head of a release
    pull request; the checkout returns to where it was. The commit carries no [skip ci]: the merge of the
    pull request must start the workflow that moves the alias. Returns the commit."""
    require_remote(config)
    ensure_clean(repo)
    where = subprocess.run(
        ["git", "symbolic-ref", "-q", "--short", "HEAD"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    back = (
        ["switch", "--quiet", where.stdout.strip()]
        if where.returncode == 0
        else ["switch", "--quiet", "--detach", git(repo, "rev-parse", "HEAD")]
    )
    git(repo, "switch", "--quiet", "--create", branch)
    try:
        release, written = _write_release(repo, config, lineage, records or {})
        if not written:
            raise StageError(
                f"k8s/overlays/{config.name} already deploys {release.reference}: nothing to propose"
            )
        git(repo, "add", "--all", "--", *written)
        git(
            repo,
            "commit",
            "--quiet",
            "-m",
            commit_message(config, lineage, trailers).replace(f" {SKIP_CI}", "", 1),
        )
        git(repo, "push", require_remote(config), f"HEAD:refs/heads/{branch}")
        proposed = git(repo, "rev-parse", "HEAD")
    finally:
        git(repo, *back)
        git(repo, "branch", "--quiet", "-D", branch)
    reporter.note(f"pushed {proposed[:12]} ({', '.join(written)}) to branch {branch}")
    return proposed


def _write_release(
    repo: Path, config: Config, lineage: Lineage, records: Mapping[str, str | None]
) -> tuple[Release, list[str]]:
    """Write the overlay files the release changes and the records; the release and the paths written."""
    if lineage.gate not in {"pass", "warn"}:
        raise StageError(
            f"refusing: version {lineage.model_version} has gate.{config.name}={lineage.gate}; nothing was written"
        )
    current = read_release(repo, config)
    release = lineage.release()
    release = replace(release, replaces=replaced(current, release))
    files, removed = release_changes(repo, config, current, release)
    written = write_files(repo, files)
    for name in removed:
        (repo / name).unlink()
    return release, written + removed + write_records(repo, records)


def last_promotion(repo: Path, config: Config) -> str | None:
    """The newest promotion commit of the environment that no later commit reverted."""
    log = git(repo, "log", "--format=%H%x00%B%x1e", "--", release_path(config))
    reverted: set[str] = set()
    for entry in filter(None, (e.strip() for e in log.split("\x1e"))):
        sha, _, body = entry.partition("\x00")
        for line in body.splitlines():
            if line.startswith("This reverts commit "):
                reverted.add(line.removeprefix("This reverts commit ").rstrip("."))
        promoted = f"{ACTION_TRAILER}: promote" in body and f"{ENV_TRAILER}: {config.name}" in body
        if promoted and sha not in reverted:
            return sha
    return None


def resolve_commit(repo: Path, revision: str) -> str:
    """The full SHA of `revision` (a SHA or a prefix); StageError when this repository does not have it."""
    try:
        return git(repo, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
    except StageError:
        raise StageError(
            f"commit {revision!r} is not in the git history of {repo}: fetch the GitOps branch, or pass the "
            "commit `promote --gitops` pushed"
        ) from None


def release_path(config: Config) -> str:
    return f"{K8S_DIR}/overlays/{config.name}/{RELEASE_FILE}"


def release_at(repo: Path, config: Config, commit: str) -> Release | None:
    """What k8s/overlays/ENV/release.yaml deploys at `commit`; None when this repository does not have
    the commit or the file."""
    shown = subprocess.run(
        ["git", "show", f"{commit}:{release_path(config)}"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    if shown.returncode != 0:
        return None
    return parse_release(shown.stdout, f"{commit}:{release_path(config)}")


def revert_last(
    repo: Path,
    config: Config,
    reporter: Reporter,
    *,
    records: Mapping[str, str | None] | None = None,
    trailers: Mapping[str, str] | None = None,
) -> str:
    """Revert the last promotion of the environment, with the `records` (the quarantine file) and
    `trailers`, commit and push; return the revert commit."""
    require_remote(config)
    ensure_clean(repo)
    target = last_promotion(repo, config)
    if target is None:
        raise StageError(f"no promotion commit of {config.name} to revert in {repo}")
    subject = git(repo, "log", "-1", "--format=%s", target)
    git(repo, "revert", "--no-commit", target)
    changed = write_records(repo, records or {})
    if changed:
        git(repo, "add", "--all", "--", *changed)
    extra = "".join(f"{key}: {value}\n" for key, value in (trailers or {}).items())
    message = (
        f"rollback({config.name}): revert {subject.replace(f' {SKIP_CI}', '')} {SKIP_CI}\n\n"
        f"This reverts commit {target}.\n\n"
        f"{extra}{ENV_TRAILER}: {config.name}\n{ACTION_TRAILER}: rollback\n"
    )
    git(repo, "commit", "--quiet", "-m", message)
    reporter.note(f"reverted {target[:12]} ({subject})")
    _push_or_undo(repo, config, reporter)
    return git(repo, "rev-parse", "HEAD")
