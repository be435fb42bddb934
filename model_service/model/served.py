"""The model a worker serves: `ServedModel` (the onnxruntime session, the card, the row parsers, the metrics
and drift counters) with the inference logic: JSON body in, JSON bytes out. The worker
(model_service/server/worker.py) loads it at start-up; nothing here knows ASGI or Starlette: the middleware
(model_service/server/middleware.py) and the routes call it.
"""

import os
import time
from typing import Any

import numpy as np
import orjson

from model_service.contract.card import ModelCard
from model_service.model.drift import DriftCounters, InputSampler, invert_scores
from model_service.model.runtime import OnnxModel, load_card
from model_service.model.signature import verify_model_signature
from model_service.operations.capture import CaptureWriter, Held
from model_service.operations.logs import JsonLog
from model_service.operations.metrics import Metrics
from model_service.operations.settings import ServiceSettings, parse_sensitive
from model_service.protocol.errors import InvalidInput, ModelNotFound, StartupError
from model_service.protocol.openapi import build_openapi, docs_html, load_docs_assets
from model_service.protocol.routes import BOUND
from model_service.protocol.schemas import Batch, RowParser, TypedRowParser
from model_service.protocol.v2_binary import BinaryBody, binary_outputs, encode_response

BOUND_STATUSES = [200, 400, 401, 413, 415, 422, 500, 503]
"""The statuses of the (route, status) series created at start-up (routes.BOUND), so they read 0 before
the first request."""


