"""Every metric name the manifests and docs use (hand-written k8s/base too) is one the service exports."""

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from model_service.app import create_app
from model_service.contract.capture import TEXTFILE_ERRORS
from model_service.operations.settings import ServiceSettings
from tests._metrics import worker_metrics

ROOT = Path(__file__).resolve().parents[3]
NAME = re.compile(r"\bmodel_service_[a-z0-9_]+")


def test_every_metric_name_in_k8s_and_docs_is_exported(model_dir: Path, tmp_path: Path) -> None:
    # With a fallback (the model itself will do) and a capture, so the circuit breaker's and the capture's
    # metrics are exported too; the metrics port adds its count of refused live-quality files.
    settings = ServiceSettings(model_dir=model_dir, fallback_dir=model_dir, capture_dir=tmp_path)
    with TestClient(create_app(settings)) as client:
        text = worker_metrics(client)
    exported = {f"{TEXTFILE_ERRORS}_total"}
    for family in text_string_to_metric_families(text):
        exported.add(family.name)
        exported |= {sample.name for sample in family.samples}
    files = [
        *sorted((ROOT / "k8s").rglob("*.yaml")),
        *sorted((ROOT / "docs").glob("*.md")),
        ROOT / "README.md",
    ]
    used = {
        (path.relative_to(ROOT).as_posix(), name) for path in files for name in NAME.findall(path.read_text())
    }
    assert {name for _, name in used} >= {"model_service_requests_total", "model_service_score_psi"}
    assert sorted((path, name) for path, name in used if name not in exported) == []
