"""The model card (`model.json`, docs/model-card.md): one contract for the service, the pipeline, the client.

Standard library only: the service image carries it, the client SDK needs nothing but httpx, and every stage
reads a card through `ModelDir.read_card()`. `read_card(folder)` reads and checks a card file, naming the file
and the key of the first problem; `parse_card(raw)` checks a card already decoded (GET /v1/model's).

Card version 2 describes each feature (type, nullable, categories), the ONNX inputs that take them and the
outputs per task. Version 1 is read as its version-2 view here and nowhere else: task binary with two
classes, else multiclass; one input `onnx.input.name` holding every feature; every feature a non-nullable
float; reference profiles without `kind` numeric.

One module on purpose, though long: it is the contract three packages import whole (the service's image,
the client, the pipeline), and splitting it would make each import several. The parts come first, reading
and the version views next, the JSON type checks last.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from types import MappingProxyType
from typing import Any, Literal, get_args

CARD_FILE = "model.json"
CARD_VERSION = 2
"""The version `export` writes; 1 is still read."""

FeatureType = Literal["float", "int", "bool", "string"]
"""How a client sends a feature's value: a JSON number, an integer, true/false, a string."""
InputDtype = Literal["float32", "float64", "int64", "string"]
Task = Literal["binary", "multiclass", "regression"]
UnknownCategory = Literal["ignore", "error"]
ProfileKind = Literal["numeric", "categorical"]
FEATURE_TYPES: tuple[FeatureType, ...] = get_args(FeatureType)
INPUT_DTYPES: tuple[InputDtype, ...] = get_args(InputDtype)
TASKS: tuple[Task, ...] = get_args(Task)
_VALUE_TYPES: Mapping[str, frozenset[type]] = MappingProxyType(
    {
        "float": frozenset({int, float}),
        "int": frozenset({int}),
        "bool": frozenset({bool}),
        "string": frozenset({str}),
    }
)
"""The JSON values (as Python decodes them) a feature of each type takes: true is no number."""
NUMERIC_TYPES = frozenset({"float", "int", "bool"})
"""Feature types an ONNX model takes as numbers (a bool as 0/1)."""
FLOAT_DTYPES = frozenset({"float32", "float64"})
V2_DATATYPES: Mapping[InputDtype, str] = MappingProxyType(
    {"float32": "FP32", "float64": "FP64", "int64": "INT64", "string": "BYTES"}
)
"""The Open Inference Protocol datatype of each ONNX input dtype a card names."""
FLOAT32_MAX = 3.4028234663852886e38
"""Reference edges are compared in float32 (model_service/contract/monitoring.py): beyond it they are inf."""
_HEX64 = re.compile(r"[0-9a-f]{64}")


class CardError(ValueError):
    """A card that breaks the contract; the message names the key (and the file, from `read_card`)."""


