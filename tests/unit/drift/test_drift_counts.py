"""The service's streaming counts equal the offline computation on the same rows; cards without a
reference keep serving with drift metrics off; the invert-scores fault and input sampling."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from starlette.testclient import TestClient

from model_service.app import create_app
from model_service.contract.monitoring import psi, scores
from model_service.model.drift import DriftCounters, InputSampler
from model_service.model.runtime import load_card
from model_service.operations.settings import ServiceSettings, parse_sensitive
from pipeline.ml.profile import SCORE_EDGES, bin_counts, shares
from pipeline.stages.export import predict_onnx
from tests._metrics import worker_metrics


def _client(model_dir: Path, **settings: Any) -> TestClient:
    return TestClient(create_app(ServiceSettings(model_dir=model_dir, **settings)))


def _scrape(client: TestClient) -> dict[str, dict[tuple[str, ...], float]]:
    out: dict[str, dict[tuple[str, ...], float]] = {}
    for family in text_string_to_metric_families(worker_metrics(client)):
        for sample in family.samples:
            key = tuple(
                value for _, value in sorted(sample.labels.items())
            )  # by label name: bin, class, feature
            out.setdefault(sample.name, {})[key] = sample.value
    return out


def test_drift_streaming_counts_equal_offline_counts(model_dir: Path, card: dict[str, Any]) -> None:
    rng = np.random.default_rng(7)
    base = np.asarray(load_rows(), dtype=np.float64)
    rows = base[rng.integers(0, len(base), 300)]
    # Values exactly on bin edges are the classic off-by-one: include some.
    for j, feature in enumerate(card["reference"]["features"][:5]):
        rows[j, j] = feature["edges"][3]
    with _client(model_dir) as client:
        sent = 0
        for size in (1, 7, 1, 50, 3, 100, 1, 137):
            batch = rows[sent : sent + size]
            assert client.post("/v1/predict", json={"instances": batch.tolist()}).status_code == 200
            sent += size
        assert sent == len(rows)
        metrics = _scrape(client)
    features = metrics["model_service_feature_bin_total"]
    for j, feature in enumerate(card["reference"]["features"]):
        expected = bin_counts(feature["edges"], rows[:, j]).tolist()
        streamed = [features[(str(b), feature["name"])] for b in range(len(expected))]
        assert streamed == expected, feature["name"]
    offline_scores = scores(predict_onnx(model_dir / "model.onnx", rows))
    expected_scores = bin_counts(SCORE_EDGES, offline_scores).tolist()
    assert [metrics["model_service_score_bin_total"][(str(b),)] for b in range(10)] == expected_scores
    predicted = np.bincount((offline_scores >= 0.5).astype(int), minlength=2)
    assert metrics["model_service_predicted_class_total"] == {("0",): predicted[0], ("1",): predicted[1]}
    # The window holds all 300 rows (< 1000), so the gauges equal the offline PSI.
    first = card["reference"]["features"][0]
    offline_psi = psi(first["frequencies"], shares(bin_counts(first["edges"], rows[:, 0])))
    assert metrics["model_service_feature_psi"][(first["name"],)] == pytest.approx(offline_psi)


def load_rows() -> Any:
    from sklearn.datasets import load_breast_cancer  # noqa: PLC0415

    return load_breast_cancer().data


def test_drift_window_keeps_only_recent_rows(model_dir: Path, card: dict[str, Any]) -> None:
    features = [f["name"] for f in card["features"]]
    counters = DriftCounters(load_card(model_dir), 100, CollectorRegistry())
    rows = np.zeros((1, len(features)), dtype=np.float32)
    probabilities = np.asarray([[0.9, 0.1]], dtype=np.float32)
    for _ in range(500):
        counters.observe(rows, probabilities)
    window_rows, counts = counters.window()
    assert 100 <= window_rows <= 110
    assert counts.sum() == window_rows * (len(features) + 2)
    assert counters.rows == 500


def test_drift_card_without_reference_serves_with_drift_metrics_off(plain_model_dir: Path, rows: Any) -> None:
    with _client(plain_model_dir) as client:
        assert client.post("/v1/predict", json={"instances": rows[:3]}).status_code == 200
        text = worker_metrics(client)
    assert "model_service_requests_total" in text
    assert "model_service_feature_bin" not in text


@pytest.fixture
def rows(card: dict[str, Any]) -> list[list[float]]:
    return load_rows()[:20].tolist()  # type: ignore[no-any-return]


def test_drift_invert_scores_fault_flips_predictions_and_stays_healthy(model_dir: Path, rows: Any) -> None:
    with _client(model_dir) as plain, _client(model_dir, fault_invert_scores=True) as inverted:
        a = plain.post("/v1/predict", json={"instances": rows}).json()
        response = inverted.post("/v1/predict", json={"instances": rows})
    assert response.status_code == 200
    b = response.json()
    assert b["predictions"] == [1 - p for p in a["predictions"]]
    assert np.allclose(np.asarray(b["probabilities"]), np.asarray(a["probabilities"])[:, ::-1])


def test_drift_invert_scores_fault_is_refused_in_prod(model_dir: Path) -> None:
    with pytest.raises(ValidationError, match="MODEL_SERVICE_FAULT_INVERT_SCORES"):
        ServiceSettings(model_dir=model_dir, environment="prod", fault_invert_scores=True)


def test_drift_input_sampling_hashes_and_drops_sensitive_fields(card: dict[str, Any]) -> None:
    features = [f["name"] for f in card["features"]]
    sensitive = parse_sensitive("mean radius:hash, mean texture:drop")
    sampler = InputSampler(features, 1.0, sensitive, seed=1)
    rows = np.asarray(load_rows()[:3], dtype=np.float32)
    records = sampler.sample(rows, np.asarray([0, 1, 1]))
    assert len(records) == 3
    first = records[0]["inputs"]
    assert "mean texture" not in first
    assert isinstance(first["mean radius"], str) and len(first["mean radius"]) == 16
    assert first["mean perimeter"] == pytest.approx(float(rows[0, 2]))
    assert records[1]["prediction"] == 1


def test_drift_input_sampling_is_sampled_and_refuses_unknown_fields(card: dict[str, Any]) -> None:
    features = [f["name"] for f in card["features"]]
    sampler = InputSampler(features, 0.1, {}, seed=3)
    rows = np.zeros((2000, len(features)), dtype=np.float32)
    assert 100 < len(sampler.sample(rows, np.zeros(2000, dtype=int))) < 300
    with pytest.raises(Exception, match="not features of the model"):
        InputSampler(features, 0.1, {"ssn": "drop"}, seed=3)
    with pytest.raises(ValueError, match="FIELD:hash or FIELD:drop"):
        parse_sensitive("ssn:encrypt")
