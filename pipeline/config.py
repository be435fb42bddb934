"""Typed, frozen configuration loaded from environments/<env>.yaml merged over base.yaml.

Imports nothing of ours: every other module depends on this one, never the reverse.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

BASE_FILE = "base.yaml"
EXTENDS_KEY = "extends"


class ConfigError(Exception):
    """A configuration problem a user must fix; the message names the file, the key and the fix."""


class Spec(BaseModel):
    """Base of every config model: unknown keys are errors and loaded values never change."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class DataSpec(Spec):
    """Where the training data comes from and how it is split."""

    source: Literal["sklearn", "csv"] = "sklearn"
    """`sklearn`: a dataset bundled with scikit-learn (no download); `csv`: a file of your own."""
    dataset: Literal["breast_cancer", "wine", "iris"] = "breast_cancer"
    """Bundled scikit-learn dataset, used when source is `sklearn`."""
    path: Path | None = None
    """CSV file (header row, numeric feature columns), relative to the workspace; source `csv` only."""
    target: str | None = None
    """Name of the label column in the CSV; source `csv` only."""
    test_size: float = Field(0.25, gt=0, lt=1)
    """Share of rows held out for evaluation, the gate, the load test's payloads and the parity check."""
    seed: int = 42
    """Seed of the stratified split and of the estimator, so a run is reproducible."""

    @model_validator(mode="after")
    def _csv_needs_path_and_target(self) -> Self:
        if self.source == "csv" and (self.path is None or self.target is None):
            msg = "source 'csv' needs both 'path' (the CSV file) and 'target' (its label column)"
            raise ValueError(msg)
        return self


class ModelSpec(Spec):
    """What is trained and under which name it is registered."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    """Registered model name, artifact folder and service name (lowercase, digits and dashes)."""
    estimator: Literal["logistic_regression", "random_forest", "gradient_boosting"] = "gradient_boosting"
    """scikit-learn estimator family; features are standardised first for logistic_regression."""
    params: dict[str, int | float | str | bool | None] = Field(default_factory=dict)
    """Hyper-parameters passed to the estimator as keyword arguments."""


class ParitySpec(Spec):
    """How closely the ONNX export must reproduce the original model on the evaluation rows."""

    min_label_agreement: float = Field(1.0, ge=0, le=1)
    """Share of evaluation rows where ONNX and scikit-learn predict the same class."""
    max_abs_diff: float = Field(1e-4, gt=0)
    """Largest allowed absolute difference of any class probability."""


class ExportSpec(Spec):
    opset: int = Field(17, ge=9)
    """ONNX opset targeted by skl2onnx."""
    parity: ParitySpec = ParitySpec()


MetricName = Literal["roc_auc", "accuracy", "f1", "precision", "recall", "log_loss", "brier"]


class ChampionBound(Spec):
    """Change against the version serving the environment, measured in the metric's better direction.

    A delta of +0.01 on roc_auc means the candidate is 0.01 better; on log_loss it means 0.01 lower.
    """

    min_delta: float | None = None
    """Smallest allowed absolute change; negative tolerates a regression, positive demands a gain."""
    min_relative_delta: float | None = None
    """Smallest allowed change relative to the champion's value (-0.01 tolerates a 1 % regression)."""

    @model_validator(mode="after")
    def _needs_a_bound(self) -> Self:
        if self.min_delta is None and self.min_relative_delta is None:
            raise ValueError("vs_champion needs 'min_delta' or 'min_relative_delta'")
        return self


class MetricGate(Spec):
    min: float | None = None
    """Inclusive lower bound on the candidate's value."""
    max: float | None = None
    """Inclusive upper bound on the candidate's value."""
    vs_champion: ChampionBound | None = None
    """Bound on the change against the version the environment's alias points to."""

    @model_validator(mode="after")
    def _needs_a_bound(self) -> Self:
        if self.min is None and self.max is None and self.vs_champion is None:
            raise ValueError(
                "a metric gate needs 'min', 'max' or 'vs_champion' (a gate without a bound passes anything)"
            )
        return self


class GateSpec(Spec):
    mode: Literal["enforce", "warn"] = "enforce"
    """`enforce` stops the pipeline on a failed check; `warn` reports it and lets the version through."""
    metrics: dict[MetricName, MetricGate] = Field(min_length=1)
    """Checks per metric, computed from the ONNX model's outputs on the evaluation rows."""


