"""Load the model card (`model.json`, see docs/model-card.md) and check the ONNX file against it."""

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from model_service.errors import StartupError

CARD_FILE = "model.json"
_HEX64 = r"^[0-9a-f]{64}$"


class _Strict(BaseModel):
    # The card may grow fields the service does not need; the ones it needs are checked strictly.
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


class _Input(_Strict):
    name: str = Field(min_length=1)
    dtype: Literal["float32", "float64"]


class _Outputs(_Strict):
    label: str = Field(min_length=1)
    probabilities: str = Field(min_length=1)


class _Onnx(_Strict):
    file: str = Field(min_length=1)
    sha256: str = Field(pattern=_HEX64)
    opset: int
    input: _Input
    outputs: _Outputs


class _Feature(_Strict):
    name: str = Field(min_length=1)
    dtype: Literal["float32", "float64"]


class _Card(_Strict):
    card_version: Literal[1]
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    onnx: _Onnx
    features: list[_Feature] = Field(min_length=1)
    classes: list[int | str] = Field(min_length=2)


@dataclass(frozen=True)
class ModelCard:
    """What the service needs from the card, plus the card itself for GET /v1/model."""

    raw: dict[str, Any]
    name: str
    version: str
    onnx_path: Path
    sha256: str
    input_name: str
    input_dtype: str
    label_output: str
    probabilities_output: str
    features: tuple[str, ...]
    classes: tuple[int | str, ...]

    @property
    def n_features(self) -> int:
        return len(self.features)


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def load_card(model_dir: Path) -> ModelCard:
    """Read and validate `model_dir/model.json`; raise `StartupError` with a one-line reason."""
    path = model_dir / CARD_FILE
    try:
        raw = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise StartupError(f"{path}: model card not found; export the model first") from None
    except orjson.JSONDecodeError as exc:
        raise StartupError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise StartupError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    try:
        card = _Card.model_validate(raw)
    except ValidationError as exc:
        raise StartupError(f"{path}: {_one_line(exc)}") from None
    names = [feature.name for feature in card.features]
    if len(set(names)) != len(names):
        raise StartupError(f"{path}: features: names must be unique")
    if {feature.dtype for feature in card.features} != {card.onnx.input.dtype}:
        raise StartupError(
            f"{path}: features: every dtype must equal onnx.input.dtype {card.onnx.input.dtype!r}"
        )
    if len(set(card.classes)) != len(card.classes):
        raise StartupError(f"{path}: classes: values must be unique")
    onnx_path = model_dir / card.onnx.file
    if onnx_path.parent.resolve() != model_dir.resolve():
        raise StartupError(
            f"{path}: onnx.file: expected a file name inside {model_dir}, got {card.onnx.file!r}"
        )
    return ModelCard(
        raw=raw,
        name=card.name,
        version=card.version,
        onnx_path=onnx_path,
        sha256=card.onnx.sha256,
        input_name=card.onnx.input.name,
        input_dtype=card.onnx.input.dtype,
        label_output=card.onnx.outputs.label,
        probabilities_output=card.onnx.outputs.probabilities,
        features=tuple(names),
        classes=tuple(card.classes),
    )


def read_verified_onnx(card: ModelCard) -> bytes:
    """The ONNX file's bytes, once its sha256 matches the card (hashing the bytes that get loaded)."""
    try:
        data = card.onnx_path.read_bytes()
    except FileNotFoundError:
        raise StartupError(f"{card.onnx_path}: ONNX file named by the card not found") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != card.sha256:
        raise StartupError(
            f"{card.onnx_path}: sha256 {digest} differs from the card's onnx.sha256 {card.sha256}; "
            "the file was changed after export"
        )
    return data
