"""The rendered AnalysisTemplate's PromQL against a real Prometheus: a stable and three candidate service
processes, scraped every second with the labels the ServiceMonitor's relabeling gives pods, under the same
traffic;
the exact queries of the rendered template (args substituted as Argo does) return data, and their
successCondition/failureCondition give the verdicts Argo would: a healthy candidate passes, one answering
20 % 500s and one with inverted scores fail.

The template is rendered for `deploy.prometheus.scrape_interval: 1s` (the Prometheus here), so its windows
(4 s), interval (2 s) and initialDelay (4 s) are the cluster plan's on this Prometheus' clock.

Every version answers in at least SERVICE_TIME_MS (the service's latency setting, the same for all four),
as a real model's service time would. Measured without it on these two shared cores (load average about 10
while other work ran): answers take about 0.5 ms, a window's p95 flips between 0.5 and 4.7 ms depending on
whether more than 5 % of its requests were delayed by the scheduler, and the ratio of two identical versions'
p95 reached 15, failing `p95-ms-vs-stable` for a healthy candidate.
"""

import json
import re
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from sklearn.datasets import load_breast_cancer

from pipeline.adapters.service_process import running_service
from pipeline.config import Config, load_config
from pipeline.deploy import release_file, render
from tests._processes import command_lines
from tests._prometheus import NAMESPACE, query, running_prometheus
from tests._service_models import with_reference_profile

REPO = Path(__file__).resolve().parents[3]
STABLE = "stable0hash"
CANDIDATES = {
    "healthy0hash": {},
    "errors0hash": {"MODEL_SERVICE_FAULT_ERROR_RATIO": "0.2"},
    "shift0hash": {"MODEL_SERVICE_FAULT_INVERT_SCORES": "true"},
}
"""rollouts_pod_template_hash of each candidate -> its fault settings (see model_service/operations/settings.py)."""
SERVICE_TIME_MS = "5"
"""Added to every answer of every version alike (MODEL_SERVICE_FAULT_LATENCY_MS): see the module docstring."""

pytestmark = pytest.mark.needs_tool("prometheus", "prometheus")


