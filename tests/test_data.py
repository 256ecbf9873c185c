"""Tests of the procedural benchmark (scenes.py, tasks.py, vqa_task.py, templates.py, data.py) and of the
batches drawn from it (batches.py, evaluate.vqa_accuracy), at the tiny size, on CPU: rendering,
determinism, balance, splits, the tokenizer, the cache, VQA scores and the curriculum. The labels
themselves are re-checked independently in test_labels.py.

    python -m pytest tests/test_data.py -q
"""
import hashlib
import json
import os
import re
import sys
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch

import data
from model import NUM_IMAGES
import programs
import scenes
import tasks
import templates
import vqa_task
from batches import CurriculumBatches, make_batch, names_left_image_first, resize_images
from benchmark_report import text_only_baseline
from data import (DATA_SIZES, FAMILIES, SOFT_SCORE, TASKS, DataConfig, TaskSplit, Tokenizer,
                  build_benchmark, generate_split, vqa_soft_scores)
from evaluate import vqa_accuracy


def tiny(**overrides) -> DataConfig:
    return DataConfig(**{**DATA_SIZES["tiny"], "cache_dir": "", "workers": 1, **overrides})


# ------------------------------------------------------------------- scenes and rendering

def test_scenes_follow_the_config(raw):
    cfg, splits = raw
    for r in splits.values():
        assert r.images.shape[1:] == (cfg.image_size, cfg.image_size, 3) and r.images.dtype == np.uint8
        for s in r.scenes:
            assert cfg.min_objects <= len(s.objects) <= cfg.max_objects
            assert len({(o.row, o.col) for o in s.objects}) == len(s.objects)
            assert all(0 <= o.row < cfg.grid_size and 0 <= o.col < cfg.grid_size for o in s.objects)
    has_curtain = [s.curtain is not None for s in splits["entailment"].scenes]
    assert 0.2 <= 1 - np.mean(has_curtain) <= 0.25
    assert all(s.curtain is None for t in ("reasoning", "vqa") for s in splits[t].scenes)


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_fast_renderer_matches_pillow_and_curtain_hides(size):
    cfg = DataConfig(**DATA_SIZES[size]).scene_config()
    rng = np.random.default_rng(0)
    batch = [scenes.sample_scene(rng, cfg, curtain=i % 2 == 0) for i in range(40)]
    fast = scenes.render_batch(batch, cfg)
    assert np.array_equal(fast, np.stack([scenes.render(s, cfg) for s in batch]))
    for s, image in zip(batch, fast):  # removing hidden objects changes no pixel
        if s.curtain:
            bare = replace(s, objects=s.visible_objects)
            assert np.array_equal(image, scenes.render(bare, cfg))


# ----------------------------------------------------------------- determinism and splits

def test_generation_is_deterministic_and_independent_of_workers(monkeypatch):
    cfg = tiny(train_examples=96)
    monkeypatch.setattr(data, "GROUPS_PER_CHUNK", 5)  # several chunks, so two workers share them
    for task in TASKS:
        a, b = generate_split(cfg, task, "train"), generate_split(replace(cfg, workers=2), task, "train")
        assert a.images.tobytes() == b.images.tobytes()
        assert a.texts == b.texts and a.captions == b.captions and a.swapped_captions == b.swapped_captions
        assert torch.equal(a.labels, b.labels) and torch.equal(a.image_index, b.image_index)
        other = generate_split(replace(cfg, seed=1), task, "train")   # and another seed, other data
        assert other.images.tobytes() != a.images.tobytes() and other.texts != a.texts


