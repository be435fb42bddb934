"""The error-budget clause against a real Prometheus scraping a real service: a service answering 20 % of
its predictions with 500s has spent the budget of dev's SLO (error ratio 0.01), and promotion into dev
blocks with the measured figures; an environment without answers has spent nothing; a Prometheus that
does not answer blocks too, saying so."""

import time
from pathlib import Path

import httpx
import pytest

from pipeline.adapters import prometheus
from pipeline.adapters.service_process import running_service
from pipeline.config import Config, load_config
from pipeline.release.policy import error_budget_clause, error_budget_queries
from tests._prometheus import NAMESPACE, free_port, query, running_prometheus

pytestmark = pytest.mark.needs_tool("prometheus", "prometheus")
REPO = Path(__file__).resolve().parents[3]
REQUESTS = 200
SCRAPED_TIMEOUT_S = 30


def dev(url: str, namespace: str = NAMESPACE) -> Config:
    budget = f"promotion.error_budget={{min_remaining: 0.25, window_days: 28, prometheus_url: '{url}'}}"
    return load_config("dev", REPO / "environments", [budget, f"deploy.namespace={namespace}"])


def reading(config: Config) -> tuple[float, float] | str:
    spec = config.promotion.error_budget
    assert spec is not None and spec.prometheus_url is not None
    errors, answers = error_budget_queries(config)
    try:
        return prometheus.instant(spec.prometheus_url, errors), prometheus.instant(
            spec.prometheus_url, answers
        )
    except prometheus.PrometheusError as exc:
        return str(exc)


def test_a_service_failing_a_fifth_of_its_answers_has_spent_the_budget(
    plain_model_dir: Path, tmp_path: Path
) -> None:
    config = load_config("dev", REPO / "environments")
    faulty = {"MODEL_SERVICE_FAULT_ERROR_RATIO": "0.2"}
    with (
        running_service(config, plain_model_dir, tmp_path / "service.log", settings=faulty) as service,
        running_prometheus({"faulty0hash": service.metrics_url}, tmp_path) as url,
    ):
        with httpx.Client(timeout=5) as client:
            statuses = [
                client.post(f"{service.url}/v1/predict", json={"instances": [[0.0] * 30]}).status_code
                for _ in range(REQUESTS)
            ]
        assert 0 < statuses.count(500) < REQUESTS
        counted = 'sum(model_service_requests_total{route="/v1/predict"})'
        deadline = time.monotonic() + SCRAPED_TIMEOUT_S
        while sum(query(url, counted)) < REQUESTS and time.monotonic() < deadline:
            time.sleep(0.5)  # until Prometheus has scraped them all
        spent = error_budget_clause(dev(url), reading(dev(url)))
        quiet = error_budget_clause(dev(url, "model-quiet"), reading(dev(url, "model-quiet")))
    assert not spent.passed
    assert spent.value is not None and spent.value < 0
    assert "5xx of" in spent.detail and "SLO error ratio 0.01" in spent.detail
    assert "passes when 25% is left again" in spent.check().line()
    assert quiet.passed and quiet.value == 1.0  # nothing answered: nothing spent

    gone = f"http://127.0.0.1:{free_port()}"
    unread = error_budget_clause(dev(gone), reading(dev(gone)))
    assert not unread.passed and "did not answer" in unread.detail
