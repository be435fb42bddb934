"""docs/config-reference.md: generated from the config models, complete, and current."""

import inspect
import re
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.config import REFERENCE_FILE, Config, config_reference, models
from pipeline.config.schema import json_schema

REPO = Path(__file__).parents[2]
SPECS = [
    cls
    for _, cls in inspect.getmembers(models, inspect.isclass)
    if issubclass(cls, models.Spec) and cls is not models.Spec
]


@pytest.fixture(scope="module")
def reference() -> str:
    return config_reference()


def _rows(reference: str) -> dict[str, list[str]]:
    """Table rows by their dotted key: [type, default, allowed, description]."""
    rows = {}
    for line in reference.splitlines():
        match = re.match(r"^\| `([^`]+)` \| (.*) \|$", line)
        if match:
            rows[match[1]] = [cell.replace("\\|", "|") for cell in re.split(r"(?<!\\) \| ", match[2])]
    return rows


def test_the_committed_reference_is_current(reference: str) -> None:
    assert (REPO / REFERENCE_FILE).read_text(encoding="utf-8") == reference, "run `python -m pipeline schema`"


def test_every_section_is_a_heading_and_every_key_a_documented_row(reference: str) -> None:
    for name in Config.model_fields:
        if name != "name":
            assert f"\n## `{name}`\n" in reference
    rows = _rows(reference)
    undocumented = [key for key, cells in rows.items() if not cells[3]]
    assert undocumented == []
    for spec in SPECS:
        if spec is Config:  # its fields are the section headings
            continue
        for field_name, field in spec.model_fields.items():
            name = field.alias or field_name  # `from`: the YAML key of a Python keyword
            keys = [key for key in rows if key.endswith(f".{name}") or key == name]
            assert keys, f"{spec.__name__}.{name} has no row"
            assert any(rows[key][3] == " ".join((field.description or "").split()) for key in keys)


def test_a_row_gives_type_default_allowed_values_and_docstring(reference: str) -> None:
    rows = _rows(reference)
    assert rows["service.auth"][:3] == ["string", "`none`", "one of `none`, `api-key`, `jwt`"]
    assert rows["service.workers"][:3] == ["integer", "`1`", "≥ 1, ≤ 64"]
    assert rows["data.path"][:2] == ["path or null", "`null`"]
    assert rows["model.name"][1:3] == ["required", "matches `^[a-z0-9][a-z0-9-]{0,62}$`"]
    assert rows["deploy.resources.requests_memory"][2] == "matches `^[0-9]+(Ki|Mi|Gi)$`"
    assert rows["drift.psi"][1] == '`{"warn": 0.1, "fail": 0.25}`'  # DriftLevels itself has no defaults
    assert rows["deploy.gitops"][1] == "(the defaults below)"
    metrics = rows["gates.metrics"]
    assert metrics[1] == "required"
    assert metrics[2].startswith("keys: `roc_auc`, `accuracy`") and metrics[2].endswith("at least 1 entry")
    assert rows["drift.log_inputs.sensitive"][2] == "values: `hash`, `drop`"


def test_nested_mappings_and_lists_get_their_own_sections(reference: str) -> None:
    rows = _rows(reference)
    for key in (
        "gates.metrics.<name>.vs_champion.min_delta",
        "rollout.steps[].pause.seconds",
        "loadtest.slo.routes.<name>.p95_ms",
        "drift.features.<name>.ks.fail",
        "deploy.argocd.repo_url",
    ):
        assert key in rows
        section = key.rsplit(".", 1)[0]
        assert f"\n### `{section}`\n" in reference


def test_the_reference_is_a_pure_function_of_the_models() -> None:
    assert config_reference() == config_reference()
    assert json_schema() == json_schema()


def test_schema_check_names_a_stale_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--config-dir", str(tmp_path / "environments"), "--workdir", str(tmp_path)]
    assert main(["schema", *args]) == 0
    assert (tmp_path / REFERENCE_FILE).read_text(encoding="utf-8") == config_reference()
    (tmp_path / REFERENCE_FILE).write_text("# edited by hand\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["schema", "--check", *args]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / REFERENCE_FILE} is stale" in err
    assert "schema.json" not in err
    assert main(["schema", *args]) == 0
    assert main(["schema", "--check", *args]) == 0
