"""The alert path end to end on local processes: the service -> Prometheus (Debian's, evaluating the rules
`render` ships, durations divided by `SCALE`) -> Alertmanager (Debian's, configured from the same `alerts:`
routes as the rendered AlertmanagerConfig) -> a local HTTP server standing in for Slack's and PagerDuty's
endpoints, recording what Alertmanager's own Slack and PagerDuty notifiers POST.

- A latency burn: every prediction delayed 200 ms (the rehearsal's fault injection) against staging's
  150 ms objective pages the pager (14.4x and 6x burns) and tickets Slack (1x).
- A crash-looping start: a service refusing a tampered model, restarted in a loop by the test's
  supervisor; the supervisor exports its restart count as `kube_pod_container_status_restarts_total`, a
  stand-in for kube-state-metrics (which reads it from the kubelet in a cluster), and ModelServiceRestarting
  pages.

Also the metrics port's process series: one per process of the service, labelled by role and pid.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_breast_cancer

from model_service.contract.monitoring import WORKER_GC_COLLECTIONS
from pipeline.adapters.processes import started_process
from pipeline.adapters.service_process import running_service
from pipeline.config import Config, load_config
from pipeline.deploy import alerting
from tests._prometheus import free_port

REPO = Path(__file__).resolve().parents[3]
SCALE = 60.0
"""Every rule window and `for:` divided by 60: the page burn's 1 h / 5 m windows become 1 m / 5 s."""
NAMESPACE = "model-staging"
POD = "model-service-0"
DELIVERY_TIMEOUT_S = 90.0
ALERTMANAGER = "prometheus-alertmanager"  # Debian's name for alertmanager

pytestmark = [
    pytest.mark.needs_tool("prometheus", "prometheus"),
    pytest.mark.needs_tool(ALERTMANAGER, "prometheus-alertmanager"),
]


class Receiver:
    """A local HTTP server recording every POST: (path, JSON body)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, Any]] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                received.append((self.path, json.loads(body)))
                answer = b'{"status": "success"}'
                self.send_response(202 if self.path == "/pagerduty" else 200)
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, path: str, alert: str, timeout: float = DELIVERY_TIMEOUT_S) -> list[Any]:
        """The POSTs to `path` naming `alert`, once there is one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [body for got, body in list(self.posts) if got == path and alert in json.dumps(body)]
            if found:
                return found
            time.sleep(0.5)
        raise AssertionError(f"no {alert} at {path} within {timeout:g}s; received {self.posts}")


def routed_config(receiver: Receiver) -> Config:
    """Staging (150 ms p95, 0.5 % errors) with a pager beside its Slack channel: page -> pager, ticket ->
    Slack; Alertmanager's waits shortened through the same keys a fork sets."""
    pager = {
        "pagerduty": {
            "routing_key": {"secret": "alerting", "key": "pagerduty"},
            "url": f"{receiver.url}/pagerduty",
        }
    }
    return load_config(
        "staging",
        REPO / "environments",
        [
            f"alerts.receivers.pager={json.dumps(pager)}",
            "alerts.routes={page: pager, ticket: team-slack}",
            "alerts.group_wait=1s",
            "alerts.group_interval=1s",
        ],
    )