class RegistrySpec(Spec):
    tracking_uri: str | None = None
    """MLflow tracking and registry URI; empty means a sqlite file in the workspace (no server).
    The MLFLOW_TRACKING_URI variable, when set, wins over both."""
    experiment: str | None = None
    """MLflow experiment name; defaults to the model name."""


class ServiceSpec(Spec):
    """How the reference service runs for this environment: locally, in the image and in the cluster.

    Each field maps to a MODEL_SERVICE_* setting of the service (see docs/service.md)."""

    workers: int = Field(1, ge=1, le=64)
    """Worker processes per service instance (each with its own onnxruntime session)."""
    intra_op_threads: int = Field(1, ge=0)
    """onnxruntime threads per worker; 1 when workers fill the cores."""
    max_in_flight: int = Field(64, ge=1)
    """Requests handled at once per worker before shedding load with 503 + Retry-After."""
    max_rows: int = Field(1000, ge=1)
    """Most rows in one request (422 beyond)."""
    max_body_bytes: int = Field(1_048_576, ge=64)
    """Largest request body in bytes (413 beyond)."""
    auth: Literal["none", "api-key"] = "none"
    """`api-key`: requests need a key whose sha256 is configured. Local runs (load test, rollout
    rehearsal) make a throw-away key per run; deployments read the hashes from a Secret."""


AnalysisMetricName = Literal["error_ratio", "p95_ms", "p99_ms"]


class AnalysisBound(Spec):
    """Bounds on one per-version metric measured from the service's own /metrics over a window."""

    max: float | None = Field(None, ge=0)
    """Largest allowed value for the new version (error ratio 0-1, latency in milliseconds)."""
    max_vs_stable: float | None = Field(None, gt=0)
    """Largest allowed ratio new / stable on the same window (1.5: at most 50 % worse than stable)."""

    @model_validator(mode="after")
    def _needs_a_bound(self) -> Self:
        if self.max is None and self.max_vs_stable is None:
            raise ValueError("an analysis metric needs 'max' or 'max_vs_stable' (else it passes anything)")
        return self


class AnalysisSpec(Spec):
    """How a running version is judged, like an Argo Rollouts AnalysisTemplate (Flagger: analysis)."""

    interval_seconds: int = Field(5, ge=1, le=600)
    """Length of one measurement window."""
    count: int = Field(2, ge=1, le=100)
    """Measurements per analysis step."""
    failure_limit: int = Field(0, ge=0)
    """Failed measurements tolerated per analysis step; one more aborts (Argo Rollouts' failureLimit)."""
    min_requests: int = Field(10, ge=1)
    """Requests the new version must serve in a window for it to count; fewer is 'no data'."""
    on_no_data: Literal["fail"] = "fail"
    """A window without data is a failed measurement, never a pass (Flagger halts on missing metrics)."""
    metrics: dict[AnalysisMetricName, AnalysisBound] = Field(min_length=1)
    """Bounds per metric: error_ratio (5xx / all), p95_ms and p99_ms (request latency)."""


class PauseSpec(Spec):
    seconds: int = Field(ge=1, le=3600)
    """How long to hold the current weight; there is no pause forever: approvals are explicit."""


class CanaryStep(Spec):
    """One step, exactly one key: like an entry of an Argo Rollout's spec.strategy.canary.steps."""

    set_weight: int | None = Field(None, ge=1, le=100)
    """Percent of traffic sent to the new version."""
    pause: PauseSpec | None = None
    """Hold the traffic split for a while."""
    analysis: dict[str, Any] | None = None
    """Run `rollout.analysis` now (write `analysis: {}`); an abort here rolls back."""

    @model_validator(mode="after")
    def _exactly_one_action(self) -> Self:
        given = [name for name in ("set_weight", "pause", "analysis") if getattr(self, name) is not None]
        if len(given) != 1:
            found = ", ".join(given) or "none"
            raise ValueError(f"a step has exactly one of set_weight, pause, analysis (found: {found})")
        if self.analysis:
            raise ValueError("analysis steps take no options yet: write `analysis: {}`")
        return self


class BlueGreenSpec(Spec):
    smoke_requests: int = Field(20, ge=1, le=10_000)
    """Predictions sent straight to the preview before it may take traffic; any failure aborts."""
    preview_analysis: bool = True
    """Also run `rollout.analysis` on the preview under test traffic before the switch."""
    auto_promotion: bool = True
    """Switch traffic as soon as the preview checks pass; false waits for a person (Argo: autoPromotionEnabled)."""


