"""Alerts on the fallback model and its circuit breaker (`service.fallback`), for the PrometheusRule."""

from typing import Any

from model_service.contract.monitoring import BREAKER_STATE, FALLBACK_ANSWERS, STATE_LABEL
from pipeline.config import Config

FALLBACK_ANSWERS_TOTAL = f"{FALLBACK_ANSWERS}_total"


def fallback_rules(config: Config) -> dict[str, Any] | None:
    """A rule group when the environment serves a fallback, else None. The breaker's state changes only
    when a request arrives, so `for:` spans at least one open period: a breaker that stays open (or keeps
    reopening) fires, a single blip does not."""
    fallback = config.service.fallback
    if fallback is None:
        return None
    minutes = max(1, -(-int(fallback.breaker.open_seconds) // 60) + 1)
    where = "{{ $labels.namespace }}"
    return {
        "name": "model-service-fallback",
        "rules": [
            {
                "alert": "ModelServiceBreakerOpen",
                "expr": f'max by (namespace) ({BREAKER_STATE}{{{STATE_LABEL}="open"}}) == 1',
                "for": f"{minutes}m",
                "labels": {"severity": "page"},
                "annotations": {
                    "summary": f"model-service in {where}: the circuit breaker is open, the fallback model "
                    "answers instead of the primary"
                },
            },
            {
                "alert": "ModelServiceFallbackAnswering",
                "expr": f"sum by (namespace) (rate({FALLBACK_ANSWERS_TOTAL}[5m])) > 0",
                "for": "15m",
                "labels": {"severity": "ticket"},
                "annotations": {
                    "summary": f"model-service in {where}: the fallback model has been answering for 15 "
                    "minutes (primary errors or an open breaker)"
                },
            },
        ],
    }
