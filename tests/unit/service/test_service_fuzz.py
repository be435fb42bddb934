"""Fuzz /v1/predict and /v2/.../infer bodies: whatever arrives, the answer is never a 5xx."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from model_service.app import create_app
from model_service.operations.settings import ServiceSettings

NAME = "breast-cancer-classifier"
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)
numbers = st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) | st.booleans()
rows = st.lists(st.lists(numbers | scalars, min_size=28, max_size=31), max_size=3)


def any_or(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A plausible value for a field, or a value of any JSON type in its place."""
    return plausible | json_values


feature_rows = st.lists(
    st.dictionaries(st.sampled_from(["mean radius", "mean texture", "x"]), numbers | json_values, max_size=3),
    max_size=2,
)
v1_bodies = (
    json_values | st.builds(lambda r: {"instances": r}, any_or(rows | feature_rows)) | rows | feature_rows
)
# Every field of the Open Inference Protocol request gets values of every JSON type, present or absent.
v2_tensor = st.fixed_dictionaries(
    {},
    optional={
        "name": any_or(st.sampled_from(["input", "x"])),
        "shape": any_or(st.lists(st.integers(-2, 4) | st.just(30), max_size=3)),
        "datatype": any_or(st.sampled_from(["FP32", "FP64", "INT8", "BYTES"])),
        "data": any_or(st.lists(numbers, max_size=64) | rows),
        "parameters": json_values,
    },
)
VALID_TENSOR = {"name": "input", "shape": [1, 30], "datatype": "FP32", "data": [1.0] * 30}


def with_field(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A valid v2 request with the field at `path` (under inputs[0] unless top-level) set to `value`."""
    tensor = dict(VALID_TENSOR)
    body: dict[str, Any] = {"inputs": [tensor], "outputs": [{"name": "label"}]}
    target = body if path[0] in body or path[0] == "id" else tensor
    if path == ("outputs", "name"):
        body["outputs"] = [{"name": value}]
    else:
        target[path[0]] = value
    return body


# One field of an otherwise valid request replaced by a value of another JSON type: each check is reached.
one_wrong_field = st.builds(
    with_field,
    st.sampled_from(
        [
            ("name",),
            ("shape",),
            ("datatype",),
            ("data",),
            ("inputs",),
            ("outputs",),
            ("outputs", "name"),
            ("id",),
        ]
    ),
    json_values,
)
v2_bodies = (
    json_values
    | one_wrong_field
    | st.fixed_dictionaries(
        {"inputs": any_or(st.lists(any_or(v2_tensor), min_size=1, max_size=2))},
        optional={
            "id": any_or(st.text(max_size=5)),
            "outputs": any_or(
                st.lists(
                    st.fixed_dictionaries(
                        {}, optional={"name": any_or(st.sampled_from(["label", "probabilities"]))}
                    )
                    | json_values,
                    max_size=3,
                )
            ),
            "parameters": json_values,
        },
    )
)


@pytest.fixture(scope="module")
def fuzz_client(model_dir: Path) -> Iterator[TestClient]:
    with TestClient(
        create_app(ServiceSettings(model_dir=model_dir, max_rows=2)), raise_server_exceptions=False
    ) as c:
        yield c


def post(client: TestClient, url: str, body: Any) -> int:
    content = orjson.dumps(body) if not isinstance(body, bytes) else body
    return client.post(url, content=content, headers={"content-type": "application/json"}).status_code


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=v1_bodies | st.binary(max_size=40))
def test_predict_never_5xx(fuzz_client: TestClient, body: Any) -> None:
    try:
        status = post(fuzz_client, "/v1/predict", body)
    except orjson.JSONEncodeError:  # e.g. integers beyond 64 bits: send them as text instead
        status = post(fuzz_client, "/v1/predict", repr(body).encode())
    assert status < 500


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=v2_bodies)
def test_infer_never_5xx(fuzz_client: TestClient, body: Any) -> None:
    try:
        status = post(fuzz_client, f"/v2/models/{NAME}/infer", body)
    except orjson.JSONEncodeError:
        status = post(fuzz_client, f"/v2/models/{NAME}/infer", repr(body).encode())
    assert status < 500


# The mixed-type model (typed features, one input per column, an encoder that refuses unknown cities).
mixed_scalars = numbers | scalars | st.sampled_from(["Lyon", "Berlin", ""])
mixed_rows = st.lists(st.lists(mixed_scalars, min_size=3, max_size=5), max_size=3)
mixed_objects = st.lists(
    st.dictionaries(
        st.sampled_from(["age", "rooms", "garden", "city", "x"]), mixed_scalars | json_values, max_size=5
    ),
    max_size=2,
)
mixed_v1_bodies = (
    json_values | st.builds(lambda r: {"instances": r}, any_or(mixed_rows | mixed_objects)) | mixed_objects
)
mixed_tensor = st.fixed_dictionaries(
    {},
    optional={
        "name": any_or(st.sampled_from(["age", "rooms", "garden", "city"])),
        "shape": any_or(st.lists(st.integers(-1, 3), max_size=3)),
        "datatype": any_or(st.sampled_from(["FP32", "INT64", "BOOL", "BYTES"])),
        "data": any_or(st.lists(mixed_scalars, max_size=6) | mixed_rows),
    },
)
mixed_v2_bodies = json_values | st.fixed_dictionaries(
    {"inputs": any_or(st.lists(any_or(mixed_tensor), min_size=1, max_size=4))},
    optional={
        "outputs": any_or(st.lists(st.fixed_dictionaries({"name": any_or(st.just("label"))}), max_size=2))
    },
)


@pytest.fixture(scope="module")
def mixed_fuzz_client(mixed_strict_model_dir: Path) -> Iterator[TestClient]:
    settings = ServiceSettings(model_dir=mixed_strict_model_dir, max_rows=2)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=mixed_v1_bodies)
def test_typed_predict_never_5xx(mixed_fuzz_client: TestClient, body: Any) -> None:
    try:
        status = post(mixed_fuzz_client, "/v1/predict", body)
    except orjson.JSONEncodeError:
        status = post(mixed_fuzz_client, "/v1/predict", repr(body).encode())
    assert status < 500


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=mixed_v2_bodies)
def test_typed_infer_never_5xx(mixed_fuzz_client: TestClient, body: Any) -> None:
    try:
        status = post(mixed_fuzz_client, "/v2/models/mixed-classifier/infer", body)
    except orjson.JSONEncodeError:
        status = post(mixed_fuzz_client, "/v2/models/mixed-classifier/infer", repr(body).encode())
    assert status < 500
