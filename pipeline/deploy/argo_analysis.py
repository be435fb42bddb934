"""The rollout plan in Argo's terms: canary steps, blue-green, and the analysis as PromQL.

The AnalysisTemplate's metrics are the plan's thresholds as Prometheus queries over each version's
pods (selected by pod-template hash), timed for Prometheus by `cluster_timing`; the PrometheusRule's
alerts are the `drift:` bounds as sustained conditions.
"""

from __future__ import annotations

from typing import Any

from model_service.contract.monitoring import (
    BIN_LABEL,
    CLASS_LABEL,
    FEATURE_LABEL,
    FEATURE_PSI,
    LIVE_QUALITY_VERDICT,
    MODEL_LABEL,
    PREDICTED_CLASS_TOTAL,
    PREDICTION_ROUTES_REGEX,
    REQUEST_DURATION_BUCKET,
    REQUESTS_TOTAL,
    ROUTE_LABEL,
    SCORE_BIN_TOTAL,
    SCORE_PSI,
    STATUS_LABEL,
    VERDICT_LABEL,
    VERSION_LABEL,
)
from pipeline.config import PREDICTION_SHIFT_METRICS, ClusterTiming, Config, ConfigError
from pipeline.deploy.names import ANALYSIS_TEMPLATE, SMOKE_TEMPLATE
from pipeline.rollout.analysis import SCORE_SMOOTHING
from pipeline.rollout.plan import (
    Analysis,
    Analyze,
    AwaitApproval,
    Pause,
    Plan,
    Promote,
    SetHeaderRoute,
    SetWeight,
    Smoke,
    Threshold,
)


def analysis_args() -> list[dict[str, Any]]:
    return [
        {"name": "namespace", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "canary-hash", "valueFrom": {"podTemplateHashValue": "Latest"}},
        {"name": "stable-hash", "valueFrom": {"podTemplateHashValue": "Stable"}},
    ]


