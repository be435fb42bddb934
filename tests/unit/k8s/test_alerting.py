"""Alerts that reach someone: the `alerts:` section (bad routing refused, naming file and key), the
AlertmanagerConfig validated against the Prometheus Operator's pinned CRD, the burn-rate rules built from
each environment's own SLOs (none of the base's old fixed 250 ms / 99 %), and every rendered rule run by
`promtool test rules` on synthetic series: what must fire does, with the severity that routes it."""

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.config import Config, ConfigError, load_config
from pipeline.deploy import alerting, crd_cache
from pipeline.deploy import validate as kv
from tests._prometheus import promtool_test_rules

REPO = Path(__file__).resolve().parents[3]
ENVIRONMENTS = REPO / "environments"
SHARED = Path(os.environ.get(kv.SCHEMAS_ENV) or crd_cache.cache_dir())
ALERTMANAGER_CRD = "prometheus-operator-alertmanagerconfigs-crd.yaml"
CRD_PATH = next(
    (p for p in (SHARED / ALERTMANAGER_CRD, SHARED.parent / "crds-next" / ALERTMANAGER_CRD) if p.is_file()),
    None,
)
"""The pinned CRD file, in K8S_SCHEMAS_DIR (or the download cache), else a `crds-next` folder beside it."""
needs_promtool = pytest.mark.needs_tool("promtool", "prometheus")
EMAIL = {
    "to": "oncall@example.com",
    "from": "alerts@example.com",
    "smarthost": "smtp.example.com:587",
    "username": "alerts",
    "password": {"secret": "alerting", "key": "smtp-password"},
}


def config(env: str = "prod", *overrides: str) -> Config:
    return load_config(env, ENVIRONMENTS, list(overrides))


# --- the alerts: section ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["alerts.routes={page: nobody}"],
            "routes.page 'nobody': no such receiver (receivers: pager, team-slack)",
        ),
        (["alerts.default_receiver=gone"], "default_receiver 'gone': no such receiver"),
        (["alerts.receivers.empty={}"], "a receiver needs slack, pagerduty or email"),
        (
            ["alerts.default_receiver=null"],
            "receivers are set but default_receiver is not: name one of pager",
        ),
        (["alerts.routes={critical: pager}"], "alerts.routes.critical"),
        (
            ["alerts.receivers.mail={email: {to: a@b.c, from: d@e.f, smarthost: h:25, username: u}}"],
            "username and password go together",
        ),
        (["alerts.receivers.s={slack: {webhook_url: {secret: Bad_Name, key: k}}}"], "secret"),
        (["alerts.repeat_interval=4 hours"], "alerts.repeat_interval"),
    ],
)
def test_bad_routing_is_refused_naming_file_and_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config("prod", *overrides)
    assert "alerts" in str(caught.value)  # the layer (`--set` here, else the YAML file) and the section
    assert message in str(caught.value)


def test_routes_without_receivers_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"routes.page 'x': no such receiver \(receivers: none\)"):
        config("dev", "alerts.routes={page: x}")


def test_no_receivers_render_no_alertmanager_config() -> None:
    dev = config("dev")
    assert not dev.alerts.receivers
    assert alerting.alertmanager_config_object(dev) is None


def test_prod_pages_the_pager_and_tickets_slack() -> None:
    routing = alerting.alertmanager_config_object(config("prod"))
    assert routing is not None
    route = routing["spec"]["route"]
    assert route["receiver"] == "team-slack"
    assert [(r["receiver"], r["matchers"]) for r in route["routes"]] == [
        ("pager", [{"name": "severity", "value": "page", "matchType": "="}]),
        ("team-slack", [{"name": "severity", "value": "ticket", "matchType": "="}]),
    ]
    receivers = {r["name"]: r for r in routing["spec"]["receivers"]}
    assert receivers["pager"]["pagerdutyConfigs"][0]["routingKey"] == {
        "name": "alerting",
        "key": "pagerduty-routing-key",
    }
    assert receivers["team-slack"]["slackConfigs"][0]["apiURL"]["key"] == "slack-webhook-url"
    assert "http" not in json.dumps(routing), "a credential or URL in the rendered object"


