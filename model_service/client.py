"""A client SDK for the service: sync `Client` and async `AsyncClient`, /v1 and /v2, with retries.

    from model_service.client import Client
    with Client("http://127.0.0.1:8000", api_key="...", timeout=2.0) as client:
        answer = client.predict([{"mean radius": 17.99, ...}])   # rows as dicts keyed by feature, or lists
        answer.predictions, answer.probabilities, answer.model_version, answer.request_id

- Typed from the model card (version 2, or version 1 read as all-float features): `client.card()` reads
  GET /v1/model once; rows are lists in the card's feature order or dicts keyed by feature name, and each
  value is checked by its feature's type (float, int, bool, string; null, or NaN, where nullable; a
  category the model refuses) before anything is sent: `RowError`, naming the row and the feature.
- Answers: `predictions` (classes, or a regression's values) and `probabilities` (None for a regression).
- Auth: `api_key` (X-API-Key) or `token` (Authorization: Bearer, a JWT), as docs/service.md describes.
- Request ids: every call sends X-Request-ID (yours, or a new one) and keeps it over its retries, so the
  service's log lines of all attempts share it; the answer carries it.
- `timeout` bounds the whole call, retries and waits included: past it, `ServiceTimeout`.
- Retries: 502/503/504 and connection failures, after a jittered exponential backoff, or after the
  service's Retry-After on a 503 when it gives one; never a 4xx (the same request would fail again) nor a
  500. A wait that would end past the deadline is not started: the last error is raised instead.
- Errors: `ServiceError` subclasses by status (`InvalidInput` for 422, `Unauthorized`, `NotFound`,
  `Overloaded` for 503, ...) carrying the service's error JSON, both /v1's `{"error": {"code", "message",
  "request_id"}}` and /v2's `{"error": "<message>"}`; `InvalidInput.field` is the field the message names.

/v2 requests carry one tensor per ONNX input of the card (FP32, FP64, INT64, BYTES), as binary tensor data
(the Open Inference Protocol's extension, model_service/v2_binary.py) unless `binary=False`; an input
holding a null goes as JSON in the same request, since binary floats are finite and BYTES has no null. Only httpx is needed (the `client` dependency group): no numpy, no onnxruntime.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import math
import numbers
import os
import random
import struct
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import httpx

from model_service.contract.card import CardError, Feature, ModelCard, OnnxInput, parse_card

Row = Mapping[str, Any] | Sequence[Any]
RETRIED_STATUSES = frozenset({502, 503, 504})
_INFERENCE_HEADER = "inference-header-content-length"
_PACK_FORMATS = {"FP32": "f", "FP64": "d", "INT64": "q"}
_OUTPUT_FORMATS = {"FP32": "f", "FP64": "d", "INT64": "q", "INT32": "i"}


class ClientError(Exception):
    """Base class of everything this module raises."""


class RowError(ClientError, ValueError):
    """A row does not fit the model card; raised before the request is sent."""


class ServiceTimeout(ClientError, TimeoutError):
    """No answer within the call's `timeout` (retries and waits included)."""


class ServiceUnreachable(ClientError, ConnectionError):
    """The connection failed on every attempt (refused, reset, DNS)."""


class ServiceError(ClientError):
    """The service answered with an error status: `status`, `message`, the `body` (its error JSON), the
    `code` (/v1; on /v2 the protocol carries none: None), the `request_id` and the response headers."""

    status_classes: ClassVar[dict[int, type[ServiceError]]] = {}

    def __init__(self, status: int, body: Any, headers: Mapping[str, str], request_id: str) -> None:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):  # /v1: {"error": {"code", "message", "request_id"}}
            self.code: str | None = str(error.get("code"))
            self.message = str(error.get("message"))
        elif isinstance(error, str):  # /v2: {"error": "<message>"}
            self.code, self.message = None, error
        else:
            self.code, self.message = None, f"HTTP {status} without the service's error JSON: {body!r:.200}"
        self.status = status
        self.body = body
        self.headers = dict(headers)
        self.request_id = request_id
        super().__init__(
            f"{status} {self.code or ''} {self.message} (request {request_id})".replace("  ", " ")
        )

    @classmethod
    def of(cls, response: httpx.Response, request_id: str) -> ServiceError:
        try:
            body = response.json()
        except ValueError:
            body = response.text
        kind = cls.status_classes.get(
            response.status_code, ServerError if response.status_code >= 500 else cls
        )
        return kind(response.status_code, body, response.headers, request_id)