class ServedModel:
    """The model a worker serves and everything built from its card, loaded whole by `Service.start`."""

    def __init__(self, settings: ServiceSettings, log: JsonLog) -> None:
        card = load_card(settings.model_dir)
        signer = verify_model_signature(settings.model_dir, settings.signatures, settings.signing_public_keys)
        if settings.signatures != "off":  # `optional` and unsigned: served, and said
            level = "INFO" if signer else "WARNING"
            log.event(level, "model_signature", signed_by=signer or "unsigned", mode=settings.signatures)
        onnx = OnnxModel(
            card,
            settings.intra_op_threads,
            settings.inter_op_threads,
            registered_sha256=settings.expected_sha256,
        )
        onnx.warm_up()
        self.card: ModelCard = card
        self.onnx = onnx
        self.parser = RowParser(card.feature_names, onnx.dtype, settings.max_rows, card.defaults)
        # Every model but a classifier on one float input of non-null floats: values typed per feature.
        self.typed_parser = (
            None if card.numeric_only and not card.is_regression else TypedRowParser(card, settings.max_rows)
        )
        self.metrics = Metrics(card.name, card.version, card.sha256)
        self.metrics.bind(BOUND, BOUND_STATUSES)
        sensitive = parse_sensitive(settings.log_inputs_sensitive)
        self.drift = (  # older cards have no reference profile: drift counters off
            DriftCounters(card, settings.drift_window, self.metrics.registry, sensitive=sensitive)
            if card.reference is not None
            else None
        )
        self.inputs = (  # opt-in input sampling
            InputSampler(
                card.feature_names,
                settings.log_inputs_sample_ratio,
                sensitive,
                seed=os.getpid(),
            )
            if settings.log_inputs
            else None
        )
        self.capture = (  # off unless a folder is set; the fallback's copy shares this writer
            CaptureWriter(
                settings.capture_dir,
                card,
                self.metrics.registry,
                sample_ratio=settings.capture_sample_ratio,
                max_file_bytes=settings.capture_max_file_bytes,
                max_files=settings.capture_max_files,
                retention_days=settings.capture_retention_days,
                queue_size=settings.capture_queue_size,
                sensitive=sensitive,
            )
            if settings.capture_dir is not None
            else None
        )
        self.invert_scores = settings.fault_invert_scores
        if self.invert_scores and card.is_regression:
            raise StartupError(
                "MODEL_SERVICE_FAULT_INVERT_SCORES: a regression has no class scores to invert"
            )
        self._classes = np.asarray(card.classes)
        self._log = log
        self.model_ref = {"name": card.name, "version": card.version}
        self.card_json = orjson.dumps(card.raw)
        self.openapi_json = orjson.dumps(build_openapi(card, settings.auth_enabled))
        self.docs_html = docs_html(card)
        self.docs_assets = load_docs_assets()
        self.v2_metadata = orjson.dumps(self._v2_metadata())

    def _v2_metadata(self) -> dict[str, Any]:
        card = self.card
        inputs = [
            {"name": spec.name, "datatype": spec.v2_datatype, "shape": [-1, len(spec.columns)]}
            for spec in card.inputs
        ]
        if card.is_regression:
            outputs = [
                {
                    "name": card.outputs["value"],
                    "datatype": self.onnx.value_datatype,
                    "shape": self.onnx.value_shape,
                }
            ]
        else:
            outputs = [
                {"name": card.outputs["label"], "datatype": self.onnx.label_datatype, "shape": [-1]},
                {
                    "name": card.outputs["probabilities"],
                    "datatype": self.onnx.value_datatype,
                    "shape": [-1, len(card.classes)],
                },
            ]
        return {
            "name": card.name,
            "versions": [card.version],
            "platform": "onnxruntime_onnx",
            "inputs": inputs,
            "outputs": outputs,
        }

    # -- inference (JSON body in, JSON bytes out) ----------------------------------------------------
    def _infer(self, rows: Any) -> tuple[Any, Any]:
        started = time.perf_counter()
        predictions, probabilities = self.onnx.predict(rows)
        self.metrics.observe_inference(time.perf_counter() - started, len(rows))
        if self.invert_scores:
            predictions, probabilities = invert_scores(probabilities, self._classes)
        if self.drift is not None:
            self.drift.observe(rows, probabilities)
        if self.inputs is not None:
            for record in self.inputs.sample(rows, predictions):
                self._log.event("INFO", "input", model_version=self.card.version, **record)
        return predictions, probabilities

    def _infer_batch(self, batch: Batch) -> tuple[Any, Any]:
        """`_infer` for a typed model: named feeds in, (predictions, probabilities or values) out."""
        started = time.perf_counter()
        predictions, scores = self.onnx.predict_feeds(batch.feeds)
        self.metrics.observe_inference(time.perf_counter() - started, batch.n)
        if self.invert_scores:
            predictions, scores = invert_scores(scores, self._classes)
        if self.drift is not None:
            self.drift.observe(self.drift.encode(batch.columns), scores)
        if self.inputs is not None:
            for record in self.inputs.sample(list(zip(*batch.columns, strict=True)), predictions):
                self._log.event("INFO", "input", model_version=self.card.version, **record)
        return predictions, scores

    def predict(self, body: Any, request_id: str) -> bytes:
        if self.typed_parser is not None:
            return self._predict_typed(self.typed_parser.v1(body), request_id)
        rows = self.parser.v1(body)
        predictions, probabilities = self._infer(rows)
        capture = self.capture
        if capture is not None and capture.sampled():
            capture.hold(
                request_id, Held(request_id, self.card.version, rows, None, predictions, probabilities)
            )
        response = {
            "request_id": request_id,
            "model": self.model_ref,
            "predictions": predictions,
            "probabilities": probabilities,
        }
        return orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)

    def _predict_typed(self, batch: Batch, request_id: str) -> bytes:
        predictions, scores = self._infer_batch(batch)
        capture = self.capture
        if capture is not None and capture.sampled():
            capture.hold(
                request_id, Held(request_id, self.card.version, None, batch.columns, predictions, scores)
            )
        response = {"request_id": request_id, "model": self.model_ref, "predictions": predictions}
        if not self.card.is_regression:  # a regression's scores are its predictions
            response["probabilities"] = scores
        return orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)

    def check_model(self, name: str, version: str | None) -> None:
        if name != self.card.name:
            raise ModelNotFound(name, self.card.name)
        if version is not None and version != self.card.version:
            raise ModelNotFound(f"{name}/{version}", f"{self.card.name}/{self.card.version}")

    def v2_infer(self, body: Any, request_id: str) -> bytes | BinaryBody:
        if type(body) is not dict:
            raise InvalidInput("body: expected an object with 'inputs' (Open Inference Protocol v2)")
        inputs = body.get("inputs")
        answer_id = body.get("id", request_id)  # the client's id, else the X-Request-ID
        if type(answer_id) is not str:
            raise InvalidInput("id: expected a string")
        wanted = self._requested_outputs(body.get("outputs"))
        binary = binary_outputs(body, wanted)
        card = self.card
        if self.typed_parser is None:
            if type(inputs) is not list or len(inputs) != 1:
                raise InvalidInput(f"inputs: expected a list with 1 tensor named {card.inputs[0].name!r}")
            rows = self.parser.v2(inputs[0], card.inputs[0].name)
            n = len(rows)
            predictions, probabilities = self._infer(rows)
            columns = None
        else:
            batch = self.typed_parser.v2(inputs)
            n, rows, columns = batch.n, None, batch.columns
            predictions, probabilities = self._infer_batch(batch)
        capture = self.capture
        if capture is not None and capture.sampled():
            held = Held(answer_id, card.version, rows, columns, predictions, probabilities)
            capture.hold(request_id, held)
        outputs: list[dict[str, Any]] = []
        if card.is_regression:
            outputs.append(
                {
                    "name": card.outputs["value"],
                    "datatype": self.onnx.value_datatype,
                    "shape": [n, *self.onnx.value_shape[1:]],
                    "data": predictions,
                }
            )
        if "label" in card.outputs and card.outputs["label"] in wanted:
            outputs.append(
                {
                    "name": card.outputs["label"],
                    "datatype": self.onnx.label_datatype,
                    "shape": [n],
                    "data": predictions,
                }
            )
        if "probabilities" in card.outputs and card.outputs["probabilities"] in wanted:
            outputs.append(
                {
                    "name": card.outputs["probabilities"],
                    "datatype": "FP32" if probabilities.dtype == "float32" else "FP64",
                    "shape": list(probabilities.shape),
                    "data": probabilities.ravel(),
                }
            )
        response = {
            "model_name": card.name,
            "model_version": card.version,
            "id": answer_id,
            "outputs": outputs,
        }
        if binary:
            return encode_response(response, binary)
        return orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)

    def _requested_outputs(self, outputs: object) -> set[str]:
        known = set(self.card.outputs.values())
        if outputs is None:
            return known
        if type(outputs) is not list or not outputs:
            # The protocol's "outputs" is optional ("if not specified all outputs ... will be returned");
            # an empty list asks for nothing, which is a client mistake rather than a request.
            raise InvalidInput(
                f"outputs: expected a non-empty list of objects with a name in {sorted(known)}, "
                "or no 'outputs' for all of them"
            )
        wanted = set()
        for i, output in enumerate(outputs):
            name = output.get("name") if type(output) is dict else None
            if type(name) is not str or name not in known:
                raise InvalidInput(f"outputs[{i}].name: expected one of {sorted(known)}, got {name!r}")
            wanted.add(name)
        return wanted