@pytest.mark.skipif(CRD_PATH is None, reason=f"no {ALERTMANAGER_CRD} in {SHARED}; set {kv.SCHEMAS_ENV}")
def test_every_receiver_kind_validates_against_the_alertmanagerconfig_crd(tmp_path: Path) -> None:
    """The Prometheus Operator's AlertmanagerConfig v1alpha1 schema (pinned in crd_cache), strict: an
    unknown key fails. Slack, PagerDuty (with its own endpoint) and e-mail with SMTP login."""
    assert CRD_PATH is not None
    (tmp_path / ALERTMANAGER_CRD).symlink_to(CRD_PATH)
    everything = config(
        "prod",
        f"alerts.receivers.mail={{email: {json.dumps(EMAIL)}}}",
        "alerts.receivers.pager.pagerduty.url=https://events.eu.pagerduty.com/v2/enqueue",
        "alerts.routes.ticket=mail",
    )
    routing = alerting.alertmanager_config_object(everything)
    assert routing is not None
    assert kv.validate_crd(routing, "alertmanager-config.yaml", tmp_path) == []
    mail = next(r for r in routing["spec"]["receivers"] if r["name"] == "mail")["emailConfigs"][0]
    assert mail["authPassword"] == {"name": "alerting", "key": "smtp-password"}
    broken = json.loads(json.dumps(routing))
    broken["spec"]["receivers"][0]["slackConfigs"] = [{"webhookURL": "https://x"}]
    assert kv.validate_crd(broken, "alertmanager-config.yaml", tmp_path)


def test_the_crd_is_pinned_like_the_others() -> None:
    pinned = {crd.name: crd for crd in crd_cache.PINNED}[ALERTMANAGER_CRD]
    assert pinned.repository == "prometheus-operator/prometheus-operator"
    if CRD_PATH is not None:
        assert crd_cache._sha256(CRD_PATH) == pinned.sha256


def test_alertmanagers_own_file_routes_the_same_way() -> None:
    native = alerting.alertmanager_config(
        config("prod"),
        {
            ("alerting", "pagerduty-routing-key"): "key-1",
            ("alerting", "slack-webhook-url"): "http://127.0.0.1:1/s",
        },
    )
    (scoped,) = native["route"]["routes"]
    assert scoped["matchers"] == ['namespace="model-prod"']
    assert [(r["receiver"], r["matchers"]) for r in scoped["routes"]] == [
        ("pager", ['severity="page"']),
        ("team-slack", ['severity="ticket"']),
    ]
    with pytest.raises(KeyError, match="slack-webhook-url"):
        alerting.alertmanager_config(config("prod"), {("alerting", "pagerduty-routing-key"): "k"})


# --- the rules -------------------------------------------------------------------------------------


def test_burn_rates_come_from_each_environments_slos() -> None:
    for env, le, budget in (("dev", "0.25", "0.01"), ("staging", "0.15", "0.005"), ("prod", "0.15", "0.001")):
        text = json.dumps(alerting.slo_rules(config(env)))
        assert f'le=\\"{le}\\"' in text
        assert f"14.4 * {budget}" in text
        assert "6 * 0.05" in text  # the latency objective: 95 % under the bound
    base = yaml.safe_load((REPO / "k8s/base/prometheusrule.yaml").read_text())
    assert base["spec"]["groups"] == [], "fixed objectives in k8s/base apply to every environment alike"


def test_a_latency_objective_without_its_bucket_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"p95_ms 120 is not a bound .* use one of .*150"):
        alerting.slo_rules(config("staging", "loadtest.slo.total.p95_ms=120"))


def test_durations_scale_for_tests() -> None:
    assert [alerting.RuleTiming().duration(s) for s in (3600, 300, 259200, 90)] == ["1h", "5m", "3d", "90s"]
    assert alerting.RuleTiming(scale=60).duration(3600) == "1m"


def _promtool_test(
    tmp_path: Path, env: Config, series: dict[str, str], expected: dict[str, list[str]]
) -> None:
    """Run the env's rule groups through `promtool test rules` at 70 min: `expected` alert -> the rules
    firing, each by its burn rate (burn-rate rules) or severity (an alert not named must not fire)."""
    rules = {"groups": alerting.rule_groups(env)}
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    names = sorted({rule["alert"] for group in rules["groups"] for rule in group["rules"]})
    tests: list[dict[str, Any]] = []
    for name in names:
        fired = [rule for group in rules["groups"] for rule in group["rules"] if rule["alert"] == name]
        wanted = [
            r
            for r in fired
            if r["labels"].get("burn_rate", r["labels"]["severity"]) in expected.get(name, [])
        ]
        tests.append(
            {
                "eval_time": "70m",
                "alertname": name,
                "exp_alerts": [
                    {
                        "exp_labels": {**r["labels"], **_group_labels(r["expr"], series)},
                        "exp_annotations": {"summary": _rendered_summary(r, series)},
                    }
                    for r in wanted
                ],
            }
        )
    promtool_test_rules(tmp_path, series, tests)


