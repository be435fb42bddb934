"""A feature's default (the card's `default`, from model.feature_defaults): a request that leaves the
feature out gets it, as an object without the key or as a list row that ends before it, so the clients of
the release before it keep working; a feature without one is still required."""

import numpy as np
import pytest

from model_service.contract.card import Feature, parse_card
from model_service.protocol.errors import InvalidInput
from model_service.protocol.schemas import RowParser, TypedRowParser

DEFAULTS = {"d": 0.5}


def parser() -> RowParser:
    return RowParser(("a", "b", "d"), np.dtype(np.float32), 10, DEFAULTS)


def test_an_object_without_the_feature_gets_its_default() -> None:
    rows = parser().v1([{"a": 1.0, "b": 2.0}, {"a": 1.0, "b": 2.0, "d": 3.0}])
    assert rows.tolist() == [[1.0, 2.0, 0.5], [1.0, 2.0, 3.0]]


def test_a_list_row_ending_before_the_defaulted_features_gets_them() -> None:
    assert parser().v1({"instances": [[1.0, 2.0], [1.0, 2.0, 3.0]]}).tolist() == [
        [1.0, 2.0, 0.5],
        [1.0, 2.0, 3.0],
    ]


def test_a_feature_without_a_default_is_still_required() -> None:
    with pytest.raises(InvalidInput, match=r"missing feature 'b' \(1 missing\)"):
        parser().v1([{"a": 1.0}])
    with pytest.raises(InvalidInput, match="expected 3 numbers, got 1"):
        parser().v1({"instances": [[1.0]]})
    with pytest.raises(InvalidInput, match="unknown feature 'x'"):
        parser().v1([{"a": 1.0, "b": 2.0, "x": 1.0}])


def test_typed_features_take_their_defaults_too() -> None:
    features = [Feature("n", "int"), Feature("city", "string", categories=("Lyon",), default="Lyon")]
    card = parse_card(
        {
            "card_version": 2,
            "name": "m",
            "version": "x",
            "task": "regression",
            "onnx": {
                "file": "model.onnx",
                "sha256": "0" * 64,
                "opset": 17,
                "inputs": [
                    {"name": "n", "dtype": "int64", "features": ["n"]},
                    {"name": "city", "dtype": "string", "features": ["city"]},
                ],
                "outputs": {"value": "variable"},
            },
            "features": [feature.to_json() for feature in features],
        }
    )
    batch = TypedRowParser(card, 10).v1([{"n": 3}, {"n": 4, "city": "Paris"}])
    assert batch.columns == [[3, 4], ["Lyon", "Paris"]]
    assert TypedRowParser(card, 10).v1({"instances": [[3]]}).columns == [[3], ["Lyon"]]
