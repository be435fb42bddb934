"""The route table is the truth: Starlette serves exactly its rows that are not raw, the middleware resolves
the raw ones (inference) from it, and the metric labels and the OpenAPI document follow it."""

from pathlib import Path

import pytest
from starlette.routing import Route as StarletteRoute

from model_service.app import create_app
from model_service.contract.monitoring import PREDICT_ROUTE, V2_INFER_ROUTE
from model_service.model.runtime import load_card
from model_service.operations.settings import ServiceSettings
from model_service.protocol.openapi import build_openapi
from model_service.protocol.routes import (
    _RAW_TEMPLATED,
    OPEN,
    PROBES,
    ROUTES,
    UNMATCHED,
    raw_route,
    route_label,
)


def test_starlette_serves_every_row_that_is_not_raw_and_nothing_else(model_dir: Path) -> None:
    app = create_app(ServiceSettings(model_dir=model_dir))
    served = {
        (route.path, method)
        for route in app.routes
        if isinstance(route, StarletteRoute)
        for method in route.methods or ()
        if method != "HEAD"
    }
    expected = {(path, row.method) for row in ROUTES if not row.raw for path in row.paths}
    assert served == expected


def test_the_raw_rows_are_the_two_inference_routes_and_resolve_with_their_model() -> None:
    assert [(row.path, row.endpoint) for row in ROUTES if row.raw] == [
        (PREDICT_ROUTE, "predict"),
        (V2_INFER_ROUTE, "v2_infer"),
    ]
    predict = raw_route("/v1/predict")
    assert predict is not None and (predict[0].path, predict[1:]) == (PREDICT_ROUTE, (None, None))
    infer = raw_route("/v2/models/m/infer")
    assert infer is not None and (infer[0].path, infer[1:]) == (V2_INFER_ROUTE, ("m", None))
    raw_templates = [(template.names, route.path) for template, route in _RAW_TEMPLATED]
    assert raw_templates == [(("name",), V2_INFER_ROUTE), (("name", "version"), V2_INFER_ROUTE)]
    versioned = raw_route("/v2/models/m/versions/7/infer")
    assert versioned is not None and versioned[1:] == ("m", "7")
    for path in (
        "/v1/model",
        "/v2/models//infer",
        "/v2/models/a/b/infer",
        "/v2/models/m/infer/x",
        "/v1/predict/",
    ):
        assert raw_route(path) is None, path


@pytest.mark.parametrize(
    ("path", "label"),
    [
        ("/v1/predict", PREDICT_ROUTE),
        ("/v2/models/m/infer", V2_INFER_ROUTE),
        ("/v2/models/m/versions/3/infer", V2_INFER_ROUTE),
        ("/v2/models/m/versions/3/ready", "/v2/models/{name}/ready"),
        ("/v2/models/m", "/v2/models/{name}"),
        ("/healthz", "/healthz"),
        ("/nope", UNMATCHED),
        ("/v2/models/m/nope", UNMATCHED),
    ],
)
def test_metric_labels_are_the_rows_templates(path: str, label: str) -> None:
    assert route_label(path) == label


def test_probes_are_open_and_the_openapi_document_lists_every_api_route(model_dir: Path) -> None:
    assert {"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"} == PROBES
    docs = {"/docs", "/docs/static/{asset}", "/openapi.json"}
    assert PROBES | docs == OPEN
    document = build_openapi(load_card(model_dir), auth=False)
    assert set(document["paths"]) == {row.path for row in ROUTES} - docs