class RolloutSpec(Spec):
    """How a new version replaces the one serving: the plan the local rehearsal and Argo Rollouts both run."""

    strategy: Literal["canary", "blue-green"] = "canary"
    """`canary`: shift traffic step by step with analysis; `blue-green`: check a preview, then switch at once."""
    steps: list[CanaryStep] = Field(default_factory=list)
    """Canary steps, in order."""
    blue_green: BlueGreenSpec = BlueGreenSpec()
    """Blue-green settings."""
    analysis: AnalysisSpec
    """How the new version is judged."""
    scale_down_delay_seconds: int = Field(5, ge=0, le=3600)
    """After a promotion, how long the old version keeps running (drained) before it stops."""

    @model_validator(mode="after")
    def _canary_steps_are_sound(self) -> Self:
        if self.strategy != "canary":
            return self
        if not self.steps:
            raise ValueError("strategy 'canary' needs steps (set_weight, pause, analysis)")
        weights = [step.set_weight for step in self.steps if step.set_weight is not None]
        if not weights:
            raise ValueError("canary steps need at least one set_weight")
        if any(later <= earlier for earlier, later in zip(weights, weights[1:], strict=False)):
            raise ValueError(f"set_weight values must only increase, got {weights}")
        if not any(step.analysis is not None for step in self.steps):
            raise ValueError("canary steps need at least one analysis step, or nothing can roll back")
        if self.steps[0].set_weight is None:
            raise ValueError("the first canary step must be set_weight: nothing is observed at weight 0")
        return self


class Config(Spec):
    """One environment, fully resolved."""

    name: str
    """The environment's name, taken from its file name."""
    model: ModelSpec
    data: DataSpec = DataSpec()
    export: ExportSpec = ExportSpec()
    gates: GateSpec
    registry: RegistrySpec = RegistrySpec()
    service: ServiceSpec = ServiceSpec()
    rollout: RolloutSpec

    @property
    def alias(self) -> str:
        """Registry alias of the version serving this environment."""
        return self.name

    @property
    def candidate_alias(self) -> str:
        """Registry alias of the version on its way to this environment."""
        return f"{self.name}-candidate"

    def sha256(self, *sections: str) -> str:
        """Hash of the given sections (all when none), stable across key order."""
        data = self.model_dump(mode="json", include=set(sections) or None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


# --- loading -------------------------------------------------------------------------------------


def known_environments(config_dir: Path) -> list[str]:
    return sorted(p.stem for p in config_dir.glob("*.yaml") if p.name != BASE_FILE)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = _load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}{where}: YAML syntax error: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of sections at the top level, got {type(data).__name__}"
        )
    return data


class Replace(dict[str, Any]):
    """A mapping tagged `!replace` in YAML: it replaces the inherited one instead of merging into it,
    e.g. `params: !replace {C: 0.5}` when an environment switches `model.estimator`."""


class _Loader(yaml.SafeLoader):
    """SafeLoader plus the `!replace` tag."""


def _construct_replace(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Replace:
    return Replace({str(key): value for key, value in loader.construct_mapping(node, deep=True).items()})


_Loader.add_constructor("!replace", _construct_replace)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key, unless tagged `!replace`; anything else (lists too) replaces."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if (
            isinstance(value, Mapping)
            and not isinstance(value, Replace)
            and isinstance(merged.get(key), Mapping)
        ):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_override(text: str) -> tuple[list[str], Any]:
    """`gates.mode=warn` → (['gates', 'mode'], 'warn'); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: expected KEY.PATH=VALUE, e.g. --set gates.mode=warn")
    try:
        value = _load_yaml(raw)
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_EXPECTED = {
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "int_parsing": "expected an integer",
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "dict_type": "expected a mapping",
    "list_type": "expected a list",
    "missing": "required key is missing",
    "extra_forbidden": "unknown key",
}


def _format_error(error: Mapping[str, Any], model: type[BaseModel]) -> str:
    loc = [str(part) for part in error["loc"]]
    kind = error["type"]
    # pydantic appends the union member or validator name to the location; drop those parts.
    loc = [part for part in loc if not part.startswith(("function-", "literal[", "tagged-union["))]
    key = ".".join(loc) or "(top level)"
    if kind == "extra_forbidden":
        parent = _fields_at(model, loc[:-1])
        allowed = f"; allowed keys here: {', '.join(sorted(parent))}" if parent else ""
        return f"{key}: unknown key{allowed}"
    if kind == "missing":
        return f"{key}: required key is missing"
    expected = _EXPECTED.get(kind) or error["msg"]
    if kind == "value_error":
        expected = str(error["msg"]).removeprefix("Value error, ")
        return f"{key}: {expected}"
    return f"{key}: {expected}, got {_describe(error.get('input'))}"


def _fields_at(model: type[BaseModel], path: Sequence[str]) -> list[str]:
    """Names of the keys allowed at `path`, so an unknown key's error can list them."""
    current: Any = model
    for part in path:
        fields = getattr(current, "model_fields", None)
        if fields is None or part not in fields:
            return []
        annotation = fields[part].annotation
        current = next(
            (a for a in (annotation, *getattr(annotation, "__args__", ())) if hasattr(a, "model_fields")),
            None,
        )
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}))


