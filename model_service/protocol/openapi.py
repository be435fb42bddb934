"""The OpenAPI document, written by hand from the card (no pydantic request models on the hot path), and the
/docs page that shows it: swagger-ui, vendored under static/ and served by the service itself."""

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_service.contract.card import Feature, ModelCard
from model_service.protocol.errors import StartupError

STATIC_DIR = Path(__file__).parent / "static"
SWAGGER_UI_VERSION = "5.36.0"
"""swagger-ui-dist, as `npm pack swagger-ui-dist@5.36.0` gives it (docs/service.md, "The /docs page": how
to update it)."""


@dataclass(frozen=True)
class DocsAsset:
    """A file the /docs page loads from the service: where it is under static/, its type and sha256."""

    file: str
    media_type: str
    sha256: str


DOCS_ASSETS = {
    "swagger-ui-bundle.js": DocsAsset(
        "swagger-ui/swagger-ui-bundle.js",
        "text/javascript; charset=utf-8",
        "b164c5a22535e40dae08c00271674a67e437ec195098c55fcedf8ffac7ac3c88",
    ),
    "swagger-ui.css": DocsAsset(
        "swagger-ui/swagger-ui.css",
        "text/css; charset=utf-8",
        "7eb9f5a125e4bc9b3f0b71869b66d1a3d7c501f972f53d44ef91c2ae6c5bda5e",
    ),
    "docs-init.js": DocsAsset(
        "docs-init.js",
        "text/javascript; charset=utf-8",
        "97c33b2611271528ad4a281ac7e7d25de75bcd1d501076047690dacfc5ac1994",
    ),
}
"""Every file /docs/static/{asset} serves, by the name in its URL; nothing else under static/ is served."""

DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""The /docs page's Content-Security-Policy: scripts from the service alone (no inline script, no third
party); swagger-ui sets inline styles, so styles may be inline; requests ("Try it out") to the service only."""
ASSET_CACHE_CONTROL = "public, max-age=31536000, immutable"
"""An asset's URL carries its sha256 (`?v=`), so a cached copy never goes stale: a new file is a new URL."""

_DOCS_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<link rel="stylesheet" href="{css}"></head>
<body><div id="swagger-ui"></div>
<script src="{bundle}"></script>
<script src="{init}"></script>
</body></html>
"""


def asset_url(name: str) -> str:
    return f"/docs/static/{name}?v={DOCS_ASSETS[name].sha256[:16]}"


def docs_html(card: ModelCard) -> str:
    return _DOCS_HTML.format(
        title=f"{card.name} {card.version}",
        css=asset_url("swagger-ui.css"),
        bundle=asset_url("swagger-ui-bundle.js"),
        init=asset_url("docs-init.js"),
    )


def load_docs_assets() -> dict[str, bytes]:
    """Every /docs asset's bytes, each checked against its pinned sha256: a changed file stops the start
    (`StartupError`) rather than reach a browser."""
    assets = {}
    for name, asset in DOCS_ASSETS.items():
        path = STATIC_DIR / asset.file
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise StartupError(f"{path}: /docs asset missing; the service package is incomplete") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != asset.sha256:
            raise StartupError(
                f"{path}: sha256 {digest} differs from the pinned {asset.sha256} (DOCS_ASSETS in "
                "model_service/protocol/openapi.py); restore the vendored file or pin the new one"
            )
        assets[name] = data
    return assets


def _json(schema: dict[str, Any], example: object | None = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"content": {"application/json": media}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _errors(*statuses: int, schema: str = "Error") -> dict[str, Any]:
    return {str(status): {"description": _ERROR_TEXT[status], **_json(_ref(schema))} for status in statuses}


def _v2_errors(*statuses: int) -> dict[str, Any]:
    """The /v2 routes answer errors in the protocol's shape (model_service/protocol/errors.py `error_json`)."""
    return _errors(*statuses, schema="V2Error")


_ERROR_TEXT = {
    400: "malformed JSON",
    401: "missing or invalid credentials (when auth is on)",
    403: "the token does not grant this route's scope",
    404: "unknown model",
    413: "body larger than MODEL_SERVICE_MAX_BODY_BYTES",
    415: "Content-Type is not application/json",
    422: "wrong shape, type or non-finite value; the message names the field",
    429: "this client's rate limit; see Retry-After",
    500: "injected fault (rehearsals only) or internal error",
    503: "not ready or overloaded; see Retry-After",
}
_BODY_ERRORS = (400, 401, 413, 415, 422, 500, 503)


