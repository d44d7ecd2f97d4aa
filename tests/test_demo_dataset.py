"""The demo dataset: deterministic, balanced MME pairs, train and test disjoint, answers true to the scene."""

from collections import Counter

from vlmkit.demo.dataset import make_item, make_split, records
from vlmkit.demo.questions import LANGS, OPEN_CATEGORIES, YES_NO_CATEGORIES, random_qa
from vlmkit.demo.dataset import scene_rng
from vlmkit.demo.scenes import IMAGE_SIZE, random_scene


def test_same_seed_same_items_and_pixels():
    a, b = make_split("test", 12), make_split("test", 12)
    assert [x.questions for x in a] == [y.questions for y in b]
    assert [x.image.tobytes() for x in a] == [y.image.tobytes() for y in b]
    assert make_item("test", 11).image.tobytes() == a[11].image.tobytes()  # independent of n
    assert a[0].image.size == (IMAGE_SIZE, IMAGE_SIZE)


def test_train_and_test_differ():
    test = {make_item("test", i).scene for i in range(200)}
    train = {make_item("train", i).scene for i in range(200)}
    assert not test & train
    assert make_item("train", 0, seed=1).scene != make_item("train", 0, seed=0).scene


def test_each_image_has_a_yes_and_a_no_sharing_question_id():
    rows = [row for row, _ in records(make_split("test", 200))]
    pairs = Counter()
    by_qid = {}
    for row in rows:
        if row["category"] in YES_NO_CATEGORIES:
            by_qid.setdefault(row["question_id"], []).append(row)
    assert len(by_qid) == 200
    for qid, (yes, no) in by_qid.items():
        assert (yes["answer"], no["answer"]) in {("Yes", "No"), ("はい", "いいえ")}
        assert yes["image"] == no["image"] and yes["category"] == no["category"] and yes["lang"] == no["lang"]
        pairs[(yes["category"], yes["lang"])] += 1
    assert pairs == {(c, lang): 25 for c in YES_NO_CATEGORIES for lang in LANGS}  # 50 images per category
    assert {row["category"] for row in rows} >= set(OPEN_CATEGORIES)


def test_answers_match_the_scene():
    for i in range(50):
        item = make_item("test", i)
        objects = item.scene.objects
        for qa in item.questions:
            if qa.category == "open_count":
                assert qa.answer == str(len(objects))
            if qa.category == "open_color" and qa.lang == "en":
                shape = qa.question.split()[-1].rstrip("?")
                (obj,) = item.scene.with_shape(shape)  # colour questions name a shape present exactly once
                assert qa.answer == obj.color
            if qa.category == "existence" and qa.lang == "en":
                color, shape = qa.question.split()[3:5]
                assert (item.scene.find(color, shape) is not None) == (qa.answer == "Yes")


def test_random_training_questions_are_balanced():
    rng = scene_rng("train", 0)
    scene = random_scene(rng)
    answers = Counter(random_qa(scene, rng).answer for _ in range(4000))
    yes, no = answers["Yes"] + answers["はい"], answers["No"] + answers["いいえ"]
    assert abs(yes - no) < 0.1 * (yes + no)
