"""The shadow stage in the cluster: a mirror of live traffic to the candidate and its analysis from Prometheus.

Before any user traffic shifts, the rendered Rollout scales the candidate to the mirrored share, has Argo
Rollouts' Gateway API plugin add a `RequestMirror` filter with `percent: shadow.mirror_percent` to the
HTTPRoute (`setMirrorRoute`, a managed route) aimed at the canary Service, and runs the shadow
AnalysisTemplate: the candidate's pods against stable's on the series both export (class shares and score
bins, model_service/contract/monitoring.py). Users get stable's answers throughout; the mirror is removed
before the first `setWeight` (and by Argo at the rollout's end or abort, with every managed route).

The mirror's target is the canary Service itself: Argo Rollouts narrows its selector to the new
ReplicaSet's `rollouts-pod-template-hash` during an update, and only Argo can, so a Service of our own
could not select the candidate's pods. The mirror exists only while the step runs, so copies never reach
stable's pods (outside an update the canary Service selects them) and never double-count their metrics.
"""

from __future__ import annotations

from typing import Any

from pipeline.config import Config, Task
from pipeline.deploy.names import SHADOW_TEMPLATE
from pipeline.rollout.plan import SHADOW_ROUTE, Analysis, Threshold

CLUSTER_GATES = ("positive_rate_delta", "score_psi")
"""The shadow gates Prometheus can compute from the series both versions export (the others need the
pairs of answers to one request, which only the local shadow stage has)."""
MIRRORED_METHOD = "POST"
"""Predictions are POSTs. The plugin's default (filter) mode puts the RequestMirror filter on the weighted
rule itself and ignores the match; in its `rule` mode the match becomes a rule of its own, which must
outrank the weighted rule: Gateway API ranks a method match above an equal path match, and gives equal
matches to the first rule (the weighted one), so the path alone would never be mirrored."""


def in_cluster(config: Config) -> bool:
    """Whether the overlay mirrors: shadow on, a canary (blue-green has its preview instead) and the Gateway
    API router (ingress-nginx cannot mirror: Argo's nginx router has no setMirrorRoute)."""
    return (
        config.shadow.enabled
        and config.rollout.strategy == "canary"
        and config.deploy.traffic_router == "gateway-api"
    )


def shadow_analysis(config: Config, task: Task | None) -> Analysis:
    """The bounds the cluster applies: each of CLUSTER_GATES with a `max` and not advisory (Argo has no
    warn), positive_rate_delta only for classifiers; windows, count and limits as `rollout.analysis`'s.

    `min_requests` is `shadow.min_pairs`: each prediction request carries at least one row, so a window
    with that many requests on each side holds at least that many rows."""
    gates = config.shadow.gates
    rollout = config.rollout.analysis
    thresholds = tuple(
        Threshold(name, bound.max, None)
        for name in CLUSTER_GATES
        if (bound := getattr(gates, name)).max is not None
        and not bound.advisory
        and not (name == "positive_rate_delta" and task == "regression")
    )
    return Analysis(
        interval_seconds=rollout.interval_seconds,
        count=rollout.count,
        failure_limit=rollout.failure_limit,
        min_requests=config.shadow.min_pairs,
        thresholds=thresholds,
        inconclusive_limit=rollout.inconclusive_limit,
    )


def mirror_route(percent: int | None) -> dict[str, Any]:
    """The setMirrorRoute step: add the mirror (a `percent`), or remove it (None: Argo's step without `match`)."""
    if percent is None:
        return {"setMirrorRoute": {"name": SHADOW_ROUTE}}
    return {
        "setMirrorRoute": {
            "name": SHADOW_ROUTE,
            "percentage": percent,
            "match": [{"method": {"exact": MIRRORED_METHOD}, "path": {"prefix": "/"}}],
        }
    }


def shadow_steps(config: Config, analysis_args: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Rollout's first steps: the candidate scaled to the mirrored share (at weight 0 Argo would run no
    canary pod), the mirror on, the shadow analysis, the mirror off. The caller returns the canary's scale
    to the traffic weight before its first setWeight."""
    percent = config.shadow.mirror_percent
    return [
        {"setCanaryScale": {"weight": percent}},
        mirror_route(percent),
        {"analysis": {"templates": [{"templateName": SHADOW_TEMPLATE}], "args": analysis_args}},
        mirror_route(None),
    ]


def shadow_template(config: Config, metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """The AnalysisTemplate the shadow step runs (`metrics`: argo_analysis.analysis_metrics of
    `shadow_analysis`): the same args as the canary's template."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": SHADOW_TEMPLATE},
        "spec": {
            "args": [
                {"name": "namespace"},
                {"name": "canary-hash"},
                {"name": "stable-hash"},
                {"name": "prometheus-address", "value": config.deploy.prometheus.address},
            ],
            "metrics": metrics,
        },
    }