Layer = tuple[str, dict[str, Any]]
"""Where a mapping came from (a file path, or `--set`) and the mapping."""


def load_layers(env: str, config_dir: Path) -> list[Layer]:
    """The files that make up `env`, base first, each with its own mapping."""
    known = known_environments(config_dir)
    if env not in known:
        listing = ", ".join(known) or f"none: no *.yaml in {config_dir}"
        raise ConfigError(f"unknown environment {env!r}; known environments: {listing}")
    layers: list[Layer] = []
    path = config_dir / f"{env}.yaml"
    while True:
        data = _read_yaml(path)
        layers.append((str(path), data))
        parent = data.pop(EXTENDS_KEY, None)
        if parent is None:
            return list(reversed(layers))
        if not isinstance(parent, str) or not (config_dir / f"{parent}.yaml").is_file():
            raise ConfigError(
                f"{path}: {EXTENDS_KEY}: expected the name of a file in {config_dir} without .yaml "
                f"(e.g. 'base'), got {_describe(parent)}"
            )
        path = config_dir / f"{parent}.yaml"
        if any(source == str(path) for source, _ in layers):
            raise ConfigError(f"{layers[-1][0]}: {EXTENDS_KEY}: cycle through {path.name}")


def _override_layer(overrides: Sequence[str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for text in overrides:
        path, value = parse_override(text)
        nested: Any = value
        for part in reversed(path):
            nested = {part: nested}
        data = deep_merge(data, nested)
    return data


def _origin(key: Sequence[str], layers: Sequence[Layer]) -> str:
    """The layer that last set `key`, or its nearest parent, so an error points where to edit."""
    for depth in range(len(key), 0, -1):
        for source, data in reversed(layers):
            node: Any = data
            for part in key[:depth]:
                if not isinstance(node, dict) or part not in node:
                    break
                node = node[part]
            else:
                return source
    return layers[-1][0]


def load_config(env: str, config_dir: Path, overrides: Sequence[str] = ()) -> Config:
    """Load, merge and validate one environment; raise ConfigError naming file, key and fix."""
    layers = load_layers(env, config_dir)
    if overrides:
        layers.append(("--set", _override_layer(overrides)))
    merged: dict[str, Any] = {}
    for _, data in layers:
        merged = deep_merge(merged, data)
    merged["name"] = env
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        lines = [
            f"{_origin([str(p) for p in error['loc']], layers)}: {_format_error(error, Config)}"
            for error in exc.errors()
        ]
        raise ConfigError("\n".join(lines)) from None


def diff(left: Config, right: Config) -> list[tuple[str, Any, Any]]:
    """Key-by-key differences between two environments, as (dotted key, left value, right value)."""
    out: list[tuple[str, Any, Any]] = []

    def walk(prefix: str, a: Any, b: Any) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(f"{prefix}.{key}" if prefix else key, a.get(key), b.get(key))
        elif a != b:
            out.append((prefix, a, b))

    walk("", left.model_dump(mode="json", exclude={"name"}), right.model_dump(mode="json", exclude={"name"}))
    return out


def json_schema() -> dict[str, Any]:
    """JSON schema of one environment file, for editor completion (environments/schema.json)."""
    schema = Config.model_json_schema()
    schema["properties"].pop("name", None)
    schema["properties"][EXTENDS_KEY] = {
        "type": "string",
        "description": "File (without .yaml) this environment is merged over, usually 'base'.",
    }
    _drop_required(schema)  # a file names only what differs; the merged result is what must be complete
    schema["title"] = "Environment"
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def _drop_required(node: Any) -> None:
    if isinstance(node, dict):
        node.pop("required", None)
        for value in node.values():
            _drop_required(value)
    elif isinstance(node, list):
        for value in node:
            _drop_required(value)