# --- the parts of a card ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Feature:
    """One feature as a client sends it: `type` float (a JSON number), int (an integer), bool (true/false)
    or string; null only when `nullable`. `categories` (string features): the values seen in training,
    sorted, "" (missing) left out. `unknown_category` "error": the encoder refuses other values, so the
    service answers 422 and the client refuses them before sending. `default`: the value the service fills
    in when a request leaves the feature out (None: the feature is required)."""

    name: str
    type: FeatureType
    nullable: bool = False
    categories: tuple[str, ...] | None = None
    unknown_category: UnknownCategory = "ignore"
    default: bool | int | float | str | None = None

    @property
    def numeric(self) -> bool:
        return self.type in NUMERIC_TYPES

    def to_json(self) -> dict[str, Any]:
        """The feature as the card writes it (`features[*]`)."""
        out: dict[str, Any] = {"name": self.name, "type": self.type, "nullable": self.nullable}
        if self.type == "string":
            out["categories"] = list(self.categories or ())
            out["unknown_category"] = self.unknown_category
        if self.default is not None:
            out["default"] = self.default
        return out

    def accepts(self, value: object) -> bool:
        """Whether a request may send `value` for this feature (its JSON type, null, a known category)."""
        if value is None:
            return self.nullable
        if type(value) not in _VALUE_TYPES[self.type]:
            return False
        known = self.categories if self.unknown_category == "error" else None
        return known is None or value in known

    @classmethod
    def from_json(cls, raw: object, where: str = "feature") -> Feature:
        """A card v2 feature (or train.json's record of one), checked; a `CardError` names `where`."""
        spec = _object(raw, where)
        name = _text(spec, "name", where)
        where = f"{where} ({name!r})"
        kind = _choice(spec, "type", where, FEATURE_TYPES)
        nullable = _flag(spec, "nullable", where)
        categories = None
        if spec.get("categories") is not None:
            if kind != "string":
                raise CardError(f"{where}.categories: only string features have categories")
            listed = _strings(spec, "categories", where)
            if list(listed) != sorted(set(listed)):
                raise CardError(f"{where}.categories: expected unique strings in sorted order")
            categories = listed
        unknown: UnknownCategory = "ignore"
        if "unknown_category" in spec:
            if kind != "string":
                raise CardError(f"{where}.unknown_category: only string features have categories")
            unknown = _choice(spec, "unknown_category", where, get_args(UnknownCategory))
        feature = cls(name, kind, nullable, categories, unknown)
        default = spec.get("default")
        if default is not None and not feature.accepts(default):
            raise CardError(f"{where}.default: {_shown(default)} is not a value of this {kind} feature")
        return cls(name, kind, nullable, categories, unknown, default)


@dataclass(frozen=True)
class OnnxInput:
    """One ONNX input `[N, len(features)]` of `dtype`; `columns` are its features' indexes in the card."""

    name: str
    dtype: InputDtype
    features: tuple[str, ...]
    columns: tuple[int, ...]

    @property
    def v2_datatype(self) -> str:
        return V2_DATATYPES[self.dtype]


@dataclass(frozen=True, kw_only=True)
class Parity:
    """ONNX against the fitted model on the evaluation rows (`export.parity` bounds it)."""

    rows: int
    label_agreement: float | None = None
    """Classification: share of rows where ONNX and the fitted model predict the same class."""
    max_abs_diff: float
    """Largest absolute difference of a class probability, or of a predicted value (regression)."""
    max_relative_diff: float | None = None
    """Regression: largest difference relative to the fitted model's value."""

    def to_json(self) -> dict[str, Any]:
        return {key: value for key, value in vars(self).items() if value is not None}


@dataclass(frozen=True)
class Lineage:
    """Where the model came from: the registry's version tags are these."""

    git_sha: str
    data_sha256: str
    config_sha256: str
    mlflow_run_id: str
    environment: str
    trainer: str | None = None
    """`model.trainer` when a fork's own training function fitted it."""


@dataclass(frozen=True)
class FeatureProfile:
    """One feature's reference bins (docs/drift.md): numeric `edges` (k bins, one more for missing values
    when the feature is nullable) or categorical `categories` (one bin each, then "other"); `frequencies`
    are the training rows' shares, one per bin."""

    name: str
    kind: ProfileKind
    frequencies: tuple[float, ...]
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()

    @property
    def categorical(self) -> bool:
        return self.kind == "categorical"

    @property
    def value_bins(self) -> int:
        """Bins of actual values: numeric edges' bins, or the categories (both without missing/other)."""
        return len(self.categories) if self.categorical else len(self.edges) - 1

    @property
    def has_missing_bin(self) -> bool:
        """A nullable numeric feature's profile: one bin past the value bins holds the missing values."""
        return not self.categorical and len(self.frequencies) == len(self.edges)


@dataclass(frozen=True)
class ScoreProfile:
    """The predicted score's reference bins: `edges` (k bins) and `frequencies` (k shares)."""

    edges: tuple[float, ...]
    frequencies: tuple[float, ...]


@dataclass(frozen=True)
class Reference:
    """What live inputs and predictions are compared with (docs/model-card.md, `reference`)."""

    features: tuple[FeatureProfile, ...]
    """One profile per feature, in the card's feature order."""
    score: ScoreProfile