class BadRequest(ServiceError):
    """400: the body is not JSON (or not a binary tensor request)."""


class Unauthorized(ServiceError):
    """401: no or a bad credential."""


class NotFound(ServiceError):
    """404: no such route or model."""


class PayloadTooLarge(ServiceError):
    """413: split the rows over several calls."""


class InvalidInput(ServiceError):
    """422: the rows do not fit the model; `field` is what the message names (`instances[3]`, ...)."""

    @property
    def field(self) -> str:
        return self.message.partition(":")[0]


class ServerError(ServiceError):
    """5xx other than the ones below."""


class Overloaded(ServerError):
    """503: shedding load, not ready or shutting down; retried while the deadline allows."""


ServiceError.status_classes.update(
    {
        400: BadRequest,
        401: Unauthorized,
        404: NotFound,
        413: PayloadTooLarge,
        422: InvalidInput,
        503: Overloaded,
    }
)


@dataclass(frozen=True)
class Prediction:
    """One call's answer: a prediction per row (a class, or a regression's predicted value) and, for a
    classifier, the class probabilities per row (None for a regression)."""

    predictions: list[Any]
    probabilities: list[list[float]] | None
    model_name: str
    model_version: str
    request_id: str


@dataclass(frozen=True)
class Retry:
    """How failed attempts are retried: at most `attempts` in all; the n-th wait is uniform in
    [0, min(max_backoff_s, backoff_s * 2**n)] ("full jitter"), or the 503's Retry-After plus up to
    `backoff_s` of jitter when the service sends one."""

    attempts: int = 4
    backoff_s: float = 0.05
    max_backoff_s: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError(f"Retry: expected attempts >= 1 and backoffs >= 0, got {self}")

    def delay(self, attempt: int, response: httpx.Response | None, rng: random.Random) -> float:
        retry_after = _retry_after(response)
        if retry_after is not None:
            return retry_after + rng.uniform(0, self.backoff_s)
        return rng.uniform(0, min(self.max_backoff_s, self.backoff_s * 2**attempt))


def _retry_after(response: httpx.Response | None) -> float | None:
    if response is None or response.status_code != 503:
        return None
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else None  # the service sends seconds (RFC 9110 delay-seconds)


@dataclass(frozen=True)
class _Attempt:
    """One try of a call: its headers and time left; `failed` says how long to wait before the next."""

    core: _Core
    number: int
    headers: dict[str, str]
    request_id: str
    timeout_s: float
    deadline: float
    what: str

    def failed(self, outcome: httpx.Response | httpx.TransportError) -> float:
        """The wait before the next attempt; raises when this failure is not retried or no time is left."""
        if isinstance(outcome, httpx.TimeoutException):  # this attempt had all the time left
            raise ServiceTimeout(
                f"{self.what}: no answer within {self.core.timeout} s (request {self.request_id})"
            ) from outcome
        if isinstance(outcome, httpx.TransportError):
            failure: ClientError = ServiceUnreachable(f"{self.what}: {outcome} (request {self.request_id})")
            response = None
        else:
            failure = ServiceError.of(outcome, self.request_id)
            response = outcome
            if outcome.status_code not in RETRIED_STATUSES:
                raise failure
        wait = self.core.retry.delay(self.number, response, self.core.rng)
        if self.number + 1 >= self.core.retry.attempts or time.monotonic() + wait >= self.deadline:
            raise failure
        return wait


