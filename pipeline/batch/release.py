"""The release a batch scores with: the registry version holding alias `<env>`, its card and ONNX file
checked as the service checks them at start-up, and against the sha256 the registry recorded."""

from __future__ import annotations

from dataclasses import dataclass

from model_service.contract.card import ModelCard
from model_service.model.runtime import load_card, read_verified_onnx
from model_service.protocol.errors import StartupError
from pipeline.adapters import registry
from pipeline.artifacts import ModelDir
from pipeline.config import Config
from pipeline.console import Reporter
from pipeline.errors import StageError
from pipeline.workspace import Workspace


@dataclass(frozen=True)
class Release:
    model: ModelDir
    registry_version: str
    card: ModelCard


def serving_release(config: Config, workspace: Workspace, reporter: Reporter) -> Release:
    """The version serving `config`'s environment; StageError when none does (never the workspace's
    export instead), or when its files differ from what was registered."""
    mlflow = registry.client(config, workspace)
    name, alias = config.model.name, config.alias
    held = registry.alias_version(mlflow, name, alias)
    found = registry.alias_model_dir(config, workspace, alias) if held is not None else None
    if held is None or found is None:
        raise StageError(
            f"no version of {name} holds alias {alias!r} on {workspace.tracking_uri(config)}: a batch "
            f"scores only with the release serving {config.name}, never with an unreleased export; "
            f"release one first (`python -m pipeline run --env {config.name}`, or register and "
            f"`python -m pipeline promote --env {config.name}`)"
        )
    model, version = found
    try:
        card = load_card(model.path)
        read_verified_onnx(card)
    except StartupError as exc:
        raise StageError(f"version {version} (alias {alias!r}): {exc}") from None
    registered = registry.version_tags(held).get("onnx_sha256")
    if registered is None:
        reporter.note(f"version {version} has no onnx_sha256 tag (registered before it was recorded)")
    elif registered != card.sha256:
        raise StageError(
            f"{model.card}: onnx.sha256 {card.sha256[:12]} is not the registry's onnx_sha256 "
            f"{registered[:12]} of version {version}: the folder changed after registration; delete "
            f"{model.path} and run again (the registered files are downloaded)"
        )
    reporter.note(
        f"version {version} serves {config.name} (alias {alias!r}): {card.name} {card.version}, "
        f"onnx sha256 {card.sha256[:12]} checked"
    )
    return Release(model, version, card)