@dataclass(frozen=True)
class ModelCard:
    """A checked card: what the service serves, what the client sends and what the stages read."""

    raw: Mapping[str, Any] = field(repr=False, compare=False)
    """The card as written: GET /v1/model answers it unchanged."""
    card_version: int
    name: str
    version: str
    task: Task
    onnx_file: str
    """The ONNX file's name, beside the card."""
    sha256: str
    """The ONNX file's sha256 (the service refuses a file that differs)."""
    opset: int
    inputs: tuple[OnnxInput, ...]
    features: tuple[Feature, ...]
    classes: tuple[int | str, ...]
    """The classes in probability-column order (empty for a regression)."""
    outputs: Mapping[str, str]
    """Role → ONNX output name: label and probabilities (classification) or value (regression)."""
    created_at: str | None = None
    metrics: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    """The training run's metrics on the evaluation rows (empty when the card has none)."""
    parity: Parity | None = None
    lineage: Lineage | None = None
    reference: Reference | None = None
    """None for a card exported before drift monitoring: the service serves it with drift metrics off."""
    folder: Path | None = None
    """The folder it was read from (None: decoded from an answer of the service)."""

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(feature.name for feature in self.features)

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def defaults(self) -> Mapping[str, bool | int | float | str]:
        """Feature name -> the value filled in when a request leaves it out (features with a default)."""
        return MappingProxyType({f.name: f.default for f in self.features if f.default is not None})

    @property
    def is_regression(self) -> bool:
        return self.task == "regression"

    @property
    def numeric_only(self) -> bool:
        """One float input holding every feature in card order, all float and never null: the model the
        service's fast row parser serves (every card version 1, and the numeric default in version 2)."""
        (first, *rest) = self.inputs
        return (
            not rest
            and first.dtype in FLOAT_DTYPES
            and first.features == self.feature_names
            and all(feature.type == "float" and not feature.nullable for feature in self.features)
        )

    @property
    def onnx_path(self) -> Path:
        if self.folder is None:
            raise CardError(f"card {self.name} {self.version}: read without its folder, so no ONNX file")
        return self.folder / self.onnx_file


# --- reading ----------------------------------------------------------------------------------------------


def read_card(folder: Path) -> ModelCard:
    """Read and check `folder/model.json`; `CardError` with one line naming the file and the key."""
    path = folder / CARD_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CardError(f"{path}: model card not found; export the model first") from None
    try:
        raw = json.loads(data, parse_constant=_refuse_constant, parse_float=_finite_float)
    except ValueError as exc:
        raise CardError(f"{path}: not valid JSON ({exc})") from None
    try:
        return parse_card(raw, folder=folder)
    except CardError as exc:
        raise CardError(f"{path}: {exc}") from None


def parse_card(raw: object, *, folder: Path | None = None) -> ModelCard:
    """Check a decoded card (version 1 or 2) and return its version-2 view; `CardError` naming the key."""
    card = _object(raw, "card")
    version = card.get("card_version")
    if type(version) is not int or version not in {1, 2}:
        raise CardError(f"card_version: expected 1 or 2, got {_shown(version)}")
    core = _v1(card) if version == 1 else _v2(card)
    features = core["features"]
    return ModelCard(
        raw=card,
        card_version=version,
        folder=folder,
        created_at=_optional_text(card, "created_at", ""),
        metrics=_metrics(card.get("metrics")),
        parity=_parity(card.get("parity")),
        lineage=_lineage(card.get("lineage")),
        reference=None if card.get("reference") is None else _reference(card["reference"], features),
        **core,
    )


def _v1(card: Mapping[str, Any]) -> dict[str, Any]:
    name, version = _text(card, "name", ""), _text(card, "version", "")
    onnx = _object(card.get("onnx"), "onnx")
    onnx_file = _onnx_file(onnx)
    single = _object(onnx.get("input"), "onnx.input")
    dtype = _choice(single, "dtype", "onnx.input", ("float32", "float64"))
    names = []
    for i, raw in enumerate(_list(card, "features", "", minimum=1)):
        where = f"features[{i}]"
        spec = _object(raw, where)
        names.append(_text(spec, "name", where))
        if _choice(spec, "dtype", where, ("float32", "float64")) != dtype:
            raise CardError(f"features: every dtype must equal onnx.input.dtype {dtype!r}")
    _unique(names, "features: names must be unique")
    classes = _classes(card, "binary or multiclass")
    return {
        "name": name,
        "version": version,
        "task": "binary" if len(classes) == 2 else "multiclass",
        **onnx_file,
        "inputs": (
            OnnxInput(_text(single, "name", "onnx.input"), dtype, tuple(names), tuple(range(len(names)))),
        ),
        "features": tuple(Feature(feature_name, "float") for feature_name in names),
        "classes": classes,
        "outputs": _outputs(onnx, "binary"),
    }


