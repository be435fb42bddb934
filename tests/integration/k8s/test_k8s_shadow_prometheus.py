"""The rendered shadow AnalysisTemplate's PromQL against a real Prometheus: the stable version and two
candidates, each a service process scraped every second with the labels the ServiceMonitor gives pods, the
candidates answering copies of every request stable answers (what the HTTPRoute's RequestMirror at
`mirror_percent: 100` sends them). The exact rendered queries (args substituted as Argo does) return one
sample each; a healthy retrain (another model, fitted with a different regularisation) passes every shadow
gate, a candidate with inverted scores fails on the positive-rate delta, as Argo's conditions judge them.

Timings are the cluster plan's for `deploy.prometheus.scrape_interval: 1s` (4 s windows), and
`shadow.min_pairs` is lowered to 50 requests per window so the loopback traffic clears it on a busy machine;
the requests-per-window clause is the canary template's, proven in test_k8s_analysis_prometheus.py.
"""

import hashlib
import json
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.adapters.service_process import running_service
from pipeline.config import Config, load_config
from pipeline.deploy import release_file, render
from pipeline.deploy.names import SHADOW_FILE
from tests._prometheus import NAMESPACE, query, running_prometheus
from tests._service_models import with_reference_profile
from tests.integration.k8s.test_k8s_analysis_prometheus import (
    fixed_batch,
    requests,
    run_phase,
    substitute,
    traffic,
    verdict,
)

REPO = Path(__file__).resolve().parents[3]
STABLE = "stable0hash"
RETRAIN, INVERTED = "retrain0hash", "inverted0hash"

pytestmark = pytest.mark.needs_tool("prometheus", "prometheus")


def retrained(model_dir: Path, out: Path) -> Path:
    """The test model retrained with a stronger regularisation (C=0.05): a healthy new version whose
    probabilities differ from stable's, with its own card (sha256, version) and reference profile."""
    data = load_breast_cancer()
    x = data.data.astype(np.float32)
    classifier = LogisticRegression(C=0.05, max_iter=500)
    fitted = make_pipeline(StandardScaler(), classifier).fit(x, data.target)
    onnx_bytes = to_onnx(
        fitted,
        initial_types=[("input", FloatTensorType([None, x.shape[1]]))],
        options={id(classifier): {"zipmap": False}},
        target_opset=17,
    ).SerializeToString()
    work = out.parent / f"{out.name}-plain"
    shutil.copytree(model_dir, work)
    (work / "model.onnx").write_bytes(onnx_bytes)
    card = json.loads((work / "model.json").read_text())
    card["onnx"]["sha256"] = hashlib.sha256(onnx_bytes).hexdigest()
    card["version"] = "2"
    (work / "model.json").write_text(json.dumps(card))
    return with_reference_profile(work, out)


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(
        "dev", REPO / "environments", ["deploy.prometheus.scrape_interval=1s", "shadow.min_pairs=50"]
    )


def shadow_metrics(config: Config) -> list[dict[str, Any]]:
    files = render.render_environment(config, release_file.Release(image="model-service"), REPO)
    template = yaml.safe_load(files[f"k8s/overlays/{config.name}/{SHADOW_FILE}"])
    return template["spec"]["metrics"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def verdicts(
    config: Config, plain_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, dict[str, list[tuple[list[float], str]]]]]:
    """Per candidate hash: metric name -> [(result, verdict)] per measurement, as Argo would take them."""
    tmp = tmp_path_factory.mktemp("shadow-prometheus")
    stable_model = with_reference_profile(plain_model_dir, tmp / "stable")
    versions = {
        STABLE: (stable_model, {}),
        RETRAIN: (retrained(plain_model_dir, tmp / "retrain"), {}),
        INVERTED: (stable_model, {"MODEL_SERVICE_FAULT_INVERT_SCORES": "true"}),
    }
    metrics = shadow_metrics(config)
    timing = config.cluster_timing
    stop = threading.Event()
    counts: dict[str, int] = {}
    with ExitStack() as stack:
        services = {
            pod_hash: stack.enter_context(
                running_service(config, model, tmp / f"{pod_hash}.log", settings=settings)
            )
            for pod_hash, (model, settings) in versions.items()
        }
        prometheus = stack.enter_context(
            running_prometheus({h: s.metrics_url for h, s in services.items()}, tmp)
        )
        model_name = json.loads((stable_model / "model.json").read_text())["name"]
        urls = [service.url for service in services.values()]
        traffic(stack, urls, requests(fixed_batch(), model_name), stop, counts)
        time.sleep(timing.initial_delay)
        results: dict[str, dict[str, list[tuple[list[float], str]]]] = {RETRAIN: {}, INVERTED: {}}
        for measurement in range(timing.count):
            if measurement:
                time.sleep(timing.interval)
            for pod_hash, by_metric in results.items():
                args = {"namespace": NAMESPACE, "canary-hash": pod_hash, "stable-hash": STABLE}
                for metric in metrics:
                    result = query(prometheus, substitute(metric["provider"]["prometheus"]["query"], args))
                    by_metric.setdefault(metric["name"], []).append((result, verdict(metric, result)))
        stop.set()
    assert all(n > 0 for n in counts.values()), counts
    yield results


def test_the_template_holds_the_two_gates_prometheus_can_compute(config: Config) -> None:
    assert [m["name"] for m in shadow_metrics(config)] == ["positive-rate-delta", "score-psi"]


def test_a_healthy_retrain_passes_every_shadow_gate(config: Config, verdicts: dict[str, Any]) -> None:
    retrain = verdicts[RETRAIN]
    for name, measurements in retrain.items():
        for result, outcome in measurements:
            assert len(result) == 1, (name, result)
            assert outcome == "Successful", (name, result)
    assert run_phase(retrain, config.rollout.analysis.failure_limit) == "Successful"


def test_a_candidate_with_inverted_scores_fails_the_shadow_analysis(
    config: Config, verdicts: dict[str, Any]
) -> None:
    inverted = verdicts[INVERTED]
    # Every row's class flips: with 13 of 20 rows benign the shares move by 2 * 13/20 - 1 = 0.3 > 0.1.
    deltas = [result[0] for result, _ in inverted["positive-rate-delta"]]
    assert all(abs(delta - 0.3) < 0.05 for delta in deltas), deltas
    assert all(outcome == "Failed" for _, outcome in inverted["positive-rate-delta"])
    assert run_phase(inverted, config.rollout.analysis.failure_limit) == "Failed"