def _group_labels(expr: str, series: dict[str, str]) -> dict[str, str]:
    labels = {"namespace": _namespace(series)}
    if "by (namespace, pod)" in expr:
        labels["pod"] = "model-service-abc"
    return labels


def _namespace(series: dict[str, str]) -> str:
    return next(iter(series)).split('namespace="')[1].split('"')[0]


def _rendered_summary(rule: dict[str, Any], series: dict[str, str]) -> str:
    return (
        str(rule["annotations"]["summary"])
        .replace("{{ $labels.namespace }}", _namespace(series))
        .replace("{{ $labels.pod }}", "model-service-abc")
    )


PREDICT = 'namespace="model-staging",route="/v1/predict"'


@needs_promtool
def test_slow_predictions_burn_stagings_latency_budget_and_page(tmp_path: Path) -> None:
    """100 predictions a minute, 40 of them over 150 ms (under 250 ms): 8x staging's 5 % budget fires the
    6x page (and the 1x ticket), not the 14.4x one; dev's 250 ms objective is not burnt at all."""
    series = {
        f'model_service_request_duration_seconds_bucket{{{PREDICT},status="200",le="0.15"}}': "0+60x80",
        f'model_service_request_duration_seconds_bucket{{{PREDICT},status="200",le="0.25"}}': "0+100x80",
        f'model_service_request_duration_seconds_count{{{PREDICT},status="200"}}': "0+100x80",
        f'model_service_requests_total{{{PREDICT},status="200"}}': "0+100x80",
    }
    _promtool_test(tmp_path, config("staging"), series, {"ModelServiceLatencyBudgetBurn": ["6", "1"]})
    relaxed = {key.replace("model-staging", "model-dev"): value for key, value in series.items()}
    _promtool_test(tmp_path, config("dev"), relaxed, {})


@needs_promtool
def test_errors_burn_prods_availability_budget(tmp_path: Path) -> None:
    """2 % 5xx against prod's 0.1 % objective: 20x, every window pages (and the ticket fires)."""
    where = 'namespace="model-prod",route="/v2/models/m/infer"'
    series = {
        f'model_service_requests_total{{{where},status="200"}}': "0+98x80",
        f'model_service_requests_total{{{where},status="500"}}': "0+2x80",
    }
    _promtool_test(tmp_path, config("prod"), series, {"ModelServiceErrorBudgetBurn": ["14.4", "6", "1"]})


@needs_promtool
def test_restarts_crash_loops_memory_and_descriptors_fire(tmp_path: Path) -> None:
    """kube-state-metrics' and cAdvisor's series as they name them, and the metrics port's process series."""
    pod = 'namespace="model-staging",pod="model-service-abc",container="model-service"'
    series = {
        f"kube_pod_container_status_restarts_total{{{pod}}}": "0x55 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25",
        f'kube_pod_container_status_waiting_reason{{{pod},reason="CrashLoopBackOff"}}': "0x40 1x40",
        f"container_memory_working_set_bytes{{{pod}}}": "500e6x80",
        f'kube_pod_container_resource_limits{{{pod},resource="memory"}}': "512e6x80",
        'process_open_fds{namespace="model-staging",pod="model-service-abc",process="worker",pid="7"}': "900x80",
        'process_max_fds{namespace="model-staging",pod="model-service-abc",process="worker",pid="7"}': "1024x80",
    }
    expected = {
        "ModelServiceRestarting": ["page"],
        "ModelServiceCrashLooping": ["page"],
        "ModelServiceMemoryNearLimit": ["ticket"],
        "ModelServiceFdsNearLimit": ["ticket"],
    }
    _promtool_test(tmp_path, config("staging"), series, expected)
    calm = {key: value for key, value in series.items() if "restarts" not in key and "waiting" not in key}
    calm[f"container_memory_working_set_bytes{{{pod}}}"] = "300e6x80"
    calm['process_open_fds{namespace="model-staging",pod="model-service-abc",process="worker",pid="7"}'] = (
        "20x80"
    )
    _promtool_test(tmp_path, config("staging"), calm, {})
