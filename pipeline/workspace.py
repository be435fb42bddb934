"""Where a pipeline run keeps its files: artifacts, reports and the embedded MLflow store."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import Config

if TYPE_CHECKING:
    from pipeline.artifacts import ModelDir


def new_run_id() -> str:
    """A run's folder name under reports/<env>/: UTC time, sortable, plus a short random suffix."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class Workspace:
    root: Path
    run_id: str = field(default_factory=new_run_id)
    """One per invocation: every stage of a `run` writes under reports/<env>/<run_id>/."""

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def mlflow_dir(self) -> Path:
        return self.root / ".mlflow"

    def run_dir(self, config: Config) -> Path:
        """reports/<env>/<run_id>/: this invocation's evidence; each stage writes a folder inside."""
        return self.reports / config.name / self.run_id

    def model_dir(self, config: Config, version: str) -> ModelDir:
        """artifacts/<model>/<version>/: one model version's files (pipeline/artifacts.py)."""
        from pipeline.artifacts import ModelDir  # noqa: PLC0415  (artifacts imports this module)

        return ModelDir(self.artifacts / config.model.name / version)

    def tracking_uri(self, config: Config) -> str:
        """MLFLOW_TRACKING_URI, else the config's URI, else a sqlite file here (no server)."""
        uri = os.environ.get("MLFLOW_TRACKING_URI") or config.registry.tracking_uri
        if uri:
            return uri
        self.mlflow_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(self.mlflow_dir / 'mlflow.db').resolve()}"

    def git_sha(self) -> str:
        try:
            out = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=self.root, capture_output=True, text=True, check=True
            )
        except (OSError, subprocess.CalledProcessError):
            return "unknown"
        return out.stdout.strip()


def write_json(path: Path, data: Any) -> None:
    """Write atomically, so an interrupted run never leaves a half-written file behind."""
    write_bytes(path, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode())


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))
