"""Load the model card (`model.json`, see docs/model-card.md) and check the ONNX file against it.

Card version 2 describes each feature (type, nullable, categories), the ONNX inputs that take them and the
outputs per task; version 1 (float features in one input, a classifier) is read as its version-2 view.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from model_service.errors import StartupError

CARD_FILE = "model.json"
_HEX64 = r"^[0-9a-f]{64}$"

FeatureType = Literal["float", "int", "bool", "string"]
InputDtype = Literal["float32", "float64", "int64", "string"]
Task = Literal["binary", "multiclass", "regression"]
_FLOAT_DTYPES = frozenset({"float32", "float64"})


class _Strict(BaseModel):
    # The card may grow fields the service does not need; the ones it needs are checked strictly.
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


class _ClassifierOutputs(_Strict):
    label: str = Field(min_length=1)
    probabilities: str = Field(min_length=1)


class _RegressionOutputs(_Strict):
    value: str = Field(min_length=1)


# --- card version 1 -----------------------------------------------------------------------------------
class _InputV1(_Strict):
    name: str = Field(min_length=1)
    dtype: Literal["float32", "float64"]


class _OnnxV1(_Strict):
    file: str = Field(min_length=1)
    sha256: str = Field(pattern=_HEX64)
    opset: int
    input: _InputV1
    outputs: _ClassifierOutputs


class _FeatureV1(_Strict):
    name: str = Field(min_length=1)
    dtype: Literal["float32", "float64"]


class _CardV1(_Strict):
    card_version: Literal[1]
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    onnx: _OnnxV1
    features: list[_FeatureV1] = Field(min_length=1)
    classes: list[int | str] = Field(min_length=2)


# --- card version 2 -----------------------------------------------------------------------------------
class _InputV2(_Strict):
    name: str = Field(min_length=1)
    dtype: InputDtype
    features: list[str] = Field(min_length=1)


class _OnnxV2(_Strict):
    file: str = Field(min_length=1)
    sha256: str = Field(pattern=_HEX64)
    opset: int
    inputs: list[_InputV2] = Field(min_length=1)
    outputs: dict[str, str]


class _FeatureV2(_Strict):
    name: str = Field(min_length=1)
    type: FeatureType
    nullable: bool
    categories: list[str] | None = None
    unknown_category: Literal["ignore", "error"] = "ignore"


class _CardV2(_Strict):
    card_version: Literal[2]
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    task: Task
    onnx: _OnnxV2
    features: list[_FeatureV2] = Field(min_length=1)
    classes: list[int | str] | None = None


@dataclass(frozen=True)
class Feature:
    """One feature as a client sends it: `type` float (JSON number), int (integer), bool (true/false) or
    string; null only when `nullable`. `categories` (strings, sorted) are the values seen in training;
    `unknown_category` "error" means the encoder refuses others, so the service answers 422."""

    name: str
    type: FeatureType
    nullable: bool = False
    categories: tuple[str, ...] | None = None
    unknown_category: Literal["ignore", "error"] = "ignore"


@dataclass(frozen=True)
class OnnxInput:
    """One ONNX input `[N, len(features)]` of `dtype`; `columns` are its features' indexes in the card."""

    name: str
    dtype: InputDtype
    features: tuple[str, ...]
    columns: tuple[int, ...]


@dataclass(frozen=True)
class ModelCard:
    """What the service needs from the card, plus the card itself for GET /v1/model."""

    raw: dict[str, Any]
    card_version: int
    name: str
    version: str
    task: Task
    onnx_path: Path
    sha256: str
    inputs: tuple[OnnxInput, ...]
    features: tuple[Feature, ...]
    classes: tuple[int | str, ...]
    """The classes in probability-column order (empty for a regression)."""
    outputs: dict[str, str]
    """Role → ONNX output name: label and probabilities (classification) or value (regression)."""

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(feature.name for feature in self.features)

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def is_regression(self) -> bool:
        return self.task == "regression"

    @property
    def numeric_only(self) -> bool:
        """One float input holding every feature in card order, all float and never null: the model the
        fast row parser serves (every card version 1, and the numeric default in version 2)."""
        (first, *rest) = self.inputs
        return (
            not rest
            and first.dtype in _FLOAT_DTYPES
            and first.features == self.feature_names
            and all(feature.type == "float" and not feature.nullable for feature in self.features)
        )


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
    version = raw.get("card_version")
    try:
        if version == 1:
            card = _from_v1(raw, _CardV1.model_validate(raw), model_dir)
        elif version == 2:
            card = _from_v2(raw, _CardV2.model_validate(raw), model_dir)
        else:
            raise StartupError(f"card_version: expected 1 or 2, got {version!r}")
    except ValidationError as exc:
        raise StartupError(f"{path}: {_one_line(exc)}") from None
    except StartupError as exc:
        raise StartupError(f"{path}: {exc.args[0]}") from None
    return card


def _onnx_path(model_dir: Path, file: str) -> Path:
    onnx_path = model_dir / file
    if onnx_path.parent.resolve() != model_dir.resolve():
        raise StartupError(f"onnx.file: expected a file name inside {model_dir}, got {file!r}")
    return onnx_path


