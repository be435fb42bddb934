"""register: the exported model and its card become a registry version, aliased `<env>-candidate`."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.adapters import registry
from pipeline.config import Config
from pipeline.console import Reporter
from pipeline.errors import StageError
from pipeline.stages.export import CARD_FILE, EVAL_FILE, ONNX_FILE, current_version_dir
from pipeline.stages.gate import gate_file
from pipeline.workspace import Workspace, read_json, write_json

REGISTRATION_FILE = "registration.json"


@dataclass(frozen=True)
class RegisterResult:
    model_name: str
    model_version: str
    artifact_version: str
    reused: bool


def register(
    config: Config, workspace: Workspace, reporter: Reporter, *, image: str | None = None
) -> RegisterResult:
    """Register the current export (once) and alias it `<env>-candidate`; `image` (a pushed
    `repo@sha256:...`, a `sha256:...` digest or `repo:tag`) is recorded as the version's `image` tag,
    for a pipeline that built the image elsewhere (cd.yml builds it once for every environment)."""
    version, directory = current_version_dir(config, workspace)
    gate_path = directory / gate_file(config.name)
    if not gate_path.is_file():
        msg = f"no gate result for {config.name} at {gate_path}; run `python -m pipeline gate --env {config.name}`"
        raise StageError(msg)
    gate = read_json(gate_path)
    if gate["status"] == "fail":
        msg = f"the gate failed for {config.name} ({'; '.join(gate['failures'])}); nothing was registered"
        raise StageError(msg)
    card = read_json(directory / CARD_FILE)
    name = config.model.name
    mlflow = registry.client(config, workspace)

    existing = registry.find_version(mlflow, name, version)
    if existing is None:
        if not registry.registered_model_exists(mlflow, name):
            mlflow.create_registered_model(name, description="Registered by the pipeline's register stage.")
        run_id = card["lineage"]["mlflow_run_id"]
        for file in (ONNX_FILE, CARD_FILE, EVAL_FILE):
            mlflow.log_artifact(run_id, str(directory / file), registry.ARTIFACT_PATH)
        source = f"{mlflow.get_run(run_id).info.artifact_uri}/{registry.ARTIFACT_PATH}"
        created = mlflow.create_model_version(
            name,
            source,
            run_id=run_id,
            tags={
                "artifact_version": version,
                "git_sha": card["lineage"]["git_sha"],
                "data_sha256": card["lineage"]["data_sha256"],
                "onnx_sha256": card["onnx"]["sha256"],
                "config_sha256": card["lineage"]["config_sha256"],
            },
            description=f"{name} {version} from git {card['lineage']['git_sha'][:12]}",
        )
        model_version = str(created.version)
        reporter.note(f"registered {name} version {model_version} (artifacts {version})")
    else:
        model_version = str(existing.version)
        reporter.note(f"reused {name} version {model_version}: artifacts {version} are registered already")

    # `gate` is the latest verdict; `gate.<env>` is what promote checks for that environment.
    mlflow.set_model_version_tag(name, model_version, "gate", gate["status"])
    mlflow.set_model_version_tag(name, model_version, f"gate.{config.name}", gate["status"])
    if image:
        mlflow.set_model_version_tag(name, model_version, "image", image)
        if "sha256:" in image:
            mlflow.set_model_version_tag(name, model_version, "image_digest", image.rpartition("@")[2])
        reporter.note(f"image {image} recorded on version {model_version}")
    mlflow.set_registered_model_alias(name, config.candidate_alias, model_version)
    write_json(
        directory / REGISTRATION_FILE,
        {"model_name": name, "model_version": model_version, "artifact_version": version},
    )
    reporter.note(f"alias {config.candidate_alias!r} -> version {model_version}")
    return RegisterResult(name, model_version, version, reused=existing is not None)
