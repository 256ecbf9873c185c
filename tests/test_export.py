"""export.py: the benchmark written in the official layouts reads back through realdata.py's
readers with every text, label, soft score and pixel of the benchmark.

    python -m pytest -q tests/test_export.py
"""
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import export  # noqa: E402
from data import DATA_SIZES, DataConfig, build_benchmark, load_split  # noqa: E402
from metrics import nlvr2_consistency, normalize_answer  # noqa: E402
from realdata import read_nlvr2, read_snli_ve, read_vqa  # noqa: E402
from programs import ENTAILMENT_LABELS  # noqa: E402

SIZES = {"train_examples": 48, "eval_examples": 24}
PAIRS = {"vqa": (("train", "train"), ("val", "val"), ("test", "test-dev")),
         "reasoning": (("train", "train"), ("val", "dev"), ("test", "test1")),
         "entailment": (("train", "train"), ("val", "dev"), ("test", "test"))}


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return DataConfig(**{**DATA_SIZES["tiny"], **SIZES, "cache_dir": str(cache), "workers": 1})


@pytest.fixture(scope="module")
def bench(cfg):
    return build_benchmark(cfg, progress=False)


@pytest.fixture(scope="module")
def exported(cfg, tmp_path_factory):
    """Every format, whole splits, written once for the module."""
    return export.export("all", tmp_path_factory.mktemp("exported"), cfg)


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int64)


def assert_jpeg_close(path, expected) -> None:
    assert np.abs(pixels(path) - expected.numpy().astype(np.int64)).mean() < 2.0, path


# ------------------------------------------------------------------ VQA v2
def test_vqa_reads_back_texts_answers_and_soft_scores(bench, exported):
    for split, name in PAIRS["vqa"][:2]:
        data = bench.splits["vqa"][split]
        examples = read_vqa(exported / "vqav2", name, answer_vocab=bench.answers)
        assert len(examples) == len(data)
        assert [e["question"] for e in examples] == data.texts
        assert [e["multiple_choice_answer"] for e in examples] == [bench.answers[y] for y in data.labels.tolist()]
        assert all(len(e["answers"]) == 10 for e in examples)
        scores = torch.zeros_like(data.vqa_scores)  # the ten answers give back the benchmark's soft scores
        for row, e in enumerate(examples):
            scores[row, e["labels"]] = torch.tensor(e["scores"])
        assert torch.allclose(scores, data.vqa_scores)
        for e, index in zip(examples, data.image_index[:, 0].tolist()):
            assert_jpeg_close(e["image"], data.images[index])


def test_vqa_annotation_fields_and_unique_ids(bench, exported):
    root = exported / "vqav2"
    ann = json.loads((root / "v2_mscoco_train2014_annotations.json").read_text())["annotations"]
    types = {a["multiple_choice_answer"]: a["answer_type"] for a in ann}
    assert all(types[a] == ("yes/no" if a in ("yes", "no") else "number" if a.isdigit() else "other") for a in types)
    assert [x["answer_id"] for x in ann[0]["answers"]] == list(range(1, 11))
    assert all(a["question_type"] for a in ann)
    images, questions = [], []
    for _, name in PAIRS["vqa"]:
        examples = read_vqa(root, name)
        images.append({e["image_id"] for e in examples})
        questions += [e["question_id"] for e in examples]
    assert len(questions) == len(set(questions))
    assert sum(map(len, images)) == len(set().union(*images))  # no image id in two splits


def test_vqa_test_split_has_questions_only(bench, exported):
    root = exported / "vqav2"
    examples = read_vqa(root, "test-dev", answer_vocab=bench.answers)
    assert [e["question"] for e in examples] == bench.splits["vqa"]["test"].texts
    assert all("answers" not in e and "labels" not in e for e in examples)
    assert not list(root.glob("*test*annotations*.json"))
    assert all(Path(e["image"]).parent.name == "test2015" for e in examples)


def test_answers_survive_normalisation(bench):
    assert [normalize_answer(a) for a in bench.answers] == bench.answers


# ------------------------------------------------------------------ NLVR2
def test_nlvr2_reads_back_sentences_labels_and_exact_pixels(bench, exported):
    root = exported / "nlvr2"
    for split, name in PAIRS["reasoning"]:
        data = bench.splits["reasoning"][split]
        examples = read_nlvr2(root, name, missing="error")
        assert [e["sentence"] for e in examples] == data.texts
        assert [e["label"] for e in examples] == (data.labels == 1).tolist()
        for e, pair in zip(examples, data.image_index.tolist()):
            for path, index in zip(e["images"], pair):
                assert np.array_equal(pixels(path), data.images[index].numpy()), path
        lines = [json.loads(line) for line in (root / "nlvr2" / "data" / f"{name}.json").read_text().splitlines()]
        assert {line["label"] for line in lines} == {"True", "False"}
        assert all(("directory" in line) == (name == "train") for line in lines)


