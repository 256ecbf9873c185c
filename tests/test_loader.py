"""loader.py and `train.py --data`: the real-data path, end to end, on the benchmark written out in
each official layout by export.py (no download): labels survive, batches pad photographs of
different sizes, resume exactly, shard by process, skip unreadable images, and a tiny model trains."""

import json
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import export
import train
from data import DATA_SIZES, DataConfig, build_benchmark
from loader import LoaderBatches, RealDataConfig, eval_batches, load_real_data, to_device
from realdata import DataError

DATA_SETS = ("vqav2", "nlvr2", "snli-ve")
TASK = {"vqav2": "vqa", "nlvr2": "reasoning", "snli-ve": "entailment"}


@pytest.fixture(scope="module")
def data_cfg(tmp_path_factory):
    return DataConfig(**{**DATA_SIZES["tiny"], "train_examples": 64, "eval_examples": 32, "workers": 1,
                         "cache_dir": str(tmp_path_factory.mktemp("cache"))})


@pytest.fixture(scope="module")
def exported(data_cfg, tmp_path_factory):
    return export.export("all", tmp_path_factory.mktemp("exported"), data_cfg)


def real(exported, name, **overrides):
    cfg = RealDataConfig(**{**dict(data=name, data_dir=str(exported / name), min_answer_count=1, val_examples=16,
                                   loader_workers=0), **overrides})
    return load_real_data(cfg, image_side=32, patch_size=8, max_text_len=32)


@pytest.mark.parametrize("name", DATA_SETS)
def test_labels_and_texts_survive_the_round_trip(name, exported, data_cfg):
    """The benchmark's own training labels come back through the official layout and the loader:
    SNLI-VE's label strings map to the benchmark's label order, NLVR2's "True" to 1."""
    benchmark, data = build_benchmark(data_cfg, tasks=[TASK[name]], progress=False), real(exported, name)
    bench, split = benchmark.splits[TASK[name]]["train"], data.splits[TASK[name]]["train"]
    assert split.texts == bench.texts
    if name == "vqav2":   # the answer vocabulary is rebuilt from strings, so compare soft scores by answer
        assert len(split.vqa_targets) == len(bench)   # (answers never a majority answer are not in it: dropped)
        for scores, (answers, values) in zip(bench.vqa_scores.tolist(), split.vqa_targets):
            expected = {benchmark.answers[a]: s for a, s in enumerate(scores)
                        if s > 0 and benchmark.answers[a] in data.answers}
            assert expected and {data.answers[a]: s for a, s in zip(answers, values)} == pytest.approx(expected)
    else:
        assert torch.equal(split.labels, bench.labels)


def test_impossible_vocabularies_and_batches_are_refused(exported):
    with pytest.raises(DataError, match="--min-answer-count 1000000: no training answer is that frequent"):
        real(exported, "vqav2", min_answer_count=10**6)
    split = real(exported, "nlvr2").splits["reasoning"]["train"]
    with pytest.raises(SystemExit, match=f"--batch-size {len(split) + 1} is larger than the training set"):
        LoaderBatches(split, len(split) + 1, seed=0, device="cpu")


def test_vqa_never_tests_on_the_validation_examples(exported):
    data = real(exported, "vqav2")
    splits = data.splits["vqa"]
    val, test = set(splits["val"].ids), set(splits["test"].ids)
    assert len(val) == 16 and not val & test
    with open(exported / "vqav2" / "v2_OpenEnded_mscoco_val2014_questions.json") as f:
        assert val | test == {q["question_id"] for q in json.load(f)["questions"]}


def test_photographs_of_different_sizes_are_padded_with_a_pixel_mask(tmp_path, exported):
    split = real(exported, "snli-ve").splits["entailment"]["train"]
    for i, size in enumerate([(40, 32), (32, 64), (100, 100)]):   # wide, tall, square (W, H)
        path = tmp_path / f"{i}.png"
        Image.new("RGB", size, (200, 10, 10)).save(path)
        split.image_paths[i] = [str(path)]
    batch, errors = split.collate([split[i] for i in range(3)])
    batch = to_device(batch, "cpu")                                # the pixel mask is made from the image sizes
    # ViLT's resize at side 32, patch 8 (W x H): 40x32 stays; 32x64 has its longer side capped at
    # 32 * 640 / 384 = 53.3, so 27x53, cut to whole patches 24x48; 100x100 becomes 32x32.
    assert not errors and batch["images"].shape[1:] == (1, 3, 48, 40)
    assert batch["pixel_mask"][:, 0].sum((1, 2)).tolist() == [32 * 40, 48 * 24, 32 * 32]
    assert (batch["images"].permute(0, 1, 3, 4, 2)[~batch["pixel_mask"]] == -1).all()   # black padding
    assert batch["pixel_mask"][0, 0, :32, :40].all() and not batch["pixel_mask"][0, 0, 32:].any()


