"""register: the exported model and its card become a registry version, aliased `<env>-candidate`."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.adapters import registry
from pipeline.artifacts import ModelDir
from pipeline.config import Config
from pipeline.console import Reporter
from pipeline.errors import StageError
from pipeline.release.record import record_release
from pipeline.release.signing import SigningError, sign_model, signature_tags
from pipeline.stage import Check, StageContext, StageResult
from pipeline.workspace import Workspace, write_json


@dataclass(frozen=True, kw_only=True)
class RegisterResult(StageResult):
    model_name: str
    model_version: str


def image_reference(config: Config, image: str) -> tuple[str, str | None]:
    """(reference to deploy, registry digest or None) from `--image`: `repo@sha256:…`, a bare `sha256:…`
    (of the environment's image.repository) or `repo:tag`."""
    if image.startswith("sha256:"):
        image = f"{config.image.repository}@{image}"
    return image, image if "@sha256:" in image else None


def register(
    config: Config, workspace: Workspace, reporter: Reporter, *, model: ModelDir, image: str | None = None
) -> RegisterResult:
    """Register `model` (once per artifact version) and alias it `<env>-candidate`; `image` (a pushed
    `repo@sha256:...`, a `sha256:...` digest or `repo:tag`) is recorded on the version, for a pipeline
    that built the image elsewhere (cd.yml builds it once for every environment)."""
    gate = model.read_optional(model.gate(config.name))
    if gate is None:
        msg = (
            f"no gate result for {config.name} at {model.gate(config.name)}; "
            f"run `python -m pipeline gate --env {config.name}`"
        )
        raise StageError(msg)
    if gate["status"] == "fail":
        failed = "; ".join(
            check.line() for check in (Check(**fields) for fields in gate["checks"]) if check.failed
        )
        msg = f"the gate failed for {config.name} ({failed}); nothing was registered"
        raise StageError(msg)
    card = model.read_card()
    lineage = card.lineage
    if lineage is None:
        raise StageError(f"{model.card}: no lineage to register; re-export with --fresh")
    name = config.model.name
    try:  # before the registry is touched; the signatures go with the version's files (docs/service.md)
        signed = sign_model(config, model.path)
    except SigningError as exc:
        raise StageError(str(exc)) from None
    if signed:
        reporter.note(f"signed the model: {', '.join(path.name for path in signed)}")
    mlflow = registry.client(config, workspace)

    with registry.writing(config, workspace):
        # Against the registry the version goes to (before the card is logged): semver, compatibility.
        release = record_release(config, workspace, model, reporter)
        existing = registry.find_version(mlflow, name, model.version)
        if existing is None:
            registry.ensure_registered_model(mlflow, name)
            run_id = registry.registration_run(mlflow, config, workspace, model, lineage.mlflow_run_id)
            if run_id != lineage.mlflow_run_id:
                reporter.note(
                    f"training run {lineage.mlflow_run_id} is not on this tracking server; "
                    f"logged the version's artifacts and metrics to run {run_id}"
                )
            for path in (model.onnx, model.card, model.evaluation, *signed):
                mlflow.log_artifact(run_id, str(path), registry.ARTIFACT_PATH)
            source = f"{mlflow.get_run(run_id).info.artifact_uri}/{registry.ARTIFACT_PATH}"
            created = registry.create_version(
                mlflow,
                name,
                source,
                run_id=run_id,
                tags={
                    "artifact_version": model.version,
                    "git_sha": lineage.git_sha,
                    "data_sha256": lineage.data_sha256,
                    "onnx_sha256": card.sha256,
                    "config_sha256": lineage.config_sha256,
                    **signature_tags(signed),
                },
                description=f"{name} {model.version} from git {lineage.git_sha[:12]}",
            )
            model_version = str(registry.settle_version(mlflow, name, model.version, created).version)
            if model_version == str(created.version):
                reporter.note(f"registered {name} version {model_version} (artifacts {model.version})")
            else:
                reporter.note(
                    f"{name} version {model_version} holds artifacts {model.version} already (registered meanwhile)"
                )
        else:
            model_version = str(existing.version)
            reporter.note(
                f"reused {name} version {model_version}: artifacts {model.version} are registered already"
            )
        write_json(
            model.registration,
            {"model_name": name, "model_version": model_version, "artifact_version": model.version},
        )
        tags = registry.verdict_tags("gate", config.name, gate["status"]) | release.tags()
        if image:
            tags |= registry.image_tags(*image_reference(config, image))
        registry.tag_registered(config, workspace, model, tags, reporter)
        mlflow.set_registered_model_alias(name, config.candidate_alias, model_version)
    reporter.note(f"alias {config.candidate_alias!r} -> version {model_version}")
    return RegisterResult(
        headline=f"{name} version {model_version}",
        reused=existing is not None,
        artifacts={"registration": model.registration},
        model_name=name,
        model_version=model_version,
    )


def run(ctx: StageContext) -> RegisterResult:
    return register(ctx.config, ctx.workspace, ctx.reporter, model=ctx.model, image=ctx.args.image)
