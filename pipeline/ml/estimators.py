"""What gets fitted: a built-in family (with a default preprocessing for strings and missing values), or
the fork's own trainer imported from the workspace (pipeline/trainer.py is its contract)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from pipeline.config import ConfigError, ModelSpec
from pipeline.errors import StageError
from pipeline.ml.data import Dataset
from pipeline.trainer import Trainer

FAMILIES: dict[str, tuple[str | None, str | None]] = {
    "logistic_regression": ("sklearn.linear_model:LogisticRegression", None),
    "random_forest": ("sklearn.ensemble:RandomForestClassifier", "sklearn.ensemble:RandomForestRegressor"),
    "gradient_boosting": (
        "sklearn.ensemble:GradientBoostingClassifier",
        "sklearn.ensemble:GradientBoostingRegressor",
    ),
    "xgboost": ("xgboost:XGBClassifier", "xgboost:XGBRegressor"),
    "lightgbm": ("lightgbm:LGBMClassifier", "lightgbm:LGBMRegressor"),
}
"""Family -> (classifier, regressor), as `module:class`; imported only when chosen (slow imports)."""

BOOSTING_DEFAULTS: dict[str, dict[str, Any]] = {
    # One thread: the same result on every machine, and the pipeline shares its cores with the service.
    "xgboost": {"n_jobs": 1},
    "lightgbm": {"n_jobs": 1, "verbose": -1},
}


@dataclass(frozen=True)
class Fitted:
    estimator: Any
    takes_frame: bool
    """True: the estimator was fitted on (and predicts from) the data frame; False: on its float matrix."""


def _import(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def build_estimator(spec: ModelSpec, data: Dataset, seed: int) -> Fitted:
    """The built-in family for the task, unfitted; preprocessing in front for strings or missing values."""
    classifier, regressor = FAMILIES[spec.estimator]
    target = regressor if data.task == "regression" else classifier
    if target is None:
        msg = (
            f"model.estimator: {spec.estimator} is a classifier and model.task is regression; choose "
            f"one of {', '.join(f for f, (_, r) in FAMILIES.items() if r)} or a model.trainer"
        )
        raise ConfigError(msg)
    classes = sorted(set(data.y_train.tolist())) if data.task != "regression" else []
    if spec.estimator == "xgboost" and classes and classes != list(range(len(classes))):
        msg = (
            f"model.estimator: xgboost's classifier takes the classes 0..{len(classes) - 1} only and the "
            f"target holds {classes[:5]}: choose lightgbm or another family, or a model.trainer"
        )
        raise ConfigError(msg)
    family = _import(target)
    params = {**BOOSTING_DEFAULTS.get(spec.estimator, {}), **spec.params}
    try:
        if not hasattr(family, "_parameter_constraints"):
            # xgboost and lightgbm pass unknown keyword arguments on to their native library, which
            # ignores them with a log line: only the keyword arguments of their scikit-learn API are taken.
            unknown = sorted(set(spec.params) - set(family().get_params()))
            if unknown:
                raise TypeError(f"unknown parameters {unknown}")
        estimator = family(random_state=seed, **params)
        if hasattr(estimator, "_parameter_constraints"):
            estimator._validate_params()  # fail here, naming the key, rather than deep inside fit()
    except (TypeError, ValueError) as exc:
        msg = (
            f"model.params: {family.__name__} rejects them: {exc}. Params merge over the inherited ones; "
            "after changing model.estimator, write `params: !replace {...}` to start from none"
        )
        raise ConfigError(msg) from None
    scale = spec.estimator == "logistic_regression"
    if data.numeric:
        steps = [SimpleImputer(strategy="median")] if any(c.nullable for c in data.columns) else []
        steps += [StandardScaler()] if scale else []
        return Fitted(make_pipeline(*steps, estimator) if steps else estimator, takes_frame=False)
    numeric = [c.name for c in data.columns if c.numeric]
    strings = [c.name for c in data.columns if not c.numeric]
    numeric_steps: list[Any] = [SimpleImputer(strategy="median"), *([StandardScaler()] if scale else [])]
    # A missing string was read as "" (pipeline/ml/data.py): the encoder sees it as one more category.
    preprocess = ColumnTransformer(
        [
            ("numeric", make_pipeline(*numeric_steps), numeric),
            ("strings", OneHotEncoder(handle_unknown="ignore", sparse_output=False), strings),
        ]
    )
    return Fitted(Pipeline([("preprocess", preprocess), ("model", estimator)]), takes_frame=True)


def trainer_module_path(trainer: str, root: Path) -> Path:
    """The file of `package.module` under the workspace root; a ConfigError when there is none."""
    module = trainer.partition(":")[0]
    put_workspace_on_path(root)
    loaded = sys.modules.get(module)
    if loaded is not None and not Path(str(loaded.__file__)).resolve().is_relative_to(root.resolve()):
        del sys.modules[module]  # the same name imported from another workspace earlier in this process
    try:
        found = importlib.util.find_spec(module)
    except ImportError as exc:
        found = None
        reason = str(exc)
    else:
        reason = "no such module"
    origin = getattr(found, "origin", None)
    if origin is None or not Path(origin).is_file():
        msg = (
            f"model.trainer {trainer!r}: cannot import {module!r} from the workspace {root} ({reason}); "
            "the module path is relative to the workspace root, e.g. `my_model.train:fit` for my_model/train.py"
        )
        raise ConfigError(msg)
    return Path(origin)


def load_trainer(trainer: str, root: Path) -> Trainer:
    """Import `package.module:function` from the workspace root; errors name the key and what is wrong."""
    trainer_module_path(trainer, root)
    module_name, _, attribute = trainer.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001  (the fork's module failed while importing: say which and why)
        raise ConfigError(f"model.trainer {trainer!r}: importing {module_name} failed: {exc!r}") from None
    function = getattr(module, attribute, None)
    if function is None:
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        msg = f"model.trainer {trainer!r}: {module_name} has no {attribute!r} (callables there: {public})"
        raise ConfigError(msg)
    if not callable(function):
        msg = f"model.trainer {trainer!r}: {attribute} is a {type(function).__name__}, not a function"
        raise ConfigError(msg)
    return cast("Trainer", function)


def put_workspace_on_path(root: Path) -> None:
    entry = str(root.resolve())
    if entry not in sys.path:
        sys.path.insert(0, entry)


def fit(spec: ModelSpec, data: Dataset, seed: int, root: Path) -> Fitted:
    """Fit the built-in family, or call the trainer; a trainer's result is checked before it is kept."""
    if spec.trainer is None:
        fitted = build_estimator(spec, data, seed)
        fitted.estimator.fit(fitted_input(fitted, data.train), data.y_train)
        return fitted
    trainer = load_trainer(spec.trainer, root)
    import pandas as pd  # noqa: PLC0415

    try:
        estimator = trainer(
            data.train.copy(), pd.Series(data.y_train, name="target"), dict(spec.params), seed
        )
    except Exception as exc:  # the fork's code failed: name it, keep the cause chained
        msg = f"model.trainer {spec.trainer!r} raised {type(exc).__name__}: {exc}"
        raise StageError(msg) from exc
    needs = ["predict"] + (["predict_proba", "classes_"] if data.task != "regression" else [])
    missing = [name for name in needs if not hasattr(estimator, name)]
    if missing:
        msg = (
            f"model.trainer {spec.trainer!r} returned a {type(estimator).__module__}.{type(estimator).__name__} "
            f"without {', '.join(missing)}: it must return a fitted scikit-learn estimator or Pipeline "
            f"(a {data.task} model)"
        )
        raise ConfigError(msg)
    return Fitted(estimator, takes_frame=True)


