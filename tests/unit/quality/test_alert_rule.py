"""The PrometheusRule alert on a failing live-quality verdict, run by `promtool test rules` on the series
`pipeline evaluate` writes (the gauges file, appended to the metrics port's /metrics): a failing version
fires at once, a passing or inconclusive one never. Rule unit tests: Prometheus' "Unit testing for rules"
(docs/configuration/unit_testing_rules.md)."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from model_service.contract.monitoring import LIVE_QUALITY_VERDICT
from pipeline.config import Config
from pipeline.deploy.argo_analysis import drift_rules
from tests._prometheus import promtool_test_rules

ALERT = "ModelLiveQualityFailing"


def _series(version: str, verdict: str) -> dict[str, str]:
    """The verdict gauge of one version: 1 for `verdict` from minute 2 on, 0 for the others."""
    out = {}
    for each in ("pass", "warn", "fail", "inconclusive"):
        labels = f'namespace="model-prod",model="m",version="{version}",verdict="{each}"'
        out[f"{LIVE_QUALITY_VERDICT}{{{labels}}}"] = "0 0 1x8" if each == verdict else "0x10"
    return out


@pytest.mark.needs_tool("promtool", "prometheus")
def test_a_failing_version_fires_and_no_other_does(config: Config, tmp_path: Path) -> None:
    group = drift_rules(config)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": [group]}))
    rule = next(r for r in group["rules"] if r["alert"] == ALERT)
    series = {**_series("v1", "fail"), **_series("v2", "pass"), **_series("v3", "inconclusive")}
    summary = rule["annotations"]["summary"].replace("{{ $labels.model }}", "m")
    summary = summary.replace("{{ $labels.version }}", "v1").replace("{{ $labels.namespace }}", "model-prod")
    alerts: list[dict[str, Any]] = [
        {"eval_time": "1m", "alertname": ALERT, "exp_alerts": []},
        {
            "eval_time": "3m",
            "alertname": ALERT,
            "exp_alerts": [
                {
                    "exp_labels": {
                        "severity": "ticket",
                        "namespace": "model-prod",
                        "model": "m",
                        "version": "v1",
                    },
                    "exp_annotations": {"summary": summary},
                }
            ],
        },
    ]
    promtool_test_rules(tmp_path, series, alerts)
