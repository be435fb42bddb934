"""The Grafana dashboard of an environment, from the service's one list of metric names
(model_service/contract/monitoring.py), shipped as a ConfigMap that Grafana's dashboard sidecar loads
(label `grafana_dashboard: "1"`). `render` writes it into the overlay; `render --check` keeps it current.

Every query selects the environment's namespace. Per-version panels join a pod's series with its
`model_service_model_info` on `instance` (each scrape target is one pod), so they need no version label
on the request metrics themselves. The resource panels read the metrics port's process series (every
service process: model_service/server/process_metrics.py) against the container's requests and limits, and
restarts and CPU throttling, from kube-state-metrics and cAdvisor (`alerting.CLUSTER_SERIES`)."""

import json
from typing import Any

from model_service.contract.monitoring import (
    BREAKER_STATE,
    FALLBACK_ANSWERS,
    FALLBACK_REASON_LABEL,
    FEATURE_LABEL,
    FEATURE_PSI,
    IN_FLIGHT,
    MODEL_INFO,
    PREDICT_ROUTE,
    PRIMARY_FAILURE_KIND_LABEL,
    PRIMARY_FAILURES,
    REQUEST_DURATION_BUCKET,
    REQUESTS_TOTAL,
    ROUTE_LABEL,
    SCORE_PSI,
    STATE_LABEL,
    STATUS_LABEL,
    V2_INFER_ROUTE,
)
from pipeline.config import Config
from pipeline.deploy.alerting import (
    CFS_PERIODS,
    CFS_THROTTLED,
    CONTAINER,
    MAX_FDS,
    OPEN_FDS,
    RESOURCE_LIMITS,
    RESOURCE_REQUESTS,
    RESTARTS,
    WAITING_REASON,
    WORKING_SET,
)
from pipeline.deploy.names import APP

DASHBOARD_LABEL = {"grafana_dashboard": "1"}
"""The label Grafana's sidecar (kiwigrid k8s-sidecar, as in the Grafana Helm chart) selects ConfigMaps by."""
RATE_WINDOW = "$__rate_interval"
"""Grafana's rate window (at least four scrape intervals): the one placeholder a query holds."""
QUANTILES = (0.5, 0.95, 0.99)
_INFERENCE_ROUTES = f"{PREDICT_ROUTE}|{V2_INFER_ROUTE}"
_WIDTH, _HEIGHT = 12, 8


def _per_version(expr: str, namespace: str) -> str:
    """`expr` (per pod) with each pod's model version as a label, joined from the model info gauge."""
    return f'{expr} * on (instance) group_left (version) {MODEL_INFO}{{namespace="{namespace}"}}'


def panels(namespace: str) -> list[dict[str, Any]]:
    """(title, unit, [(legend, PromQL)]) of each panel, as Grafana panels on a two-column grid."""
    ns = f'namespace="{namespace}"'
    inference = f'{ns},{ROUTE_LABEL}=~"{_INFERENCE_ROUTES}"'
    requests = f"rate({REQUESTS_TOTAL}{{{inference}}}[{RATE_WINDOW}])"
    errors = f'rate({REQUESTS_TOTAL}{{{inference},{STATUS_LABEL}=~"5.."}}[{RATE_WINDOW}])'
    buckets = f"rate({REQUEST_DURATION_BUCKET}{{{inference}}}[{RATE_WINDOW}])"
    container = f'{ns},container="{CONTAINER}"'
    specs: list[tuple[str, str, list[tuple[str, str]]]] = [
        (
            "Requests per second by route and status",
            "reqps",
            [
                (
                    f"{{{{{ROUTE_LABEL}}}}} {{{{{STATUS_LABEL}}}}}",
                    f"sum by ({ROUTE_LABEL}, {STATUS_LABEL}) (rate({REQUESTS_TOTAL}{{{ns}}}[{RATE_WINDOW}]))",
                )
            ],
        ),
        (
            "Error ratio (5xx share of predictions) by version",
            "percentunit",
            [
                (
                    "{{version}}",
                    (
                        f"sum by (version) ({_per_version(errors, namespace)})"
                        f" / sum by (version) ({_per_version(requests, namespace)})"
                    ),
                )
            ],
        ),
        (
            "Prediction latency quantiles by version",
            "s",
            [
                (
                    f"p{round(q * 100)} {{{{version}}}}",
                    f"histogram_quantile({q:g}, sum by (version, le) ({_per_version(buckets, namespace)}))",
                )
                for q in QUANTILES
            ],
        ),
        (
            "Load shedding (503) and requests in flight",
            "short",
            [
                (
                    "shed per second",
                    f'sum (rate({REQUESTS_TOTAL}{{{ns},{STATUS_LABEL}="503"}}[{RATE_WINDOW}]))',
                ),
                ("in flight", f"sum ({IN_FLIGHT}{{{ns}}})"),
            ],
        ),
        (
            "Input drift: PSI per feature (highest pod)",
            "short",
            [(f"{{{{{FEATURE_LABEL}}}}}", f"max by ({FEATURE_LABEL}) ({FEATURE_PSI}{{{ns}}})")],
        ),
        (
            "Prediction shift: score PSI by version",
            "short",
            [("{{version}}", f"max by (version) ({_per_version(f'{SCORE_PSI}{{{ns}}}', namespace)})")],
        ),
        (
            "Circuit breaker state (pods with a worker in each state)",
            "short",
            [(f"{{{{{STATE_LABEL}}}}}", f"sum by ({STATE_LABEL}) ({BREAKER_STATE}{{{ns}}})")],
        ),
        (
            "Fallback answers and primary failures per second",
            "reqps",
            [
                (
                    f"fallback: {{{{{FALLBACK_REASON_LABEL}}}}}",
                    f"sum by ({FALLBACK_REASON_LABEL}) (rate({FALLBACK_ANSWERS}_total{{{ns}}}[{RATE_WINDOW}]))",
                ),
                (
                    f"primary failed: {{{{{PRIMARY_FAILURE_KIND_LABEL}}}}}",
                    (
                        f"sum by ({PRIMARY_FAILURE_KIND_LABEL}) "
                        f"(rate({PRIMARY_FAILURES}_total{{{ns}}}[{RATE_WINDOW}]))"
                    ),
                ),
            ],
        ),
        *resource_panels(ns, container),
    ]
    return [
        {
            "id": i + 1,
            "type": "timeseries",
            "title": title,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"x": (i % 2) * _WIDTH, "y": (i // 2) * _HEIGHT, "w": _WIDTH, "h": _HEIGHT},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [
                {"refId": chr(ord("A") + j), "expr": expr, "legendFormat": legend}
                for j, (legend, expr) in enumerate(targets)
            ],
        }
        for i, (title, unit, targets) in enumerate(specs)
    ]


