"""The image stage without a Docker daemon, the lock's freshness, and the build context's layout."""

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pipeline.artifacts import ModelDir
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.console import Reporter
from pipeline.errors import StageSkipped
from pipeline.stages import RUN_ORDER, image
from pipeline.workspace import Workspace, new_run_id

REPO = Path(__file__).parents[3]


def test_without_a_daemon_the_stage_is_skipped_naming_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    where = f"unix://{tmp_path}/no-such-docker.sock"
    monkeypatch.setenv("DOCKER_HOST", where)
    config = load_config("dev", REPO / "environments")
    with pytest.raises(StageSkipped, match=rf"^no Docker daemon at {re.escape(where)}: "):
        image.image(config, Workspace(tmp_path), Reporter(), model=ModelDir(tmp_path / "version"))


def test_run_alone_without_a_daemon_exits_1_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    where = f"unix://{tmp_path}/no-such-docker.sock"
    monkeypatch.setenv("DOCKER_HOST", where)
    code = main(
        ["image", "--env", "dev", "--config-dir", str(REPO / "environments"), "--workdir", str(tmp_path)]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert f"no Docker daemon at {where}" in captured.err
    assert "SKIPPED" in captured.out


def test_image_runs_after_register_and_before_promote() -> None:
    assert RUN_ORDER.index("register") < RUN_ORDER.index("image") < RUN_ORDER.index("promote")


def _lock_pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (REPO / "model_service" / "requirements.lock").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\[\],-]+)==([^\s;]+)", line)
        if match:
            pins[canonicalize_name(match.group(1).split("[")[0])] = match.group(2)
    return pins


def test_the_lock_pins_every_service_dependency_within_its_range() -> None:
    """Stale when pyproject's `service` group changed: regenerate with the command in the lock's header."""
    groups = tomllib.loads((REPO / "pyproject.toml").read_text())["dependency-groups"]
    pins = _lock_pins()
    for spec in groups["service"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is in the service group but not in requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, outside {requirement.specifier}"
        )


def test_every_locked_package_has_hashes_and_nothing_of_the_pipeline_is_in_it() -> None:
    text = (REPO / "model_service" / "requirements.lock").read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    assert all("--hash=sha256:" in block for block in blocks if "==" in block)
    assert not {"mlflow", "mlflow-skinny", "scikit-learn", "skl2onnx"} & set(_lock_pins())


def test_the_context_holds_the_service_lock_model_and_wheels_only(tmp_path: Path) -> None:
    model = tmp_path / "version"
    model.mkdir()
    (model / "model.onnx").write_bytes(b"onnx")
    (model / "model.json").write_text("{}")
    (model / "train.json").write_text("{}")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "x-1-py3-none-any.whl").write_bytes(b"wheel")
    context = image.stage_context(tmp_path / "ctx", ModelDir(model), wheels)
    files = sorted(str(p.relative_to(context)) for p in context.rglob("*") if p.is_file())
    assert "Dockerfile" in files
    assert ".dockerignore" in files
    assert "model/model.onnx" in files
    assert "model/train.json" not in files
    assert "wheels/x-1-py3-none-any.whl" in files
    assert "requirements.lock" in files
    assert "model_service/contract/card.py" in files  # subpackages too
    static = "model_service/protocol/static/"  # the /docs page's vendored files: data the service serves
    assert all(
        f.endswith(".py") for f in files if f.startswith("model_service/") and not f.startswith(static)
    )
    assert f"{static}swagger-ui/swagger-ui-bundle.js" in files
    assert not any(f.startswith("pipeline") for f in files)
    assert (context / "model" / "model.json").stat().st_mode & 0o044 == 0o044


def test_the_fallback_sits_beside_the_model_and_the_dockerfile_points_at_it(tmp_path: Path) -> None:
    folders = []
    for name in ("version", "previous"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "model.onnx").write_bytes(name.encode())
        (folder / "model.json").write_text("{}")
        folders.append(ModelDir(folder))
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    context = image.stage_context(tmp_path / "ctx", folders[0], wheels, folders[1])
    assert (context / "fallback" / "model.onnx").read_bytes() == b"previous"
    assert (context / "model" / "model.onnx").read_bytes() == b"version"
    without = image.stage_context(tmp_path / "ctx2", folders[0], wheels)
    assert list((without / "fallback").iterdir()) == []  # COPY fallback/ needs the folder, empty
    allowed = (REPO / ".dockerignore").read_text().splitlines()
    assert "!fallback" in allowed  # the folder itself, so an empty one reaches the build too
    dockerfile = (REPO / "model_service" / "Dockerfile").read_text()
    assert f"COPY fallback/ {image.IMAGE_FALLBACK_DIR}/" in dockerfile
    assert f"MODEL_SERVICE_FALLBACK_DIR=${{{image.FALLBACK_BUILD_ARG}}}" in dockerfile


def test_run_ids_sort_by_time_and_differ() -> None:
    first, second = new_run_id(), new_run_id()
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{4}", first)
    assert first != second


def test_the_dockerfile_keeps_its_promises() -> None:
    text = (REPO / "model_service" / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=" in text
    assert "--no-index" in text and "--require-hashes" in text
    assert re.search(r"^USER \d+:\d+$", text, re.MULTILINE)
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert "STOPSIGNAL SIGTERM" in text
    assert re.search(r'^ENTRYPOINT \["', text, re.MULTILINE)
