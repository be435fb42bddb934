"""--candidate-fault parsing: each fault's settings, and bad input refused with the fix in the message."""

import pytest

from pipeline.config import ConfigError
from pipeline.rollout.rehearsal import parse_fault


@pytest.mark.parametrize(
    ("text", "settings"),
    [
        ("latency=400ms", {"MODEL_SERVICE_FAULT_LATENCY_MS": "400"}),
        ("latency=50", {"MODEL_SERVICE_FAULT_LATENCY_MS": "50"}),
        (
            "latency=3ms@0.08",
            {"MODEL_SERVICE_FAULT_LATENCY_MS": "3", "MODEL_SERVICE_FAULT_LATENCY_RATIO": "0.08"},
        ),
        ("errors=0.2", {"MODEL_SERVICE_FAULT_ERROR_RATIO": "0.2"}),
        ("shift", {"MODEL_SERVICE_FAULT_INVERT_SCORES": "true"}),
    ],
)
def test_faults_become_service_settings(text: str, settings: dict[str, str]) -> None:
    assert parse_fault(text, "dev") == settings


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("latency=3ms@1.5", "the share of delayed requests is between 0 and 1"),
        ("latency=3ms@0", "the share of delayed requests is between 0 and 1"),
        ("latency=3ms@lots", "'lots' is not a number"),
        ("latency=fast", "'fast' is not a number"),
        ("errors=2", "an error ratio is between 0 and 1"),
        ("errors=0.1@0.5", "'0.1@0.5' is not a number"),
        ("slow", "expected latency=<ms>ms, latency=<ms>ms@<share>, errors=<ratio> or shift"),
    ],
)
def test_bad_faults_are_refused_naming_the_fix(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_fault(text, "dev")


def test_faults_are_refused_for_prod() -> None:
    with pytest.raises(ConfigError, match="refused for prod"):
        parse_fault("latency=3ms@0.08", "prod")