def test_label_balance_per_family(raw):
    _, splits = raw
    for task, r in splits.items():
        for f, name in enumerate(FAMILIES[task]):
            labels = Counter(r.labels[r.family == f].tolist())
            n = sum(labels.values())
            assert n >= 60, (name, n)
            shares = sorted(v / n for v in labels.values())
            if task == "reasoning":
                assert abs(shares[-1] - 0.5) <= 0.02, (name, labels)
            elif task == "entailment":
                assert len(labels) == 3 and shares[0] >= 0.15 and shares[-1] <= 0.5, (name, labels)
            elif name in ("C1_exist_control", "C3_exist_binding", "C7_exist_relation"):
                assert len(labels) == 2 and abs(shares[-1] - 0.5) <= 0.05, (name, labels)
            else:
                assert shares[-1] <= 0.35, (name, labels)
    r = splits["entailment"]
    for group in tasks.ENTAILMENT_GROUPS:  # exactly a third of each label per group of families
        in_group = torch.isin(r.family, torch.tensor(group))
        counts = Counter(r.labels[in_group].tolist())
        assert max(counts.values()) - min(counts.values()) <= 4, (group, counts)


# ---------------------------------------------------------------------------- tokenizer

def test_tokenizer_round_trip_specials_unknowns_and_files(tmp_path):
    tok = Tokenizer.build(["There is a red circle.", "how many squares ?"])
    assert tok.itos[:5] == ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    assert (tok.PAD, tok.CLS, tok.SEP, tok.UNK, tok.MASK) == (0, 1, 2, 3, 4)
    assert tok.itos[5:] == sorted(tok.itos[5:]) and len(tok) == len(tok.itos)
    ids = tok.encode("there is a red circle .")
    assert ids[0] == tok.CLS and ids[-1] == tok.SEP and tok.UNK not in ids
    assert tok.decode(ids) == "there is a red circle ."
    assert Tokenizer.split("Red circle, left.") == ["red", "circle", ",", "left", "."]
    assert tok.encode("a purple banana")[2:4] == [tok.UNK, tok.UNK]
    batch = tok.encode_batch(["there is a red circle .", "how many ?"], max_len=10)
    assert batch.shape == (2, 10) and batch.dtype == torch.long and batch[1, 5:].eq(0).all()
    with pytest.raises(ValueError, match="how many squares"):
        tok.encode_batch(["how many squares ?"], max_len=4)
    tok.save(str(tmp_path / "tok.json"))
    assert Tokenizer.load(str(tmp_path / "tok.json")).itos == tok.itos
    assert Tokenizer.from_dict(json.loads(json.dumps(tok.to_dict()))).encode("red circle") == tok.encode("red circle")
    with pytest.raises(ValueError, match="must start with the special tokens"):   # ids would shift
        Tokenizer.from_dict({"itos": tok.itos[1:]})


def test_lexicon_covers_the_training_texts(raw):
    cfg, splits = raw
    built = Tokenizer.build([t for r in splits.values() for t in r.texts + r.captions])
    assert set(built.itos) <= set(Tokenizer(templates.lexicon(cfg)).itos)


# ---------------------------------------------------------------- benchmark and batches

@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    cfg = tiny(train_examples=48, eval_examples=24, cache_dir=str(tmp_path_factory.mktemp("cache")))
    return build_benchmark(cfg, progress=False)


def test_resize_images_enlarges_each_image_by_repeating_its_pixels():
    """vilt-b32's resize: nearest neighbour, image by image, whatever the leading dims (batches of K images,
    single images); the reference repeats each pixel, and an image already of the size is left alone."""
    images = torch.rand(2, 3, 3, 8, 8)                                    # (B, K, 3, H, W)
    reference = images.repeat_interleave(3, dim=-1).repeat_interleave(3, dim=-2)
    assert torch.equal(resize_images(images, 24), reference)
    assert torch.equal(resize_images(images[:, 0], 24), reference[:, 0])   # (B, 3, H, W)
    assert resize_images(images, 8) is images


