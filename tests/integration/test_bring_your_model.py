"""Bring your own model through the real stages (MLflow on sqlite): the three examples, and bad inputs
that must stop with a clear error and write nothing."""

import json
import os
import pickle
import shutil
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from mlflow import MlflowClient

from pipeline.adapters.service_process import running_service
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.ml.data import load_dataset
from tests._pipeline_runs import FAST

REPO = Path(__file__).parents[2]
EXAMPLES = ("lightgbm-binary", "xgboost-regression", "custom-pipeline", "sklearn-pipeline")


def example_workspace(root: Path, name: str) -> Path:
    """A copy of examples/<name> beside a copy of the template's environments (its dev.yaml extends them)."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    shutil.copytree(REPO / "environments", root / "environments")
    workspace = root / "examples" / name
    shutil.copytree(
        REPO / "examples" / name,
        workspace,
        ignore=shutil.ignore_patterns("artifacts", ".mlflow", "reports", "__pycache__"),
    )
    return workspace


def only_version(workspace: Path) -> Path:
    (model,) = (workspace / "artifacts").iterdir()
    (version,) = model.iterdir()
    return version


def written(workspace: Path) -> list[str]:
    """Everything a run left in the workspace besides what the test put there."""
    return sorted(
        str(p.relative_to(workspace))
        for p in workspace.rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and p.parts[len(workspace.parts)] in {"artifacts", ".mlflow", "reports"}
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", EXAMPLES)
def test_an_example_goes_through_the_whole_pipeline_and_is_promoted(tmp_path: Path, name: str) -> None:
    """train → export → gate → register → load test → canary rehearsal → promote, on the fork's own
    model and data, with nothing in pipeline/ changed."""
    workspace = example_workspace(tmp_path, name)
    assert main(["run", "--env", "dev", *FAST, "--workdir", str(workspace)]) == 0
    version = only_version(workspace)
    registration = json.loads((version / "registration.json").read_text())
    uri = f"sqlite:///{workspace / '.mlflow' / 'mlflow.db'}"
    served = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias(
        registration["model_name"], "dev"
    )
    assert str(served.version) == str(registration["model_version"])
    card: dict[str, Any] = json.loads((version / "model.json").read_text())
    evaluation: dict[str, Any] = json.loads((version / "eval.json").read_text())
    assert card["card_version"] == 2
    features = {f["name"]: f for f in card["features"]}
    assert evaluation["features"] == [f["name"] for f in card["features"]]
    inputs = card["onnx"]["inputs"]
    assert sorted(n for i in inputs for n in i["features"]) == sorted(features)  # each feature in one input
    assert set(card["reference"]) >= {"rows", "features", "score"}
    if name == "xgboost-regression":
        assert card["task"] == "regression"
        assert "classes" not in card and "classes" not in card["reference"]
        assert card["onnx"]["outputs"] == {"value": "variable"}
        assert inputs == [{"name": "input", "dtype": "float32", "features": list(features)}]
        assert set(card["metrics"]) == {"rmse", "mae", "r2"}
        assert set(card["parity"]) == {"rows", "max_abs_diff", "max_relative_diff"}
        return
    assert card["task"] == "binary"
    assert card["onnx"]["outputs"] == {"label": "label", "probabilities": "probabilities"}
    assert all(
        i["features"] == [i["name"]] and len(i["features"]) == 1 for i in inputs
    )  # one input per column
    strings = [f for f in card["features"] if f["type"] == "string"]
    assert strings and all(f["unknown_category"] == "ignore" and f["categories"] for f in strings)
    assert {i["name"]: i["dtype"] for i in inputs}[strings[0]["name"]] == "string"
    assert any(f["nullable"] for f in card["features"])
    assert any(
        value is None for row in evaluation["rows"] for value in row
    )  # missing values, as a client sends them
    categorical = [p for p in card["reference"]["features"] if p["kind"] == "categorical"]
    assert [len(p["frequencies"]) for p in categorical] == [len(p["categories"]) + 1 for p in categorical]
    if name == "custom-pipeline":
        assert card["classes"] == ["approved", "declined"]
        assert card["lineage"]["trainer"] == "loan_model.train:fit"
    if name == "sklearn-pipeline":
        # scikit-learn's own idiom, unchanged, within the default parity bound: numbers enter as float64.
        assert card["lineage"]["trainer"] == "applicant_model.train:fit"
        assert card["parity"]["max_abs_diff"] <= 1e-4
        numbers = {f["name"] for f in card["features"] if f["type"] != "string"}
        assert {i["name"]: i["dtype"] for i in inputs if i["name"] in numbers} == dict.fromkeys(
            numbers, "float64"
        )


@pytest.mark.slow
def test_a_gate_on_a_metric_an_inferred_task_lacks_fails_at_gate_time_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workspace = example_workspace(tmp_path, "xgboost-regression")
    for stage in ("train", "export"):
        assert main([stage, "--env", "dev", "--workdir", str(workspace)]) == 0
    capsys.readouterr()
    extra = ("--set", "gates.metrics.accuracy.min=0.5")
    assert main(["gate", "--env", "dev", "--workdir", str(workspace), *extra]) == 1
    error = capsys.readouterr().err
    assert (
        "environments/dev.yaml (or a file it extends): gates.metrics.accuracy: a regression model has no accuracy"
        in error
    )
    assert not list(only_version(workspace).glob("gate-*.json"))


BAD_TRAINERS = {
    "missing module": (
        "model.trainer=nowhere_c1.train:fit",
        "model.trainer 'nowhere_c1.train:fit': cannot import 'nowhere_c1.train'",
    ),
    "missing function": (
        "model.trainer=loan_model.train:train",
        "model.trainer 'loan_model.train:train': loan_model.train has no 'train'",
    ),
    "not callable": (
        "model.trainer=loan_model.train:__doc__",
        "model.trainer 'loan_model.train:__doc__': __doc__ is a str, not a function",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_TRAINERS))
def test_a_bad_trainer_path_exits_2_naming_the_key_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    workspace = example_workspace(tmp_path, "custom-pipeline")
    override, expected = BAD_TRAINERS[case]
    assert main(["train", "--env", "dev", "--workdir", str(workspace), "--set", override]) == 2
    assert expected in capsys.readouterr().err
    assert written(workspace) == []


def test_a_csv_without_the_target_or_with_an_ambiguous_task_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workspace = example_workspace(tmp_path, "lightgbm-binary")
    assert main(["train", "--env", "dev", "--workdir", str(workspace), "--set", "data.target=churn"]) == 2
    error = capsys.readouterr().err
    assert f"data.target: column 'churn' not in {workspace / 'data' / 'churn.csv'}" in error
    assert "(columns: tenure_months, monthly_charges, plan, has_support, churned)" in error
    assert (
        main(["train", "--env", "dev", "--workdir", str(workspace), "--set", "data.target=tenure_months"])
        == 2
    )
    assert "model.task: data.target 'tenure_months'" in capsys.readouterr().err
    assert written(workspace) == []


UNEXPORTABLE = '''
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.dummy import DummyClassifier


class Memorizer(ClassifierMixin, BaseEstimator):
    """A classifier skl2onnx has no converter for."""

    def fit(self, frame, target):
        self.inner_ = DummyClassifier(strategy="prior").fit(frame, target)
        self.classes_ = self.inner_.classes_
        return self

    def predict(self, frame):
        return self.inner_.predict(frame)

    def predict_proba(self, frame):
        return self.inner_.predict_proba(frame)


def fit(frame, target, params, seed):
    return Memorizer().fit(frame, target)
'''


def test_a_trainer_returning_a_model_skl2onnx_cannot_convert_fails_train_naming_both_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workspace = example_workspace(tmp_path, "custom-pipeline")
    (workspace / "unexportable_c1.py").write_text(UNEXPORTABLE)
    override = ("--set", "model.trainer=unexportable_c1:fit")
    assert main(["train", "--env", "dev", "--workdir", str(workspace), *override]) == 1
    error = capsys.readouterr().err
    assert (
        "model.trainer 'unexportable_c1:fit': skl2onnx cannot convert the fitted unexportable_c1.Memorizer"
        in error
    )
    assert "nothing was written" in error
    assert written(workspace) == []  # no fit, no MLflow run, no registry


@pytest.mark.slow
def test_a_multiclass_model_is_gated_on_its_own_metrics(tmp_path: Path) -> None:
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    shutil.copytree(REPO / "environments", tmp_path / "environments")
    (tmp_path / "environments" / "wine.yaml").write_text(
        "extends: base\nmodel: {name: wine-classifier, estimator: random_forest, params: !replace {n_estimators: 30}}\n"
        "data: {dataset: wine}\ngates:\n  metrics: !replace\n"
        "    accuracy: {min: 0.8}\n    f1_macro: {min: 0.8}\n    log_loss: {max: 0.6}\n"
    )
    for stage in ("train", "export", "gate"):
        assert main([stage, "--env", "wine", "--workdir", str(tmp_path)]) == 0, stage
    version = only_version(tmp_path)
    card = json.loads((version / "model.json").read_text())
    assert (card["task"], card["classes"]) == ("multiclass", [0, 1, 2])
    assert set(card["metrics"]) == {"accuracy", "f1_macro", "log_loss"}
    gate = json.loads((version / "gate-wine.json").read_text())
    assert [c["scope"] for c in gate["checks"]] == ["accuracy", "f1_macro", "log_loss"]
    assert gate["status"] == "pass"


@pytest.mark.slow
def test_the_custom_pipeline_is_served_and_called_with_strings_as_v1_objects_and_v2_bytes(
    tmp_path: Path,
) -> None:
    """The trainer's Pipeline (ColumnTransformer + LogisticRegression) in the real service: string fields
    through v1 rows keyed by feature name and through v2 BYTES tensors, one per ONNX input; the two
    protocols agree, and a string where the card says float is a 422 naming the field."""
    workspace = example_workspace(tmp_path, "custom-pipeline")
    for stage in ("train", "export"):
        assert main([stage, "--env", "dev", "--workdir", str(workspace)]) == 0, stage
    version = only_version(workspace)
    card: dict[str, Any] = json.loads((version / "model.json").read_text())
    evaluation: dict[str, Any] = json.loads((version / "eval.json").read_text())
    features = evaluation["features"]
    rows = evaluation["rows"][:5]
    config = load_config("dev", workspace / "environments")
    with running_service(config, version, tmp_path / "service.log") as service:
        objects = [dict(zip(features, row, strict=True)) for row in rows]
        v1 = httpx.post(f"{service.url}/v1/predict", json={"instances": objects}, timeout=30)
        assert v1.status_code == 200, v1.text
        position = {name: j for j, name in enumerate(features)}
        datatypes = {"float32": "FP32", "float64": "FP64", "int64": "INT64", "string": "BYTES"}
        tensors = [
            {
                "name": spec["name"],
                "shape": [len(rows), len(spec["features"])],
                "datatype": datatypes[spec["dtype"]],
                "data": [row[position[name]] for row in rows for name in spec["features"]],
            }
            for spec in card["onnx"]["inputs"]
        ]
        assert "BYTES" in {t["datatype"] for t in tensors}
        v2 = httpx.post(f"{service.url}/v2/models/{card['name']}/infer", json={"inputs": tensors}, timeout=30)
        assert v2.status_code == 200, v2.text
        labels = next(o for o in v2.json()["outputs"] if o["name"] == "label")
        assert labels["datatype"] == "BYTES"
        assert labels["data"] == v1.json()["predictions"]
        assert set(labels["data"]) <= {"approved", "declined"}

        float_feature = next(f["name"] for f in card["features"] if f["type"] == "float")
        wrong = httpx.post(
            f"{service.url}/v1/predict",
            json={"instances": [{**objects[0], float_feature: "high"}]},
            timeout=30,
        )
        assert wrong.status_code == 422
        assert float_feature in wrong.text


@pytest.mark.slow
def test_the_sklearn_pipeline_is_served_with_the_probabilities_of_the_fitted_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """scikit-learn's own mixed-types idiom (imputers, scaler, one-hot, random forest) in the real service:
    v1 objects and v2 tensors (FP64 numbers, BYTES strings, nulls included) answer with the probabilities
    the fitted Pipeline gives on the same rows, to the default parity bound. train says what its string
    imputer (looking for NaN) does with the template's missing strings."""
    workspace = example_workspace(tmp_path, "sklearn-pipeline")
    for stage in ("train", "export"):
        assert main([stage, "--env", "dev", "--workdir", str(workspace)]) == 0, stage
    assert (
        "model.trainer 'applicant_model.train:fit': the SimpleImputer on the string columns city, channel "
        'looks for NaN; the template hands a missing string over as ""'
    ) in capsys.readouterr().out
    version = only_version(workspace)
    card: dict[str, Any] = json.loads((version / "model.json").read_text())
    evaluation: dict[str, Any] = json.loads((version / "eval.json").read_text())
    features, rows = evaluation["features"], evaluation["rows"]
    config = load_config("dev", workspace / "environments")
    sys.path.insert(0, str(workspace))  # the pickle names the trainer's module
    try:
        fitted = pickle.loads((version / "estimator.pkl").read_bytes())
    finally:
        sys.path.remove(str(workspace))
    expected = fitted.predict_proba(load_dataset(config.data, workspace, "binary").test)
    assert any(value is None for row in rows for value in row)
    with running_service(config, version, tmp_path / "service.log") as service:
        objects = [dict(zip(features, row, strict=True)) for row in rows]
        v1 = httpx.post(f"{service.url}/v1/predict", json={"instances": objects}, timeout=30)
        assert v1.status_code == 200, v1.text
        assert np.max(np.abs(np.asarray(v1.json()["probabilities"]) - expected)) <= 1e-4
        position = {name: j for j, name in enumerate(features)}
        datatypes = {"float64": "FP64", "string": "BYTES"}
        tensors = [
            {
                "name": spec["name"],
                "shape": [len(rows), len(spec["features"])],
                "datatype": datatypes[spec["dtype"]],
                "data": [row[position[name]] for row in rows for name in spec["features"]],
            }
            for spec in card["onnx"]["inputs"]
        ]
        v2 = httpx.post(f"{service.url}/v2/models/{card['name']}/infer", json={"inputs": tensors}, timeout=30)
        assert v2.status_code == 200, v2.text
        probabilities = next(o for o in v2.json()["outputs"] if o["name"] == "probabilities")
        served = np.asarray(probabilities["data"], dtype=np.float64).reshape(probabilities["shape"])
        assert np.max(np.abs(served - expected)) <= 1e-4