_JSON_TYPES = {"float": "number", "int": "integer", "bool": "boolean", "string": "string"}


def feature_schema(feature: Feature) -> dict[str, Any]:
    """The JSON Schema of one feature's value: its type, null when nullable, and its categories as an
    enum when the model refuses others (`unknown_category` "error")."""
    kind = _JSON_TYPES[feature.type]
    schema: dict[str, Any] = {"type": [kind, "null"] if feature.nullable else kind, "title": feature.name}
    if feature.categories is not None:
        if feature.unknown_category == "error":
            schema["enum"] = [*feature.categories, *([None] if feature.nullable else [])]
        else:
            schema["examples"] = list(feature.categories[:5])
            schema["description"] = "unknown categories are accepted (the encoder ignores them)"
    return schema


def example_value(feature: Feature) -> object:
    """A valid value of the feature (0, false, or a string feature's first category or "")."""
    if feature.type == "string":
        return feature.categories[0] if feature.categories else ""
    return {"float": 0.0, "int": 0, "bool": False}[feature.type]


def _inference_input(card: ModelCard) -> dict[str, Any]:
    variants = []
    for spec in card.inputs:
        width = len(spec.columns)
        datatypes = [spec.v2_datatype]
        if width == 1 and card.features[spec.columns[0]].type == "bool":
            datatypes.append("BOOL")
        variants.append(
            {
                "type": "object",
                "required": ["name", "shape", "datatype", "data"],
                "properties": {
                    "name": {"type": "string", "const": spec.name},
                    "shape": {
                        "type": "array",
                        "items": {"type": "integer"},
                        "minItems": 1 if width == 1 else 2,
                        "maxItems": 2,
                        "description": f"[N, {width}]" + (" or [N]" if width == 1 else ""),
                    },
                    "datatype": {"type": "string", "enum": datatypes},
                    "data": {
                        "type": "array",
                        "description": f"N*{width} values, row-major (or N rows of {width}): "
                        + ", ".join(spec.features),
                    },
                },
            }
        )
    return variants[0] if len(variants) == 1 else {"oneOf": variants}