def _check_classes(classes: list[int | str]) -> None:
    if len(set(classes)) != len(classes):
        raise StartupError("classes: values must be unique")


def _from_v1(raw: dict[str, Any], card: _CardV1, model_dir: Path) -> ModelCard:
    names = [feature.name for feature in card.features]
    if len(set(names)) != len(names):
        raise StartupError("features: names must be unique")
    if {feature.dtype for feature in card.features} != {card.onnx.input.dtype}:
        raise StartupError(f"features: every dtype must equal onnx.input.dtype {card.onnx.input.dtype!r}")
    _check_classes(card.classes)
    return ModelCard(
        raw=raw,
        card_version=1,
        name=card.name,
        version=card.version,
        task="binary" if len(card.classes) == 2 else "multiclass",
        onnx_path=_onnx_path(model_dir, card.onnx.file),
        sha256=card.onnx.sha256,
        inputs=(
            OnnxInput(card.onnx.input.name, card.onnx.input.dtype, tuple(names), tuple(range(len(names)))),
        ),
        features=tuple(Feature(name, "float") for name in names),
        classes=tuple(card.classes),
        outputs=card.onnx.outputs.model_dump(),
    )


def _from_v2(raw: dict[str, Any], card: _CardV2, model_dir: Path) -> ModelCard:
    features = tuple(_feature(i, f) for i, f in enumerate(card.features))
    index = {feature.name: i for i, feature in enumerate(features)}
    if len(index) != len(features):
        raise StartupError("features: names must be unique")
    inputs = tuple(_input(i, spec, features, index) for i, spec in enumerate(card.onnx.inputs))
    if len({spec.name for spec in inputs}) != len(inputs):
        raise StartupError("onnx.inputs: input names must be unique")
    placed = [column for spec in inputs for column in spec.columns]
    if len(placed) != len(set(placed)):
        twice = next(features[c].name for c in placed if placed.count(c) > 1)
        raise StartupError(f"onnx.inputs: feature {twice!r} is in more than one input")
    missing = [feature.name for i, feature in enumerate(features) if i not in set(placed)]
    if missing:
        raise StartupError(f"onnx.inputs: feature {missing[0]!r} is in no input; every feature feeds one")
    if card.task == "regression":
        if card.classes is not None:
            raise StartupError("classes: a regression has no classes; remove the key")
        outputs = _outputs(card.onnx.outputs, _RegressionOutputs)
        classes: tuple[int | str, ...] = ()
    else:
        expected = "exactly 2" if card.task == "binary" else "at least 2"
        if (
            card.classes is None
            or len(card.classes) < 2
            or (card.task == "binary" and len(card.classes) != 2)
        ):
            raise StartupError(f"classes: a {card.task} model lists {expected} classes")
        _check_classes(card.classes)
        outputs = _outputs(card.onnx.outputs, _ClassifierOutputs)
        classes = tuple(card.classes)
    return ModelCard(
        raw=raw,
        card_version=2,
        name=card.name,
        version=card.version,
        task=card.task,
        onnx_path=_onnx_path(model_dir, card.onnx.file),
        sha256=card.onnx.sha256,
        inputs=inputs,
        features=features,
        classes=classes,
        outputs=outputs,
    )


def _outputs(raw: dict[str, str], model: type[_ClassifierOutputs | _RegressionOutputs]) -> dict[str, str]:
    try:
        return model.model_validate(raw).model_dump()
    except ValidationError as exc:
        raise StartupError(f"onnx.outputs.{_one_line(exc)}") from None


def _feature(i: int, spec: _FeatureV2) -> Feature:
    where = f"features[{i}] ({spec.name!r})"
    if spec.categories is not None:
        if spec.type != "string":
            raise StartupError(f"{where}.categories: only string features have categories")
        if list(spec.categories) != sorted(set(spec.categories)):
            raise StartupError(f"{where}.categories: expected unique strings in sorted order")
    if spec.type != "string" and "unknown_category" in spec.model_fields_set:
        raise StartupError(f"{where}.unknown_category: only string features have categories")
    return Feature(
        spec.name,
        spec.type,
        spec.nullable,
        tuple(spec.categories) if spec.categories is not None else None,
        spec.unknown_category,
    )


def _input(i: int, spec: _InputV2, features: tuple[Feature, ...], index: dict[str, int]) -> OnnxInput:
    where = f"onnx.inputs[{i}] ({spec.name!r})"
    columns = []
    for name in spec.features:
        if name not in index:
            raise StartupError(f"{where}.features: {name!r} is not one of the card's features")
        feature = features[index[name]]
        # What the input's dtype can hold without losing the value the client sent.
        if (spec.dtype == "string") != (feature.type == "string"):
            raise StartupError(
                f"{where}.dtype: {spec.dtype} cannot hold feature {name!r} of type {feature.type}; "
                "string features go in string inputs, others in numeric inputs"
            )
        if spec.dtype == "int64" and (feature.type == "float" or feature.nullable):
            raise StartupError(
                f"{where}.dtype: int64 cannot hold feature {name!r} ({feature.type}"
                f"{', nullable' if feature.nullable else ''}); use a float input"
            )
        columns.append(index[name])
    return OnnxInput(spec.name, spec.dtype, tuple(spec.features), tuple(columns))


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