@pytest.fixture(scope="module")
def model_dir(plain_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The exported test model with the card's reference profile, so the service counts score bins."""
    return with_reference_profile(plain_model_dir, tmp_path_factory.mktemp("reference") / "model")


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config("dev", REPO / "environments", ["deploy.prometheus.scrape_interval=1s"])


def rendered_metrics(config: Config) -> list[dict[str, Any]]:
    """The Prometheus metrics of the rendered patch-analysis.yaml, read back from its YAML text."""
    files = render.render_environment(config, release_file.Release(image="model-service"), REPO)
    ops = yaml.safe_load(files[f"k8s/overlays/{config.name}/patch-analysis.yaml"])
    (metrics,) = [op["value"] for op in ops if op["path"] == "/spec/metrics"]
    return [m for m in metrics if "prometheus" in m["provider"]]


def query_labels(prometheus: str, promql: str, label: str) -> set[str]:
    """The values of `label` in an instant query's vector result."""
    url = f"{prometheus}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    return {sample["metric"][label] for sample in body["data"]["result"]}


def substitute(text: str, args: dict[str, str]) -> str:
    """`{{args.NAME}}` placeholders replaced, as Argo does when it creates the AnalysisRun."""
    return re.sub(r"\{\{args\.([a-z-]+)\}\}", lambda match: args[match.group(1)], text)


def condition(expression: str, result: list[float]) -> bool:
    """One of our successCondition/failureCondition expressions (expr syntax: len, index, &&, ||, <=, >)."""
    python = expression.replace("&&", " and ").replace("||", " or ")
    return bool(eval(python, {"__builtins__": {}}, {"len": len, "result": result}))


def verdict(metric: dict[str, Any], result: list[float]) -> str:
    """Argo's assessment of one measurement: failureCondition first, then successCondition."""
    if condition(metric["failureCondition"], result):
        return "Failed"
    if condition(metric["successCondition"], result):
        return "Successful"
    return "Inconclusive"


def fixed_batch() -> list[list[float]]:
    """20 rows with the data's class mix (7 malignant, 13 benign): every request carries all of them, so
    every window holds the same mix and a shift the queries see is the model's, never the sampling's
    (with single rows cycling through the data, a 4 s window's mix varied enough to move
    positive-rate-delta of the inverted candidate across its 0.2 bound)."""
    data = load_breast_cancer()
    rows = [data.data[data.target == 0][:7], data.data[data.target == 1][:13]]
    return np.concatenate(rows).tolist()  # type: ignore[no-any-return]


def send_traffic(
    urls: list[str], request: tuple[str, dict[str, Any]], stop: threading.Event, counts: dict[str, int]
) -> None:
    """The same request to every version in turn, one at a time: each version sees the same load at the
    same moments and never queues behind a second client (latency is compared across versions)."""
    path, body = request
    with httpx.Client(timeout=5) as client:
        while not stop.is_set():
            for url in urls:
                client.post(f"{url}{path}", json=body)
                counts[url] = counts.get(url, 0) + 1


def traffic(
    stack: ExitStack,
    urls: list[str],
    requests: list[tuple[str, dict[str, Any]]],
    stop: threading.Event,
    counts: dict[str, int],
) -> None:
    """One `send_traffic` thread per request, until `stack` closes: `stop` is set, then they are joined."""
    threads = [
        threading.Thread(target=send_traffic, args=(urls, request, stop, counts), daemon=True)
        for request in requests
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        stack.callback(thread.join, timeout=10)
    stack.callback(stop.set)


def requests(batch: list[list[float]], model_name: str) -> list[tuple[str, dict[str, Any]]]:
    """The batch as a v1 and as a v2 request: the judge counts both prediction routes."""
    v2_input = {"name": "input", "shape": [len(batch), len(batch[0])], "datatype": "FP64", "data": batch}
    return [
        ("/v1/predict", {"instances": batch}),
        (f"/v2/models/{model_name}/infer", {"inputs": [v2_input]}),
    ]


@pytest.fixture(scope="module")
def verdicts(
    config: Config, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """Run everything once; yield per candidate hash: metric name -> [(result, verdict)] per measurement."""
    tmp = tmp_path_factory.mktemp("prometheus")
    metrics = rendered_metrics(config)
    timing = config.cluster_timing
    batch = fixed_batch()
    stop = threading.Event()
    counts: dict[str, int] = {}
    with ExitStack() as stack:
        services = {
            pod_hash: stack.enter_context(
                running_service(
                    config,
                    model_dir,
                    tmp / f"{pod_hash}.log",
                    settings={"MODEL_SERVICE_FAULT_LATENCY_MS": SERVICE_TIME_MS, **settings},
                )
            )
            for pod_hash, settings in {STABLE: {}, **CANDIDATES}.items()
        }
        urls = {pod_hash: service.url for pod_hash, service in services.items()}
        # Prometheus scrapes each metrics port, as the ServiceMonitor's `metrics` endpoint does.
        metrics_urls = {pod_hash: service.metrics_url for pod_hash, service in services.items()}
        prometheus = stack.enter_context(running_prometheus(metrics_urls, tmp))
        model_name = json.loads((model_dir / "model.json").read_text())["name"]
        traffic(stack, list(urls.values()), requests(batch, model_name), stop, counts)
        # As Argo would: the first measurement after initialDelay, then one every interval.
        time.sleep(timing.initial_delay)
        results: dict[str, dict[str, list[tuple[list[float], str]]]] = {h: {} for h in CANDIDATES}
        for measurement in range(timing.count):
            if measurement:
                time.sleep(timing.interval)
            for pod_hash in CANDIDATES:
                args = {
                    "namespace": NAMESPACE,
                    "canary-hash": pod_hash,
                    "stable-hash": STABLE,
                    "prometheus-address": prometheus,
                }
                for metric in metrics:
                    promql = substitute(metric["provider"]["prometheus"]["query"], args)
                    result = query(prometheus, promql)
                    results[pod_hash].setdefault(metric["name"], []).append((result, verdict(metric, result)))
        stop.set()
        # The routes the rendered selector matches, as this Prometheus evaluates its regex.
        first_query = substitute(
            metrics[0]["provider"]["prometheus"]["query"], {"namespace": NAMESPACE, "canary-hash": STABLE}
        )
        total = re.search(r"model_service_requests_total\{[^}]*\}", first_query)
        assert total is not None, first_query
        routes = query_labels(prometheus, f"count by (route) ({total.group(0)})", "route")
    assert all(n > 0 for n in counts.values()), counts
    yield {
        "results": results,
        "routes": routes,
        "metrics": [m["name"] for m in metrics],
        "markers": [str(tmp), str(model_dir)],
    }


def test_the_rendered_timings_are_the_plan_on_a_one_second_scrape(config: Config) -> None:
    metrics = rendered_metrics(config)
    assert {m["interval"] for m in metrics} == {"2s"}
    assert {m["initialDelay"] for m in metrics} == {"4s"}
    assert all("[4s]" in m["provider"]["prometheus"]["query"] for m in metrics)


def run_phase(measurements: dict[str, list[tuple[list[float], str]]], failure_limit: int) -> str:
    """The AnalysisRun's phase: a metric with more failed measurements than failureLimit fails the run."""
    failed = [
        name for name, done in measurements.items() if sum(v == "Failed" for _, v in done) > failure_limit
    ]
    return "Failed" if failed else "Successful"


def test_a_healthy_candidate_gets_data_and_passes_every_metric(
    config: Config, verdicts: dict[str, Any]
) -> None:
    healthy = verdicts["results"]["healthy0hash"]
    assert set(healthy) == set(verdicts["metrics"])
    for name, measurements in healthy.items():
        for result, outcome in measurements:
            assert len(result) == 1, (name, result)  # data, one sample
            assert outcome == "Successful", (name, result)
    assert run_phase(healthy, config.rollout.analysis.failure_limit) == "Successful"


def test_a_candidate_answering_20_percent_errors_fails_on_error_ratio(
    config: Config, verdicts: dict[str, Any]
) -> None:
    errors = verdicts["results"]["errors0hash"]
    assert [outcome for _, outcome in errors["error-ratio"]] == ["Failed"] * len(errors["error-ratio"])
    ratios = [result[0] for result, _ in errors["error-ratio"]]
    assert all(0.1 < ratio < 0.3 for ratio in ratios), ratios
    assert run_phase(errors, config.rollout.analysis.failure_limit) == "Failed"


def test_a_candidate_with_inverted_scores_fails_on_prediction_shift_not_on_errors(
    config: Config, verdicts: dict[str, Any]
) -> None:
    shift = verdicts["results"]["shift0hash"]
    assert all(outcome == "Successful" for _, outcome in shift["error-ratio"])
    # Inverted scores flip the predicted class of every row: with 13 of 20 rows benign the shares move by
    # 2 * 13/20 - 1 = 0.3 > 0.2. (score-psi is measured too; with this logistic model it stays under 0.6.)
    assert all(outcome == "Failed" for _, outcome in shift["positive-rate-delta"]), shift[
        "positive-rate-delta"
    ]
    assert all(len(result) == 1 for result, _ in shift["score-psi"])
    assert run_phase(shift, config.rollout.analysis.failure_limit) == "Failed"


def test_the_rendered_selector_counts_v1_and_v2_predictions_and_no_probe(verdicts: dict[str, Any]) -> None:
    assert verdicts["routes"] == {"/v1/predict", "/v2/models/{name}/infer"}


def test_every_process_is_stopped(verdicts: dict[str, Any]) -> None:
    left = [cmdline for _, cmdline in command_lines() if any(m in cmdline for m in verdicts["markers"])]
    assert left == []
