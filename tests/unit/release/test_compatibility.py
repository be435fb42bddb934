"""The compatibility of a candidate's card with the serving one's: each change a fork makes to its
features gets its level and a message that says what to do."""

from collections.abc import Sequence

import pytest

from model_service.contract.card import CardError, Feature, ModelCard, parse_card
from pipeline.release.compatibility import compare, next_semver, same_requests

A, B, C = Feature("a", "float"), Feature("b", "float"), Feature("c", "int")


def card(
    features: Sequence[Feature], *, task: str = "binary", classes: Sequence[object] = (0, 1)
) -> ModelCard:
    """A card whose numeric features feed one float input and each string feature its own."""
    numeric = [f.name for f in features if f.type != "string"]
    inputs = [{"name": "input", "dtype": "float32", "features": numeric}] if numeric else []
    inputs += [
        {"name": f.name, "dtype": "string", "features": [f.name]} for f in features if f.type == "string"
    ]
    raw = {
        "card_version": 2,
        "name": "m",
        "version": "x",
        "task": task,
        "onnx": {
            "file": "model.onnx",
            "sha256": "0" * 64,
            "opset": 17,
            "inputs": inputs,
            "outputs": {"label": "label", "probabilities": "probabilities", "value": "variable"},
        },
        "features": [f.to_json() for f in features],
    }
    if task != "regression":
        raw["classes"] = list(classes)
    return parse_card(raw)


def test_the_same_contract_is_same() -> None:
    found = compare(card([A, B, C]), card([A, B, C]), against="3")
    assert found.level == "same"
    assert found.changes == ()


def test_a_feature_appended_with_a_default_is_additive() -> None:
    found = compare(card([A, B]), card([A, B, Feature("d", "float", default=0.0)]), against="3")
    assert found.level == "additive"
    assert "feature 'd' added with default 0.0" in found.summary()


def test_a_feature_added_without_a_default_is_breaking_and_says_how_to_declare_one() -> None:
    found = compare(card([A, B]), card([A, B, Feature("e", "float")]), against="3")
    assert found.level == "breaking"
    (change,) = found.changes
    assert "requests of clients of v3 lack it" in change.what
    assert "model.feature_defaults (e: VALUE)" in change.fix


def test_a_default_feature_before_old_ones_breaks_list_rows() -> None:
    found = compare(card([A, B]), card([Feature("d", "float", default=1.0), A, B]), against="3")
    assert found.level == "breaking"
    assert "make it the last column" in found.changes[0].fix


def test_a_rename_in_place_is_one_breaking_change_naming_both_names() -> None:
    found = compare(card([A, B, C]), card([A, Feature("b2", "float"), C]), against="3")
    assert found.level == "breaking"
    (change,) = found.changes
    assert "'b' renamed to 'b2'" in change.what
    assert "keep the name 'b'" in change.fix


def test_a_removed_feature_is_breaking() -> None:
    found = compare(card([A, B, C]), card([A, C]), against="3")
    assert found.level == "breaking"
    assert "feature 'b' removed" in found.changes[0].what


def test_reordered_columns_are_breaking_for_list_rows() -> None:
    found = compare(card([A, B, C]), card([C, A, B]), against="3")
    assert found.level == "breaking"
    (change,) = found.changes
    assert "columns reordered" in change.what
    assert "keep the column order of v3" in change.fix


@pytest.mark.parametrize(
    ("old", "new", "level"),
    [
        (Feature("x", "int"), Feature("x", "float"), "additive"),  # an integer is a number
        (Feature("x", "float"), Feature("x", "int"), "breaking"),  # 1.5 is refused
        (Feature("x", "bool"), Feature("x", "int"), "breaking"),  # true is no integer
        (Feature("x", "float"), Feature("x", "float", nullable=True), "additive"),
        (Feature("x", "float", nullable=True), Feature("x", "float"), "breaking"),
        (Feature("x", "float", default=1.0), Feature("x", "float"), "breaking"),
        (Feature("x", "float"), Feature("x", "float", default=1.0), "additive"),
    ],
)
def test_widened_values_are_additive_and_narrowed_ones_breaking(
    old: Feature, new: Feature, level: str
) -> None:
    assert compare(card([A, old]), card([A, new]), against="1").level == level


def test_categories_narrowed_under_error_are_breaking_grown_ones_additive() -> None:
    old = Feature("city", "string", categories=("Lyon", "Paris"), unknown_category="error")
    grown = Feature("city", "string", categories=("Lyon", "Nice", "Paris"), unknown_category="error")
    narrowed = Feature("city", "string", categories=("Lyon",), unknown_category="error")
    assert compare(card([A, old]), card([A, grown]), against="1").level == "additive"
    assert compare(card([A, old]), card([A, narrowed]), against="1").level == "breaking"
    ignoring = Feature("city", "string", categories=("Lyon", "Paris"))
    assert compare(card([A, ignoring]), card([A, old]), against="1").level == "breaking"


def test_another_task_or_other_classes_break_the_answers() -> None:
    assert compare(card([A]), card([A], task="regression"), against="1").level == "breaking"
    found = compare(card([A]), card([A], classes=(1, 0)), against="1")
    assert found.level == "breaking"
    assert "change meaning" in found.changes[0].what


def test_a_fallback_must_take_the_same_requests() -> None:
    assert same_requests(card([A, B]), card([A, B])) is None
    assert same_requests(card([A, B]), card([A, Feature("b2", "float")])) is not None
    assert same_requests(card([A, B]), card([A, B], classes=(1, 2))) is not None


def test_a_default_must_be_a_value_of_its_feature() -> None:
    with pytest.raises(CardError, match=r"default: \"x\" is not a value of this float feature"):
        card([A, Feature("d", "float", default="x")])
    city = Feature("city", "string", categories=("Lyon",), unknown_category="error", default="Nice")
    with pytest.raises(CardError, match="default"):
        card([A, city])


@pytest.mark.parametrize(
    ("previous", "level", "expected"),
    [
        (None, "same", "1.0.0"),
        ("1.4.2", "same", "1.4.3"),
        ("1.4.2", "additive", "1.5.0"),
        ("1.4.2", "breaking", "2.0.0"),
    ],
)
def test_the_semver_follows_the_level(previous: str | None, level: str, expected: str) -> None:
    assert next_semver(previous, level) == expected  # type: ignore[arg-type]