def _v2(card: Mapping[str, Any]) -> dict[str, Any]:
    name, version = _text(card, "name", ""), _text(card, "version", "")
    task = _choice(card, "task", "", TASKS)
    onnx = _object(card.get("onnx"), "onnx")
    onnx_file = _onnx_file(onnx)
    features = tuple(
        Feature.from_json(raw, f"features[{i}]")
        for i, raw in enumerate(_list(card, "features", "", minimum=1))
    )
    index = {feature.name: i for i, feature in enumerate(features)}
    if len(index) != len(features):
        raise CardError("features: names must be unique")
    inputs = tuple(
        _input(raw, f"onnx.inputs[{i}]", features, index)
        for i, raw in enumerate(_list(onnx, "inputs", "onnx", minimum=1))
    )
    _unique([spec.name for spec in inputs], "onnx.inputs: input names must be unique")
    placed = [column for spec in inputs for column in spec.columns]
    if len(placed) != len(set(placed)):
        twice = next(features[c].name for c in placed if placed.count(c) > 1)
        raise CardError(f"onnx.inputs: feature {twice!r} is in more than one input")
    missing = [feature.name for i, feature in enumerate(features) if i not in set(placed)]
    if missing:
        raise CardError(f"onnx.inputs: feature {missing[0]!r} is in no input; every feature feeds one")
    if task == "regression":
        if card.get("classes") is not None:
            raise CardError("classes: a regression has no classes; remove the key")
        classes: tuple[int | str, ...] = ()
    else:
        classes = _classes(card, task)
    return {
        "name": name,
        "version": version,
        "task": task,
        **onnx_file,
        "inputs": inputs,
        "features": features,
        "classes": classes,
        "outputs": _outputs(onnx, task),
    }


def _onnx_file(onnx: Mapping[str, Any]) -> dict[str, Any]:
    file = _text(onnx, "file", "onnx")
    if PurePath(file).name != file or file in {".", ".."}:
        raise CardError(f"onnx.file: expected a file name inside the card's folder, got {file!r}")
    sha256 = _text(onnx, "sha256", "onnx")
    if not _HEX64.fullmatch(sha256):
        raise CardError(f"onnx.sha256: expected 64 lowercase hex digits, got {sha256[:80]!r}")
    return {"onnx_file": file, "sha256": sha256, "opset": _integer(onnx, "opset", "onnx")}


def _input(raw: object, where: str, features: Sequence[Feature], index: Mapping[str, int]) -> OnnxInput:
    spec = _object(raw, where)
    name = _text(spec, "name", where)
    where = f"{where} ({name!r})"
    dtype = _choice(spec, "dtype", where, INPUT_DTYPES)
    names = _strings(spec, "features", where, minimum=1)
    columns = []
    for feature_name in names:
        if feature_name not in index:
            raise CardError(f"{where}.features: {feature_name!r} is not one of the card's features")
        feature = features[index[feature_name]]
        # What the input's dtype can hold without losing the value the client sent.
        if (dtype == "string") != (feature.type == "string"):
            raise CardError(
                f"{where}.dtype: {dtype} cannot hold feature {feature_name!r} of type {feature.type}; "
                "string features go in string inputs, others in numeric inputs"
            )
        if dtype == "int64" and (feature.type == "float" or feature.nullable):
            raise CardError(
                f"{where}.dtype: int64 cannot hold feature {feature_name!r} ({feature.type}"
                f"{', nullable' if feature.nullable else ''}); use a float input"
            )
        columns.append(index[feature_name])
    return OnnxInput(name, dtype, names, tuple(columns))


_OUTPUT_ROLES = {"regression": ("value",), "classifier": ("label", "probabilities")}


