"""MLflow tracking and model registry: runs, versions, aliases and lineage tags.

Aliases are environment names (`dev`, `staging`, `prod`) for what serves there and `<env>-candidate`
for what is on its way. The embedded default is a sqlite file in the workspace: no server, no network.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import secrets
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import Config
from pipeline.errors import StageError
from pipeline.workspace import Workspace

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from pipeline.artifacts import ModelDir
    from pipeline.console import Reporter

# The client looks up a telemetry host at import time; this template promises no network.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# MLflow narrates every database migration at INFO; the pipeline reports what matters itself.
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

ARTIFACT_PATH = "model"
"""Folder of the MLflow run holding model.onnx, model.json and eval.json."""


def client(config: Config, workspace: Workspace) -> MlflowClient:
    from mlflow import MlflowClient  # noqa: PLC0415  (slow import, only for stages that need it)

    uri = workspace.tracking_uri(config)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@contextmanager
def writing(config: Config, workspace: Workspace) -> Iterator[None]:
    """Hold the registry's write lock: on a sqlite store (the embedded default), concurrent pipelines on
    this machine take turns, so a check-then-write (register's find-or-create, an alias move) is atomic and
    sqlite's own lock never times out under contention. A server store has no lock to take here: register
    settles duplicates there (settle_version) and the history is append-only."""
    uri = workspace.tracking_uri(config)
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock = Path(uri.removeprefix("sqlite:///") + ".lock")
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def experiment_id(mlflow: MlflowClient, config: Config, workspace: Workspace) -> str:
    name = config.registry.experiment or config.model.name
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    location = None
    if not (os.environ.get("MLFLOW_TRACKING_URI") or config.registry.tracking_uri):
        # Without this, run artifacts land in ./mlruns of whatever folder the command ran in.
        location = (workspace.mlflow_dir / "artifacts").resolve().as_uri()
    return str(mlflow.create_experiment(name, artifact_location=location))


def alias_version(mlflow: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    try:
        return mlflow.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
            return None
        raise


def registration_run(
    mlflow: MlflowClient, config: Config, workspace: Workspace, model: ModelDir, training_run: str
) -> str:
    """The run of this tracking server that holds the version's artifacts: the training run when it was
    logged here; otherwise a run created here with the training record's metrics and lineage.

    CD trains once in a job that sees no environment's secrets, so the training run is in that job's
    sqlite store, while each environment's `register` talks to its own MLFLOW_TRACKING_URI: looking the
    training run up there would fail."""
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    try:
        return str(mlflow.get_run(training_run).info.run_id)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    record = model.read_optional(model.train_record) or {}
    if not record:
        raise StageError(
            f"training run {training_run} is not on {workspace.tracking_uri(config)} and {model.train_record} "
            "is missing: train against this tracking server, or hand on the model's artifacts folder"
        )
    git_sha = str(record.get("git_sha") or "unknown")
    run = mlflow.create_run(
        experiment_id(mlflow, config, workspace),
        run_name=f"{config.model.name}-{model.version}",
        tags={
            "artifact_version": model.version,
            "data_sha256": str(record.get("data_sha256") or ""),
            "git_sha": git_sha,
            "environment": config.name,
            "mlflow.source.git.commit": git_sha,
            "training_run_id": training_run,
        },
    )
    for key, value in sorted((record.get("metrics") or {}).items()):
        mlflow.log_metric(run.info.run_id, key, float(value))
    mlflow.set_terminated(run.info.run_id)
    return str(run.info.run_id)


def find_version(mlflow: MlflowClient, name: str, artifact_version: str) -> ModelVersion | None:
    """The registered version holding the artifacts of `artifact_version`, if any."""
    if not registered_model_exists(mlflow, name):
        return None
    found = mlflow.search_model_versions(f"name = '{name}' and tag.artifact_version = '{artifact_version}'")
    # The lowest: when concurrent runs each created one, that is the one they all keep (settle_version).
    return min(found, key=lambda version: int(version.version), default=None)


HISTORY_LIMIT = 50
"""Moves kept per environment; older entries are deleted."""


def alias_history(mlflow: MlflowClient, name: str, environment: str) -> list[dict[str, Any]]:
    """The moves of alias `<environment>`, oldest first.

    Each move is its own registered-model tag `history.<env>.<time>-<random>`: writers only add tags,
    never read-modify-write one, so concurrent promotes and rollbacks cannot erase each other's entry.
    A JSON list in `history.<env>` (how earlier versions kept it) is read first."""
    if not registered_model_exists(mlflow, name):
        return []
    tags = mlflow.get_registered_model(name).tags or {}
    legacy = tags.get(f"history.{environment}")
    entries: list[dict[str, Any]] = list(json.loads(legacy)) if legacy else []
    prefix = f"history.{environment}."
    entries += [json.loads(tags[key]) for key in sorted(k for k in tags if k.startswith(prefix))]
    return entries


def record_alias_move(mlflow: MlflowClient, name: str, environment: str, entry: dict[str, Any]) -> None:
    """Add one move to the alias history (a new tag), then drop the oldest beyond HISTORY_LIMIT."""
    key = f"history.{environment}.{time.time_ns():020d}-{secrets.token_hex(3)}"
    mlflow.set_registered_model_tag(name, key, json.dumps(entry))
    prefix = f"history.{environment}."
    keys = sorted(k for k in (mlflow.get_registered_model(name).tags or {}) if k.startswith(prefix))
    for old in keys[:-HISTORY_LIMIT]:
        mlflow.delete_registered_model_tag(name, old)


def registered_model_exists(mlflow: MlflowClient, name: str) -> bool:
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    try:
        mlflow.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True


def ensure_registered_model(mlflow: MlflowClient, name: str) -> None:
    """Create the registered model unless it exists; a concurrent creator winning the race is fine."""
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    if registered_model_exists(mlflow, name):
        return
    try:
        mlflow.create_registered_model(name, description="Registered by the pipeline's register stage.")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


CREATE_ATTEMPTS = 5
"""Tries at creating a version: concurrent creators on one store can exhaust MLflow's own three."""


def create_version(
    mlflow: MlflowClient, name: str, source: str, *, run_id: str, tags: dict[str, str], description: str
) -> ModelVersion:
    """`create_model_version`, tried again after a random pause when concurrent creators collide on the
    next version number; unless another run registered this artifact meanwhile, which is then returned."""
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    for attempt in range(1, CREATE_ATTEMPTS):
        try:
            return mlflow.create_model_version(
                name, source, run_id=run_id, tags=tags, description=description
            )
        except MlflowException:
            time.sleep(random.uniform(0.1, 0.5) * attempt)
        registered = find_version(mlflow, name, tags["artifact_version"])
        if registered is not None:
            return registered
    return mlflow.create_model_version(name, source, run_id=run_id, tags=tags, description=description)


def settle_version(
    mlflow: MlflowClient, name: str, artifact_version: str, created: ModelVersion
) -> ModelVersion:
    """One version per artifact, whoever registered it: when concurrent runs each created one, every run
    keeps the lowest and the others delete their own, so all of them end on the same version."""
    winner = find_version(mlflow, name, artifact_version) or created
    if str(winner.version) != str(created.version):
        mlflow.delete_model_version(name, created.version)
    return winner


def download_version(mlflow: MlflowClient, version: ModelVersion, dst: Path) -> Path:
    """Download a version's model.onnx, model.json and eval.json into `dst`; return that folder."""
    from mlflow.artifacts import download_artifacts  # noqa: PLC0415

    uri = mlflow.get_model_version_download_uri(version.name, version.version)
    dst.mkdir(parents=True, exist_ok=True)
    # The version's folder arrives as a folder of its own name (`model/`) inside dst_path: its files are
    # moved up, where the callers (and ModelDir) read them.
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=f".{dst.name}.") as staging:
        fetched = Path(download_artifacts(artifact_uri=uri, dst_path=staging))
        for item in fetched.iterdir():
            item.replace(dst / item.name)
    return dst