@dataclass
class _Core:
    """What both clients share: headers, the card, request bodies and answers; no I/O."""

    url: str
    api_key: str | None
    token: str | None
    timeout: float
    retry: Retry
    card_json: dict[str, Any] | None = None
    rng: random.Random = field(default_factory=random.Random)
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _prefix: str = field(default_factory=lambda: f"sdk-{os.getpid():x}-{random.getrandbits(24):06x}-")

    def headers(self, request_id: str) -> dict[str, str]:
        headers = {"x-request-id": request_id}
        if self.api_key is not None:
            headers["x-api-key"] = self.api_key
        if self.token is not None:
            headers["authorization"] = f"Bearer {self.token}"
        return headers

    def request_id(self, given: str | None) -> str:
        return given or f"{self._prefix}{next(self._ids):x}"

    def attempts(
        self, method: str, path: str, request_id: str | None, headers: Mapping[str, str] | None
    ) -> Iterator[_Attempt]:
        """The attempts of one call, each with the time left; ends by raising (timeout or last failure)."""
        rid = self.request_id(request_id)
        all_headers = {**self.headers(rid), **(headers or {})}
        deadline = time.monotonic() + self.timeout
        what = f"{method} {path}"
        for number in range(self.retry.attempts):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            yield _Attempt(self, number, all_headers, rid, left, deadline, what)
        raise ServiceTimeout(f"{what}: no answer within {self.timeout} s (request {rid})")

    # -- the card -------------------------------------------------------------------------------------
    @property
    def card(self) -> dict[str, Any]:
        assert self.card_json is not None, "the card is read before any row is encoded"
        return self.card_json

    @functools.cached_property
    def model_card(self) -> ModelCard:
        try:
            return parse_card(self.card)
        except CardError as exc:
            raise ClientError(
                f"model card (GET /v1/model): {exc}; this client reads card versions 1 and 2"
            ) from None

    @functools.cached_property
    def refused(self) -> tuple[frozenset[str] | None, ...]:
        """Per feature, the only strings accepted when the model refuses other categories; else None."""
        return tuple(
            frozenset(f.categories) if f.unknown_category == "error" and f.categories is not None else None
            for f in self.model_card.features
        )

    def matrix(self, rows: Sequence[Row]) -> list[list[Any]]:
        """Rows as lists in the card's feature order, each value checked against its feature (`RowError`)."""
        features = self.model_card.features
        names = {feature.name for feature in features}
        out = []
        for i, row in enumerate(rows):
            if isinstance(row, Mapping):
                unknown = sorted(set(row) - names)
                if unknown:
                    raise RowError(
                        f"rows[{i}]: unknown feature {unknown[0]!r}; the card names {len(features)}"
                    )
                missing = next((f.name for f in features if f.name not in row and f.default is None), None)
                if missing is not None:
                    raise RowError(f"rows[{i}]: missing feature {missing!r}")
                values = [row.get(feature.name, feature.default) for feature in features]
            elif isinstance(row, str | bytes) or len(row) != len(features):
                raise RowError(
                    f"rows[{i}]: expected {len(features)} values in the card's order or an object keyed by "
                    f"feature name, got {type(row).__name__ if isinstance(row, str | bytes) else len(row)}"
                )
            else:
                values = list(row)
            out.append(
                [
                    _checked(f"rows[{i}][{f.name!r}]", value, f, refused)
                    for value, f, refused in zip(values, features, self.refused, strict=True)
                ]
            )
        return out

    # -- /v1 ------------------------------------------------------------------------------------------
    def v1_answer(self, response: httpx.Response) -> Prediction:
        body = response.json()
        return Prediction(
            predictions=body["predictions"],
            probabilities=body.get("probabilities"),
            model_name=body["model"]["name"],
            model_version=body["model"]["version"],
            request_id=body["request_id"],
        )

    # -- /v2 ------------------------------------------------------------------------------------------
    def v2_path(self) -> str:
        return f"/v2/models/{self.model_card.name}/infer"

    def v2_request(
        self, matrix: list[list[Any]], request_id: str, *, binary: bool
    ) -> tuple[bytes, dict[str, str]]:
        """One tensor per ONNX input of the card, `[N, its features]` in its datatype; as binary tensor
        data when `binary`, except an input holding a null (binary floats are finite, BYTES has no null),
        which goes as JSON `data` in the same request (the extension decides per input)."""
        tensors, chunks = [], []
        for spec in self.model_card.inputs:
            numeric = spec.v2_datatype != "BYTES"
            data = [
                int(value) if numeric and type(value) is bool else value  # bool → 0/1, as the card says
                for row in matrix
                for value in (row[column] for column in spec.columns)
            ]
            tensor: dict[str, Any] = {
                "name": spec.name,
                "shape": [len(matrix), len(spec.columns)],
                "datatype": spec.v2_datatype,
            }
            if binary and None not in data:
                chunk = self._pack(spec, data)
                tensor["parameters"] = {"binary_data_size": len(chunk)}
                chunks.append(chunk)
            else:
                tensor["data"] = data
            tensors.append(tensor)
        if not binary:
            body = {"id": request_id, "inputs": tensors}
            return json.dumps(body).encode(), {"content-type": "application/json"}
        header = json.dumps(
            {"id": request_id, "inputs": tensors, "parameters": {"binary_data_output": True}}
        ).encode()
        return b"".join((header, *chunks)), {
            "content-type": "application/octet-stream",
            _INFERENCE_HEADER: str(len(header)),
        }

    def _pack(self, spec: OnnxInput, data: list[Any]) -> bytes:
        if spec.v2_datatype == "BYTES":
            encoded = [value.encode() for value in data]
            return b"".join(struct.pack("<I", len(raw)) + raw for raw in encoded)
        code = _PACK_FORMATS[spec.v2_datatype]
        try:
            return struct.pack(f"<{len(data)}{code}", *data)
        except (OverflowError, struct.error):
            k = next(k for k, value in enumerate(data) if not _packs(code, value))
            row, j = divmod(k, len(spec.columns))
            name = self.model_card.features[spec.columns[j]].name
            raise RowError(f"rows[{row}][{name!r}]: {data[k]} is beyond {spec.v2_datatype}'s range") from None

    def v2_answer(self, response: httpx.Response) -> Prediction:
        raw = response.content
        length = response.headers.get(_INFERENCE_HEADER)
        split = int(length) if length is not None else len(raw)
        body = json.loads(raw[:split])
        offset = split
        outputs: dict[str, list[Any]] = {}
        shapes: dict[str, list[int]] = {}
        for output in body["outputs"]:
            size = output.get("parameters", {}).get("binary_data_size")
            if size is None:
                outputs[output["name"]] = output["data"]
            else:
                outputs[output["name"]] = _unpack(output["datatype"], raw[offset : offset + size])
                offset += size
            shapes[output["name"]] = output["shape"]
        names = self.model_card.outputs
        probabilities = None
        if "value" in names:  # a regression: one value per row, from [N, 1] or [N]
            predictions = outputs[names["value"]]
        else:
            predictions = outputs[names["label"]]
            flat = outputs[names["probabilities"]]
            n_classes = shapes[names["probabilities"]][1]
            probabilities = [flat[i : i + n_classes] for i in range(0, len(flat), n_classes)]
        return Prediction(
            predictions=predictions,
            probabilities=probabilities,
            model_name=body["model_name"],
            model_version=body["model_version"],
            request_id=body["id"],
        )


