"""The gauges file in the Prometheus text format: label values escaped, one verdict series set per version."""

from prometheus_client.parser import text_string_to_metric_families

from pipeline.quality.estimate import Estimate
from pipeline.quality.gauges import exposition
from pipeline.quality.verdict import Judged


def test_label_values_are_escaped_and_each_version_has_one_current_verdict() -> None:
    odd = 'a"b\\c\nd'
    judged = [
        Judged(
            model=odd,
            version="v1",
            rows=10,
            labelled=4,
            unusable=0,
            live={},
            estimate=Estimate({"accuracy": 0.8}, 10),
            offline=None,
            offline_source="",
            verdict="inconclusive",
        )
    ]
    samples = [s for family in text_string_to_metric_families(exposition(judged)) for s in family.samples]
    assert {s.labels["model"] for s in samples} == {odd}
    verdicts = {s.labels["verdict"]: s.value for s in samples if s.name == "model_live_quality_verdict"}
    assert verdicts == {"pass": 0, "warn": 0, "fail": 0, "inconclusive": 1}
    assert [(s.name, s.value) for s in samples if s.name != "model_live_quality_verdict"] == [
        ("model_live_quality_estimate", 0.8),
        ("model_live_quality_labelled_rows", 4),
    ]
