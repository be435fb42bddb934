"""The artifact layout: one folder per model version, `artifacts/<model>/<version>/`, and the files in it.

`ModelDir` is the one owner of that layout: stages ask it for paths and records instead of knowing each
other's file names. The version is a content key (`artifact_version`): the same config, data, code and
library versions map to the same folder, so a re-run finds what is still valid.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_service.contract.card import CardError, ModelCard, read_card
from pipeline.config import Config
from pipeline.errors import StageError
from pipeline.ml.data import Dataset, load_dataset
from pipeline.workspace import Workspace, read_json

PIPELINE_DIR = Path(__file__).resolve().parent
VERSIONED_CODE = ("stages/train.py", "stages/export.py", "trainer.py")
"""Code besides pipeline/ml/ whose change must make a new version: it fits or exports the model."""


def versioned_code() -> list[Path]:
    """Every module that shapes what is written into a version folder (see artifact_version)."""
    return [
        *(PIPELINE_DIR / name for name in VERSIONED_CODE),
        *sorted((PIPELINE_DIR / "ml").glob("*.py")),
        PIPELINE_DIR.parent / "model_service" / "contract" / "monitoring.py",  # the profile's bins and score
    ]


def service_code() -> list[Path]:
    """The service's source: what a load test or a rehearsal measures besides the model."""
    return sorted((PIPELINE_DIR.parent / "model_service").rglob("*.py"))


def inputs_key(config: Config, sections: Sequence[str], *parts: str | Path) -> str:
    """Content key of a verdict's inputs: config sections, and strings or files (hashed by content)."""
    digest = hashlib.sha256(config.sha256(*sections).encode())
    for part in parts:
        digest.update(part.read_bytes() if isinstance(part, Path) else part.encode())
    return digest.hexdigest()[:16]


def artifact_version(config: Config, data: Dataset, trainer_file: Path | None = None) -> str:
    """Content key of a model: config sections that shape it, the data, the code (the trainer's module
    too) and library versions."""
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415  (the ML libraries are slow imports; only versioning needs them here)
    import onnx  # noqa: PLC0415
    import skl2onnx  # noqa: PLC0415
    import sklearn  # noqa: PLC0415

    digest = hashlib.sha256()
    digest.update(config.sha256("model", "data").encode())
    # Parity bounds judge a model, they do not shape it: only the opset goes in.
    digest.update(f"opset={config.export.opset}".encode())
    digest.update(data.sha256.encode())
    for path in versioned_code():
        digest.update(path.read_bytes())
    if trainer_file is not None:
        digest.update(trainer_file.read_bytes())
    for module in (sklearn, skl2onnx, onnx, np):
        digest.update(f"{module.__name__}={module.__version__}".encode())
    # Read from the installed metadata: importing the boosting libraries would slow every stage down.
    for distribution in ("lightgbm", "xgboost", "xgboost-cpu", "onnxmltools", "pandas"):
        try:
            digest.update(f"{distribution}={version(distribution)}".encode())
        except PackageNotFoundError:
            digest.update(f"{distribution} absent".encode())
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class ModelDir:
    """One model version's folder and every record the stages keep in it."""

    path: Path

    @property
    def version(self) -> str:
        """The artifact version: the folder's name."""
        return self.path.name

    # Written by train.
    @property
    def train_record(self) -> Path:
        return self.path / "train.json"

    @property
    def estimator(self) -> Path:
        return self.path / "estimator.pkl"

    # Written by export (the card last: its presence marks a complete export).
    @property
    def onnx(self) -> Path:
        return self.path / "model.onnx"

    @property
    def card(self) -> Path:
        return self.path / "model.json"

    @property
    def evaluation(self) -> Path:
        return self.path / "eval.json"

    def gate(self, environment: str) -> Path:
        """The gate's verdict for one environment (the champion differs per environment)."""
        return self.path / f"gate-{environment}.json"

    def verdict(self, kind: str, environment: str) -> Path:
        """The last `kind` verdict (loadtest, rollout) of this version for one environment, with the key
        of its inputs, so an unchanged re-run can reuse it."""
        return self.path / f"{kind}-{environment}.json"

    @property
    def registration(self) -> Path:
        return self.path / "registration.json"

    @property
    def image(self) -> Path:
        """The latest image built with this version baked in."""
        return self.path / "image.json"

    def trained(self) -> bool:
        return self.train_record.is_file() and self.estimator.is_file()

    def exported(self) -> bool:
        return self.card.is_file() and self.onnx.is_file()

    def read_card(self) -> ModelCard:
        """The checked card (model_service/contract/card.py); a card that breaks the contract is a
        StageError naming the file and the key."""
        try:
            return read_card(self.path)
        except CardError as exc:
            raise StageError(str(exc)) from None

    def read_estimator(self) -> Any:
        """The fitted estimator train pickled here (only ever a file this workspace's train wrote)."""
        with self.estimator.open("rb") as handle:
            return pickle.load(handle)

    def read_evaluation(self) -> dict[str, Any]:
        return dict(read_json(self.evaluation))

    def read_optional(self, path: Path) -> dict[str, Any] | None:
        """A record of this folder, or None when that stage has not written it."""
        return dict(read_json(path)) if path.is_file() else None


def current_model_dir(config: Config, workspace: Workspace) -> ModelDir:
    """The folder the current config, data and code map to (it may not exist yet)."""
    from pipeline.ml.estimators import trainer_module_path  # noqa: PLC0415  (imports scikit-learn)

    trainer = config.model.trainer
    trainer_file = trainer_module_path(trainer, workspace.root) if trainer else None
    data = load_dataset(config.data, workspace.root, config.model.task)
    return workspace.model_dir(config, artifact_version(config, data, trainer_file))
