"""MME scoring on hand-made predictions: acc, acc+ and score are known numbers."""

import pytest

from vlmkit.metrics.mme import Prediction, parse_yes_no, score


@pytest.mark.parametrize("text,label", [
    ("Yes", "yes"), ("yes.", "yes"), (" Yes, there is one", "yes"), ("No", "no"), ("no.", "no"),
    ("はい", "yes"), ("いいえ。", "no"), ("maybe", "other"), ("", "other"), ("red", "other"),
])
def test_parse_yes_no(text, label):
    assert parse_yes_no(text) == label


def _existence():
    # image a: both right; image b: Yes right, No wrong; image c: both wrong (one unparseable).
    return [
        Prediction("a", "existence", "Yes", "Yes"), Prediction("a", "existence", "No", "no."),
        Prediction("b", "existence", "Yes", "yes"), Prediction("b", "existence", "No", "Yes"),
        Prediction("c", "existence", "はい", "いいえ"), Prediction("c", "existence", "いいえ", "maybe"),
    ]


def test_yes_no_category_numbers():
    result = score(_existence())
    (cat,) = result["categories"]
    assert cat["kind"] == "yes/no" and cat["questions"] == 6 and cat["images"] == 3
    assert cat["acc"] == pytest.approx(50.0)  # 3 of 6 questions
    assert cat["acc_plus"] == pytest.approx(100 / 3)  # 1 of 3 images
    assert cat["score"] == pytest.approx(50.0 + 100 / 3)
    assert result["total"] == pytest.approx(50.0 + 100 / 3) and result["total_max"] == 200


def test_totals_and_open_categories():
    color = [Prediction("x", "color", "Yes", "Yes"), Prediction("x", "color", "No", "No"),
             Prediction("y", "color", "Yes", "Yes"), Prediction("y", "color", "No", "No")]
    open_ = [Prediction("p", "open_color", "red", "red"), Prediction("q", "open_color", "赤", "赤。"),
             Prediction("r", "open_color", "blue", "Blue"), Prediction("s", "open_color", "3", "4")]
    result = score(_existence() + color + open_)
    by_name = {c["category"]: c for c in result["categories"]}
    assert by_name["color"]["score"] == pytest.approx(200.0)
    assert by_name["open_color"]["kind"] == "open"
    assert by_name["open_color"]["acc"] == pytest.approx(75.0) and by_name["open_color"]["score"] is None
    assert result["total"] == pytest.approx(200.0 + 50.0 + 100 / 3)  # open categories not in the MME total
    assert result["total_max"] == 400