def version_tags(version: ModelVersion) -> dict[str, Any]:
    return dict(version.tags or {})


def tag_registered(
    config: Config, workspace: Workspace, model: ModelDir, tags: dict[str, str], reporter: Reporter
) -> bool:
    """Set `tags` on the registered version of `model`; say why not when it is not registered (yet).

    The one way stages record a verdict in the registry, so every record names the same version."""
    registration = model.read_optional(model.registration)
    if registration is None or registration["artifact_version"] != model.version:
        reporter.note(f"registry not tagged: {model.version} is not registered (run register first)")
        return False
    mlflow = client(config, workspace)
    name, number = registration["model_name"], registration["model_version"]
    for key, value in tags.items():
        mlflow.set_model_version_tag(name, number, key, value)
    listed = ", ".join(f"{key}={value}" for key, value in tags.items())
    reporter.note(f"tagged {name} version {number}: {listed}")
    return True


def verdict_tags(kind: str, environment: str, status: str) -> dict[str, str]:
    """`<kind>` (the latest verdict) and `<kind>.<env>` (what promote and history read for that env)."""
    return {kind: status, f"{kind}.{environment}": status}


def image_tags(reference: str, digest: str | None) -> dict[str, str]:
    """`image`: what to deploy (`repo@sha256:…` when pushed, else `repo:tag`); `image_digest`: the
    registry's `repo@sha256:…`, set only when the image was pushed (a local image id is no digest)."""
    return {"image": reference, **({"image_digest": digest} if digest else {})}


