"""Quarantine: a release that failed (an aborted rehearsal or cluster rollout, a rollback) is rejected, and
no promotion ships it again until a person lifts the rejection with a reason.

A release is a model version and the image that serves it. The registry holds the record: version tag
`quarantine`, a JSON list of events (`rejected` true with the image, reason, time and environment;
false when lifted, with the reason and who). The last event decides. A rejection with no image (a local
rehearsal serves the model, not an image) covers every image of the version; one with an image covers
that image only: the same model in a fixed image is another release.

Git holds it too: the rollback commit of `rollback --gitops` writes `k8s/quarantine/<env>.yaml` (the
rejections made in that environment), and `promote --gitops --unquarantine` removes the entry in its
promotion commit, with the reason as a trailer. Argo CD reads neither: they are records, not manifests.
"""

from __future__ import annotations

import getpass
import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pipeline.adapters import registry
from pipeline.config import Config
from pipeline.console import Reporter
from pipeline.deploy.names import K8S_DIR
from pipeline.errors import StageError

if TYPE_CHECKING:
    from mlflow import MlflowClient

TAG = "quarantine"
UNQUARANTINE_TRAILER = "Unquarantine-Reason"
QUARANTINE_TRAILER = "Quarantine"


@dataclass(frozen=True)
class Event:
    """One rejection (`rejected`) or its lifting."""

    rejected: bool
    reason: str
    at: str
    environment: str
    image: str | None = None
    """The image rejected with the model version; None: every image of the version."""
    action: str = ""
    """What rejected it (`rehearsal`, `rollout`, `rollback`) or lifted it (`unquarantine`)."""
    by: str = ""

    def line(self) -> str:
        what = "REJECTED" if self.rejected else "lifted"
        image = f" (image {self.image})" if self.image else ""
        by = f" by {self.by}" if self.by else ""
        return f"{what} in {self.environment} at {self.at}{by}{image}: {self.reason}"


def actor() -> str:
    """Who acts: the GitHub actor in a workflow, else the local user."""
    return os.environ.get("GITHUB_ACTOR") or getpass.getuser()


def events(tags: dict[str, Any]) -> list[Event]:
    raw = tags.get(TAG)
    return [Event(**event) for event in json.loads(raw)] if raw else []


def rejection(tags: dict[str, Any], image: str | None) -> Event | None:
    """The rejection that holds for this version with `image` (its tags), None when it may be promoted."""
    found = events(tags)
    if not found or not found[-1].rejected:
        return None
    last = found[-1]
    return last if last.image is None or image is None or last.image == image else None


def reject(
    mlflow: MlflowClient,
    config: Config,
    version: str,
    *,
    image: str | None,
    reason: str,
    action: str,
    now: datetime,
    reporter: Reporter,
) -> Event:
    """Record a rejection of `version` (with `image`) in the registry."""
    event = Event(True, reason, now.isoformat(timespec="seconds"), config.name, image, action, actor())
    _append(mlflow, config, version, event)
    reporter.warn(f"quarantined {config.model.name} version {version}: {event.line()}")
    reporter.note(f"no promotion ships it again; it passes {lift_hint(config, version)}")
    return event


def lift(
    mlflow: MlflowClient, config: Config, version: str, *, reason: str, now: datetime, reporter: Reporter
) -> Event:
    """Lift the rejection of `version` (a person's decision, with the reason)."""
    if not reason.strip():
        raise StageError("--unquarantine needs --reason TEXT: why the rejected release may ship after all")
    event = Event(
        False, reason, now.isoformat(timespec="seconds"), config.name, None, "unquarantine", actor()
    )
    _append(mlflow, config, version, event)
    reporter.warn(f"lifted the quarantine of {config.model.name} version {version}: {event.line()}")
    return event


def _append(mlflow: MlflowClient, config: Config, version: str, event: Event) -> None:
    current = mlflow.get_model_version(config.model.name, version)
    found = [*events(dict(current.tags or {})), event]
    mlflow.set_model_version_tag(config.model.name, version, TAG, json.dumps([asdict(e) for e in found]))


def state(tags: dict[str, Any]) -> str:
    """A version's quarantine in one cell: `REJECTED: reason`, `lifted: reason` or empty."""
    found = events(tags)
    if not found:
        return ""
    return f"{'REJECTED' if found[-1].rejected else 'lifted'}: {found[-1].reason}"


def history_lines(mlflow: MlflowClient, name: str) -> list[str]:
    """Every quarantine event of every version of `name`, oldest version first (for `history`)."""
    return [
        f"version {version.version} {event.line()}"
        for version in registry.registered_versions(mlflow, name)
        for event in events(registry.version_tags(version))
    ]


def lift_hint(config: Config, version: str) -> str:
    return (
        "when a person lifts it, if the failure was not the release's: `python -m pipeline promote --env "
        f"{config.name} --to-version {version} --unquarantine --reason TEXT`"
    )


# --- the record in git ------------------------------------------------------------------------------------


def git_path(environment: str) -> str:
    return f"{K8S_DIR}/quarantine/{environment}.yaml"


def git_entries(repo: Path, environment: str) -> list[dict[str, Any]]:
    path = repo / git_path(environment)
    if not path.is_file():
        return []
    return list(yaml.safe_load(path.read_text(encoding="utf-8")) or [])


def git_text(environment: str, entries: list[dict[str, Any]]) -> str:
    header = (
        f"# Releases rejected in {environment} (an aborted rollout or a rollback): `promote` refuses them until\n"
        "# `--unquarantine --reason` lifts one. Written by the pipeline; the registry's `quarantine` tag agrees.\n"
    )
    return header + yaml.safe_dump(entries, sort_keys=False)


def git_rejections(
    repo: Path, model: str, version: str, image: str | None
) -> list[tuple[str, dict[str, Any]]]:
    """(environment, entry) of every environment's git record that rejects this release."""
    folder = repo / K8S_DIR / "quarantine"
    paths = sorted(folder.glob("*.yaml")) if folder.is_dir() else []
    return [
        (path.stem, entry)
        for path in paths
        for entry in git_entries(repo, path.stem)
        if rejects(entry, model, version, image)
    ]


def rejects(entry: dict[str, Any], model: str, version: str, image: str | None) -> bool:
    """Whether a git record's entry rejects this release (an entry without an image: every image)."""
    same_image = entry.get("image") is None or image is None or entry.get("image") == image
    return entry.get("model") == model and str(entry.get("model_version")) == version and same_image


def git_entry(config: Config, version: str, event: Event) -> dict[str, Any]:
    return {
        "model": config.model.name,
        "model_version": version,
        "image": event.image,
        "reason": event.reason,
        "at": event.at,
        "action": event.action,
        "by": event.by,
    }
