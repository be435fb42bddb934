"""Load an environment: read its YAML files, merge them over base.yaml, validate into a Config.

Errors name the file (and line, for YAML syntax), the dotted key, what was found and what was expected.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from pipeline.config.models import TASK_METRICS, Config

BASE_FILE = "base.yaml"
EXTENDS_KEY = "extends"


class ConfigError(Exception):
    """A configuration problem a user must fix; the message names the file, the key and the fix."""


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
        kind = "" if isinstance(exc, DuplicateKeyError) else "YAML syntax error: "
        raise ConfigError(f"{path}{where}: {kind}{problem}") from None
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


class DuplicateKeyError(yaml.MarkedYAMLError):
    """A key given twice in one mapping: plain YAML loaders keep the last one without a word."""


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _refuse_duplicate_keys(node: yaml.Node, path: list[str], seen_nodes: set[int]) -> None:
    """Walk the composed document; raise DuplicateKeyError at the second occurrence of a key."""
    if id(node) in seen_nodes:  # an alias of a node already checked
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _refuse_duplicate_keys(item, [*path, str(index)], seen_nodes)
    elif isinstance(node, yaml.MappingNode):
        first: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:  # `<<: *defaults`: keys given here override those, by design
                _refuse_duplicate_keys(value_node, path, seen_nodes)
                continue
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else ""
            if key and key in first:
                dotted = ".".join([*path, key])
                raise DuplicateKeyError(
                    problem=(
                        f"duplicate key {dotted!r} (first at line {first[key].start_mark.line + 1}): "
                        "YAML would keep only the last one; merge the two into one"
                    ),
                    problem_mark=key_node.start_mark,
                )
            first[key] = key_node
            _refuse_duplicate_keys(value_node, [*path, key], seen_nodes)


def _load_yaml(text: str) -> Any:
    """One YAML document, refusing duplicate keys (also inside `!replace` mappings)."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _refuse_duplicate_keys(node, [], set())
        return loader.construct_document(node)
    finally:
        loader.dispose()


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
    except DuplicateKeyError as exc:
        raise ConfigError(f"--set {text!r}: {exc.problem}") from None
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
        # Relative to the folder of the file that names it: a workspace may extend another's files
        # (examples/*/environments/dev.yaml extends the template's).
        if not isinstance(parent, str) or not (path.parent / f"{parent}.yaml").is_file():
            raise ConfigError(
                f"{path}: {EXTENDS_KEY}: expected the name of a file in {path.parent} without .yaml "
                f"(e.g. 'base', or a relative path such as '../../environments/dev'), got {_describe(parent)}"
            )
        path = path.parent / f"{parent}.yaml"
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
        config = Config.model_validate(merged)
    except ValidationError as exc:
        lines = [
            f"{_origin([str(p) for p in error['loc']], layers)}: {_format_error(error, Config)}"
            for error in exc.errors()
        ]
        raise ConfigError("\n".join(lines)) from None
    if config.model.task is not None:
        lines = [
            f"{_origin(['gates', 'metrics', name], layers)}: {problem}"
            for name, problem in gate_metric_problems(config, config.model.task)
        ]
        if lines:
            raise ConfigError("\n".join(lines))
    return config


def gate_metric_problems(config: Config, task: str) -> list[tuple[str, str]]:
    """(metric, message) for each gate on a metric `task` does not produce; the gate stage calls this
    again once an inferred task is known."""
    produced = TASK_METRICS[task]
    return [
        (
            name,
            (
                f"gates.metrics.{name}: a {task} model has no {name}; gate on {', '.join(produced)} "
                "(write `metrics: !replace {...}` to drop the inherited gates)"
            ),
        )
        for name in config.gates.metrics
        if name not in produced
    ]


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
