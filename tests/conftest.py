"""Markers come from the folder (tests/unit -> unit, tests/integration -> integration), a test needing a Debian
tool skips without it (fails instead under .ci/run), SIGINT as a terminal delivers it, and the small exported
model that the service and drift tests serve, written exactly as docs/model-card.md describes."""

import hashlib
import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

TESTS = Path(__file__).parent
NAME = "breast-cancer-classifier"
VERSION = "0123456789ab"


def pytest_configure() -> None:
    # A suite started in the background by a non-interactive shell (`nox -s tests-full &` in a script)
    # inherits SIGINT ignored, and every process it starts would too: the tests that press Ctrl-C on the
    # pipeline and the service would hang. A handler here is reset to the default in each child at exec.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


REQUIRE_TOOLS_ENV = "TESTS_REQUIRE_TOOLS"
"""Set to 1 by .ci/run, which installs every Debian tool a test names: a missing one is then a failure."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        kind = Path(item.path).relative_to(TESTS).parts[0]
        if kind in {"unit", "integration"}:
            item.add_marker(getattr(pytest.mark, kind))
        # A new user's `nox -s tests` skips a test whose tool is not installed, naming the package; CI
        # installs them all, so there a skip would hide a test that never ran.
        for marker in item.iter_markers("needs_tool"):
            command, package = marker.args
            if shutil.which(command) is None and os.environ.get(REQUIRE_TOOLS_ENV) != "1":
                item.add_marker(pytest.mark.skip(reason=f"needs `{command}`: apt-get install {package}"))


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("needs_tool"):
        command, package = marker.args
        if shutil.which(command) is None:
            pytest.fail(
                f"needs `{command}`, and {REQUIRE_TOOLS_ENV}=1: .ci/run installs {package}", pytrace=False
            )


@pytest.fixture(scope="session")
def plain_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model.onnx, model.json (no `reference`: as written before drift monitoring) and eval.json."""
    return export_model(tmp_path_factory.mktemp("model"))


def export_model(out: Path) -> Path:
    """Write model.onnx, model.json and eval.json into `out`; return `out`."""
    data = load_breast_cancer()
    x = data.data.astype(np.float32)
    features = [str(name) for name in data.feature_names]
    classifier = LogisticRegression(max_iter=500)
    pipeline = make_pipeline(StandardScaler(), classifier).fit(x, data.target)
    onnx_model = to_onnx(
        pipeline,
        initial_types=[("input", FloatTensorType([None, len(features)]))],
        options={id(classifier): {"zipmap": False}},
        target_opset=17,
    )
    onnx_bytes = onnx_model.SerializeToString()
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.onnx").write_bytes(onnx_bytes)
    card = {
        "card_version": 1,
        "name": NAME,
        "version": VERSION,
        "created_at": "2026-01-01T00:00:00+00:00",
        "task": "classification",
        "onnx": {
            "file": "model.onnx",
            "sha256": hashlib.sha256(onnx_bytes).hexdigest(),
            "opset": 17,
            "input": {"name": "input", "dtype": "float32"},
            "outputs": {"label": "label", "probabilities": "probabilities"},
        },
        "features": [{"name": name, "dtype": "float32"} for name in features],
        "classes": [0, 1],
        "metrics": {"roc_auc": 0.99, "accuracy": 0.97, "f1": 0.97, "log_loss": 0.1},
        "parity": {"rows": 10, "label_agreement": 1.0, "max_abs_diff": 1e-7},
        "lineage": {
            "git_sha": "unknown",
            "data_sha256": "0" * 64,
            "config_sha256": "0" * 64,
            "mlflow_run_id": "0" * 32,
            "environment": "dev",
        },
    }
    (out / "model.json").write_text(json.dumps(card, indent=2))
    rows = x[:20]
    (out / "eval.json").write_text(
        json.dumps({"features": features, "rows": rows.tolist(), "labels": data.target[:20].tolist()})
    )
    return out
