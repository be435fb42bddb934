"""Loading a fork's data: column types inferred once, missing values, the task, and clear errors."""

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pytest

from model_service.contract.card import Feature
from pipeline.config import ConfigError, DataSpec, Task
from pipeline.ml.data import load_dataset

MIXED_CSV = """age,visits,member,city,score,label
31,2,True,Lyon,0.5,yes
,3,False,Paris,1.5,no
45,4,True,,2.5,yes
52,5,False,Lyon,3.5,no
28,6,True,Paris,4.5,yes
39,7,False,Lille,5.5,no
41,8,True,Lyon,6.5,yes
36,9,False,Paris,7.5,no
"""


def spec(path: str, target: str, source: Literal["csv", "parquet"] = "csv") -> DataSpec:
    return DataSpec(source=source, path=Path(path), target=target, test_size=0.25)


def test_a_mixed_csv_gets_one_type_per_column_and_missing_strings_become_empty(tmp_path: Path) -> None:
    (tmp_path / "mixed.csv").write_text(MIXED_CSV)
    data = load_dataset(spec("mixed.csv", "label"), tmp_path)
    assert data.task == "binary"  # two string labels
    by_name = {c.name: c for c in data.columns}
    assert by_name["age"] == Feature("age", "float", nullable=True)  # an int column with a gap reads as float
    assert by_name["visits"] == Feature("visits", "int", nullable=False)
    assert by_name["member"] == Feature("member", "bool", nullable=False)
    assert by_name["score"] == Feature("score", "float", nullable=False)
    city = by_name["city"]
    assert (city.type, city.nullable) == ("string", True)
    assert city.categories is not None
    assert set(city.categories) <= {"Lille", "Lyon", "Paris"}
    assert list(city.categories) == sorted(city.categories)
    assert "" not in city.categories  # missing is not a category
    frame = pd.concat([data.train, data.test])
    assert all(isinstance(value, str) for value in frame["city"])
    assert (frame["city"] == "").sum() == 1
    assert frame["age"].isna().sum() == 1
    assert not data.numeric
    with pytest.raises(ValueError, match="string features"):
        _ = data.x_train


def test_parquet_reads_like_csv_and_categoricals_are_strings(tmp_path: Path) -> None:
    (tmp_path / "mixed.csv").write_text(MIXED_CSV)
    frame = pd.read_csv(tmp_path / "mixed.csv")
    frame["city"] = frame["city"].astype("category")
    frame["visits"] = frame["visits"].astype("Int64")
    frame.to_parquet(tmp_path / "mixed.parquet", engine="pyarrow")
    from_csv = load_dataset(spec("mixed.csv", "label"), tmp_path)
    from_parquet = load_dataset(spec("mixed.parquet", "label", "parquet"), tmp_path)
    assert from_parquet.columns == from_csv.columns
    assert from_parquet.train.equals(from_csv.train)
    assert from_parquet.sha256 != from_csv.sha256  # the file's bytes


def test_a_file_without_the_target_column_names_it_and_the_columns_found(tmp_path: Path) -> None:
    (tmp_path / "mixed.csv").write_text(MIXED_CSV)
    with pytest.raises(ConfigError) as caught:
        load_dataset(spec("mixed.csv", "outcome"), tmp_path)
    message = str(caught.value)
    assert message.startswith("data.target: column 'outcome' not in ")
    assert str(tmp_path / "mixed.csv") in message
    assert "age, visits, member, city, score, label" in message


def test_a_parquet_file_without_the_target_column_is_refused_alike(tmp_path: Path) -> None:
    pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]}).to_parquet(tmp_path / "d.parquet")
    with pytest.raises(
        ConfigError, match=r"data.target: column 'label' not in .*d.parquet \(columns: a, b\)"
    ):
        load_dataset(spec("d.parquet", "label", "parquet"), tmp_path)


def test_whole_numbers_with_more_than_two_values_ask_for_the_task(tmp_path: Path) -> None:
    rows = "\n".join(f"{i * 0.5},{i % 4}" for i in range(40))
    (tmp_path / "d.csv").write_text(f"x,grade\n{rows}\n")
    with pytest.raises(ConfigError) as caught:
        load_dataset(spec("d.csv", "grade"), tmp_path)
    assert "model.task" in str(caught.value)
    assert "4 distinct whole numbers" in str(caught.value)
    assert "set model.task to multiclass or regression" in str(caught.value)
    for task, expected in (("multiclass", "multiclass"), ("regression", "regression")):
        assert load_dataset(spec("d.csv", "grade"), tmp_path, task).task == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("target", "task"),
    [("0.5\n1.25\n2.75\n3.5", "regression"), ("a\nb\nc\na", "multiclass"), ("1\n0\n1\n0", "binary")],
)
def test_the_task_is_inferred_where_unambiguous(tmp_path: Path, target: str, task: Task) -> None:
    values = target.split("\n") * 5
    (tmp_path / "d.csv").write_text("x,y\n" + "\n".join(f"{i},{v}" for i, v in enumerate(values)) + "\n")
    assert load_dataset(spec("d.csv", "y"), tmp_path).task == task


def test_a_declared_task_the_target_contradicts_is_refused(tmp_path: Path) -> None:
    (tmp_path / "mixed.csv").write_text(MIXED_CSV)
    with pytest.raises(ConfigError, match=r"model\.task: regression needs a numeric target"):
        load_dataset(spec("mixed.csv", "label"), tmp_path, "regression")
    with pytest.raises(ConfigError, match=r"model\.task: multiclass needs three classes or more"):
        load_dataset(spec("mixed.csv", "label"), tmp_path, "multiclass")


def test_the_bundled_diabetes_set_is_a_regression_and_breast_cancer_keeps_its_split(tmp_path: Path) -> None:
    diabetes = load_dataset(DataSpec(dataset="diabetes"), tmp_path)
    assert diabetes.task == "regression"
    assert len(diabetes.columns) == 10
    assert all(c == Feature(c.name, "float", nullable=False) for c in diabetes.columns)
    cancer = load_dataset(DataSpec(), tmp_path)
    assert cancer.task == "binary"
    assert cancer.x_train.shape == (426, 30)
    assert cancer.x_train.dtype == np.float64
