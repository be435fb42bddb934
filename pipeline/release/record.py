"""The release record of a model version: its semver-style version and its compatibility with the version
serving each environment, derived from the registry and written into the card (`release`).

Export derives it against what its registry knows; register derives it again against the registry the
version goes to (CD exports in a job without any environment's registry) and records it as version tags
`semver` and `compatibility.<env>`. The gate compares with its own champion when it runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.adapters import registry
from pipeline.artifacts import ModelDir
from pipeline.config import Config
from pipeline.console import Reporter
from pipeline.release.compatibility import Compatibility, Level, compare, next_semver, parse_semver
from pipeline.workspace import Workspace, read_json, write_json

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

CARD_KEY = "release"
SEMVER_TAG = "semver"


def compatibility_tag(environment: str) -> str:
    return f"compatibility.{environment}"


@dataclass(frozen=True)
class ReleaseRecord:
    """What the card's `release` holds."""

    semver: str
    level: Level
    """The change against the previous release of the model (`previous`): what moved the semver."""
    previous: str | None = None
    """Registry version of the release the semver follows; None for the first."""
    environments: Mapping[str, Compatibility] = field(default_factory=dict)
    """Environment -> the candidate against the version serving it."""

    def to_json(self) -> dict[str, Any]:
        return {
            "semver": self.semver,
            "level": self.level,
            "previous": self.previous,
            "environments": {env: item.to_json() for env, item in self.environments.items()},
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ReleaseRecord:
        return cls(
            semver=raw["semver"],
            level=raw["level"],
            previous=raw.get("previous"),
            environments={env: Compatibility.from_json(item) for env, item in raw["environments"].items()},
        )

    def tags(self) -> dict[str, str]:
        """The registry version tags that hold it."""
        return {SEMVER_TAG: self.semver} | {
            compatibility_tag(env): item.level for env, item in self.environments.items()
        }


def read_record(model: ModelDir) -> ReleaseRecord | None:
    """The record in `model`'s card, None when it has none (exported before release records)."""
    raw = model.read_card().raw.get(CARD_KEY)
    return None if raw is None else ReleaseRecord.from_json(raw)


def derive(config: Config, workspace: Workspace, model: ModelDir) -> ReleaseRecord:
    """The record of `model` against this registry: its own semver when registered already, else the next
    one after the highest; compatibility with each environment's serving version."""
    mlflow = registry.client(config, workspace)
    name, card = config.model.name, model.read_card()
    versions = registry.registered_versions(mlflow, name)
    by_number = {str(version.version): version for version in versions}
    environments = {}
    for environment, number in registry.environment_aliases(mlflow, name).items():
        serving = by_number[number]
        other = registry.version_model_dir(mlflow, config, workspace, serving)
        semver = registry.version_tags(serving).get(SEMVER_TAG)
        environments[environment] = compare(other.read_card(), card, against=number, against_semver=semver)
    own = next(
        (v for v in versions if registry.version_tags(v).get("artifact_version") == model.version), None
    )
    if own is not None and registry.version_tags(own).get(SEMVER_TAG):
        kept = read_record(model)
        semver = str(registry.version_tags(own)[SEMVER_TAG])
        if kept is not None and kept.semver == semver:
            return ReleaseRecord(semver, kept.level, kept.previous, environments)
        return ReleaseRecord(semver, "same", None, environments)
    latest = _latest_release(versions, model.version)
    if latest is None:
        return ReleaseRecord(next_semver(None, "same"), "same", None, environments)
    previous, semver = latest
    level = compare(
        registry.version_model_dir(mlflow, config, workspace, previous).read_card(),
        card,
        against=str(previous.version),
    ).level
    return ReleaseRecord(next_semver(semver, level), level, str(previous.version), environments)


def _latest_release(versions: list[Any], artifact_version: str) -> tuple[Any, str] | None:
    """The registered version with the highest semver tag (another artifact than ours), and that semver."""
    tagged = [
        (parse_semver(str(tags.get(SEMVER_TAG, ""))), version)
        for version in versions
        if (tags := registry.version_tags(version)).get("artifact_version") != artifact_version
    ]
    found = max(((key, v) for key, v in tagged if key is not None), key=lambda pair: pair[0], default=None)
    if found is None:
        return None
    (major, minor, patch), version = found
    return version, f"{major}.{minor}.{patch}"


def write_record(model: ModelDir, record: ReleaseRecord, reporter: Reporter) -> None:
    """Put `record` into the card (rewritten only when it changed) and say what it found."""
    card = read_json(model.card)
    if card.get(CARD_KEY) != record.to_json():
        write_json(model.card, card | {CARD_KEY: record.to_json()})
    previous = f" after v{record.previous}" if record.previous else " (first release)"
    reporter.note(f"release {record.semver}: {record.level}{previous}")
    for environment, compatibility in record.environments.items():
        line = f"{environment}: {compatibility.summary()}"
        if compatibility.breaking:
            reporter.warn(f"BREAKING for {line}")
        else:
            reporter.note(line)


def record_release(
    config: Config, workspace: Workspace, model: ModelDir, reporter: Reporter
) -> ReleaseRecord:
    record = derive(config, workspace, model)
    write_record(model, record, reporter)
    return record


def tag_version(mlflow: MlflowClient, name: str, version: str, record: ReleaseRecord) -> None:
    for key, value in record.tags().items():
        mlflow.set_model_version_tag(name, version, key, value)


def against_serving(
    mlflow: MlflowClient, config: Config, workspace: Workspace, candidate: ModelVersion
) -> Compatibility | None:
    """The registered `candidate` against the version serving `config`'s environment; None when none does."""
    serving = registry.alias_version(mlflow, config.model.name, config.alias)
    if serving is None:
        return None
    return compare(
        registry.version_model_dir(mlflow, config, workspace, serving).read_card(),
        registry.version_model_dir(mlflow, config, workspace, candidate).read_card(),
        against=str(serving.version),
        against_semver=registry.version_tags(serving).get(SEMVER_TAG),
    )
