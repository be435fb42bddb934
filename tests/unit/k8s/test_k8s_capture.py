"""Where the capture goes: the service's settings from `capture:` (locally the workspace's folder, in the
cluster the capture volume's mount path), the rendered volume, and the refusals of a bad section."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.adapters.service_process import CAPTURE_DIR_ENV, capture_settings, service_environment
from pipeline.config import ConfigError, load_config
from pipeline.deploy import release_file, render

ROOT = Path(__file__).resolve().parents[3]
CONFIG_DIR = ROOT / "environments"


def _rollout_ops(env: str, overrides: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    config = load_config(env, CONFIG_DIR, overrides)
    files = render.render_environment(config, release_file.Release(image="model-service"), ROOT)
    ops = yaml.safe_load(files[f"k8s/overlays/{env}/patch-rollout.yaml"])
    config_map = yaml.safe_load(files[f"k8s/overlays/{env}/configmap.yaml"])["data"]
    return {op["path"]: op["value"] for op in ops if "volume" in op["path"]}, config_map


def test_dev_captures_into_an_emptydir_sized_for_its_files() -> None:
    volumes, config_map = _rollout_ops("dev", ["capture.max_files=4", "capture.max_file_bytes=1048576"])
    assert volumes["/spec/template/spec/volumes/-"] == {"name": "capture", "emptyDir": {"sizeLimit": "68Mi"}}
    mount = {"name": "capture", "mountPath": render.CAPTURE_MOUNT_PATH}
    assert volumes["/spec/template/spec/containers/0/volumeMounts/-"] == mount
    assert config_map[CAPTURE_DIR_ENV] == render.CAPTURE_MOUNT_PATH
    assert config_map["MODEL_SERVICE_CAPTURE_SAMPLE_RATIO"] == "0.5"


def test_a_volume_claim_is_mounted_instead() -> None:
    volumes, _ = _rollout_ops("dev", ["capture.volume_claim=model-capture"])
    claim = {"name": "capture", "persistentVolumeClaim": {"claimName": "model-capture"}}
    assert volumes["/spec/template/spec/volumes/-"] == claim


def test_capture_off_renders_no_volume_and_no_setting() -> None:
    volumes, config_map = _rollout_ops("prod", [])
    assert volumes == {}
    assert not [key for key in config_map if key.startswith("MODEL_SERVICE_CAPTURE_")]


def test_local_runs_capture_only_when_given_a_folder(tmp_path: Path) -> None:
    """`pipeline serve` passes the workspace's folder; load tests and rehearsals pass none: their traffic
    is synthetic, and the cluster's mount path does not exist here."""
    config = load_config("dev", CONFIG_DIR)
    served, _ = service_environment(config, capture_dir=tmp_path)
    assert served[CAPTURE_DIR_ENV] == str(tmp_path)
    assert served["MODEL_SERVICE_CAPTURE_LABEL_WINDOW_DAYS"] == "30"
    load_test, _ = service_environment(config)
    assert not [key for key in load_test if key.startswith("MODEL_SERVICE_CAPTURE_")]
    assert capture_settings(load_config("prod", CONFIG_DIR), tmp_path) == {}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("capture.label_window_days=40", "label_window_days 40 is longer than retention_days 30"),
        ("capture.volume_claim=Not_A_Name", "capture.volume_claim"),
        ("capture.sample_ratio=0", "capture.sample_ratio"),
        ("capture.max_file_bytes=100", "capture.max_file_bytes"),
    ],
)
def test_a_bad_capture_section_is_refused_naming_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("dev", CONFIG_DIR, [override])