def test_make_batch_shapes_and_mask(bench):
    cfg = bench.config
    for task in TASKS:
        split = bench.splits[task]["train"]
        index = torch.tensor([0, 3, 5])
        b = make_batch(split, index)
        assert b["images"].shape == (3, NUM_IMAGES[task], 3, cfg.image_size, cfg.image_size)
        assert b["images"].dtype == torch.float32 and -1 <= b["images"].min() and b["images"].max() <= 1
        expected = split.images[split.image_index[5, 0]].permute(2, 0, 1).float() / 255
        assert torch.allclose(b["images"][2, 0], (expected - 0.5) / 0.5)
        assert b["text_ids"].shape == (3, split.text_ids.shape[1]) and b["text_mask"].dtype == torch.bool
        assert torch.equal(b["text_mask"], b["text_ids"] != 0) and b["text_mask"][:, 0].all()
        assert torch.equal(b["labels"], split.labels[index])
        assert ("vqa_scores" in b) == (task == "vqa")
    assert bench.num_classes("reasoning") == 2 and bench.num_classes("entailment") == 3
    assert bench.num_classes("vqa") == len(bench.answers) == bench.splits["vqa"]["train"].vqa_scores.shape[1]
    captions = bench.captions["val"]
    assert len(captions) == len(captions.images) == sum(len(bench.splits[t]["val"].images) for t in TASKS)
    assert captions.swapped_ids.shape == captions.text_ids.shape
    # the same words in another order (two colours exchanged), or the caption itself where no exchange is false
    assert torch.equal(captions.swapped_ids.sort(1).values, captions.text_ids.sort(1).values)
    assert set((captions.swapped_ids != captions.text_ids).sum(1).tolist()) <= {0, 2}


def test_subset_keeps_only_the_named_families_whole(bench):
    split = bench.splits["vqa"]["train"]
    families = ["C1_exist_control", "C5_query_relation"]
    part = split.subset(families)
    keep = [i for i in range(len(split)) if split.family_names[split.family[i]] in families]
    assert len(part) == len(keep) > 0 and part.texts == [split.texts[i] for i in keep]
    for name in ("image_index", "text_ids", "labels", "family", "vqa_scores"):
        assert torch.equal(getattr(part, name), getattr(split, name)[keep]), name
    assert part.images is split.images