def test_nlvr2_identifiers_group_one_sentence_over_image_pairs(bench, exported):
    data = bench.splits["reasoning"]["val"]
    ids = [e["identifier"] for e in read_nlvr2(exported / "nlvr2", "dev")]
    assert len(set(ids)) == len(ids)
    groups = {}  # nlvr2_consistency's key -> (texts, image pairs)
    for identifier, text, pair in zip(ids, data.texts, data.image_index.tolist()):
        split, set_id, pair_id, sentence_id = identifier.split("-")
        texts, pairs = groups.setdefault((set_id, sentence_id), (set(), set()))
        texts.add(text)
        pairs.add(tuple(pair))
    assert all(len(texts) == 1 for texts, _ in groups.values())  # one key, one sentence
    assert any(len(pairs) == 2 for _, pairs in groups.values())  # contrast pairs: one sentence, two pairs
    assert ids[:4] == ["dev-0-0-0", "dev-0-0-1", "dev-0-1-0", "dev-0-1-2"]  # (A, s) (A, s') (B, s) (B, t)
    wrong_once = [i != 2 for i in range(len(ids))]  # (B, s) wrong: the group of s fails, as (A, s) shares it
    assert nlvr2_consistency(ids, wrong_once) == pytest.approx((len(groups) - 1) / len(groups))


# ------------------------------------------------------------------ SNLI-VE
def test_snli_ve_reads_back_hypotheses_labels_and_premises(cfg, bench, exported):
    root, seen = exported / "snli-ve", []
    for split, name in PAIRS["entailment"]:
        data = bench.splits["entailment"][split]
        examples = read_snli_ve(root, name, missing="error")
        assert [e["hypothesis"] for e in examples] == data.texts
        assert [e["label"] for e in examples] == [ENTAILMENT_LABELS[y] for y in data.labels.tolist()]
        for e, index in zip(examples, data.image_index[:, 0].tolist()):
            assert_jpeg_close(e["image"], data.images[index])
        captions = load_split(cfg, "entailment", split).captions
        lines = [json.loads(line) for line in (root / f"snli_ve_{name}.jsonl").read_text().splitlines()]
        assert [line["sentence1"] for line in lines] == [captions[i] for i in data.image_index[:, 0].tolist()]
        assert all(line["pairID"].startswith(line["Flickr30K_ID"] + ".jpg#") for line in lines)
        assert len({line["pairID"] for line in lines}) == len(lines)
        seen.append({e["image"] for e in examples})
    assert sum(map(len, seen)) == len(set().union(*seen))  # no image in two splits


def test_snli_ve_old_keys_and_list_format(cfg, bench, tmp_path):
    root = export.export_snli_ve(cfg, tmp_path, limit=5, old_keys=True, list_format=True)
    data = bench.splits["entailment"]["train"]
    lines = [json.loads(line) for line in (root / "snli_ve_train.jsonl").read_text().splitlines()]
    assert all(line["Flikr30kID"].endswith(".jpg") and "Flickr30K_ID" not in line for line in lines)
    assert [e["hypothesis"] for e in read_snli_ve(root, "train", missing="error")] == data.texts[:5]
    listed = json.loads((root / "train.json").read_text())  # ALBEF / DiDE: a JSON list
    assert [x["sentence"] for x in listed] == data.texts[:5]
    assert [x["label"] for x in listed] == [ENTAILMENT_LABELS[y] for y in data.labels[:5].tolist()]
    for x, index in zip(listed, data.image_index[:5, 0].tolist()):
        assert_jpeg_close(root / "images" / f"{x['image']}.jpg", data.images[index])


# ------------------------------------------------------------------ limit, atomic writes, command line
def test_limit_writes_the_first_examples_and_only_their_images(cfg, bench, tmp_path):
    root = export.export("vqav2", tmp_path, cfg, limit=5)
    for (split, name), folder in zip(PAIRS["vqa"], ("train2014", "val2014", "test2015")):
        examples = read_vqa(root, name, missing="error")
        assert [e["question"] for e in examples] == bench.splits["vqa"][split].texts[:5]
        assert len(list((root / folder).iterdir())) == len({e["image_id"] for e in examples})
    assert len(json.loads((root / "v2_mscoco_val2014_annotations.json").read_text())["annotations"]) == 5


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.json"
    export.write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        export.write_json(path, {"a": object()})  # not serialisable: fails before any file opens
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_command_line(cfg, bench, tmp_path, capsys):
    flags = ["--size", "tiny", "--limit", "8", "--cache-dir", cfg.cache_dir, "--workers", "1",
             "--train-examples", "48", "--eval-examples", "24"]
    export.main(["--format", "nlvr2", "--out", str(tmp_path / "x"), *flags])
    for split, name in PAIRS["reasoning"]:
        examples = read_nlvr2(tmp_path / "x", name, missing="error")
        assert [e["sentence"] for e in examples] == bench.splits["reasoning"][split].texts[:8]
    export.main(["--format", "all", "--out", str(tmp_path / "all"), *flags])
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["nlvr2", "snli-ve", "vqav2"]
    with pytest.raises(SystemExit) as stop:
        export.main(["--help"])
    assert stop.value.code == 0
    help_text = capsys.readouterr().out
    assert all(flag in help_text for flag in ("--format", "--out", "--size", "--limit", "--old-keys",
                                              "--list-format", "--cache-dir", "--workers"))
    with pytest.raises(SystemExit):
        export.main(["--format", "nlvr2", "--out", str(tmp_path / "y"), "--limit", "0"])
    (tmp_path / "a-file").write_text("")
    for out in (tmp_path / "a-file", tmp_path / "a-file" / "sub"):
        with pytest.raises(SystemExit) as stop:
            export.main(["--format", "nlvr2", "--out", str(out), *flags])
        assert stop.value.code == 2 and "a-file is a file, not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:   # not the current folder by accident
        export.main(["--format", "nlvr2", "--out", "", *flags])
    assert stop.value.code == 2 and "--out '': give a folder's name" in capsys.readouterr().err