@contextmanager
def alert_stack(config: Config, receiver: Receiver, targets: dict[str, str], workdir: Path) -> Iterator[str]:
    """Alertmanager, then Prometheus scraping `targets` (job -> host:port, with the pod's labels) and
    evaluating the environment's rule groups at SCALE; yields Alertmanager's URL."""
    secrets = {
        ("alerting", "pagerduty"): "routing-key-1",
        ("alerting", "slack-webhook-url"): f"{receiver.url}/slack",
    }
    (workdir / "alertmanager.yml").write_text(yaml.safe_dump(alerting.alertmanager_config(config, secrets)))
    am_port, prom_port = free_port(), free_port()
    rules = {"groups": alerting.rule_groups(config, alerting.RuleTiming(scale=SCALE))}
    (workdir / "rules.yml").write_text(yaml.safe_dump(rules))
    prometheus_yml = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yml"],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
        "scrape_configs": [
            {
                "job_name": job,
                "static_configs": [
                    {
                        "targets": [target],
                        "labels": {"namespace": NAMESPACE, "pod": POD, "container": "model-service"},
                    }
                ],
            }
            for job, target in targets.items()
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(prometheus_yml))
    alertmanager = [
        str(shutil.which(ALERTMANAGER)),
        f"--config.file={workdir / 'alertmanager.yml'}",
        f"--storage.path={workdir / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{am_port}",
        "--cluster.listen-address=",  # one instance, no gossip port
    ]
    prometheus = [
        str(shutil.which("prometheus")),
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
    ]
    with ExitStack() as stack:
        stack.enter_context(
            started_process(
                alertmanager, {}, workdir / "alertmanager.log", f"http://127.0.0.1:{am_port}/-/ready",
                what="alertmanager", cwd=workdir,
            )
        )  # fmt: skip
        stack.enter_context(
            started_process(
                prometheus, {}, workdir / "prometheus.log", f"http://127.0.0.1:{prom_port}/-/ready",
                what="prometheus", cwd=workdir,
            )
        )  # fmt: skip
        yield f"http://127.0.0.1:{am_port}"


def routed(alertmanager: str) -> set[tuple[str, str, str]]:
    """(alert, severity, receiver) of every alert Alertmanager holds, from its API's alert groups."""
    groups = httpx.get(f"{alertmanager}/api/v2/alerts/groups").json()
    return {
        (alert["labels"]["alertname"], alert["labels"]["severity"], group["receiver"]["name"])
        for group in groups
        for alert in group["alerts"]
    }


def test_a_latency_burn_pages_the_pager_and_tickets_slack(plain_model_dir: Path, tmp_path: Path) -> None:
    receiver = Receiver()
    config = routed_config(receiver)
    stop = threading.Event()
    rows = load_breast_cancer().data[:2].tolist()
    slow = {"MODEL_SERVICE_FAULT_LATENCY_MS": "200"}
    with running_service(config, plain_model_dir, tmp_path / "service.log", settings=slow) as service:

        def traffic() -> None:
            with httpx.Client(timeout=10, headers=service.headers) as client:
                while not stop.is_set():
                    client.post(f"{service.url}/v1/predict", json={"instances": rows})

        senders = [threading.Thread(target=traffic, daemon=True) for _ in range(4)]
        for sender in senders:
            sender.start()
        try:
            target = {"model-service": service.metrics_url.removeprefix("http://")}
            with alert_stack(config, receiver, target, tmp_path) as alertmanager:
                paged = receiver.wait_for("/pagerduty", "ModelServiceLatencyBudgetBurn")
                ticketed = receiver.wait_for("/slack", "ModelServiceLatencyBudgetBurn")
                routes = routed(alertmanager)
        finally:
            stop.set()
            for sender in senders:
                sender.join(timeout=15)
    assert all(body["routing_key"] == "routing-key-1" for body in paged)
    assert all(body["event_action"] == "trigger" for body in paged)
    assert "slower than 150 ms" in json.dumps(paged)
    assert all(body["channel"] == "#ml-staging" for body in ticketed)
    # Routed by severity: the page burns to the pager, the ticket burn to Slack; predictions were not errors.
    latency = {
        (severity, name) for alert, severity, name in routes if alert == "ModelServiceLatencyBudgetBurn"
    }
    assert latency == {("page", "pager"), ("ticket", "team-slack")}, routes
    assert not any(alert == "ModelServiceErrorBudgetBurn" for alert, _, _ in routes), routes


