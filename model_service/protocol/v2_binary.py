"""The Open Inference Protocol's binary tensor data extension, for inputs and outputs.

Spec: Triton's docs/protocol/extension_binary_data.md (KServe documents the same extension). A request or
response with binary tensors is its JSON object followed by the raw tensors, in the order the tensors appear
in the JSON; the `Inference-Header-Content-Length` header gives the JSON's length. Binary data is
little-endian, row-major, without padding; a BYTES element is a 4-byte little-endian length and its bytes.

- A request input says `"parameters": {"binary_data_size": <bytes>}` instead of giving `data`:
  `read_request` slices its bytes and puts them in `data` as a numpy array (the row parsers in
  model_service/protocol/schemas.py take an array where they take a list).
- An output is sent as binary when its request output says `"parameters": {"binary_data": true}`, or when the
  request says `"parameters": {"binary_data_output": true}` and the output does not say otherwise
  (`binary_outputs`); `encode_response` then writes it as `"parameters": {"binary_data_size": <bytes>}` with
  its bytes after the JSON.
"""

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from model_service.protocol.errors import InvalidInput, MalformedBinaryData, MalformedJSON

HEADER = b"inference-header-content-length"
"""The request and response header giving the JSON object's length in bytes."""
EXTENSION = "binary_tensor_data"
"""The name servers report in GET /v2 `extensions` when they support this extension (as Triton does)."""
MEDIA_TYPE = "application/octet-stream"
"""Content-Type of a body with binary tensors (the spec's examples; a JSON Content-Type is taken too)."""

DATATYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(code)
    for name, code in (
        ("BOOL", "?"),
        ("UINT8", "u1"),
        ("UINT16", "<u2"),
        ("UINT32", "<u4"),
        ("UINT64", "<u8"),
        ("INT8", "i1"),
        ("INT16", "<i2"),
        ("INT32", "<i4"),
        ("INT64", "<i8"),
        ("FP16", "<f2"),
        ("FP32", "<f4"),
        ("FP64", "<f8"),
    )
}
"""The protocol's fixed-size datatypes as little-endian numpy dtypes (BYTES has a length per element)."""
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class BinaryBody:
    """A response body with binary outputs: the JSON object is its first `header_length` bytes."""

    body: bytes
    header_length: int
    headers: dict[str, str] | None = None
    """Extra response headers (a fallback's answer says so: model_service/model/breaker.py)."""


def read_request(raw: bytes, header_length: bytes) -> Any:
    """The JSON object at the start of `raw` with each binary input's bytes decoded into its `data`."""
    if not header_length.isdigit() or int(header_length) > len(raw):
        raise MalformedBinaryData(
            f"Inference-Header-Content-Length: expected the JSON object's length in bytes, at most the "
            f"body's {len(raw)}; got {header_length.decode('latin-1')!r}"
        )
    split = int(header_length)
    try:
        body = orjson.loads(raw[:split])
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(
            f"the first {split} bytes (Inference-Header-Content-Length) are not a JSON object: {exc}"
        ) from None
    inputs = body.get("inputs") if type(body) is dict else None
    if type(inputs) is not list:
        return body  # the row parser names what is wrong
    tail = memoryview(raw)[split:]
    offset = 0
    for i, tensor in enumerate(inputs):
        parameters = tensor.get("parameters") if type(tensor) is dict else None
        if parameters is None:
            continue
        field = f"inputs[{i}].parameters"
        if type(parameters) is not dict:
            raise InvalidInput(f"{field}: expected an object, got {type(parameters).__name__}")
        size = parameters.get("binary_data_size")
        if size is None:
            continue
        if type(size) is not int or size < 0:
            raise InvalidInput(f"{field}.binary_data_size: expected a byte count, got {size!r}")
        if "data" in tensor:
            raise InvalidInput(
                f"inputs[{i}]: has both 'data' and {field}.binary_data_size; send the tensor one way"
            )
        if offset + size > len(tail):
            raise InvalidInput(
                f"{field}.binary_data_size: {size} bytes from byte {offset} of the binary data, but only "
                f"{len(tail)} bytes follow the JSON object"
            )
        tensor["data"] = decode(f"inputs[{i}]", tensor.get("datatype"), tail[offset : offset + size])
        offset += size
    if offset != len(tail):
        raise InvalidInput(
            f"body: {len(tail)} bytes follow the JSON object, but the inputs' parameters.binary_data_size "
            f"add up to {offset}"
        )
    return body