def index_lists(batches, n):
    return [batches.next()["index"].tolist() for _ in range(n)]


def test_loader_batches_resume_exactly_across_epochs(exported):
    split = real(exported, "nlvr2").splits["reasoning"]["train"]   # 64 examples: 4 batches of 16 an epoch
    first = LoaderBatches(split, 16, seed=3, device="cpu", workers=0)
    index_lists(first, 3)
    state = first.state_dict()
    expected = index_lists(first, 3)                               # crosses into the second epoch
    resumed = LoaderBatches(split, 16, seed=3, device="cpu", workers=0)
    resumed.load_state_dict(state)
    assert index_lists(resumed, 3) == expected
    assert sorted(sum(index_lists(LoaderBatches(split, 16, 3, "cpu"), 4), [])) == list(range(64))  # an epoch: each once


def test_each_process_loads_only_its_rows(exported):
    split = real(exported, "nlvr2").splits["reasoning"]["train"]
    whole = LoaderBatches(split, 16, seed=0, device="cpu").next()["index"]
    rows = [LoaderBatches(split, 16, seed=0, device="cpu", rank=r, world=2).next()["index"] for r in (0, 1)]
    assert torch.equal(rows[0], whole[0::2]) and torch.equal(rows[1], whole[1::2])


def test_workers_give_the_same_batches(exported):
    split = real(exported, "vqav2").splits["vqa"]["train"]
    serial, parallel = (LoaderBatches(split, 8, seed=1, device="cpu", workers=w).next() for w in (0, 2))
    for key in serial:
        assert torch.equal(serial[key], parallel[key]), key