def previous_model_dirs(
    config: Config, workspace: Workspace, model: ModelDir
) -> Iterator[tuple[ModelDir, str]]:
    """The versions other than `model` that held alias `<env>`, latest first (the holder now, then the alias
    history newest first): folder (downloaded when reached) and registry version."""
    mlflow = client(config, workspace)
    name = config.model.name
    held = alias_version(mlflow, name, config.alias)
    versions = [str(held.version)] if held is not None else []
    for entry in reversed(alias_history(mlflow, name, config.name)):
        versions += [str(entry[key]) for key in ("version", "previous") if entry.get(key)]
    for version in dict.fromkeys(versions):
        found = mlflow.get_model_version(name, version)
        folder = workspace.model_dir(config, str(version_tags(found).get("artifact_version", f"v{version}")))
        if folder.version == model.version:
            continue
        if not folder.exported():
            download_version(mlflow, found, folder.path)
        yield folder, version


def previous_model_dir(config: Config, workspace: Workspace, model: ModelDir) -> tuple[ModelDir, str] | None:
    """The latest of `previous_model_dirs`; None when there is none. The fallback `service.fallback.source:
    previous` serves next to `model` is the latest that answers its requests (the runner checks)."""
    return next(previous_model_dirs(config, workspace, model), None)


def alias_model_dir(config: Config, workspace: Workspace, alias: str) -> tuple[ModelDir, str] | None:
    """The folder and registry version of the version holding `alias`, downloaded when missing; None
    when no version holds it."""
    mlflow = client(config, workspace)
    held = alias_version(mlflow, config.model.name, alias)
    if held is None:
        return None
    return version_model_dir(mlflow, config, workspace, held), str(held.version)


def version_model_dir(
    mlflow: MlflowClient, config: Config, workspace: Workspace, version: ModelVersion
) -> ModelDir:
    """The workspace folder of a registered version's artifacts, downloaded when missing."""
    artifact_version = version_tags(version).get("artifact_version", f"v{version.version}")
    model = workspace.model_dir(config, str(artifact_version))
    if not model.exported():
        download_version(mlflow, version, model.path)
    return model


def environment_aliases(mlflow: MlflowClient, name: str) -> dict[str, str]:
    """Alias -> registry version of what serves each environment (`<env>-candidate` aliases left out)."""
    if not registered_model_exists(mlflow, name):
        return {}
    aliases = mlflow.get_registered_model(name).aliases or {}
    return {alias: str(v) for alias, v in sorted(aliases.items()) if not alias.endswith("-candidate")}


def registered_versions(mlflow: MlflowClient, name: str) -> list[ModelVersion]:
    """Every registered version of `name`, oldest first."""
    if not registered_model_exists(mlflow, name):
        return []
    found = mlflow.search_model_versions(f"name = '{name}'")
    return sorted(found, key=lambda version: int(version.version))