def _outputs(onnx: Mapping[str, Any], task: str) -> Mapping[str, str]:
    """The roles the task needs (other keys are left out, as in version 1)."""
    outputs = _object(onnx.get("outputs"), "onnx.outputs")
    roles = _OUTPUT_ROLES["regression" if task == "regression" else "classifier"]
    return MappingProxyType({role: _text(outputs, role, "onnx.outputs") for role in roles})


def _classes(card: Mapping[str, Any], task: str) -> tuple[int | str, ...]:
    expected = "exactly 2" if task == "binary" else "at least 2"
    raw = card.get("classes")
    if raw is None:
        raise CardError(f"classes: a {task} model lists {expected} classes")
    if type(raw) is not list or not all(type(c) in {int, str} for c in raw):
        raise CardError(f"classes: expected a list of integers or strings, got {_shown(raw)}")
    if len(raw) < 2 or (task == "binary" and len(raw) != 2):
        raise CardError(f"classes: a {task} model lists {expected} classes")
    _unique(raw, "classes: values must be unique")
    return tuple(raw)


def _metrics(raw: object) -> Mapping[str, float]:
    if raw is None:
        return MappingProxyType({})
    metrics = _object(raw, "metrics")
    return MappingProxyType({name: _number(metrics, name, "metrics") for name in metrics})


def _parity(raw: object) -> Parity | None:
    if raw is None:
        return None
    parity = _object(raw, "parity")
    return Parity(
        rows=_integer(parity, "rows", "parity"),
        max_abs_diff=_number(parity, "max_abs_diff", "parity"),
        label_agreement=_optional_number(parity, "label_agreement", "parity"),
        max_relative_diff=_optional_number(parity, "max_relative_diff", "parity"),
    )


def _lineage(raw: object) -> Lineage | None:
    if raw is None:
        return None
    lineage = _object(raw, "lineage")
    return Lineage(
        git_sha=_text(lineage, "git_sha", "lineage"),
        data_sha256=_text(lineage, "data_sha256", "lineage"),
        config_sha256=_text(lineage, "config_sha256", "lineage"),
        mlflow_run_id=_text(lineage, "mlflow_run_id", "lineage"),
        environment=_text(lineage, "environment", "lineage"),
        trainer=_optional_text(lineage, "trainer", "lineage"),
    )


def _reference(raw: object, features: Sequence[Feature]) -> Reference:
    reference = _object(raw, "reference")
    profiles = _list(reference, "features", "reference")
    names = [profile.get("name") if type(profile) is dict else None for profile in profiles]
    expected = [feature.name for feature in features]
    if names != expected:
        raise CardError(
            f"reference.features: expected one profile per feature in the card's order {expected[:5]}..., "
            f"got {names[:5]}...; re-export the model"
        )
    score = _object(reference.get("score"), "reference.score")
    score_edges = _edges(score, "reference.score")
    return Reference(
        features=tuple(
            _profile(profile, feature, f"reference.features[{i}]")
            for i, (profile, feature) in enumerate(zip(profiles, features, strict=True))
        ),
        score=ScoreProfile(score_edges, _frequencies(score, len(score_edges) - 1, "reference.score")),
    )


def _profile(profile: Mapping[str, Any], feature: Feature, where: str) -> FeatureProfile:
    kind = profile.get("kind", "numeric")  # card version 1's profiles are all numeric and say no kind
    if feature.type == "string":
        if kind != "categorical":
            raise CardError(f"{where}.kind: expected categorical (a string feature), got {_shown(kind)}")
        categories = _strings(profile, "categories", where)
        frequencies = _frequencies(profile, len(categories) + 1, where)
        return FeatureProfile(feature.name, "categorical", frequencies, categories=categories)
    if kind != "numeric":
        raise CardError(f"{where}.kind: expected numeric, got {_shown(kind)}")
    edges = _edges(profile, where)
    bins = len(edges) - 1 + (1 if feature.nullable else 0)  # a nullable feature's missing bin, last
    return FeatureProfile(feature.name, "numeric", _frequencies(profile, bins, where), edges=edges)