def test_unreadable_images_are_skipped_and_counted_or_an_error(exported):
    split = real(exported, "snli-ve").splits["entailment"]["val"]
    broken = split.image_paths[2][0]
    data = open(broken, "rb").read()
    try:
        with open(broken, "wb") as f:
            f.write(data[: len(data) // 3])                            # a truncated JPEG
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            indices = sum((b["index"].tolist() for b in eval_batches(split, 8, "cpu")), [])
        skipped = {i for i, paths in enumerate(split.image_paths) if paths[0] == broken}
        assert sorted(set(range(len(split))) - skipped) == indices and skipped
        assert any(broken in str(w.message) for w in caught)
        split.missing = "error"
        with pytest.raises(DataError, match=os.path.basename(broken)):
            list(eval_batches(split, 8, "cpu"))
    finally:
        with open(broken, "wb") as f:
            f.write(data)


def test_an_unreadable_image_in_a_worker_is_one_line(exported, tmp_path):
    """torch re-raises a worker's exception with the worker's traceback in its message, 30 lines:
    with workers, train.py must still print the one line it prints without them."""
    import shutil
    shutil.copytree(exported / "snli-ve", tmp_path / "snli-ve")
    split = real(tmp_path, "snli-ve", missing_images="error", loader_workers=1).splits["entailment"]["val"]
    broken = split.image_paths[2][0]
    with open(broken, "r+b") as f:
        f.truncate(os.path.getsize(broken) // 3)                      # a truncated JPEG
    for fetch in (lambda: list(eval_batches(split, 8, "cpu")),
                  lambda: LoaderBatches(split, len(split), seed=0, device="cpu", workers=1).next()):
        with pytest.raises(DataError) as caught:
            fetch()
        assert str(caught.value).startswith(f"{broken}: cannot read image") and "\n" not in str(caught.value)


@pytest.mark.parametrize("name", DATA_SETS)
def test_train_py_trains_a_tiny_model_on_each_layout(name, exported, tmp_path):
    out = tmp_path / "run"
    results = train.main(["--size", "tiny", "--data", name, "--data-dir", str(exported / name),
                          "--rows", "teacher,dual,soft+attention", "--steps", "3", "--eval-every", "3",
                          "--batch-size", "8", "--eval-batch-size", "16", "--min-answer-count", "1",
                          "--val-examples", "16", "--loader-workers", "0", "--out-dir", str(out),
                          "--progress", "false", "--speed", "false"])
    assert {r["row"] for r in results} == {"teacher", "dual", "soft+attention"}
    assert all(0.0 <= r["accuracy"] <= 100.0 and np.isfinite(r["accuracy"]) for r in results)
    table = (out / "results.md").read_text()
    assert {"vqav2": "yes/no", "nlvr2": "consistency", "snli-ve": "| soft+attention |"}[name] in table
    assert json.loads((out / "config.json").read_text())["real_data"]["data"] == name


def test_a_bert_vocabulary_gives_wordpiece_tokens(exported, tmp_path, data_cfg):
    words = sorted({w for t in real(exported, "snli-ve").splits["entailment"]["train"].texts for w in t.split()})
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words[: len(words) // 2]) + "\n")
    data = real(exported, "snli-ve", vocab=str(vocab))
    ids = data.splits["entailment"]["train"].text_ids
    assert data.tokenizer.to_dict()["kind"] == "wordpiece" and (ids == data.tokenizer.UNK).any()
    assert (ids[:, 0] == data.tokenizer.CLS).all()


def test_vqa_test_dev_predictions_for_the_server(exported, tmp_path):
    out = tmp_path / "run"
    results = train.main(["--size", "tiny", "--data", "vqav2", "--data-dir", str(exported / "vqav2"),
                          "--vqa-predict", "test-dev", "--rows", "dual", "--steps", "2", "--batch-size", "8",
                          "--min-answer-count", "1", "--val-examples", "16", "--loader-workers", "0",
                          "--out-dir", str(out), "--progress", "false", "--speed", "false"])
    with open(results[0]["predictions"]) as f:
        predictions = json.load(f)
    with open(exported / "vqav2" / "v2_OpenEnded_mscoco_test-dev2015_questions.json") as f:
        questions = json.load(f)["questions"]
    assert sorted(p["question_id"] for p in predictions) == sorted(q["question_id"] for q in questions)
    answers = real(exported, "vqav2").answers
    assert all(p["answer"] in answers for p in predictions)


def test_a_split_with_no_examples_is_refused_by_name(exported, tmp_path):
    """VQA v2 tests on val2014 less the validation subset: a subset as large as val2014 leaves no test; and a
    split whose images are all missing (skipped) is empty too."""
    with pytest.raises(DataError, match="the test split has no examples.*--val-examples 1000000"):
        real(exported, "vqav2", val_examples=10**6)
    import shutil
    copy = tmp_path / "nlvr2"
    shutil.copytree(exported / "nlvr2", copy)
    shutil.rmtree(copy / "dev")   # NLVR2's validation split is dev
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match="the val split has no examples"):
            real(tmp_path, "nlvr2")


def test_bad_files_are_refused_before_training(exported, tmp_path):
    """An empty NLVR2 dev.json is named, not blamed on missing images or --val-examples; a test-dev question id
    that repeats is refused now, not after training, when the server's results file is written."""
    import shutil
    for name in ("nlvr2", "vqav2"):
        shutil.copytree(exported / name, tmp_path / name)
    (tmp_path / "nlvr2" / "nlvr2" / "data" / "dev.json").write_text("")
    with pytest.raises(DataError, match="nlvr2/data/dev.json: holds no examples"):
        real(tmp_path, "nlvr2")
    path = tmp_path / "vqav2" / "v2_OpenEnded_mscoco_test-dev2015_questions.json"
    questions = json.loads(path.read_text())["questions"]
    path.write_text(json.dumps({"questions": questions + questions[:1]}))
    with pytest.raises(DataError, match=rf"test-dev2015_questions.json: questions\[{len(questions)}\]: question_id "
                                        rf"{questions[0]['question_id']} repeats questions\[0\]"):
        real(tmp_path, "vqav2", vqa_predict="test-dev")


def test_a_split_with_no_readable_image_stops_instead_of_spinning(exported, tmp_path):
    split = real(exported, "snli-ve").splits["entailment"]["train"]
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")                                         # e.g. a git-lfs pointer or a failed copy
    split.image_paths = [[str(empty)]] * len(split)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match="whole epoch"):
            LoaderBatches(split, 16, seed=0, device="cpu").next()


def test_vqa_predict_checks_its_images_before_training(exported, tmp_path):
    import shutil
    copy = tmp_path / "vqav2"
    shutil.copytree(exported / "vqav2", copy)
    next((copy / "test2015").iterdir()).unlink()
    with pytest.raises(DataError, match="image not found"):
        real(tmp_path, "vqav2", vqa_predict="test-dev")


def test_evaluation_shares_cover_the_split_once(exported):
    from evaluate import shard_of
    from runtime import Runtime
    split = real(exported, "nlvr2").splits["reasoning"]["val"]
    shares = [shard_of(split, Runtime("cpu", None, rank, 3)) for rank in range(3)]
    positions = sorted(sum((p.tolist() for _, p in shares), []))
    assert positions == list(range(len(split)))
    for mine, p in shares:
        assert mine.ids == [split.ids[i] for i in p.tolist()]


def test_vqa_train_val_trains_on_val2014_but_never_on_validation_or_test_images(exported):
    """The server setting: val2014 trains too, less two disjoint sets of whole images (one validates, one
    tests); its answers join the vocabulary."""
    plain = real(exported, "vqav2", val_examples=8)
    both = real(exported, "vqav2", val_examples=8, vqa_train_val=True)
    splits = both.splits["vqa"]
    ids = {name: set(splits[name].ids) for name in ("train", "val", "test")}
    images = {name: {p for paths in splits[name].image_paths for p in paths} for name in ("train", "val", "test")}
    with open(exported / "vqav2" / "v2_OpenEnded_mscoco_val2014_questions.json") as f:
        val2014 = {q["question_id"] for q in json.load(f)["questions"]}
    assert len(ids["val"]) >= 8 and len(ids["test"]) >= 8 and not ids["val"] & ids["test"]
    assert not (images["val"] | images["test"]) & images["train"] and not images["val"] & images["test"]
    assert ids["train"] & val2014 == val2014 - ids["val"] - ids["test"]   # every other val2014 question trains
    assert set(plain.answers) <= set(both.answers)
    with pytest.raises(ValueError, match="--vqa-train-val"):
        real(exported, "nlvr2", vqa_train_val=True)
    with pytest.raises(DataError, match="leave none to train on"):
        real(exported, "vqav2", val_examples=10_000, vqa_train_val=True)


def test_attention_agreement_reads_photographs_too(exported):
    """evaluate.attention_agreement on a real split: the first examples, through the DataLoader path."""
    from evaluate import attention_agreement
    from model import DualEncoder, model_config
    from teacher import FusionEncoder, freeze
    split = real(exported, "nlvr2").splits["reasoning"]["test"]
    cfg = model_config("tiny", vocab_size=200, num_answers=4)
    torch.manual_seed(0)
    teacher, student = freeze(FusionEncoder(cfg)), DualEncoder(cfg)
    train_cfg = train.TrainConfig(size="tiny", eval_batch_size=4)
    report = attention_agreement(teacher, student, split, "reasoning", train_cfg, torch.device("cpu"), examples=6)
    assert report == attention_agreement(teacher, student, split.subset(list(range(6))), "reasoning", train_cfg,
                                         torch.device("cpu"))
    assert all(0 < v["teacher_entropy"] <= 1 and v["kl"] > 0 for v in report.values())


def test_an_unreadable_test_dev_image_found_after_training_costs_no_training(exported, tmp_path):
    """The server's questions are decoded only once the model is trained. An unreadable image there stops
    the run naming it; with the image fixed, the same command trains nothing again (the last checkpoint is
    at the final step) and writes the predictions."""
    import shutil
    data_dir = tmp_path / "vqav2"
    shutil.copytree(exported / "vqav2", data_dir)
    image = sorted((data_dir / "test2015").iterdir())[0]
    good = image.read_bytes()
    image.write_bytes(b"not a picture")
    out = tmp_path / "run"
    argv = ["--size", "tiny", "--data", "vqav2", "--data-dir", str(data_dir), "--vqa-predict", "test-dev",
            "--rows", "dual", "--steps", "2", "--batch-size", "8", "--min-answer-count", "1", "--val-examples", "16",
            "--loader-workers", "0", "--out-dir", str(out), "--progress", "false", "--speed", "false"]
    with pytest.raises(DataError, match=image.name):
        train.main(argv)
    trained = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
               if json.loads(line)["kind"] == "train"]
    image.write_bytes(good)
    results = train.main(argv)
    again = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "train"]
    assert trained and again == trained and os.path.exists(results[0]["predictions"])
