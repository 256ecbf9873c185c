"""Tests of realdata.py on small fake copies of the official layouts, written in tmp_path
(metrics.py's VQA and NLVR2 metrics: test_metrics.py; the WordPiece tokenizer: test_wordpiece.py).

The expected values are worked out by hand from the official layouts and code, so a change
of behaviour shows up here.

    python -m pytest tests/test_realdata.py -q
"""
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import realdata  # noqa: E402
from metrics import build_answer_vocab  # noqa: E402
from realdata import (SPLITS, VQA_ANSWER_TYPES, DataError, add_soft_targets, load_image,  # noqa: E402
                      read_nlvr2, read_snli_ve, read_split, read_vqa, vilt_size, write_vqa_results)
from programs import ENTAILMENT_LABELS  # noqa: E402


def save_image(path: Path, mode: str = "RGB", fmt: str = "JPEG", size=(8, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = {"RGB": (200, 30, 30), "L": 128, "CMYK": (0, 255, 255, 0), "RGBA": (0, 0, 255, 128), "P": 3}[mode]
    Image.new(mode, size, colour).save(path, format=fmt)
    return path


PNG_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(range(128, 256))  # a binary file (a PNG's signature): not UTF-8


def write_jsonl(path: Path, rows) -> Path:
    """rows: dicts, or strings written verbatim (to plant a bad line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------ VQA v2 reader
def make_vqa(root: Path) -> Path:
    qs = [{"image_id": 9, "question": "What is it?", "question_id": 9000},
          {"image_id": 9, "question": "How many?", "question_id": 9001},
          {"image_id": 42, "question": "Is it red?", "question_id": 42000}]
    answers = {9000: ["cat"] * 7 + ["dog"] * 2 + ["Bird"], 9001: ["two"] * 3 + ["3"] * 7, 42000: ["zebra"] * 10}
    mc = {9000: "cat", 9001: "3", 42000: "zebra"}
    types = {9000: ("other", "what is"), 9001: ("number", "how many"), 42000: ("yes/no", "is it")}
    anns = [{"question_id": q, "image_id": q // 1000, "multiple_choice_answer": mc[q],
             "answer_type": types[q][0], "question_type": types[q][1],
             "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(ans)]}
            for q, ans in answers.items()]
    for split in ("train", "val"):
        (root / f"v2_OpenEnded_mscoco_{split}2014_questions.json").write_text(json.dumps({"questions": qs}))
        (root / f"v2_mscoco_{split}2014_annotations.json").write_text(json.dumps({"annotations": anns}))
        for image_id in (9, 42):
            save_image(root / f"{split}2014" / f"COCO_{split}2014_{image_id:012d}.jpg")
    (root / "v2_OpenEnded_mscoco_test2015_questions.json").write_text(json.dumps({"questions": qs[:1]}))
    save_image(root / "test2015" / "COCO_test2015_000000000009.jpg")
    return root


def test_read_vqa_with_soft_targets(tmp_path):
    root = make_vqa(tmp_path)
    vocab = ["cat", "dog", "3", "2"]
    with pytest.warns(UserWarning, match="dropped 1 of 3"):
        train = read_vqa(root, "train", answer_vocab=vocab)  # 42000 ("zebra") has no label
    assert [e["question_id"] for e in train] == [9000, 9001]
    first = train[0]
    assert first["image"] == str(root / "train2014" / "COCO_train2014_000000000009.jpg")
    assert first["question"] == "What is it?" and len(first["answers"]) == 10
    assert dict(zip(first["labels"], first["scores"])) == {0: 1.0, 1: pytest.approx(0.6)}  # "bird" not in vocab
    assert dict(zip(train[1]["labels"], train[1]["scores"])) == {3: pytest.approx(0.9), 2: 1.0}  # "two" -> "2"
    val = read_vqa(root, "val", answer_vocab=vocab)  # evaluation keeps every question
    assert len(val) == 3 and val[2]["labels"] == [] and val[2]["multiple_choice_answer"] == "zebra"
    mc = [e["multiple_choice_answer"] for e in read_vqa(root, "train")]
    assert build_answer_vocab(mc, min_count=1) == ["cat", "3", "zebra"]


def test_vqa_keeps_answer_and_question_types(tmp_path):
    root = make_vqa(tmp_path)
    assert VQA_ANSWER_TYPES == ("yes/no", "number", "other")
    val = read_vqa(root, "val")
    assert [(e["answer_type"], e["question_type"]) for e in val] == [
        ("other", "what is"), ("number", "how many"), ("yes/no", "is it")]
    assert "answer_type" not in read_vqa(root, "test")[0]  # the test splits have no annotations
    path = root / "v2_mscoco_val2014_annotations.json"
    anns = json.loads(path.read_text())["annotations"]
    for field, value, message in [("question_type", None, "missing field 'question_type'"),
                                  ("answer_type", None, "missing field 'answer_type'"),
                                  ("answer_type", "colour", "answer_type must be one of")]:
        bad = {k: v for k, v in anns[1].items() if k != field}
        if value is not None:
            bad[field] = value
        path.write_text(json.dumps({"annotations": [anns[0], bad, anns[2]]}))
        with pytest.raises(DataError, match=rf"val2014_annotations.json: annotations\[1\]: {message}"):
            read_vqa(root, "val")


def test_vqa_test_split_and_results(tmp_path):
    root = make_vqa(tmp_path)
    test = read_vqa(root, "test")
    assert len(test) == 1 and "answers" not in test[0] and test[0]["image"].endswith("COCO_test2015_000000000009.jpg")
    write_vqa_results(tmp_path / "res.json", [np.int64(9000)], ["cat"])
    assert json.loads((tmp_path / "res.json").read_text()) == [{"question_id": 9000, "answer": "cat"}]
    with pytest.raises(ValueError, match="repeat"):
        write_vqa_results(tmp_path / "res.json", [1, 1], ["a", "b"])
    with pytest.raises(ValueError, match="2 question ids but 1 answers"):
        write_vqa_results(tmp_path / "res.json", [1, 2], ["a"])


def test_vqa_errors_name_the_file(tmp_path):
    root = make_vqa(tmp_path)
    with pytest.raises(ValueError, match="split must be one of .*not 'dev'"):
        read_vqa(root, "dev")
    with pytest.raises(ValueError, match="missing must be 'skip' or 'error', not 'ignore'"):
        read_vqa(root, "train", missing="ignore")
    annotations = root / "v2_mscoco_val2014_annotations.json"
    anns = json.loads(annotations.read_text())["annotations"]
    annotations.write_text(json.dumps({"annotations": anns[:2]}))   # question 42000 loses its entry
    with pytest.raises(DataError, match=r"questions\[2\]: question_id 42000 has no entry in the annotations file"):
        read_vqa(root, "val")
    with pytest.raises(DataError, match=r"searched:(.|\n)*Questions"):
        read_vqa(tmp_path / "nowhere", "train")
    (root / "v2_mscoco_val2014_annotations.json").unlink()
    with pytest.raises(DataError, match="v2_mscoco_val2014_annotations.json"):
        read_vqa(root, "val")
    (root / "v2_OpenEnded_mscoco_train2014_questions.json").write_text('{"questions": [')
    with pytest.raises(DataError, match="train2014_questions.json: not valid JSON"):
        read_vqa(root, "train")
    (root / "train2014" / "COCO_train2014_000000000042.jpg").unlink()
    (root / "v2_OpenEnded_mscoco_train2014_questions.json").write_text(
        json.dumps({"questions": [{"image_id": 42, "question": "Q?", "question_id": 42000}]}))
    with pytest.raises(DataError, match=r"questions\[0\]: image not found"):
        read_vqa(root, "train", missing="error")
    (root / "v2_OpenEnded_mscoco_train2014_questions.json").write_text(json.dumps({"questions": [42]}))
    with pytest.raises(DataError, match=r"questions\[0\]: expected a JSON object, got int"):
        read_vqa(root, "train")


def test_vqa_repeated_question_id_is_refused_when_read(tmp_path):
    """Not after training, when write_vqa_results would refuse the server's results file."""
    root = make_vqa(tmp_path)
    question = {"image_id": 9, "question": "What is it?", "question_id": 9000}
    (root / "v2_OpenEnded_mscoco_test-dev2015_questions.json").write_text(json.dumps({"questions": [question] * 2}))
    with pytest.raises(DataError, match=r"test-dev2015_questions.json: questions\[1\]: question_id 9000 repeats "
                                        r"questions\[0\]"):
        read_vqa(root, "test-dev")
    path = root / "v2_mscoco_val2014_annotations.json"
    anns = json.loads(path.read_text())["annotations"]
    path.write_text(json.dumps({"annotations": anns + anns[:1]}))
    with pytest.raises(DataError, match=r"annotations.json: annotations\[3\]: question_id 9000 repeats "
                                        r"annotations\[0\]"):
        read_vqa(root, "val")


@pytest.mark.parametrize("name, content, message", [
    ("questions", {"questions": [{"image_id": "abc", "question": "Q?", "question_id": 1}]},
     r"questions\[0\]: field 'image_id' must be an integer, not 'abc'"),
    ("questions", {"questions": 5}, "field 'questions' must be a list, not int"),
    ("questions", {"questions": []}, "holds no questions"),
    ("questions", PNG_BYTES, "not UTF-8 text"),
    ("annotations", {"annotations": 5}, "field 'annotations' must be a list, not int"),
    ("annotations", {"annotations": [{"answers": 5}]}, r"annotations\[0\]: field 'answers' must be a list"),
], ids=["image_id", "questions", "no questions", "binary", "annotations", "answers"])
def test_malformed_vqa_files_name_the_file(tmp_path, name, content, message):
    root = make_vqa(tmp_path)
    path = root / {"questions": "v2_OpenEnded_mscoco_train2014_questions.json",
                   "annotations": "v2_mscoco_train2014_annotations.json"}[name]
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    with pytest.raises(DataError, match=f"{path.name}: {message}"):
        read_vqa(root, "train")


# ------------------------------------------------------------------ NLVR2
def nlvr2_line(identifier, label="True", **extra):
    return {"identifier": identifier, "sentence": "There are two dogs.", "label": label, "left_url": "u",
            "right_url": "u", "writer": "w", "synset": "dog", "query": "dogs", **extra}


def make_nlvr2(root: Path) -> Path:
    write_jsonl(root / "nlvr2" / "data" / "train.json",
                [nlvr2_line("train-10-0-0", directory=7), nlvr2_line("train-10-1-0", "False", directory=7)])
    for k in (0, 1):  # train-10-0: a JPEG named .png; train-10-1: in the alternative train/{dir}/ folder
        save_image(root / "images" / "train" / "7" / f"train-10-0-img{k}.png", fmt="JPEG")
        save_image(root / "train" / "7" / f"train-10-1-img{k}.png", fmt="PNG")
    write_jsonl(root / "dev.json", [nlvr2_line("dev-3-0-1"), nlvr2_line("dev-3-1-1", "False")])
    for k in (0, 1):
        save_image(root / "dev" / f"dev-3-0-img{k}.png", fmt="PNG")
    save_image(root / "dev" / "dev-3-1-img0.png", fmt="PNG")  # dev-3-1-img1.png is missing
    return root


def test_read_nlvr2(tmp_path):
    root = make_nlvr2(tmp_path)
    train = read_nlvr2(root, "train")
    assert [(e["identifier"], e["label"]) for e in train] == [("train-10-0-0", True), ("train-10-1-0", False)]
    assert train[0]["images"][1] == str(root / "images" / "train" / "7" / "train-10-0-img1.png")
    assert train[1]["images"][0] == str(root / "train" / "7" / "train-10-1-img0.png")
    assert load_image(train[0]["images"][0], 6).shape == (6, 8, 3)  # a JPEG despite the name
    with pytest.warns(UserWarning, match="skipped 1 of 2"):
        dev = read_nlvr2(root, "dev")
    assert len(dev) == 1 and dev[0]["images"][0] == str(root / "dev" / "dev-3-0-img0.png")
    with pytest.raises(DataError, match=r"dev.json:2: image not found.*dev-3-1-img1.png"):
        read_nlvr2(root, "dev", missing="error")


@pytest.mark.parametrize("bad, message", [
    ('{"identifier": "dev-3-0-1", ', "not valid JSON"),
    (json.dumps({"identifier": "dev-3-0-1", "label": "True"}), "missing field 'sentence'"),
    (json.dumps({**nlvr2_line("dev-3-0-1"), "sentence": "  "}), "field 'sentence' is empty"),
    (json.dumps(nlvr2_line("dev-3-0-1", label="maybe")), "label must be"),
])
def test_nlvr2_bad_line_names_file_and_line(tmp_path, bad, message):
    write_jsonl(tmp_path / "dev.json", [nlvr2_line("dev-3-0-1"), bad])
    with pytest.raises(DataError, match=f"dev.json:2: {message}"):
        read_nlvr2(tmp_path, "dev")


def test_nlvr2_train_needs_directory_and_missing_file_lists_searched(tmp_path):
    write_jsonl(tmp_path / "train.json", [nlvr2_line("train-1-0-0")])
    with pytest.raises(DataError, match="train.json:1: missing field 'directory'"):
        read_nlvr2(tmp_path, "train")
    with pytest.raises(DataError, match=r"nlvr2/data/test1.json(.|\n)*test1.json"):
        read_nlvr2(tmp_path, "test1")


def test_nlvr2_and_snli_ve_files_that_are_not_json_lines(tmp_path):
    (tmp_path / "nlvr2" / "data" / "dev.json").mkdir(parents=True)   # a folder where the file should be
    with pytest.raises(DataError, match=r"nlvr2/data/dev.json \(not a file\)"):
        read_nlvr2(tmp_path, "dev")
    for content, message in [(b"", ": holds no examples"), (b"\n\n", ": holds no examples"),
                             (PNG_BYTES, ":1: not UTF-8 text")]:   # its first line holds the bad byte
        (tmp_path / "dev.json").write_bytes(content)                   # the second candidate, a file
        with pytest.raises(DataError, match="dev.json" + message):
            read_nlvr2(tmp_path, "dev")
    save_image(tmp_path / "images" / "100.jpg")
    for name, content, message in [("snli_ve_test.jsonl", PNG_BYTES, ":1: not UTF-8 text"),
                                   ("ve_train.json", b"[]", ": holds no examples")]:   # official, ALBEF's list
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match=name + message):
            read_snli_ve(tmp_path, name.split("_")[-1].split(".")[0])


def test_nlvr2_recursive_image_search(tmp_path, monkeypatch):
    write_jsonl(tmp_path / "dev.json", [nlvr2_line("dev-0-0-0"), nlvr2_line("dev-0-0-1", "False"),
                                        nlvr2_line("dev-9-0-0")])  # dev-9-0's images are nowhere
    deep = tmp_path / "whatever" / "deep"
    for k in (0, 1):
        save_image(deep / f"dev-0-0-img{k}.png", fmt="PNG")
    calls = []
    index = realdata._nlvr2_image_index
    monkeypatch.setattr(realdata, "_nlvr2_image_index", lambda root: calls.append(root) or index(root))
    with pytest.warns(UserWarning, match="skipped 1 of 3"):
        dev = read_nlvr2(tmp_path, "dev")
    assert len(calls) == 1  # one walk of root per call, not one per example
    assert [e["identifier"] for e in dev] == ["dev-0-0-0", "dev-0-0-1"]
    assert dev[1]["images"] == [str(deep / "dev-0-0-img0.png"), str(deep / "dev-0-0-img1.png")]
    with pytest.raises(DataError, match=r"dev.json:3: image not found; searched: .*\*\*/dev-9-0-img0.png"):
        read_nlvr2(tmp_path, "dev", missing="error")
    # A second copy of a name: the first in sorted path order wins, and a warning counts the duplicates.
    save_image(tmp_path / "a" / "dev-0-0-img0.png", fmt="PNG")
    with pytest.warns(UserWarning, match="skipped 1 of 3"), \
            pytest.warns(UserWarning, match="1 NLVR2 image names occur more than once"):
        dev = read_nlvr2(tmp_path, "dev")
    assert dev[0]["images"] == [str(tmp_path / "a" / "dev-0-0-img0.png"), str(deep / "dev-0-0-img1.png")]
    # Train: bucket folders absent, so the names are searched too.
    write_jsonl(tmp_path / "train.json", [nlvr2_line("train-5-1-0", directory=3)])
    for k in (0, 1):
        save_image(tmp_path / "odd" / f"train-5-1-img{k}.png", fmt="PNG")
    with pytest.warns(UserWarning, match="occur more than once"):  # a new call walks root again
        train = read_nlvr2(tmp_path, "train")
    assert train[0]["images"][1] == str(tmp_path / "odd" / "train-5-1-img1.png")


def test_nlvr2_standard_folders_keep_priority(tmp_path):
    root = make_nlvr2(tmp_path)  # dev/ exists but lacks dev-3-1-img1.png
    save_image(root / "elsewhere" / "dev-3-1-img1.png", fmt="PNG")
    save_image(root / "elsewhere" / "dev-3-0-img0.png", fmt="PNG")
    with pytest.warns(UserWarning, match="skipped 1 of 2"):
        dev = read_nlvr2(root, "dev")  # the copy under elsewhere/ is not used
    assert dev[0]["images"][0] == str(root / "dev" / "dev-3-0-img0.png")


# ------------------------------------------------------------------ SNLI-VE
def snli_line(gold, sentence2="A dog runs.", **ids):
    return {"annotator_labels": [gold], "captionID": "1.jpg#0", "gold_label": gold, "pairID": "1.jpg#0r1e",
            "sentence1": "THE PREMISE, never read", "sentence2": sentence2, **ids}


def test_read_snli_ve(tmp_path):
    write_jsonl(tmp_path / "snli_ve_dev.jsonl", [
        snli_line("entailment", Flikr30kID="100.jpg"),        # 2018 spelling, with .jpg
        snli_line("neutral", Flickr30K_ID="200"),              # 2020 spelling, without
        snli_line("-", Flickr30K_ID="200"),                    # no majority: skipped
        snli_line("contradiction", Flickr30kID="300.jpg"),     # the README's spelling
        snli_line("entailment", pairID="100.jpg#3r1e"),        # no id key: from pairID
    ])
    for name in ("100", "200", "300"):
        save_image(tmp_path / "flickr30k-images" / f"{name}.jpg")
    dev = read_snli_ve(tmp_path, "dev")
    assert [Path(e["image"]).name for e in dev] == ["100.jpg", "200.jpg", "300.jpg", "100.jpg"]
    assert ENTAILMENT_LABELS == ("entailment", "neutral", "contradiction")  # the benchmark's order
    assert [e["label_id"] for e in dev] == [0, 1, 2, 0]  # ours, not DiDE's (1, 2, 0) nor ALBEF's (2, 1, 0)
    assert [e["pair_id"] for e in dev] == ["1.jpg#0r1e"] * 3 + ["100.jpg#3r1e"]
    assert all(e["hypothesis"] == "A dog runs." for e in dev)
    assert not any("PREMISE" in str(v) for e in dev for v in e.values())


def test_snli_ve_errors(tmp_path):
    save_image(tmp_path / "flickr30k_images" / "100.jpg")
    write_jsonl(tmp_path / "snli_ve_test.jsonl", [snli_line("entailment", Flikr30kID="100.jpg"),
                                                  snli_line("entailment", sentence2="", Flikr30kID="100.jpg")])
    with pytest.raises(DataError, match="snli_ve_test.jsonl:2: field 'sentence2' is empty"):
        read_snli_ve(tmp_path, "test")
    write_jsonl(tmp_path / "snli_ve_test.jsonl", [snli_line("entailment", Flikr30kID="404.jpg")])
    with pytest.raises(DataError, match=r"snli_ve_test.jsonl:1: image not found.*404.jpg"):
        read_snli_ve(tmp_path, "test", missing="error")
    with pytest.warns(UserWarning, match="skipped 1 of 1"):
        assert read_snli_ve(tmp_path, "test") == []
    line = snli_line("entailment")
    del line["sentence2"]
    write_jsonl(tmp_path / "snli_ve_train.jsonl", [line])
    with pytest.raises(DataError, match="snli_ve_train.jsonl:1: missing field 'sentence2'"):
        read_snli_ve(tmp_path, "train")
    write_jsonl(tmp_path / "snli_ve_train.jsonl", [snli_line("entailment", Flickr30K_ID="100"), "[1, 2]"])
    with pytest.raises(DataError, match="snli_ve_train.jsonl:2: expected a JSON object, got list"):
        read_snli_ve(tmp_path, "train")
    write_jsonl(tmp_path / "snli_ve_train.jsonl", [{**snli_line("entailment"), "pairID": "1#0r1e", "captionID": "1#0"}])
    with pytest.raises(DataError, match="snli_ve_train.jsonl:1: no image id"):
        read_snli_ve(tmp_path, "train")


def albef_item(image, label="entailment", sentence="A dog runs."):
    return {"image": image, "sentence": sentence, "label": label}


def test_read_snli_ve_albef_list_format(tmp_path):
    (tmp_path / "dev.json").write_text(json.dumps([
        albef_item("100"), albef_item("200.jpg", "neutral"),  # an id with .jpg gets no second one
        albef_item(300, "contradiction")]))                   # an int id
    for name in ("100", "200", "300"):
        save_image(tmp_path / "images" / f"{name}.jpg")
    dev = read_snli_ve(tmp_path, "dev")
    assert [e["image"] for e in dev] == [str(tmp_path / "images" / f"{n}.jpg") for n in ("100", "200", "300")]
    assert [(e["pair_id"], e["label"], e["label_id"]) for e in dev] == [
        ("dev-0", "entailment", 0), ("dev-1", "neutral", 1), ("dev-2", "contradiction", 2)]
    assert set(dev[0]) == {"pair_id", "image", "hypothesis", "label", "label_id"}  # as the jsonl path
    assert dev[0]["hypothesis"] == "A dog runs."
    # ve_{split}.json, with the images in a Flickr30k folder passed as image_dir
    (tmp_path / "ve_test.json").write_text(json.dumps([albef_item("100")]))
    test = read_snli_ve(tmp_path, "test", image_dir=tmp_path / "images")
    assert test[0]["image"] == str(tmp_path / "images" / "100.jpg")


def test_snli_ve_official_jsonl_comes_first(tmp_path):
    save_image(tmp_path / "flickr30k_images" / "100.jpg")
    (tmp_path / "dev.json").write_text(json.dumps([albef_item("100", "neutral")]))
    write_jsonl(tmp_path / "snli_ve_dev.jsonl", [snli_line("contradiction", Flickr30K_ID="100")])
    assert [e["label"] for e in read_snli_ve(tmp_path, "dev")] == ["contradiction"]
    # A .json file holding JSON Lines is the official format under another name.
    write_jsonl(tmp_path / "train.json", [snli_line("entailment", Flickr30K_ID="100")])
    assert [e["pair_id"] for e in read_snli_ve(tmp_path, "train")] == ["1.jpg#0r1e"]


def test_snli_ve_albef_errors_name_file_and_index(tmp_path):
    save_image(tmp_path / "images" / "100.jpg")
    path = tmp_path / "ve_train.json"
    for items, message in [
        ([albef_item("100"), {"image": "100", "label": "neutral"}], r"\[1\]: missing field 'sentence'"),
        ([albef_item("100", label="yes")], r"\[0\]: label must be one of"),
        ([albef_item("100"), albef_item("100", sentence=" ")], r"\[1\]: field 'sentence' is empty"),
        ([albef_item("100"), "not an object"], r"\[1\]: expected a JSON object"),
    ]:
        path.write_text(json.dumps(items))
        with pytest.raises(DataError, match="ve_train.json: " + message):
            read_snli_ve(tmp_path, "train")
    path.write_text('[{"image": "100",')
    with pytest.raises(DataError, match="ve_train.json: not valid JSON"):
        read_snli_ve(tmp_path, "train")
    path.write_text(json.dumps([albef_item("100"), albef_item("404")]))
    with pytest.raises(DataError, match=r"ve_train.json: \[1\]: image not found.*images/404.jpg"):
        read_snli_ve(tmp_path, "train", missing="error")
    with pytest.warns(UserWarning, match="skipped 1 of 2"):
        assert [e["pair_id"] for e in read_snli_ve(tmp_path, "train")] == ["train-0"]
    with pytest.raises(DataError, match=r"snli_ve_dev.jsonl(.|\n)*dev.json(.|\n)*ve_dev.json"):
        read_snli_ve(tmp_path, "dev")


# ------------------------------------------------------------------ read_split
def test_read_split_dispatches_and_splits_name_the_official_ones(tmp_path):
    assert SPLITS == {"vqav2": {"train": "train", "val": "val", "test": "val"},
                      "nlvr2": {"train": "train", "val": "dev", "test": "test1"},
                      "snli-ve": {"train": "train", "val": "dev", "test": "test"}}
    nlvr2 = make_nlvr2(tmp_path / "nlvr2")
    with pytest.warns(UserWarning, match="skipped 1 of 2"):
        assert [e["identifier"] for e in read_split("nlvr2", nlvr2, SPLITS["nlvr2"]["val"])] == ["dev-3-0-1"]
    with pytest.raises(DataError, match="dev.json:2: image not found"):  # kwargs reach the reader
        read_split("nlvr2", nlvr2, "dev", missing="error")
    with pytest.raises(DataError, match="test1.json"):
        read_split("nlvr2", nlvr2, SPLITS["nlvr2"]["test"])
    (tmp_path / "vqa").mkdir()
    vqa = make_vqa(tmp_path / "vqa")
    test = read_split("vqav2", vqa, SPLITS["vqav2"]["test"])  # val2014: the test server's splits have no answers
    assert "val2014" in test[0]["image"] and len(test) == 3 and test[0]["answer_type"] == "other"
    assert "test2015" in read_split("vqav2", vqa, "test")[0]["image"]  # the server's split, by its own name
    snli = tmp_path / "snli"
    save_image(snli / "images" / "100.jpg")
    (snli / "test.json").write_text(json.dumps([albef_item("100")]))
    assert read_split("snli-ve", snli, SPLITS["snli-ve"]["test"])[0]["label_id"] == 0
    with pytest.raises(ValueError, match=r"'nlvr2', 'snli-ve', 'vqav2'.*'snli_ve'"):
        read_split("snli_ve", snli, "test")


# ------------------------------------------------------------------ images
@pytest.mark.parametrize("mode, fmt", [("CMYK", "JPEG"), ("L", "PNG"), ("L", "JPEG"), ("RGBA", "PNG"), ("P", "PNG")])
def test_load_image_converts_to_rgb(tmp_path, mode, fmt):
    path = save_image(tmp_path / "img.png", mode, fmt, size=(40, 20))  # named .png whatever it holds
    img = load_image(path, 16, patch=4)
    # 40x20 -> 32x16 (shorter side 16) -> 26.7x13.3 (longer side capped at 16*640/384) -> 27x13 -> 24x12 (patch 4)
    assert img.dtype == np.uint8 and img.shape == (12, 24, 3)
    assert (img.std(axis=(0, 1)) < 1).all()  # a flat colour stays flat
    if mode == "CMYK":  # cyan 0, magenta and yellow full: red
        assert np.abs(img[0, 0].astype(int) - [255, 0, 0]).max() <= 2


def test_vilt_size():
    assert vilt_size(640, 480, 384) == (512, 384)
    assert vilt_size(1000, 100, 384) == (640, 64)     # longer side capped at 640
    assert vilt_size(640, 480, 384, patch=32) == (512, 384)
    assert vilt_size(500, 375, 384, patch=32) == (512, 384)


def test_unreadable_images_raise_data_error(tmp_path):
    full = save_image(tmp_path / "full.jpg", size=(64, 64))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(full.read_bytes()[: len(full.read_bytes()) // 2])
    (tmp_path / "text.png").write_text("not an image")
    for path in (truncated, tmp_path / "text.png", tmp_path / "absent.jpg"):
        with pytest.raises(DataError, match=path.name):
            load_image(path, 32)


def test_add_soft_targets_keeps_inputs_unchanged():
    examples = [{"answers": ["a"] * 10}]
    out = add_soft_targets(examples, ["b"], drop_unanswerable=False)
    assert out[0]["labels"] == [] and "labels" not in examples[0]