def test_cache_hit_returns_identical_data(bench, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("generated again despite the cache")
    monkeypatch.setattr(data, "generate_split", fail)
    again = build_benchmark(bench.config, progress=False)
    for task in TASKS:
        for s in data.SPLITS:
            a, b = bench.splits[task][s], again.splits[task][s]
            assert torch.equal(a.images, b.images) and torch.equal(a.text_ids, b.text_ids)
            assert torch.equal(a.labels, b.labels) and a.texts == b.texts
            assert (a.curtain is None) == (task != "entailment")
            assert a.curtain is None or torch.equal(a.curtain, b.curtain)
    assert again.captions["train"].texts == bench.captions["train"].texts
    assert torch.equal(again.captions["train"].swapped_ids, bench.captions["train"].swapped_ids)
    assert not [f for f in os.listdir(bench.config.cache_dir) if f.endswith(".tmp")]


def test_a_damaged_cache_entry_is_rendered_again(tmp_path, capsys):
    """A cache is only a cache: an entry that cannot be read is rendered again (and said so), the same data."""
    cfg = tiny(train_examples=48, eval_examples=24, cache_dir=str(tmp_path / "cache"))
    first = build_benchmark(cfg, tasks=("vqa",), progress=False)
    for path in (tmp_path / "cache").glob("vqa_val_*.pt"):
        path.write_bytes(b"truncated")
    again = build_benchmark(cfg, tasks=("vqa",), progress=False)
    assert "the cached vqa val split" in capsys.readouterr().err
    assert torch.equal(first.splits["vqa"]["val"].text_ids, again.splits["vqa"]["val"].text_ids)
    build_benchmark(cfg, tasks=("vqa",), progress=False)   # written anew, so read without a word
    assert "cannot be read" not in capsys.readouterr().err
    (tmp_path / "a-file").write_text("")
    for under in ("", "sub", "sub/sub"):   # the file itself, or a folder under it: refused before any rendering
        with pytest.raises(ValueError, match="--cache-dir .*a-file is a file, not a folder"):
            tiny(cache_dir=str(tmp_path / "a-file" / under)).validate()


def test_train_examples_truncates_training_split_only(tmp_path):
    small = build_benchmark(tiny(train_examples=30, eval_examples=20), tasks=("vqa", "reasoning"), progress=False)
    large = build_benchmark(tiny(train_examples=60, eval_examples=20), tasks=("vqa", "reasoning"), progress=False)
    for task in ("vqa", "reasoning"):
        a, b = small.splits[task]["train"], large.splits[task]["train"]
        assert len(a) == 30 and len(b) == 60 and b.texts[:30] == a.texts
        assert torch.equal(b.labels[:30], a.labels) and torch.equal(b.images[: len(a.images)], a.images)
        for s in ("val", "test"):
            assert small.splits[task][s].texts == large.splits[task][s].texts
            assert torch.equal(small.splits[task][s].images, large.splits[task][s].images)


def test_splits_share_no_image(bench):
    for task in TASKS:
        seen = {s: {hashlib.sha1(im.numpy().tobytes()).hexdigest() for im in bench.splits[task][s].images}
                for s in data.SPLITS}
        assert not (seen["train"] & seen["val"] or seen["train"] & seen["test"] or seen["val"] & seen["test"])


def test_each_entailment_example_knows_whether_its_image_has_a_curtain(raw, bench):
    """The flag the curtain breakdown of the results reads: from the scene, and only there is "neutral" possible."""
    r = raw[1]["entailment"]
    assert r.curtain.any() and not r.curtain.all()
    split = bench.splits["entailment"]["train"]
    neutral = split.labels == programs.ENTAILMENT_LABELS.index("neutral")
    assert split.curtain[neutral].all() and neutral[split.curtain].any()
    assert set(split.labels[~split.curtain].tolist()) == {programs.ENTAILMENT_LABELS.index(x)
                                                               for x in ("entailment", "contradiction")}


def test_each_split_is_padded_to_its_longest_text_not_to_max_text_len(bench):
    """A model's cost grows with the text's length: no column may be padding in every row. --max-text-len
    is a cap (and the size of the models' position table), so raising it changes no split."""
    wider = build_benchmark(replace(bench.config, max_text_len=64), progress=False)
    for splits, wide_splits in ((bench.splits[t], wider.splits[t]) for t in TASKS):
        for name, split in splits.items():
            lengths = (split.text_ids != 0).sum(1)
            assert split.text_ids.shape[1] == lengths.max() < bench.config.max_text_len, name
            assert torch.equal(split.text_ids, wide_splits[name].text_ids)
    for name, captions in bench.captions.items():   # captions and their colour-swapped twins share one width
        lengths = torch.cat([(captions.text_ids != 0).sum(1), (captions.swapped_ids != 0).sum(1)])
        assert captions.text_ids.shape[1] == captions.swapped_ids.shape[1] == lengths.max(), name


def test_too_long_text_raises(bench):
    cfg = replace(bench.config, max_text_len=8)
    with pytest.raises(SystemExit, match="--max-text-len 8: a text needs"):
        build_benchmark(cfg, progress=False)


@pytest.mark.parametrize("field, value", [
    ("image_size", 16), ("grid_size", 1), ("cell_size", 2), ("min_objects", 1), ("max_objects", 2),
    ("max_objects", 17), ("num_colours", 7), ("small_size", 0.95), ("large_size", 1.5), ("jitter", -1),
    ("curtain_min_cells", 0), ("curtain_max_cells", 1), ("vqa_questions_per_image", 0), ("vqa_questions_per_image", 17),
    ("vqa_noise", 1.0), ("train_examples", 0), ("eval_examples", 0), ("max_text_len", 4), ("max_text_len", 513),
    ("seed", -1), ("workers", -1),
])
def test_bad_config_raises_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        tiny(**{field: value}).validate()
    with pytest.raises(ValueError, match="tasks"):
        build_benchmark(tiny(), tasks=("captioning",), progress=False)


# ---------------------------------------------------------------------- VQA soft scores

def test_soft_score_equals_official_leave_one_out_accuracy():
    for k in range(11):  # an answer given by k of 10 annotators
        votes = [1] * k + [0] * (10 - k)
        official = np.mean([min(1.0, sum(votes[:i] + votes[i + 1:]) / 3) for i in range(10)])
        assert abs(official - SOFT_SCORE[min(k, 4)]) < 1e-9


def test_vqa_scores_and_accuracy(raw):
    cfg, splits = raw
    annotators = torch.tensor([[0] * 10, [0] * 7 + [1] * 3, [2] * 2 + [3] * 8])
    scores = vqa_soft_scores(annotators, 5)
    assert torch.allclose(scores[1], torch.tensor([1.0, 0.9, 0, 0, 0]))
    assert torch.allclose(scores[2], torch.tensor([0, 0, 0.6, 1.0, 0]))
    logits = torch.tensor([[0.0, 1, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0]])
    assert torch.allclose(vqa_accuracy(logits, scores), torch.tensor([0.0, 0.9, 0.6]))
    r = splits["vqa"]
    right = (r.annotators == r.labels[:, None]).float().mean()
    assert abs(right - (1 - cfg.vqa_noise)) < 0.02  # noisy annotators, as configured
    scores = vqa_soft_scores(r.annotators, len(vqa_task.answer_vocabulary(cfg)))
    assert (scores.gather(1, r.labels[:, None]) >= 0.9).float().mean() > 0.97


@pytest.mark.parametrize("statement, left_first", [
    ("the left image contains a large red circle .", True),
    ("the right image contains a red circle .", False),
    ("in the right image a red circle is left of a blue square .", False),     # "left of" is a relation
    ("in the left image a red circle is right of a blue square .", True),
    ("the left image has more red objects than the right image .", True),
    ("the right image has more circles than the left image .", False),
    ("there are more red circles in the left image than in the right image .", True),
    ("there are more red circles in the right image than in the left image .", False),
    ("the left image has exactly two red circles .", True),
    ("both images contain a red circle .", False),
    ("exactly one image contains a circle left of a square .", False),
])
def test_names_left_image_first(statement, left_first):
    assert names_left_image_first(statement) == left_first


def test_the_curriculum_stage_has_both_labels_in_every_directional_family(raw):
    """Its statements must not give the label away: true and false in each family that names an image."""
    split = raw[1]["reasoning"]
    by_family = {}
    for text, label, family in zip(split.texts, split.labels.tolist(), split.family.tolist()):
        if names_left_image_first(text):
            by_family.setdefault(family, []).append(label)
    assert set(by_family) == {0, 1, 3, 4}           # A1, A2, A4, A5; A3 says "both" or "exactly one image"
    for family, labels in by_family.items():
        assert 0.3 < sum(labels) / len(labels) < 0.7, (family, sum(labels), len(labels))


class Stream:
    """A stand-in batch stream: batches are (name, i)."""

    def __init__(self, name):
        self.name, self.i = name, 0

    def next(self):
        self.i += 1
        return (self.name, self.i)

    def state_dict(self):
        return {"i": self.i}

    def load_state_dict(self, state):
        self.i = state["i"]


def test_curriculum_batches_switch_after_their_steps_and_resume_exactly():
    batches = CurriculumBatches(Stream("first"), Stream("then"), steps=2)
    assert [batches.next() for _ in range(4)] == [("first", 1), ("first", 2), ("then", 1), ("then", 2)]
    batches = CurriculumBatches(Stream("first"), Stream("then"), steps=2)
    batches.next()
    resumed = CurriculumBatches(Stream("first"), Stream("then"), steps=2)
    resumed.load_state_dict(batches.state_dict())
    assert [resumed.next() for _ in range(3)] == [("first", 2), ("then", 1), ("then", 2)]


def hand_split(texts, families, labels, curtain=None, vqa_scores=None):
    n = len(texts)
    return TaskSplit("entailment", images=torch.zeros(1, 4, 4, 3, dtype=torch.uint8),
                     image_index=torch.zeros(n, 1, dtype=torch.long), text_ids=torch.zeros(n, 2, dtype=torch.long),
                     labels=torch.tensor(labels), family=torch.tensor(families), family_names=["F0", "F1"],
                     texts=texts, vqa_scores=vqa_scores,
                     curtain=None if curtain is None else torch.tensor(curtain, dtype=torch.bool))


def test_text_only_baseline_counted_by_hand():
    train = hand_split(["a", "a", "a", "b", "b"], [0, 0, 0, 1, 1], [1, 1, 0, 2, 2], curtain=[1, 1, 0, 0, 0])
    test = hand_split(["a", "b", "c", "d"], [0, 1, 0, 1], [1, 2, 0, 2], curtain=[0, 1, 1, 0])
    # a -> 1 (right), b -> 2 (right), unseen c -> family 0's majority 1 (wrong), unseen d -> family 1's 2 (right)
    assert text_only_baseline(train, test) == {"all": 75.0}
    # keyed by the curtain: ("a", no curtain) -> 0 (wrong); ("b", curtain) unseen, (family 1, curtain) unseen
    # -> label 0 (wrong); ("c", curtain) -> (family 0, curtain) -> 1 (wrong); ("d", no curtain) -> 2 (right)
    assert text_only_baseline(train, test, with_curtain=True) == {
        "all": 25.0, "image without curtain": 50.0, "image with curtain": 0.0}
    scores = torch.tensor([[0.0, 0.3, 1.0]] * 4)   # VQA: the soft score of the guessed answer
    vqa = replace(test, vqa_scores=scores)
    assert text_only_baseline(train, vqa)["all"] == pytest.approx(100 * (0.3 + 1.0 + 0.3 + 1.0) / 4)


@pytest.mark.parametrize("program", ["data.py", "train.py"])
def test_scene_flags_that_leave_too_few_scenes_are_one_line_naming_them(program, tmp_path):
    """Two objects of two colours cannot carry 16 different questions per image (the most allowed, which
    the default scenes carry): the programs say which flags to change, not a stack trace."""
    import subprocess
    narrow = ["--size", "tiny", "--tasks", "vqa", "--min-objects", "2", "--max-objects", "2", "--num-colours", "2",
              "--vqa-questions-per-image", "16", "--cache-dir", "", "--workers", "1"]
    extra = ["--rows", "dual", "--out-dir", str(tmp_path / "run"), "--progress", "false"] if program == "train.py" else []
    done = subprocess.run([sys.executable, program, *narrow, *extra], cwd=os.path.dirname(data.__file__),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: vqa group") and "--vqa-questions-per-image 16" in last and "--max-objects 2" in last
    cfg = tiny(vqa_questions_per_image=16).validate()   # the default tiny scenes carry 16
    assert len(vqa_task.vqa_group(np.random.default_rng(0), 0, cfg)[1]) == 16


def test_data_program_reports_the_chosen_families_and_refuses_unknown_ones(tmp_path, monkeypatch, capsys):
    argv = ["data.py", "--size", "tiny", "--tasks", "entailment", "--cache-dir", str(tmp_path), "--workers", "1"]
    monkeypatch.setattr(sys, "argv", argv + ["--families", "B1_exist,B2_not_exist"])
    data.main()
    out = capsys.readouterr().out
    assert "B1_exist" in out and "B2_not_exist" in out and "B5_relation_exist" not in out
    assert "text-only baseline on test" in out and "image without curtain" in out
    kept = re.search(r"colour-swapped negatives false of their image: ([\d.]+)% of train", out)
    assert kept and 85 < float(kept.group(1)) < 100       # tiny entailment: about 92%
    for families, error in (("B1_exists", "'B1_exists' is not a family of --tasks entailment"),
                            ("A1_binding", "'A1_binding' is not a family of --tasks entailment")):
        monkeypatch.setattr(sys, "argv", argv + ["--families", families])
        with pytest.raises(SystemExit):
            data.main()
        assert error in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", argv + ["--tasks", "entailment,vqa", "--families", "B1_exist"])  # the last --tasks
    with pytest.raises(SystemExit):
        data.main()
    assert "leaves a task of --tasks entailment,vqa with no family" in capsys.readouterr().err
    for sheet, error in ((tmp_path / "no" / "s.png", "the folder"), (tmp_path / "s.txt", "must end in .png")):
        monkeypatch.setattr(sys, "argv", argv + ["--sheet", str(sheet)])   # refused before the build, not after
        with pytest.raises(SystemExit):
            data.main()
        assert error in capsys.readouterr().err
