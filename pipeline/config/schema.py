"""What is generated from the config models: environments/schema.json for editors, and
docs/config-reference.md for people (`python -m pipeline schema`; `--check` fails when either is stale)."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any, Literal, TypeGuard, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from pipeline.config.loader import BASE_FILE, EXTENDS_KEY
from pipeline.config.models import Config

REFERENCE_FILE = "docs/config-reference.md"
"""Where `python -m pipeline schema` writes the reference, relative to the workspace."""

_SCALARS: dict[Any, str] = {
    int: "integer",
    float: "number",
    str: "string",
    bool: "boolean",
    Path: "path",
    Any: "any",
    type(None): "null",
}
_BOUNDS = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))


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


def config_reference() -> str:
    """Markdown reference of every section and key of an environment file, from the config models:
    type, default, allowed values and the field's docstring (docs/config-reference.md)."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from pipeline/config/models.py by `python -m pipeline schema`: edit the field",
        "     docstrings there, not this file. `nox -s lint` fails when it is stale. -->",
        "",
        f"Every key an environment file (`environments/<env>.yaml`) may set. `{EXTENDS_KEY}` names the file",
        f"it is merged over (usually `base`); the defaults below are the models' own, and `{BASE_FILE}`",
        "sets the required keys and overrides some defaults (`python -m pipeline config --env ENV` prints",
        "the resolved values). `<name>` stands for a key of your choice, `[]` for each entry of a list.",
        "Unknown keys and keys given twice are errors. How files merge: [environments.md](environments.md).",
        "",
    ]
    for name, field in Config.model_fields.items():
        if name == "name":  # taken from the file name, never written
            continue
        model = _nested_model(field.annotation)
        lines += [f"## `{name}`", ""]
        if model is None:
            lines += [*_table_header(), _row(name, field), ""]
            continue
        lines += _section(name, model, field)
    return "\n".join(lines).rstrip("\n") + "\n"


def _section(path: str, model: type[BaseModel], field: FieldInfo) -> list[str]:
    """The table of `model`'s keys under `path`, then a section for each nested model."""
    lines: list[str] = []
    if "." in path:  # a top-level section's heading is the caller's
        lines += [f"### `{path}`", ""]
    entry = path.endswith((">", "]"))  # one entry of a mapping or list: the field's rule is the container's
    about = _text(model.__doc__) or _text(field.description)
    requirement = "Required. " if field.is_required() and not entry else ""
    lines += [f"{requirement}{about}", ""]
    lines += _table_header()
    nested: list[tuple[str, type[BaseModel], FieldInfo]] = []
    for field_name, child in model.model_fields.items():
        name = child.alias or field_name  # `promotion.from`: a Python keyword, written as YAML has it
        lines.append(_row(f"{path}.{name}", child))
        child_model = _nested_model(child.annotation)
        if child_model is not None:
            nested.append((f"{path}.{name}{_container_suffix(child.annotation)}", child_model, child))
    lines.append("")
    for child_path, child_model, child in nested:
        lines += _section(child_path, child_model, child)
    return lines


def _table_header() -> list[str]:
    return ["| key | type | default | allowed | description |", "| --- | --- | --- | --- | --- |"]


def _row(path: str, field: FieldInfo) -> str:
    cells = [f"`{path}`", _type(field.annotation), _default(field), _allowed(field), _text(field.description)]
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _members(annotation: Any) -> tuple[Any, ...]:
    """The alternatives of a union (`X | None`), or the annotation alone."""
    if get_origin(annotation) in (Union, types.UnionType):
        return get_args(annotation)
    return (annotation,)


def _is_model(annotation: Any) -> TypeGuard[type[BaseModel]]:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The config model a field holds: directly, optionally, or as the values of a mapping or list."""
    for member in _members(annotation):
        if _is_model(member):
            return member
        if get_origin(member) in (dict, list):
            inner = get_args(member)[-1]
            if _is_model(inner):
                return inner
    return None


def _container_suffix(annotation: Any) -> str:
    for member in _members(annotation):
        if get_origin(member) is dict:
            return ".<name>"
        if get_origin(member) is list:
            return "[]"
    return ""


def _type(annotation: Any) -> str:
    names = [_type_name(member) for member in _members(annotation)]
    return " or ".join(dict.fromkeys(names))


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return "string"
    if origin is dict:
        key, value = get_args(annotation)
        return f"mapping of {_type(key)} to {_type(value)}"
    if origin is list:
        return f"list of {_type(get_args(annotation)[0])}"
    if _is_model(annotation):
        return "mapping (below)"
    return _SCALARS.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        fields = type(value).model_fields
        if all(
            not f.is_required() and f.get_default(call_default_factory=True) == getattr(value, name)
            for name, f in fields.items()
        ):
            return "(the defaults below)"
        value = value.model_dump(mode="json")
    return f"`{_inline(value)}`"


def _inline(value: Any) -> str:
    """A value as it would be written in YAML (flow style for mappings and lists)."""
    if isinstance(value, str):
        return value
    return json.dumps(value)  # None is null, as in YAML


def _allowed(field: FieldInfo) -> str:
    parts: list[str] = []
    for member in _members(field.annotation):
        parts += _literal_choices(member, "one of")
        if get_origin(member) is dict:
            key, value = get_args(member)
            parts += _literal_choices(key, "keys:")
            for value_member in _members(value):
                parts += _literal_choices(value_member, "values:")
    for meta in field.metadata:
        for attribute, symbol in _BOUNDS:
            bound = getattr(meta, attribute, None)
            if bound is not None:
                parts.append(f"{symbol} {bound}")
        pattern = getattr(meta, "pattern", None)
        if pattern is not None:
            parts.append(f"matches `{pattern}`")
        min_length = getattr(meta, "min_length", None)
        if min_length:
            parts.append(f"at least {min_length} entr{'y' if min_length == 1 else 'ies'}")
    return ", ".join(parts)


def _literal_choices(annotation: Any, label: str) -> list[str]:
    if get_origin(annotation) is not Literal:
        return []
    return [f"{label} " + ", ".join(f"`{choice}`" for choice in get_args(annotation))]


def _text(doc: str | None) -> str:
    """A docstring on one line."""
    return " ".join((doc or "").split())