_EXPECTED = {"float": "a number", "int": "an integer", "bool": "true or false", "string": "a string"}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_MAX_LISTED_CATEGORIES = 20


def _checked(where: str, value: Any, feature: Feature, refused: frozenset[str] | None) -> Any:
    """The value as JSON carries it, when it fits the feature (as the service checks it); raises
    `RowError` naming `where` otherwise. `refused`: the only strings accepted, when the model refuses
    other categories. NaN stands for null (pandas' missing value); numpy numbers become Python's."""
    expected = _EXPECTED.get(feature.type, feature.type) + (" or null" if feature.nullable else "")
    number = _number(value)
    if value is None or (isinstance(number, float) and math.isnan(number)):
        if feature.nullable:
            return None
        raise RowError(f"{where}: expected {expected}, got {'null' if value is None else 'NaN'}")
    kind = feature.type
    if kind == "string" and isinstance(value, str):
        if refused is not None and value not in refused:
            listed = sorted(refused)
            shown = ", ".join(repr(c) for c in listed[:_MAX_LISTED_CATEGORIES])
            more = f", ... ({len(listed)} in all)" if len(listed) > _MAX_LISTED_CATEGORIES else ""
            raise RowError(
                f"{where}: unknown category {value[:64]!r}; the model was trained on [{shown}{more}] and "
                "refuses others"
            )
        return value
    is_bool = isinstance(value, bool)  # a bool is an int in Python, never a number in the card
    if kind == "bool" and is_bool:
        return value
    if kind == "int" and not is_bool and isinstance(value, numbers.Integral):
        integer = int(value)
        if not _INT64_MIN <= integer <= _INT64_MAX:
            raise RowError(f"{where}: expected an integer within int64, got {integer}")
        return integer
    if kind == "float" and number is not None:
        if isinstance(number, float) and not math.isfinite(number):
            raise RowError(f"{where}: expected a finite number, got {number}")  # JSON has no infinity
        return number
    got = type(value).__name__
    if kind == "int" and number is not None:
        got = f"{value!r} (a {got}; send integers as int)"
    raise RowError(f"{where}: expected {expected} ({kind}), got {got}")