def decode(field: str, datatype: object, data: memoryview) -> npt.NDArray[Any]:
    """One tensor's bytes as a flat array of its datatype; floats must be finite, as in JSON."""
    if datatype == "BYTES":
        return _decode_bytes(field, data)
    dtype = DATATYPES.get(datatype) if type(datatype) is str else None
    if dtype is None:
        raise InvalidInput(f"{field}.datatype: expected one of {[*DATATYPES, 'BYTES']}, got {datatype!r}")
    if len(data) % dtype.itemsize:
        raise InvalidInput(
            f"{field}.parameters.binary_data_size: {len(data)} bytes is not a whole number of {datatype} "
            f"elements of {dtype.itemsize} bytes"
        )
    array = np.frombuffer(data, dtype=dtype)
    if dtype.kind == "f" and not np.isfinite(array).all():
        k = int(np.flatnonzero(~np.isfinite(array))[0])
        raise InvalidInput(f"{field}.data[{k}]: expected a finite number, got {array[k]}")
    return array


def _decode_bytes(field: str, data: memoryview) -> npt.NDArray[Any]:
    elements: list[bytes] = []
    offset = 0
    while offset < len(data):
        if offset + _LENGTH.size > len(data):
            raise InvalidInput(f"{field}.data[{len(elements)}]: BYTES element cut short in its length prefix")
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        if offset + length > len(data):
            raise InvalidInput(
                f"{field}.data[{len(elements)}]: BYTES element of {length} bytes runs past the tensor's "
                f"{len(data)} bytes"
            )
        elements.append(bytes(data[offset : offset + length]))
        offset += length
    array = np.empty(len(elements), dtype=object)
    array[:] = elements
    return array


def binary_outputs(body: dict[str, Any], names: Iterable[str]) -> frozenset[str]:
    """The outputs to send as binary: each output's `binary_data`, else the request's `binary_data_output`.

    `names` are all the model's outputs (returned when the request lists none); the caller has checked
    the names in the request's `outputs`."""
    default = _flag(body.get("parameters"), "binary_data_output", "parameters")
    outputs = body.get("outputs")
    if type(outputs) is not list:
        return frozenset(names) if default else frozenset()
    chosen = set()
    for i, output in enumerate(outputs):
        flag = _flag(output.get("parameters"), "binary_data", f"outputs[{i}].parameters")
        if default if flag is None else flag:
            chosen.add(output["name"])
    return frozenset(chosen)


def _flag(parameters: object, key: str, field: str) -> bool | None:
    if parameters is None:
        return None
    if type(parameters) is not dict:
        raise InvalidInput(f"{field}: expected an object, got {type(parameters).__name__}")
    value = parameters.get(key)
    if value is not None and type(value) is not bool:
        raise InvalidInput(f"{field}.{key}: expected true or false, got {value!r}")
    return value


def encode_response(response: dict[str, Any], binary: frozenset[str]) -> BinaryBody:
    """The response with the outputs named in `binary` moved, as bytes, after its JSON object."""
    tensors = []
    for output in response["outputs"]:
        if output["name"] in binary:
            tensor = encode(output["datatype"], output.pop("data"))
            output["parameters"] = {"binary_data_size": len(tensor)}
            tensors.append(tensor)
    header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    return BinaryBody(b"".join((header, *tensors)), len(header))


def encode(datatype: str, data: Any) -> bytes:
    """A flat tensor's bytes (BYTES: each element's UTF-8 string, or its bytes, with a length prefix)."""
    if datatype == "BYTES":
        chunks: list[bytes] = []
        for element in data:
            raw = element if isinstance(element, bytes) else str(element).encode()
            chunks += (_LENGTH.pack(len(raw)), raw)
        return b"".join(chunks)
    return np.ascontiguousarray(data, dtype=DATATYPES[datatype]).tobytes()
