"""Alerts that reach someone: the SLO burn-rate and resource rules of an environment's PrometheusRule,
and the AlertmanagerConfig that routes them by severity to its receivers (docs/alerting.md).

- SLO burn rates: multiwindow, multi-burn-rate alerts (Google SRE workbook, "Alerting on SLOs", table 5-8:
  2 % of a 30-day budget in 1 h pages at 14.4x, 5 % in 6 h at 6x, 10 % in 3 days is a ticket at 1x), each
  firing only while its short window (1/12 of the long one) burns too, so it resets soon after a recovery.
  The objectives are the environment's own: availability from `loadtest.slo.total.max_error_ratio`, latency
  "95 % of predictions under `loadtest.slo.total.p95_ms`" counted from that bound's histogram bucket.
- Resources: restarts and CrashLoopBackOff from kube-state-metrics, memory against the container's limit
  (cAdvisor's working set over kube-state-metrics' limit), open file descriptors against each service
  process' limit (the metrics port's process series).
- Routing: `alerts:` as an AlertmanagerConfig (monitoring.coreos.com/v1alpha1), credentials by Secret
  name and key; `alertmanager_config` renders the same routes as Alertmanager's own configuration file,
  as the Prometheus Operator would from the object, for a local Alertmanager.

`RuleTiming.scale` divides every window and `for:` so the tests run the same rules in seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from model_service.contract.monitoring import (
    PREDICTION_ROUTES_REGEX,
    REQUEST_DURATION,
    REQUEST_DURATION_BOUNDS,
    REQUESTS_TOTAL,
    ROUTE_LABEL,
    STATUS_LABEL,
)
from pipeline.config import Config, ConfigError
from pipeline.config.models import AlertsSpec, SecretKeySpec
from pipeline.deploy.names import APP

BURN_RATES = (("page", 3600, 14.4), ("page", 6 * 3600, 6.0), ("ticket", 3 * 86400, 1.0))
"""(severity, long window in seconds, burn rate) for a 30-day objective (SRE workbook, table 5-8)."""
SHORT_WINDOW_DIVISOR = 12
"""The short window is 1/12 of the long one (the workbook's 5 m for 1 h)."""
LATENCY_QUANTILE = 0.95
CONTAINER = APP
"""The service's container name in the Rollout's pod template (k8s/base/rollout.yaml)."""
RESTART_WINDOW_S = 15 * 60

# Series of the cluster's exporters the rules and dashboard read; the service does not export them.
RESTARTS = "kube_pod_container_status_restarts_total"
"""kube-state-metrics: a container's restarts (docs/metrics/workload/pod-metrics.md)."""
WAITING_REASON = "kube_pod_container_status_waiting_reason"
"""kube-state-metrics: 1 while a container waits for the given reason (CrashLoopBackOff, ...)."""
RESOURCE_LIMITS = "kube_pod_container_resource_limits"
"""kube-state-metrics: a container's limit per `resource` (memory in bytes, cpu in cores)."""
WORKING_SET = "container_memory_working_set_bytes"
"""cAdvisor (the kubelet): the memory the OOM killer judges a container by."""
RESOURCE_REQUESTS = "kube_pod_container_resource_requests"
"""kube-state-metrics: a container's request per `resource`."""
CFS_PERIODS, CFS_THROTTLED = "container_cpu_cfs_periods_total", "container_cpu_cfs_throttled_periods_total"
"""cAdvisor: CPU quota periods, and those in which the container was throttled (it hit its CPU limit)."""
CLUSTER_SERIES = (
    RESTARTS,
    WAITING_REASON,
    RESOURCE_LIMITS,
    RESOURCE_REQUESTS,
    WORKING_SET,
    CFS_PERIODS,
    CFS_THROTTLED,
)
"""Series only a cluster has (kube-state-metrics, cAdvisor); a local Prometheus scraping the service lacks them."""
OPEN_FDS, MAX_FDS = "process_open_fds", "process_max_fds"
"""The service processes' descriptors, exported on the metrics port (model_service/server/process_metrics.py)."""


@dataclass(frozen=True)
class RuleTiming:
    """The rules' durations: production ones at scale 1; a test divides every window and `for:` by `scale`."""

    scale: float = 1.0

    def duration(self, seconds: float) -> str:
        """`seconds / scale` as a Prometheus duration in its largest whole unit (`1h`, `5m`, `3d`, `12s`)."""
        whole = max(1, round(seconds / self.scale))
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if whole % size == 0:
                return f"{whole // size}{unit}"
        return f"{whole}s"


def _bucket_bound(config: Config, p95_ms: float) -> str:
    """The `le` label of the bucket the latency objective counts from; ConfigError when it has none."""
    seconds = p95_ms / 1000
    for bound in REQUEST_DURATION_BOUNDS:
        if abs(bound - seconds) < 1e-9:
            return repr(float(bound))  # prometheus_client writes a bound as Python's repr (0.15, 1.0)
    listed = ", ".join(f"{b * 1000:g}" for b in REQUEST_DURATION_BOUNDS)
    raise ConfigError(
        f"environments/{config.name}.yaml: loadtest.slo.total.p95_ms {p95_ms:g} is not a bound of the "
        f"service's latency histogram, so no alert can count the predictions under it; use one of {listed} ms"
    )


def _burn_rule(
    alert: str,
    severity: str,
    *,
    ratio: Callable[[str], str],
    budget: float,
    long_s: int,
    burn: float,
    timing: RuleTiming,
    summary: str,
) -> dict[str, Any]:
    long_w, short_w = timing.duration(long_s), timing.duration(long_s / SHORT_WINDOW_DIVISOR)
    bound = f"{burn:g} * {budget:g}"
    return {
        "alert": alert,
        "expr": f"(\n  {ratio(long_w)} > {bound}\n) and (\n  {ratio(short_w)} > {bound}\n)\n",
        # The short window already stops a blip; `for` only spares one evaluation's noise (the workbook uses none).
        "for": timing.duration(120 if severity == "page" else 15 * 60),
        "labels": {"severity": severity, "long_window": long_w, "burn_rate": f"{burn:g}"},
        "annotations": {"summary": summary.replace("{burn}", f"{burn:g}").replace("{window}", long_w)},
    }


def slo_rules(config: Config, timing: RuleTiming = RuleTiming()) -> dict[str, Any]:
    """The rule group of the environment's SLO burn rates (none for an objective it does not set)."""
    slo = config.loadtest.slo.total
    namespace = config.deploy.namespace
    where = f'namespace="{namespace}",{ROUTE_LABEL}=~"{PREDICTION_ROUTES_REGEX}"'

    def share(selector: str, window: str) -> str:
        return f"sum by (namespace) (rate({selector}[{window}]))"

    rules: list[dict[str, Any]] = []
    if slo.max_error_ratio is not None:
        total, errors = f"{REQUESTS_TOTAL}{{{where}}}", f'{REQUESTS_TOTAL}{{{where},{STATUS_LABEL}=~"5.."}}'
        availability = f"{(1 - slo.max_error_ratio) * 100:g}%"

        def error_share(window: str) -> str:
            return f"{share(errors, window)}\n    / {share(total, window)}"

        for severity, long_s, burn in BURN_RATES:
            rules.append(
                _burn_rule(
                    "ModelServiceErrorBudgetBurn",
                    severity,
                    ratio=error_share,
                    budget=slo.max_error_ratio,
                    long_s=long_s,
                    burn=burn,
                    timing=timing,
                    summary=f"model-service in {{{{ $labels.namespace }}}} burns its {availability} availability budget "
                    "{burn}x too fast (5xx share of predictions over {window})",
                )
            )
    if slo.p95_ms is not None:
        le = _bucket_bound(config, slo.p95_ms)
        under = f'{REQUEST_DURATION}_bucket{{{where},le="{le}"}}'
        count = f"{REQUEST_DURATION}_count{{{where}}}"

        def slow_share(window: str) -> str:
            return f"1 - {share(under, window)}\n    / {share(count, window)}"

        for severity, long_s, burn in BURN_RATES:
            rules.append(
                _burn_rule(
                    "ModelServiceLatencyBudgetBurn",
                    severity,
                    ratio=slow_share,
                    budget=round(1 - LATENCY_QUANTILE, 9),
                    long_s=long_s,
                    burn=burn,
                    timing=timing,
                    summary=f"model-service in {{{{ $labels.namespace }}}}: predictions slower than {slo.p95_ms:g} ms burn "
                    "the 95% latency budget {burn}x too fast (over {window})",
                )
            )
    return {"name": "model-service-slo", "rules": rules}


def resource_rules(config: Config, timing: RuleTiming = RuleTiming()) -> dict[str, Any]:
    """Restarts, CrashLoopBackOff, memory near the limit and descriptors near the limit."""
    alerts = config.alerts
    pod = f'namespace="{config.deploy.namespace}",container="{CONTAINER}"'
    where = "{{ $labels.namespace }}/{{ $labels.pod }}"
    restart_window = timing.duration(RESTART_WINDOW_S)
    rules = [
        {
            "alert": "ModelServiceRestarting",
            "expr": f"sum by (namespace, pod) (increase({RESTARTS}{{{pod}}}[{restart_window}])) "
            f">= {alerts.max_restarts}\n",
            "labels": {"severity": "page"},
            "annotations": {
                "summary": f"model-service {where} restarted {alerts.max_restarts} times or more in "
                f"{restart_window} (a refused model, a crash or an OOM kill: `kubectl logs --previous`)"
            },
        },
        {
            # As kube-prometheus' KubePodCrashLooping: waiting in CrashLoopBackOff at any point of 5 m, for 15 m.
            "alert": "ModelServiceCrashLooping",
            "expr": f'max by (namespace, pod) (max_over_time({WAITING_REASON}{{{pod},reason="CrashLoopBackOff"}}'
            f"[{timing.duration(300)}])) >= 1\n",
            "for": timing.duration(RESTART_WINDOW_S),
            "labels": {"severity": "page"},
            "annotations": {"summary": f"model-service {where} is in CrashLoopBackOff"},
        },
        {
            "alert": "ModelServiceMemoryNearLimit",
            "expr": f"max by (namespace, pod) ({WORKING_SET}{{{pod}}})\n"
            f'  / max by (namespace, pod) ({RESOURCE_LIMITS}{{{pod},resource="memory"}}) '
            f"> {alerts.memory_limit_share:g}\n",
            "for": timing.duration(300),
            "labels": {"severity": "ticket"},
            "annotations": {
                "summary": f"model-service {where} uses over {alerts.memory_limit_share:.0%} of its memory "
                "limit: the next burst is an OOM kill (raise deploy.resources.limits_memory)"
            },
        },
        {
            "alert": "ModelServiceFdsNearLimit",
            "expr": f'max by (namespace, pod) ({OPEN_FDS}{{namespace="{config.deploy.namespace}"}}\n'
            f'  / {MAX_FDS}{{namespace="{config.deploy.namespace}"}}) > {alerts.fd_limit_share:g}\n',
            "for": timing.duration(300),
            "labels": {"severity": "ticket"},
            "annotations": {
                "summary": f"a model-service process in {where} holds over {alerts.fd_limit_share:.0%} of its "
                "file descriptor limit: new connections will be refused"
            },
        },
    ]
    return {"name": "model-service-resources", "rules": rules}


def rule_groups(config: Config, timing: RuleTiming = RuleTiming()) -> list[dict[str, Any]]:
    """The PrometheusRule groups this module owns, SLO burn rates first."""
    return [slo_rules(config, timing), resource_rules(config, timing)]


# --- routing -------------------------------------------------------------------------------------------


def _receiver_order(alerts: AlertsSpec) -> list[tuple[str, str]]:
    """(severity, receiver) of each route, in the severities' order."""
    return [
        (severity, alerts.routes[severity]) for severity in ("page", "ticket") if severity in alerts.routes
    ]


def _secret(ref: SecretKeySpec) -> dict[str, str]:
    return {"name": ref.secret, "key": ref.key}


def _crd_receiver(name: str, alerts: AlertsSpec) -> dict[str, Any]:
    spec = alerts.receivers[name]
    out: dict[str, Any] = {"name": name}
    if spec.slack is not None:
        slack: dict[str, Any] = {"apiURL": _secret(spec.slack.webhook_url), "sendResolved": True}
        if spec.slack.channel:
            slack["channel"] = spec.slack.channel
        out["slackConfigs"] = [slack]
    if spec.pagerduty is not None:
        pager: dict[str, Any] = {"routingKey": _secret(spec.pagerduty.routing_key), "sendResolved": True}
        if spec.pagerduty.url:
            pager["url"] = spec.pagerduty.url
        out["pagerdutyConfigs"] = [pager]
    if spec.email is not None:
        email = spec.email
        mail: dict[str, Any] = {
            "to": email.to,
            "from": email.from_,
            "smarthost": email.smarthost,
            "requireTLS": email.require_tls,
            "sendResolved": True,
        }
        if email.username is not None and email.password is not None:
            mail["authUsername"] = email.username
            mail["authPassword"] = _secret(email.password)
        out["emailConfigs"] = [mail]
    return out


def alertmanager_config_object(config: Config) -> dict[str, Any] | None:
    """The AlertmanagerConfig of the environment, or None when `alerts.receivers` is empty. The Prometheus
    Operator scopes its route to alerts whose `namespace` label is the object's namespace."""
    alerts = config.alerts
    if not alerts.receivers or alerts.default_receiver is None:
        return None
    route: dict[str, Any] = {
        "receiver": alerts.default_receiver,
        "groupBy": list(alerts.group_by),
        "groupWait": alerts.group_wait,
        "groupInterval": alerts.group_interval,
        "repeatInterval": alerts.repeat_interval,
    }
    routes = [
        {"receiver": receiver, "matchers": [{"name": "severity", "value": severity, "matchType": "="}]}
        for severity, receiver in _receiver_order(alerts)
    ]
    if routes:
        route["routes"] = routes
    return {
        "apiVersion": "monitoring.coreos.com/v1alpha1",
        "kind": "AlertmanagerConfig",
        "metadata": {"name": APP, "labels": dict(config.deploy.prometheus.selector_labels)},
        "spec": {
            "route": route,
            "receivers": [_crd_receiver(name, alerts) for name in sorted(alerts.receivers)],
        },
    }


SecretValues = Mapping[tuple[str, str], str]
"""(Secret name, key) -> value: what the Prometheus Operator reads from the cluster."""
NATIVE_KEYS = {
    "slackConfigs": "slack_configs",
    "pagerdutyConfigs": "pagerduty_configs",
    "emailConfigs": "email_configs",
    "apiURL": "api_url",
    "routingKey": "routing_key",
    "sendResolved": "send_resolved",
    "requireTLS": "require_tls",
    "authUsername": "auth_username",
    "authPassword": "auth_password",
}
"""The AlertmanagerConfig's receiver fields this module writes -> Alertmanager's own names for them."""
SECRET_FIELDS = {"apiURL", "routingKey", "authPassword"}
"""Receiver fields that hold a Secret key reference ({name, key}) in the object, the value in the file."""


def _native(value: Any, secrets: SecretValues) -> Any:
    """A receiver of the object in Alertmanager's terms, each Secret reference replaced by its value."""
    if isinstance(value, list):
        return [_native(item, secrets) for item in value]
    if not isinstance(value, dict):
        return value
    return {
        NATIVE_KEYS.get(key, key): _secret_value(item, secrets)
        if key in SECRET_FIELDS
        else _native(item, secrets)
        for key, item in value.items()
    }


def _secret_value(ref: dict[str, str], secrets: SecretValues) -> str:
    try:
        return secrets[(ref["name"], ref["key"])]
    except KeyError:
        raise KeyError(f"no value for Secret {ref['name']!r} key {ref['key']!r}") from None


def alertmanager_config(config: Config, secrets: SecretValues) -> dict[str, Any]:
    """Alertmanager's configuration file for the same routes, as the Prometheus Operator builds it from the
    AlertmanagerConfig: a root route to a receiver that sends nothing, and beneath it the object's route,
    matching the environment's namespace. KeyError names a Secret key `secrets` lacks."""
    crd = alertmanager_config_object(config)
    if crd is None:
        raise ValueError(f"environments/{config.name}.yaml: alerts.receivers is empty: nothing to route to")
    alerts = config.alerts
    route = crd["spec"]["route"]
    scoped: dict[str, Any] = {
        "receiver": alerts.default_receiver,
        "matchers": [f'namespace="{config.deploy.namespace}"'],
        "group_by": route["groupBy"],
        "group_wait": route["groupWait"],
        "group_interval": route["groupInterval"],
        "repeat_interval": route["repeatInterval"],
        "routes": [
            {"receiver": receiver, "matchers": [f'severity="{severity}"']}
            for severity, receiver in _receiver_order(alerts)
        ],
    }
    return {
        "route": {"receiver": "none", "routes": [scoped]},
        "receivers": [
            {"name": "none"},
            *(_native(receiver, secrets) for receiver in crd["spec"]["receivers"]),
        ],
    }