class RestartCounter:
    """The supervisor's restart count on /metrics, named as kube-state-metrics names it (a stand-in)."""

    def __init__(self) -> None:
        self.restarts = 0
        counter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = (
                    "# TYPE kube_pod_container_status_restarts_total counter\n"
                    f"kube_pod_container_status_restarts_total {counter.restarts}\n"
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "text/plain; version=0.0.4")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_a_crash_looping_start_pages(plain_model_dir: Path, tmp_path: Path) -> None:
    tampered = tmp_path / "tampered"
    shutil.copytree(plain_model_dir, tampered)
    with (tampered / "model.onnx").open("ab") as handle:
        handle.write(b"\0")
    receiver = Receiver()
    config = routed_config(receiver)
    counter = RestartCounter()
    stop = threading.Event()
    refusals: list[str] = []

    def supervise() -> None:
        """Start the service, and again each time it exits, as the kubelet restarts a container."""
        command = [sys.executable, "-m", "model_service", "--model-dir", str(tampered), "--host", "127.0.0.1"]
        while not stop.is_set():
            done = subprocess.run(
                [*command, "--port", str(free_port()), "--metrics-port", str(free_port())],
                capture_output=True, text=True, check=False, timeout=60,
            )  # fmt: skip
            refusals.append(done.stderr)
            counter.restarts += 1

    supervisor = threading.Thread(target=supervise, daemon=True)
    supervisor.start()
    try:
        with alert_stack(config, receiver, {"kube-state-metrics-stand-in": counter.address}, tmp_path) as am:
            paged = receiver.wait_for("/pagerduty", "ModelServiceRestarting")
            routes = routed(am)
    finally:
        stop.set()
        supervisor.join(timeout=60)
    assert counter.restarts >= config.alerts.max_restarts
    assert "differs from the card's onnx.sha256" in refusals[0]
    assert f"{NAMESPACE}/{POD}" in json.dumps(paged)
    assert ("ModelServiceRestarting", "page", "pager") in routes
    assert not [
        body
        for path, body in receiver.posts
        if path == "/slack" and "ModelServiceRestarting" in json.dumps(body)
    ]


def test_the_metrics_port_reports_every_service_process(plain_model_dir: Path, tmp_path: Path) -> None:
    config = load_config("dev", REPO / "environments")
    settings = {"MODEL_SERVICE_WORKERS": "2"}
    with running_service(config, plain_model_dir, tmp_path / "service.log", settings=settings) as service:
        deadline = time.monotonic() + 20
        while True:
            tree = psutil.Process(service.process.pid)
            launcher = next(
                p
                for p in [tree, *tree.children(recursive=True)]
                if "model_service" in " ".join(p.cmdline()) and "metrics_server" not in " ".join(p.cmdline())
            )
            expected = {launcher.pid, *(child.pid for child in launcher.children())}
            text = httpx.get(f"{service.metrics_url}/metrics").text
            families = {f.name: f for f in text_string_to_metric_families(text)}
            seen = {
                (s.labels["process"], int(s.labels["pid"])) for s in families["process_cpu_seconds"].samples
            }
            # Each worker writes its GC counts on its own schedule: on a busy machine after its first scrape.
            reported = {s.labels["pid"] for s in families[WORKER_GC_COLLECTIONS].samples}
            complete = {pid for _, pid in seen} == expected and len(reported) == 2
            if complete or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert {pid for _, pid in seen} == expected
    roles = sorted(role for role, _ in seen)
    # uvicorn's two workers are spawned by multiprocessing, which starts its resource tracker beside them.
    assert roles == ["launcher", "metrics", "resource_tracker", "worker", "worker"]
    for name in (
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ):
        values = [s.value for s in families[name].samples]
        assert len(values) == len(expected) and all(v > 0 for v in values), (name, values)
    fds = {s.labels["pid"]: s.value for s in families["process_open_fds"].samples}
    limits = {s.labels["pid"]: s.value for s in families["process_max_fds"].samples}
    assert all(fds[pid] < limits[pid] for pid in fds)
    assert "python_info" in families
    # The garbage collector's counts, per worker (only a worker can read its own).
    collected = {(s.labels["pid"], s.labels["generation"]) for s in families[WORKER_GC_COLLECTIONS].samples}
    workers = {str(pid) for role, pid in seen if role == "worker"} | {str(launcher.pid)}
    assert {pid for pid, _ in collected} <= workers and len(collected) == 2 * 3, collected
