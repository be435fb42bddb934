"""`service.fallback`: validated with file and key, mapped to the service's declared MODEL_SERVICE_* settings."""

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from model_service.operations.settings import ServiceSettings, unknown_variables
from pipeline.adapters.service_process import FALLBACK_DIR_ENV, service_settings
from pipeline.artifacts import ModelDir
from pipeline.config import Config, ConfigError, load_config
from pipeline.deploy import release_file, render
from pipeline.rollout.rehearsal import fallback_setting

REPO = Path(__file__).parents[2]
ENVIRONMENTS = REPO / "environments"
BREAKER = (
    "service.fallback.breaker={failures: 4, window_seconds: 20, latency_budget_ms: 50, "
    "open_seconds: 7.5, half_open_probes: 2}"
)


def test_export_source_needs_a_version_named_with_file_and_key() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config("staging", ENVIRONMENTS, ("service.fallback={source: export}",))
    message = str(caught.value)
    assert "service.fallback" in message
    assert "source 'export' needs 'version'" in message


def test_a_version_with_source_previous_is_refused() -> None:
    with pytest.raises(ConfigError, match="only read with source 'export'"):
        load_config("staging", ENVIRONMENTS, ("service.fallback={source: previous, version: v3}",))


def test_breaker_thresholds_reach_the_service_and_the_configmap_as_declared_settings(tmp_path: Path) -> None:
    config = load_config("staging", ENVIRONMENTS, ("service.fallback={source: previous}", BREAKER))
    settings = service_settings(config)
    assert settings["MODEL_SERVICE_BREAKER_FAILURES"] == "4"
    assert settings["MODEL_SERVICE_BREAKER_OPEN_S"] == "7.5"
    assert render.config_map(config)["data"]["MODEL_SERVICE_BREAKER_LATENCY_BUDGET_MS"] == "50"
    assert unknown_variables({**settings, FALLBACK_DIR_ENV: "/fallback"}) is None
    parsed = ServiceSettings.model_validate(
        {key.removeprefix("MODEL_SERVICE_").lower(): value for key, value in settings.items()}
        | {"model_dir": tmp_path, "fallback_dir": tmp_path}
    )
    assert (parsed.breaker_failures, parsed.breaker_window_s, parsed.breaker_half_open_probes) == (4, 20.0, 2)


def test_no_fallback_no_breaker_settings() -> None:
    config = load_config("staging", ENVIRONMENTS)
    assert config.service.fallback is None
    assert not any(key.startswith("MODEL_SERVICE_BREAKER") for key in service_settings(config))


def test_rehearsal_candidate_falls_back_to_stable_or_the_named_export(
    tmp_path: Path, plain_model_dir: Path
) -> None:
    stable, candidate = ModelDir(tmp_path / "v1"), ModelDir(tmp_path / "v2")
    for folder in (stable, candidate):
        shutil.copytree(plain_model_dir, folder.path)
    previous = load_config("dev", ENVIRONMENTS, ("service.fallback={source: previous}",))
    assert fallback_setting(previous, stable, candidate) == {FALLBACK_DIR_ENV: str(stable.path)}
    assert fallback_setting(previous, candidate, candidate) == {}  # first deploy: nothing earlier
    card = json.loads((stable.card).read_text())
    card["features"][0]["name"] = "renamed"  # the candidate is breaking: the service would refuse stable
    stable.card.write_text(json.dumps(card))
    assert fallback_setting(previous, stable, candidate) == {}
    export = load_config("dev", ENVIRONMENTS, ("service.fallback={source: export, version: v0}",))
    assert fallback_setting(export, stable, candidate) == {FALLBACK_DIR_ENV: str(tmp_path / "v0")}
    assert fallback_setting(load_config("dev", ENVIRONMENTS), stable, candidate) == {}


@pytest.mark.needs_tool("promtool", "prometheus")
def test_the_prometheusrule_alerts_on_the_breaker_only_with_a_fallback(tmp_path: Path) -> None:
    def groups(config: Config) -> list[dict[str, Any]]:
        files = render.render_environment(config, release_file.Release(image="model-service"), REPO)
        ops = yaml.safe_load(files[f"k8s/overlays/{config.name}/patch-prometheusrule.yaml"])
        return [op["value"] for op in ops if op["path"] == "/spec/groups/-"]

    assert "model-service-fallback" not in [g["name"] for g in groups(load_config("staging", ENVIRONMENTS))]
    config = load_config("staging", ENVIRONMENTS, ("service.fallback={source: previous}", BREAKER))
    (fallback,) = [g for g in groups(config) if g["name"] == "model-service-fallback"]
    alerts = {rule["alert"]: rule for rule in fallback["rules"]}
    assert 'model_service_breaker_state{state="open"}' in alerts["ModelServiceBreakerOpen"]["expr"]
    assert alerts["ModelServiceBreakerOpen"]["for"] == "2m"  # spans the 7.5 s open period and more
    assert "model_service_fallback_answers_total" in alerts["ModelServiceFallbackAnswering"]["expr"]
    # Prometheus' own checker parses every expression of the group.
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": [fallback]}))
    checked = subprocess.run(
        ["promtool", "check", "rules", str(rules)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