def _edges(spec: Mapping[str, Any], where: str) -> tuple[float, ...]:
    raw = spec.get("edges")
    if type(raw) is not list or len(raw) < 2 or not all(type(v) in {int, float} for v in raw):
        raise CardError(f"{where}.edges: expected a list of at least 2 numbers")
    edges = tuple(float(v) for v in raw)
    finite = all(abs(v) <= FLOAT32_MAX for v in edges)  # False for NaN too
    if not finite or any(b < a for a, b in itertools.pairwise(edges)):
        raise CardError(f"{where}.edges: expected finite float32 numbers in increasing order")
    return edges


def _frequencies(spec: Mapping[str, Any], bins: int, where: str) -> tuple[float, ...]:
    raw = spec.get("frequencies")
    if type(raw) is not list or len(raw) != bins or not all(type(v) in {int, float} for v in raw):
        raise CardError(f"{where}.frequencies: expected {bins} numbers, one per bin")
    return tuple(float(v) for v in raw)


# --- checked values (JSON types exactly: true is not a number, 1.0 is not an integer) ---------------------


def _key(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _shown(value: object) -> str:
    if type(value) is dict:
        return "an object"
    if type(value) is list:
        return "a list"
    return json.dumps(value)[:80] if value is None or type(value) in {bool, int, float, str} else repr(value)


def _object(raw: object, where: str) -> Mapping[str, Any]:
    if type(raw) is not dict:
        raise CardError(f"{where}: expected an object, got {'nothing' if raw is None else _shown(raw)}")
    return raw


def _text(spec: Mapping[str, Any], key: str, where: str) -> str:
    value = spec.get(key)
    if type(value) is not str or not value:
        raise CardError(
            f"{_key(where, key)}: expected a non-empty string, got {_missing_or(value, key, spec)}"
        )
    return value


def _optional_text(spec: Mapping[str, Any], key: str, where: str) -> str | None:
    return None if spec.get(key) is None else _text(spec, key, where)


def _integer(spec: Mapping[str, Any], key: str, where: str) -> int:
    value = spec.get(key)
    if type(value) is not int:
        raise CardError(f"{_key(where, key)}: expected an integer, got {_missing_or(value, key, spec)}")
    return value


def _optional_number(spec: Mapping[str, Any], key: str, where: str) -> float | None:
    return None if spec.get(key) is None else _number(spec, key, where)


def _number(spec: Mapping[str, Any], key: str, where: str) -> float:
    value = spec.get(key)
    if type(value) is int or type(value) is float:
        return float(value)
    raise CardError(f"{_key(where, key)}: expected a number, got {_missing_or(value, key, spec)}")


def _flag(spec: Mapping[str, Any], key: str, where: str) -> bool:
    value = spec.get(key)
    if type(value) is not bool:
        raise CardError(f"{_key(where, key)}: expected true or false, got {_missing_or(value, key, spec)}")
    return value


def _choice(spec: Mapping[str, Any], key: str, where: str, choices: Sequence[Any]) -> Any:
    value = spec.get(key)
    if value not in choices or type(value) is not str:
        listed = ", ".join(repr(c) for c in choices)
        raise CardError(f"{_key(where, key)}: expected one of {listed}; got {_missing_or(value, key, spec)}")
    return value


def _list(spec: Mapping[str, Any], key: str, where: str, *, minimum: int = 0) -> list[Any]:
    value = spec.get(key)
    if type(value) is not list or len(value) < minimum:
        least = f" of at least {minimum}" if minimum else ""
        raise CardError(f"{_key(where, key)}: expected a list{least}, got {_missing_or(value, key, spec)}")
    return value


def _strings(spec: Mapping[str, Any], key: str, where: str, *, minimum: int = 0) -> tuple[str, ...]:
    values = _list(spec, key, where, minimum=minimum)
    if not all(type(v) is str for v in values):
        raise CardError(f"{_key(where, key)}: expected a list of strings")
    return tuple(values)


def _missing_or(value: object, key: str, spec: Mapping[str, Any]) -> str:
    return _shown(value) if key in spec else "nothing (the key is missing)"


def _unique(values: Sequence[Any], message: str) -> None:
    if len(set(values)) != len(values):
        raise CardError(message)


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is beyond the range of a double")
    return value