def canary_steps(rollout_plan: Plan, shadow: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """spec.strategy.canary.steps: the `shadow` steps first (pipeline/deploy/shadow.py), then one Argo step
    per plan action (Promote is Argo's implicit end).

    With traffic routing Argo scales the canary to its traffic weight, so at weight 0 it has no pod: a
    header route there is preceded by `setCanaryScale: {replicas: 1}`, and a fixed scale (that, or the
    shadow's) is handed back to the weight (`matchTrafficWeight`) before the next setWeight."""
    steps: list[dict[str, Any]] = list(shadow or [])
    weight, scale_fixed = 0, bool(shadow)
    for action in rollout_plan.actions:
        match action:
            case SetWeight(weight):
                if scale_fixed:
                    steps.append({"setCanaryScale": {"matchTrafficWeight": True}})
                    scale_fixed = False
                steps.append({"setWeight": weight})
            case SetHeaderRoute(match=match):
                if match and weight == 0 and not scale_fixed:
                    steps.append({"setCanaryScale": {"replicas": 1}})
                    scale_fixed = True
                steps.append({"setHeaderRoute": header_route(action)})
            case Pause(seconds):
                steps.append({"pause": {"duration": f"{seconds}s"}})
            case Analyze():
                steps.append(
                    {
                        "analysis": {
                            "templates": [{"templateName": ANALYSIS_TEMPLATE}],
                            "args": analysis_args(),
                        }
                    }
                )
            case Promote():
                pass
            case _:
                raise ValueError(f"canary plans have no {type(action).__name__} action")
    return steps


def header_route(action: SetHeaderRoute) -> dict[str, Any]:
    """Argo's setHeaderRoute: `headerName` and `headerValue` ({exact|prefix|regex}); no `match` removes it."""
    if not action.match:
        return {"name": action.name}
    return {
        "name": action.name,
        "match": [{"headerName": m.header, "headerValue": {m.kind: m.value}} for m in action.match],
    }


def blue_green(rollout_plan: Plan) -> dict[str, Any]:
    """spec.strategy.blueGreen fields the plan decides (services come from the component).

    Smoke and Analyze both judge the preview before the switch, as in the rehearsal: one
    prePromotionAnalysis with both templates (the analysis' load Job sends the preview its traffic)."""
    strategy: dict[str, Any] = {"autoPromotionEnabled": True}
    templates: list[dict[str, str]] = []
    for action in rollout_plan.actions:
        match action:
            case Smoke():
                templates.append({"templateName": SMOKE_TEMPLATE})
            case Analyze():
                templates.append({"templateName": ANALYSIS_TEMPLATE})
            case AwaitApproval():
                strategy["autoPromotionEnabled"] = False
            case Promote(delay):
                strategy["scaleDownDelaySeconds"] = max(delay, 30)
            case _:
                raise ValueError(f"blue-green plans have no {type(action).__name__} action")
    if templates:
        strategy["prePromotionAnalysis"] = {"templates": templates, "args": analysis_args()}
    return strategy


def _selector(hash_arg: str | None, extra: str = "") -> str:
    version = f'rollouts_pod_template_hash="{{{{args.{hash_arg}}}}}",' if hash_arg else ""
    return f'namespace="{{{{args.namespace}}}}",{version}{ROUTE_LABEL}=~"{PREDICTION_ROUTES_REGEX}"{extra}'


def promql(metric: str, analysis: Analysis, window_seconds: int, hash_arg: str | None = "canary-hash") -> str:
    """The query for one analysis metric of the version whose pods have `hash_arg` (None: every pod of the
    namespace, the first release's only version), over `window_seconds`.

    Windows with fewer than `min_requests` predictions return no sample, which fails (never passes)."""
    window = f"{window_seconds}s"
    total = f"{REQUESTS_TOTAL}{{{_selector(hash_arg)}}}"
    enough = f"sum(increase({total}[{window}])) >= {analysis.min_requests}"
    if metric == "error_ratio":
        five_xx = f',{STATUS_LABEL}=~"5.."'
        errors = f"{REQUESTS_TOTAL}{{{_selector(hash_arg, five_xx)}}}"
        value = f"(sum(rate({errors}[{window}])) or vector(0)) / sum(rate({total}[{window}]))"
    elif metric in {"p95_ms", "p99_ms"}:
        quantile = "0.95" if metric == "p95_ms" else "0.99"
        buckets = f"{REQUEST_DURATION_BUCKET}{{{_selector(hash_arg)}}}"
        value = f"histogram_quantile({quantile}, sum by (le) (rate({buckets}[{window}]))) * 1000"
    elif metric == "score_psi":
        canary = _shares(SCORE_BIN_TOTAL, BIN_LABEL, "canary-hash", window, smoothing=SCORE_SMOOTHING)
        stable = _shares(SCORE_BIN_TOTAL, BIN_LABEL, "stable-hash", window, smoothing=SCORE_SMOOTHING)
        value = f"sum(\n  ({canary} - {stable})\n  * ln({canary} / {stable})\n)"
    elif metric == "positive_rate_delta":
        canary = _shares(PREDICTED_CLASS_TOTAL, CLASS_LABEL, "canary-hash", window)
        stable = _shares(PREDICTED_CLASS_TOTAL, CLASS_LABEL, "stable-hash", window)
        value = f"max(abs({canary} - {stable}))"
    else:
        raise ValueError(f"no PromQL for analysis metric {metric!r}")
    return f"({value})\n  and on() ({enough})"


def _shares(metric: str, label: str, hash_arg: str, window: str, smoothing: float = 0.0) -> str:
    """Each `label` value's share of the version's counts over the window (prediction shift queries).

    `smoothing` adds that many counts to every bin, like the local analysis, so an empty bin on one side
    is rare rather than infinitely surprising."""
    selector = f'namespace="{{{{args.namespace}}}}",rollouts_pod_template_hash="{{{{args.{hash_arg}}}}}"'
    counts = f"sum by ({label}) (increase({metric}{{{selector}}}[{window}]))"
    if not smoothing:
        return f"({counts} / ignoring({label}) group_left() sum({counts}))"
    return (
        f"(({counts} + {smoothing:g}) / ignoring({label}) group_left() "
        f"(sum({counts}) + {smoothing:g} * count({counts})))"
    )


def _bounded(
    name: str, query: str, bound: float, analysis: Analysis, timing: ClusterTiming
) -> dict[str, Any]:
    return {
        "name": name,
        # The cluster's clock (scrape-based), not the rehearsal's interval_seconds; see ClusterTiming.
        "initialDelay": f"{timing.initial_delay}s",
        "interval": f"{timing.interval}s",
        "count": analysis.count,
        "failureLimit": analysis.failure_limit,
        # Argo counts an inconclusive measurement towards `count` (no retry, as the rehearsal does) and calls
        # the metric Successful at `count` with no limit exceeded (analysis/analysis.go, assessMetricStatus):
        # a limit of `count` or more would pass a step measured only inconclusive.
        "inconclusiveLimit": min(analysis.inconclusive_limit, analysis.count - 1),
        # No sample (no data or too few requests) fails, it is never Inconclusive.
        "successCondition": f"len(result) > 0 && result[0] <= {bound:g}",
        "failureCondition": f"len(result) == 0 || result[0] > {bound:g}",
        "provider": {
            "prometheus": {"address": "{{args.prometheus-address}}", "query": query},
        },
    }


def _effect_floor(stable: str, threshold: Threshold) -> str:
    """The divisor of a latency ratio with an effect floor: max(stable, (stable + min_effect_ms) / k), so
    the ratio exceeds k only when the canary is both k times and `min_effect_ms` slower (as the local judge).
    The local judge's rank test has no PromQL form (Argo's Kayenta provider would run it)."""
    if not threshold.min_effect_ms or threshold.max_vs_stable is None:
        return stable
    floor = f"(({stable}) + {threshold.min_effect_ms:g}) / {threshold.max_vs_stable:g}"
    return f"(({stable}) > {floor})\nor {floor}"


def analysis_metrics(analysis: Analysis, timing: ClusterTiming) -> list[dict[str, Any]]:
    """AnalysisTemplate spec.metrics: one Prometheus metric per bound of `Plan.analysis.thresholds`."""
    metrics: list[dict[str, Any]] = []
    window = timing.window
    for threshold in analysis.thresholds:
        name = threshold.metric.replace("_", "-")
        if threshold.max is not None:
            query = promql(threshold.metric, analysis, window)
            metrics.append(_bounded(name, query, threshold.max, analysis, timing))
        if threshold.max_vs_stable is not None:
            canary = promql(threshold.metric, analysis, window, "canary-hash")
            stable = promql(threshold.metric, analysis, window, "stable-hash")
            query = f"({canary})\n/ ({_effect_floor(stable, threshold)})"
            metrics.append(_bounded(f"{name}-vs-stable", query, threshold.max_vs_stable, analysis, timing))
    return metrics


def first_release_metrics(analysis: Analysis, timing: ClusterTiming) -> list[dict[str, Any]]:
    """The metrics of an environment's first release: the absolute bounds (`max`) only, over every pod of
    the namespace. There is no stable version to compare with (the `*-vs-stable` and prediction-shift
    metrics would have no stable series), and the first release's pods are the namespace's only ones."""
    return [
        _bounded(
            threshold.metric.replace("_", "-"),
            promql(threshold.metric, analysis, timing.window, None),
            threshold.max,
            analysis,
            timing,
        )
        for threshold in analysis.thresholds
        if threshold.max is not None and threshold.metric not in PREDICTION_SHIFT_METRICS
    ]


def smoke_metric(requests: int, service: str) -> dict[str, Any]:
    """`requests` GETs of the Service's /readyz, run by the Argo Rollouts controller; any failure fails
    (the blue-green smoke template's metric, aimed at a Service of the caller's choice)."""
    return {
        "name": "smoke",
        "interval": "1s",
        "count": requests,
        "failureLimit": 0,
        "successCondition": 'result == "ready"',
        "provider": {
            "web": {
                "url": f"http://{service}.{{{{args.namespace}}}}.svc/readyz",
                "jsonPath": "{$.status}",
                "timeoutSeconds": 5,
            }
        },
    }


def cluster_timing(config: Config) -> ClusterTiming:
    """The cluster analysis' timings; refuses (ConfigError naming file and key) timings that get no data."""
    timing = config.cluster_timing
    problems = timing.problems()
    if problems:
        raise ConfigError(
            f"environments/{config.name}.yaml: deploy.prometheus (scrape_interval, analysis_interval): "
            f"the cluster analysis cannot get data: {'; '.join(problems)}"
        )
    return timing


# ML alerts: sustained input drift and prediction shift, from the `drift:` bounds.


def _drift_rule(alert: str, expr: str, minutes: int, summary: str) -> dict[str, Any]:
    return {
        "alert": alert,
        "expr": expr,
        "for": f"{minutes}m",
        "labels": {"severity": "ticket"},
        "annotations": {"summary": summary},
    }


def drift_rules(config: Config) -> dict[str, Any]:
    """A PrometheusRule group over the service's PSI gauges (each worker's recent window vs the card's
    reference); NaN (too few rows) never fires. Features with their own bounds get their own rule."""
    drift = config.drift
    minutes = drift.alert_for_minutes
    where = "{{ $labels.namespace }}"
    own = sorted(name for name, spec in drift.features.items() if spec.psi is not None)
    others = "".join(f',{FEATURE_LABEL}!="{name}"' for name in own)
    rules = [
        _drift_rule(
            "ModelServiceInputDrift",
            f'max by (namespace, {FEATURE_LABEL}) ({FEATURE_PSI}{{{FEATURE_LABEL}!=""{others}}}) '
            f"> {drift.psi.fail:g}",
            minutes,
            f"model-service in {where}: input feature {{{{ $labels.{FEATURE_LABEL} }}}} drifted from the "
            f"training data (PSI above {drift.psi.fail:g} for {minutes}m)",
        )
    ]
    for name in own:
        bound = drift.bounds(name, "psi").fail
        rules.append(
            _drift_rule(
                "ModelServiceInputDrift",
                f'max by (namespace, {FEATURE_LABEL}) ({FEATURE_PSI}{{{FEATURE_LABEL}="{name}"}}) > {bound:g}',
                minutes,
                f"model-service in {where}: input feature {name} drifted (PSI above {bound:g} for {minutes}m)",
            )
        )
    rules.append(
        _drift_rule(
            "ModelServicePredictionShift",
            f"max by (namespace) ({SCORE_PSI}) > {drift.score_psi.fail:g}",
            minutes,
            f"model-service in {where}: predicted scores shifted from the evaluation set's "
            f"(score PSI above {drift.score_psi.fail:g} for {minutes}m)",
        )
    )
    rules.append(
        {
            # The verdict is already a judgment over days of labels (`pipeline evaluate`): no `for` delay.
            "alert": "ModelLiveQualityFailing",
            "expr": f'max by (namespace, {MODEL_LABEL}, {VERSION_LABEL}) ({LIVE_QUALITY_VERDICT}{{{VERDICT_LABEL}="fail"}}) == 1',
            "labels": {"severity": "ticket"},
            "annotations": {
                "summary": f"model {{{{ $labels.{MODEL_LABEL} }}}} version {{{{ $labels.{VERSION_LABEL} }}}} in {where}: "
                "live quality fails the gate rows on its labelled served rows (pipeline evaluate; docs/monitoring.md)"
            },
        }
    )
    return {"name": "model-service-ml", "rules": rules}
