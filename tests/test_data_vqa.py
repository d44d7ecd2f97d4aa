"""The local VQA set format: the demo's split round-trips, and a hand-written foreign set loads the same way."""

import json

import pytest
from PIL import Image

from vlmkit.data import load_vqa
from vlmkit.demo.dataset import make_split, records, write_split
from vlmkit.errors import VlmkitError


def test_demo_split_round_trips(tmp_path):
    jsonl = write_split(tmp_path / "set", "test", n=8)
    loaded = load_vqa(tmp_path / "set")  # a directory finds questions.jsonl
    rows = records(make_split("test", 8))
    assert len(loaded) == len(rows) == 24
    for rec, (row, _) in zip(loaded, rows):
        assert (rec.question_id, rec.question, rec.answer, rec.category, rec.lang) == (
            row["question_id"], row["question"], row["answer"], row["category"], row["lang"])
        assert rec.image == (jsonl.parent / row["image"]).resolve()
    first = make_split("test", 1)[0].image
    assert Image.open(loaded[0].image).convert("RGB").tobytes() == first.tobytes()  # PNG is lossless


def test_foreign_set_loads_the_same_way(tmp_path):
    (tmp_path / "pics").mkdir()
    Image.new("RGB", (32, 32), "red").save(tmp_path / "pics" / "cat.jpg")
    lines = [
        {"question_id": "cat", "image": "pics/cat.jpg", "question": "Is it red?", "answer": "Yes", "category": "color"},
        {"question_id": "cat", "image": "pics/cat.jpg", "question": "Is it blue?", "answer": "No", "category": "color",
         "source": "hand-made"},
    ]
    (tmp_path / "mine.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    loaded = load_vqa(tmp_path)  # the only *.jsonl in the directory
    assert [r.answer for r in loaded] == ["Yes", "No"]
    assert loaded[0].image == (tmp_path / "pics" / "cat.jpg").resolve()
    assert loaded[1].extra == {"source": "hand-made"} and loaded[0].lang == ""
    assert load_vqa(tmp_path / "mine.jsonl") == loaded


@pytest.mark.parametrize("line,message", [
    ('{"question_id": "1", "image": "a.png", "question": "q"}', "missing field(s): answer, category"),
    ("not json", "not valid JSON"),
    ('["a list"]', "each line must be a JSON object"),
    ('{"question_id": "1", "image": "gone.png", "question": "q", "answer": "a", "category": "c"}', "image not found"),
])
def test_bad_lines_name_file_and_line(tmp_path, line, message):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    (tmp_path / "questions.jsonl").write_text(line + "\n")
    with pytest.raises(VlmkitError) as error:
        load_vqa(tmp_path)
    assert f"questions.jsonl:1: {message}" in str(error.value)


def test_write_refuses_non_empty_dir_and_leaves_nothing(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(VlmkitError, match="not empty"):
        write_split(tmp_path / "out", "test", n=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["keep.txt"]