def _number(value: Any) -> int | float | None:
    """A real number that is not a bool as Python's int or float (numpy's numbers too); else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    real: Any = value
    return real if isinstance(real, int) else float(real)


def _packs(code: str, value: Any) -> bool:
    try:
        struct.pack(f"<{code}", value)
    except (OverflowError, struct.error):
        return False
    return True


def _unpack(datatype: str, raw: bytes) -> list[Any]:
    if datatype == "BYTES":
        out, offset = [], 0
        while offset < len(raw):
            (length,) = struct.unpack_from("<I", raw, offset)
            out.append(raw[offset + 4 : offset + 4 + length].decode())
            offset += 4 + length
        return out
    code = _OUTPUT_FORMATS[datatype]
    return list(struct.unpack(f"<{len(raw) // struct.calcsize(code)}{code}", raw))


class Client:
    """Synchronous client; a context manager (or call `close`)."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        token: str | None = None,
        timeout: float = 5.0,
        retry: Retry | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._core = _Core(url.rstrip("/"), api_key, token, timeout, retry or Retry())
        self._http = httpx.Client(base_url=self._core.url, transport=transport)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def card(self) -> dict[str, Any]:
        """The model card (GET /v1/model), read once."""
        if self._core.card_json is None:
            self._core.card_json = self._send("GET", "/v1/model", request_id=None).json()
        return self._core.card

    def predict(self, rows: Sequence[Row], *, request_id: str | None = None) -> Prediction:
        """POST /v1/predict with rows as dicts keyed by feature name or lists in the card's order."""
        self.card()
        body = json.dumps({"instances": self._core.matrix(rows)}).encode()
        headers = {"content-type": "application/json"}
        return self._core.v1_answer(self._send("POST", "/v1/predict", body, headers, request_id=request_id))

    def infer(self, rows: Sequence[Row], *, binary: bool = True, request_id: str | None = None) -> Prediction:
        """POST /v2/models/{name}/infer (Open Inference Protocol), as binary tensor data unless `binary=False`."""
        self.card()
        rid = self._core.request_id(request_id)
        body, headers = self._core.v2_request(self._core.matrix(rows), rid, binary=binary)
        return self._core.v2_answer(self._send("POST", self._core.v2_path(), body, headers, request_id=rid))

    def _send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        request_id: str | None,
    ) -> httpx.Response:
        attempts = self._core.attempts(method, path, request_id, headers)
        for attempt in attempts:
            try:
                response = self._http.request(
                    method, path, content=body, headers=attempt.headers, timeout=attempt.timeout_s
                )
            except httpx.TransportError as exc:
                time.sleep(attempt.failed(exc))
                continue
            if response.is_success:
                return response
            time.sleep(attempt.failed(response))
        raise AssertionError("unreachable: `attempts` raises when it ends")


class AsyncClient:
    """Asynchronous client (asyncio); an async context manager (or await `close`)."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        token: str | None = None,
        timeout: float = 5.0,
        retry: Retry | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._core = _Core(url.rstrip("/"), api_key, token, timeout, retry or Retry())
        self._http = httpx.AsyncClient(base_url=self._core.url, transport=transport)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def card(self) -> dict[str, Any]:
        """The model card (GET /v1/model), read once."""
        if self._core.card_json is None:
            self._core.card_json = (await self._send("GET", "/v1/model", request_id=None)).json()
        return self._core.card

    async def predict(self, rows: Sequence[Row], *, request_id: str | None = None) -> Prediction:
        """POST /v1/predict with rows as dicts keyed by feature name or lists in the card's order."""
        await self.card()
        body = json.dumps({"instances": self._core.matrix(rows)}).encode()
        headers = {"content-type": "application/json"}
        response = await self._send("POST", "/v1/predict", body, headers, request_id=request_id)
        return self._core.v1_answer(response)

    async def infer(
        self, rows: Sequence[Row], *, binary: bool = True, request_id: str | None = None
    ) -> Prediction:
        """POST /v2/models/{name}/infer (Open Inference Protocol), as binary tensor data unless `binary=False`."""
        await self.card()
        rid = self._core.request_id(request_id)
        body, headers = self._core.v2_request(self._core.matrix(rows), rid, binary=binary)
        response = await self._send("POST", self._core.v2_path(), body, headers, request_id=rid)
        return self._core.v2_answer(response)

    async def _send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        request_id: str | None,
    ) -> httpx.Response:
        attempts = self._core.attempts(method, path, request_id, headers)
        for attempt in attempts:
            try:
                response = await self._http.request(
                    method, path, content=body, headers=attempt.headers, timeout=attempt.timeout_s
                )
            except httpx.TransportError as exc:
                await asyncio.sleep(attempt.failed(exc))
                continue
            if response.is_success:
                return response
            await asyncio.sleep(attempt.failed(response))
        raise AssertionError("unreachable: `attempts` raises when it ends")
