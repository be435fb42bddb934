"""What is generated from the config models: environments/schema.json for editors."""

from __future__ import annotations

from typing import Any

from pipeline.config.loader import EXTENDS_KEY
from pipeline.config.models import Config


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