def resource_panels(ns: str, container: str) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """CPU, memory and descriptors per pod against the container's requests and limits (sizing), then
    restarts and saturation (throttling, requests in flight)."""

    def limit(kind: str, resource: str) -> str:
        return f'max by (pod) ({kind}{{{container},resource="{resource}"}})'

    return [
        (
            "CPU per pod (cores): service processes vs request and limit",
            "short",
            [
                ("{{pod}}", f"sum by (pod) (rate(process_cpu_seconds_total{{{ns}}}[{RATE_WINDOW}]))"),
                ("request {{pod}}", limit(RESOURCE_REQUESTS, "cpu")),
                ("limit {{pod}}", limit(RESOURCE_LIMITS, "cpu")),
            ],
        ),
        (
            "Memory per pod: RSS of the service processes, working set, limit",
            "bytes",
            [
                ("RSS {{pod}}", f"sum by (pod) (process_resident_memory_bytes{{{ns}}})"),
                ("working set {{pod}}", f"max by (pod) ({WORKING_SET}{{{container}}})"),
                ("limit {{pod}}", limit(RESOURCE_LIMITS, "memory")),
            ],
        ),
        (
            "Open file descriptors: share of the limit (fullest process per pod)",
            "percentunit",
            [("{{pod}}", f"max by (pod) ({OPEN_FDS}{{{ns}}} / {MAX_FDS}{{{ns}}})")],
        ),
        (
            "Container restarts (last hour) and CrashLoopBackOff",
            "short",
            [
                ("restarts {{pod}}", f"sum by (pod) (increase({RESTARTS}{{{container}}}[1h]))"),
                (
                    "crash looping {{pod}}",
                    f'max by (pod) ({WAITING_REASON}{{{container},reason="CrashLoopBackOff"}})',
                ),
            ],
        ),
        (
            "Saturation: CPU throttled share and requests in flight",
            "short",
            [
                (
                    "throttled {{pod}}",
                    (
                        f"sum by (pod) (rate({CFS_THROTTLED}{{{container}}}[{RATE_WINDOW}]))"
                        f" / sum by (pod) (rate({CFS_PERIODS}{{{container}}}[{RATE_WINDOW}]))"
                    ),
                ),
                ("in flight {{pod}}", f"sum by (pod) ({IN_FLIGHT}{{{ns}}})"),
            ],
        ),
    ]


def dashboard(config: Config) -> dict[str, Any]:
    """The dashboard JSON (Grafana's dashboard model) of one environment."""
    namespace = config.deploy.namespace
    return {
        "uid": f"{APP}-{config.name}",
        "title": f"{APP} ({config.name})",
        "tags": [APP, config.name],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": panels(namespace),
    }


def dashboard_config_map(config: Config) -> dict[str, Any]:
    """The ConfigMap Grafana's sidecar loads: one JSON file named after the environment."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{APP}-dashboard", "labels": dict(DASHBOARD_LABEL)},
        "data": {f"{APP}-{config.name}.json": json.dumps(dashboard(config), indent=2, sort_keys=True) + "\n"},
    }


def queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of a dashboard, in order."""
    return [(panel["title"], target["expr"]) for panel in board["panels"] for target in panel["targets"]]