def build_openapi(card: ModelCard, auth: bool) -> dict[str, Any]:
    n = card.n_features
    number = {"type": "number"}
    typed = [feature_schema(feature) for feature in card.features]
    row_list = {"type": "array", "prefixItems": typed, "items": False, "minItems": n, "maxItems": n}
    row_object = {
        "type": "object",
        "properties": dict(zip(card.feature_names, typed, strict=True)),
        "required": list(card.feature_names),
        "additionalProperties": False,
    }
    if card.is_regression:
        prediction_schema: dict[str, Any] = {
            "predictions": {"type": "array", "items": number, "description": "the predicted value per row"}
        }
    else:
        class_type = "integer" if all(isinstance(c, int) for c in card.classes) else "string"
        prediction_schema = {
            "predictions": {"type": "array", "items": {"type": class_type, "enum": list(card.classes)}},
            "probabilities": {
                "type": "array",
                "items": {
                    "type": "array",
                    "items": number,
                    "description": f"one per class {list(card.classes)}",
                },
            },
        }
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message", "request_id"],
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "request_id": {"type": "string"},
                    },
                }
            },
        },
        "V2Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
            "additionalProperties": False,
            "description": "The Open Inference Protocol's error: the message alone (the status is the class, "
            "X-Request-ID the request id)",
        },
        "PredictRequest": {
            "oneOf": [
                {
                    "type": "object",
                    "required": ["instances"],
                    "properties": {
                        "instances": {
                            "type": "array",
                            "minItems": 1,
                            "items": {"oneOf": [row_list, row_object]},
                        }
                    },
                },
                {"type": "array", "minItems": 1, "items": row_object},
            ]
        },
        "PredictResponse": {
            "type": "object",
            "properties": {
                "request_id": {"type": "string"},
                "model": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
                },
                **prediction_schema,
            },
        },
        "FeedbackRequest": {
            "type": "object",
            "required": ["labels"],
            "additionalProperties": False,
            "properties": {
                "labels": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 1000,
                    "items": {
                        "type": "object",
                        "required": ["request_id", "label"],
                        "additionalProperties": False,
                        "properties": {
                            "request_id": {
                                "type": "string",
                                "description": "the answer's request id; `request_id#row` for a row of a "
                                "batched request",
                            },
                            "label": {"type": ["string", "number", "boolean"]},
                        },
                    },
                }
            },
        },
        "InferenceRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "inputs": {
                    "type": "array",
                    "minItems": len(card.inputs),
                    "maxItems": len(card.inputs),
                    "items": _inference_input(card),
                    "description": "one tensor per input: " + ", ".join(spec.name for spec in card.inputs),
                },
                "outputs": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"name": {"type": "string"}}},
                },
            },
        },
        "InferenceResponse": {
            "type": "object",
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "outputs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "shape": {"type": "array", "items": {"type": "integer"}},
                            "datatype": {"type": "string"},
                            "data": {"type": "array"},
                        },
                    },
                },
            },
        },
    }
    example = {"instances": [{feature.name: example_value(feature) for feature in card.features}]}
    model_param = [
        {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "enum": [card.name]}}
    ]
    ok_json = {"description": "OK", **_json({"type": "object"})}
    probe = {"200": {"description": "OK"}, "503": {"description": "not ready", **_json(_ref("Error"))}}
    v2_probe = {"200": {"description": "OK"}, "503": {"description": "not ready", **_json(_ref("V2Error"))}}
    paths: dict[str, Any] = {
        "/v1/predict": {
            "post": {
                "summary": "Predict the value of each row"
                if card.is_regression
                else "Predict classes and probabilities for rows",
                "requestBody": {"required": True, **_json(_ref("PredictRequest"), example)},
                "responses": {
                    "200": {"description": "OK", **_json(_ref("PredictResponse"))},
                    **_errors(*_BODY_ERRORS),
                },
            }
        },
        "/v1/model": {"get": {"summary": "The model card", "responses": {"200": ok_json, **_errors(401)}}},
        "/v1/feedback": {
            "post": {
                "summary": "Labels for captured answers: each item's outcome (stored, duplicate, conflict, "
                "unknown, late, malformed); 404 when the capture is off (docs/monitoring.md)",
                "requestBody": {
                    "required": True,
                    **_json(_ref("FeedbackRequest"), {"labels": [{"request_id": "1a2b-0", "label": 1}]}),
                },
                "responses": {
                    "200": ok_json,
                    **_errors(400, 401, 413, 415, 422, 503),
                    "404": {
                        "description": "the capture is off: no label can be joined",
                        **_json(_ref("Error")),
                    },
                },
            }
        },
        "/v2": {
            "get": {
                "summary": "Server metadata (Open Inference Protocol)",
                "responses": {"200": ok_json, **_v2_errors(401)},
            }
        },
        "/v2/health/live": {"get": {"summary": "Liveness (open)", "security": [], "responses": v2_probe}},
        "/v2/health/ready": {"get": {"summary": "Readiness (open)", "security": [], "responses": v2_probe}},
        "/v2/models/{name}": {
            "get": {
                "summary": "Model metadata",
                "parameters": model_param,
                "responses": {"200": ok_json, **_v2_errors(401, 404)},
            }
        },
        "/v2/models/{name}/ready": {
            "get": {
                "summary": "Model readiness",
                "parameters": model_param,
                "responses": {**v2_probe, **_v2_errors(401, 404)},
            }
        },
        "/v2/models/{name}/infer": {
            "post": {
                "summary": "Inference (Open Inference Protocol v2)",
                "parameters": model_param,
                "requestBody": {"required": True, **_json(_ref("InferenceRequest"))},
                "responses": {
                    "200": {"description": "OK", **_json(_ref("InferenceResponse"))},
                    **_v2_errors(*_BODY_ERRORS, 404),
                },
            }
        },
        "/healthz": {
            "get": {"summary": "Liveness (open)", "security": [], "responses": {"200": {"description": "OK"}}}
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: model loaded and warmed, not draining (open)",
                "security": [],
                "responses": probe,
            }
        },
    }
    for operations in paths.values():
        for operation in operations.values():
            responses = operation["responses"]
            if "401" in responses:  # behind credentials: a token's scope (403), the client's rate limit (429)
                for status in ("403", "429"):
                    responses[status] = {**responses["401"], "description": _ERROR_TEXT[int(status)]}
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": f"model-service: {card.name}", "version": card.version},
        "paths": paths,
        "components": {"schemas": schemas},
    }
    if auth:
        document["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
        document["security"] = [{"bearer": []}, {"apiKey": []}]
    return document
