"""A real Prometheus for the tests: started on a free loopback port, scraping the given metrics URLs every
second with the labels the ServiceMonitor (podTargetLabels) and Kubernetes SD give pods, and queried
through its HTTP API as Argo's Prometheus provider and Grafana query it."""

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from pipeline.adapters.processes import started_process

NAMESPACE = "model-dev"
"""The `namespace` label of every target: the dev environment's deploy.namespace."""
READY_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def promtool_test_rules(
    folder: Path, series: dict[str, str], alert_tests: list[dict[str, Any]], interval: str = "1m"
) -> None:
    """`promtool test rules` of `folder`/rules.yaml on input `series` (series -> values), expecting
    `alert_tests` (eval_time, alertname, exp_alerts); fails the test with promtool's output."""
    spec = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": interval,
        "tests": [
            {
                "interval": interval,
                "input_series": [{"series": s, "values": v} for s, v in series.items()],
                "alert_rule_test": alert_tests,
            }
        ],
    }
    (folder / "test.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    done = subprocess.run(
        [str(shutil.which("promtool")), "test", "rules", "test.yaml"],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def prometheus_config(targets: dict[str, str]) -> dict[str, Any]:
    """Static targets (rollouts_pod_template_hash -> metrics URL) with the labels pods get in the cluster."""
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "model-service",
                "static_configs": [
                    {
                        "targets": [url.removeprefix("http://")],
                        "labels": {
                            "namespace": NAMESPACE,
                            "service": "model-service-metrics",
                            "endpoint": "metrics",
                            "rollouts_pod_template_hash": pod_hash,
                        },
                    }
                    for pod_hash, url in targets.items()
                ],
            }
        ],
    }


def query(prometheus: str, promql: str) -> list[float]:
    """An instant query through the HTTP API; a vector result as Argo's Prometheus provider gives it."""
    url = f"{prometheus}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    assert body["data"]["resultType"] == "vector", body
    return [float(sample["value"][1]) for sample in body["data"]["result"]]


def wait_for_targets(prometheus: str, expected: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if sum(query(prometheus, 'up{job="model-service"} == 1')) == expected:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"Prometheus did not scrape {expected} targets within {READY_TIMEOUT_S:g}s")


@contextmanager
def running_prometheus(targets: dict[str, str], workdir: Path) -> Iterator[str]:
    """Prometheus scraping `targets` (see prometheus_config), its config, TSDB and log in `workdir`; yields
    its URL once /-/ready answers and every target is up, and stops it on exit."""
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(prometheus_config(targets)))
    port = free_port()
    prometheus = f"http://127.0.0.1:{port}"
    command = [
        str(shutil.which("prometheus")),
        f"--config.file={config_path}",
        f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with started_process(
        command, {}, workdir / "prometheus.log", f"{prometheus}/-/ready", what="prometheus", cwd=workdir
    ):
        wait_for_targets(prometheus, len(targets))
        yield prometheus