def fitted_input(fitted: Fitted, frame: Any) -> Any:
    """What the fitted estimator predicts from: the frame itself or its float matrix."""
    import numpy as np  # noqa: PLC0415

    return frame if fitted.takes_frame else frame.to_numpy(dtype=np.float64, na_value=np.nan)


def final_estimator(estimator: Any) -> Any:
    return estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator


def has_column_transformer(estimator: Any) -> bool:
    """The estimator selects columns by name: it needs one ONNX input per column."""
    if isinstance(estimator, ColumnTransformer):
        return True
    return isinstance(estimator, Pipeline) and any(has_column_transformer(s) for _, s in estimator.steps)


def column_steps(estimator: Any, kind: type | tuple[type, ...]) -> list[tuple[list[str], Any]]:
    """Each step of `kind` inside a ColumnTransformer of the fit (Pipelines unfolded), with the names of the
    columns its transformer selects."""
    found: list[tuple[list[str], Any]] = []

    def steps(step: Any) -> list[Any]:
        if isinstance(step, kind):
            return [step]
        if isinstance(step, Pipeline):
            return [inner for _, s in step.steps for inner in steps(s)]
        return []

    def walk(step: Any) -> None:
        if isinstance(step, Pipeline):
            for _, inner in step.steps:
                walk(inner)
        elif isinstance(step, ColumnTransformer):
            for _, transformer, selected in step.transformers_:
                names = [selected] if isinstance(selected, str) else [str(n) for n in selected]
                found.extend((names, inner) for inner in steps(transformer))

    walk(estimator)
    return found
