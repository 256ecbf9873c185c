"""The built-in procedural benchmark: three tasks (tasks.py, vqa_task.py) on one scene grammar (scenes.py).

This file holds the configuration, the word-level tokenizer, generation with its cache,
and the tensors of each split (`build_benchmark`); batches.py draws training batches from
them, and benchmark_report.py describes them (`python data.py`). The tasks:

- reasoning  (NLVR2-like):   two images + statement -> True / False
- entailment (SNLI-VE-like): image + hypothesis -> entailment / neutral / contradiction;
  a hatched curtain hides a few cells and is the principled source of "neutral"
- vqa        (VQA v2-like):  image + question -> answer; ten synthetic annotators give
  the VQA soft scores
plus one caption per image, and a copy of it with two colours exchanged that is false of the
image where an exchange can be (the caption itself elsewhere), for image-text matching.

Each task has question *families* (README, "The benchmark"): a template plus a program.
The label is always what the program returns on the symbolic scene (programs.execute,
programs.entailment_label), never string logic. Labels are balanced per family by
rejection sampling: a text's skeleton (family, bound, which attributes) is drawn first,
then scenes and attribute values until the planned label comes out, so that the text
alone says little about the label. Every group of examples (one scene, or two scene pairs for
reasoning) has its own random stream seeded by (seed, task, split, group), so generation
is order-independent and a larger training set extends a smaller one. Rendered splits are
cached under cache_dir, keyed by a hash of every setting that changes them.

    python data.py --size tiny                   # build; print counts, balance, text-only baseline, examples
    python data.py --size small --sheet s.png    # the default benchmark, plus a contact sheet
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial

import numpy as np
import torch
from tqdm import tqdm

from checkpoint import atomic_write, check_out_file, check_out_folder
from config import add_flags, check_each_once, given_values, split_list
from runtime import interrupt_on_signals, raise_if_interrupted
from scenes import Scene, SceneConfig, render_batch
from tasks import FAMILIES, IMAGE_PLAN, TooFewScenes, check_families, entailment_group, reasoning_group
from vqa_task import answer_vocabulary, vqa_group
from templates import caption_clauses, caption_text, count_clause, lexicon, swapped_caption

TASKS = ("reasoning", "entailment", "vqa")
SPLITS = ("train", "val", "test")
SOFT_SCORE = (0.0, 0.3, 0.6, 0.9, 1.0)  # VQA score of an answer given by 0, 1, 2, 3, >=4 annotators
GROUPS_PER_CHUNK = 100                # groups per task given to a worker process
VERSION = 4                           # bump when generation or the cached fields change, to invalidate caches


@dataclass
class DataConfig:
    image_size: int = 64              # image side in pixels
    grid_size: int = 6                # grid cells per side, at most one object per cell
    cell_size: int = 10               # cell side in pixels (10 px cells straddle 8 px patches)
    min_objects: int = 6              # fewest objects in a scene
    max_objects: int = 9              # most objects in a scene
    num_colours: int = 6              # colours in use: red green blue yellow purple cyan
    small_size: float = 0.5           # side of a small object / side of a cell
    large_size: float = 0.9           # side of a large object / side of a cell
    jitter: int = 1                   # max shift of an object's centre in pixels
    curtain_min_cells: int = 2        # entailment: fewest cells a curtain hides
    curtain_max_cells: int = 4        # entailment: most cells a curtain hides
    vqa_questions_per_image: int = 4  # VQA questions sharing one image
    vqa_noise: float = 0.1            # chance that a synthetic annotator gives a wrong answer
    train_examples: int = 40000       # training examples per task
    eval_examples: int = 2000         # validation and test examples per task
    max_text_len: int = 32            # text length in tokens, [CLS] and [SEP] included
    caption_counts: bool = False      # captions end by counting one shape ("two circles ."): shapes without binding
    seed: int = 0                     # generation seed (tasks and splits get their own streams)
    cache_dir: str = "cache"          # where rendered splits are kept; "" disables the cache
    workers: int = 0                  # generation processes, 0 = one per CPU core (same data)

    def scene_config(self) -> SceneConfig:
        return SceneConfig(**{f.name: getattr(self, f.name) for f in fields(SceneConfig)})

    def validate(self) -> DataConfig:
        self.scene_config().validate()
        for name, ok, why in [
            ("vqa_questions_per_image", 1 <= self.vqa_questions_per_image <= 16,   # VQA v2: about 5.4
             "must be in 1..16: one scene has too few different questions for more"),
            ("vqa_noise", 0.0 <= self.vqa_noise < 1.0, "must be in [0, 1)"),
            ("train_examples", self.train_examples >= 1, "must be >= 1"),
            ("eval_examples", self.eval_examples >= 1, "must be >= 1"),
            ("max_text_len", self.max_text_len >= 8, "must be >= 8"),
            ("seed", self.seed >= 0, "must be >= 0"),
            ("workers", self.workers >= 0, "must be >= 0"),
            ("max_text_len", self.max_text_len <= 512, "must be <= 512 (BERT's longest)"),
        ]:
            if not ok:
                raise ValueError(f"{name}={getattr(self, name)!r}: {why}")
        if self.cache_dir:   # "" disables the cache
            check_out_folder("cache-dir", self.cache_dir)
        return self


DATA_SIZES = {
    # 32 px, 4x4 cells of 8 px, a few hundred examples per task: seconds on a CPU (tests).
    "tiny": dict(image_size=32, grid_size=4, cell_size=8, min_objects=3, max_objects=5,
                 num_colours=4, train_examples=384, eval_examples=96),
    "small": dict(),  # the defaults: 64 px, 6x6 cells of 10 px, 6-9 objects, 6 colours
}


def data_preset(model_size: str) -> dict:
    """The benchmark a model size trains on: its own preset, or the default (small) benchmark
    (mini and vilt-b32 read the 64 px scenes; vilt-b32 resizes them per batch)."""
    return DATA_SIZES.get(model_size, DATA_SIZES["small"])


# ----------------------------------------------------------------------------- tokenizer

class Tokenizer:
    """Word level, lower-case, punctuation as separate tokens; specials first."""
    SPECIALS = ("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]")
    PAD, CLS, SEP, UNK, MASK = range(5)

    def __init__(self, words):
        self.itos = list(self.SPECIALS) + sorted(set(words) - set(self.SPECIALS))  # sorted: deterministic
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @staticmethod
    def split(text: str) -> list[str]:
        return re.findall(r"[a-z0-9]+|[^\sa-z0-9]", text.lower())

    @classmethod
    def build(cls, texts) -> Tokenizer:
        return cls({w for t in texts for w in cls.split(t)})

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        """[CLS] words [SEP]; unknown words become [UNK]."""
        return [self.CLS, *(self.stoi.get(w, self.UNK) for w in self.split(text)), self.SEP]

    def decode(self, ids) -> str:
        return " ".join(self.itos[i] for i in ids if i not in (self.PAD, self.CLS, self.SEP))

    def encode_batch(self, texts, max_len: int | None = None) -> torch.Tensor:
        """long [N, max_len] padded with [PAD] = 0 (max_len None: the longest text)."""
        encoded = {t: self.encode(t) for t in set(texts)}  # texts repeat, often
        longest = max((len(ids) for ids in encoded.values()), default=0)
        if max_len is not None and longest > max_len:
            text = next(t for t in texts if len(encoded[t]) > max_len)
            raise ValueError(f"text needs {len(encoded[text])} tokens, more than max_len={max_len}: {text!r}")
        out = np.zeros((len(texts), longest if max_len is None else max_len), dtype=np.int64)
        for row, text in enumerate(texts):
            out[row, : len(encoded[text])] = encoded[text]
        return torch.from_numpy(out)

    def to_dict(self) -> dict:
        return {"itos": list(self.itos)}

    @classmethod
    def from_dict(cls, d: dict) -> Tokenizer:
        if tuple(d["itos"][: len(cls.SPECIALS)]) != cls.SPECIALS:
            raise ValueError("a tokenizer vocabulary must start with the special tokens")
        tok = cls(())
        tok.itos, tok.stoi = list(d["itos"]), {w: i for i, w in enumerate(d["itos"])}
        return tok

    def save(self, path: str) -> None:
        atomic_write(path, lambda f: f.write(json.dumps(self.to_dict()).encode()))

    @classmethod
    def load(cls, path: str) -> Tokenizer:
        with open(path) as f:
            return cls.from_dict(json.load(f))


# ------------------------------------------------------------------ generation and cache

GROUPS = {"reasoning": reasoning_group, "entailment": entailment_group, "vqa": vqa_group}


@dataclass
class RawSplit:
    """One generated split of one task, as cached: before padding and before tensors move."""
    images: np.ndarray           # uint8 [N_img, H, W, 3]
    image_index: torch.Tensor    # long [N, K]
    labels: torch.Tensor         # long [N]
    family: torch.Tensor         # long [N]
    text_ids: torch.Tensor       # long [N, l], padded to the longest text of the split
    caption_ids: torch.Tensor    # long [N_img, l]
    swapped_caption_ids: torch.Tensor  # long [N_img, l]: each caption with two colours exchanged (pretrain.py)
    curtain: torch.Tensor        # bool [N_img]: a curtain hides some cells (all False outside entailment)
    texts: list[str]             # statement / hypothesis / question per example
    captions: list[str]          # one per image
    swapped_captions: list[str]  # one per image (its caption where no exchange is false: pretrain.py)
    annotators: torch.Tensor | None = None  # vqa: long [N, 10] answer indices
    scenes: list[Scene] | None = None       # the symbolic scenes (not kept in the cache)


def split_size(cfg: DataConfig, split: str) -> int:
    return cfg.train_examples if split == "train" else cfg.eval_examples


def examples_per_group(cfg: DataConfig, task: str) -> int:
    return {"reasoning": 4, "entailment": len(IMAGE_PLAN[0][0][1]), "vqa": cfg.vqa_questions_per_image}[task]


def generate_groups(cfg: DataConfig, task: str, split: str, groups: range):
    """Groups `groups` of a split: (images uint8 [N_img, H, W, 3], scenes, captions, swapped captions,
    examples)."""
    scenes, captions, swapped, rows = [], [], [], []
    for g in groups:
        rng = np.random.default_rng([cfg.seed, TASKS.index(task), SPLITS.index(split), g])
        group_scenes, examples = GROUPS[task](rng, g, cfg)
        clauses = [caption_clauses(rng, s) for s in group_scenes]
        if cfg.caption_counts:   # drawn after every other clause: those stay as without the flag
            clauses = [c + [count_clause(rng, s)] for c, s in zip(clauses, group_scenes)]
        group_captions = [caption_text(c, s.curtain is not None) for c, s in zip(clauses, group_scenes)]
        captions += group_captions
        swapped += [swapped_caption(rng, s, c) or text   # no exchange false: the caption itself
                    for c, s, text in zip(clauses, group_scenes, group_captions)]
        rows += [(tuple(len(scenes) + i for i in k), *rest) for k, *rest in examples]
        scenes += group_scenes
    scenes = [Scene(s.objects, s.background, s.curtain) for s in scenes]  # drop cached properties
    return render_batch(scenes, cfg.scene_config()), scenes, captions, swapped, rows


def generate_split(cfg: DataConfig, task: str, split: str, progress: bool = False) -> RawSplit:
    """Generate, render and tokenise one split. Group g has its own random stream
    (seed, task, split, g), so chunks of groups can go to worker processes."""
    n = split_size(cfg, split)
    groups = -(-n // examples_per_group(cfg, task))
    chunks = [range(a, min(a + GROUPS_PER_CHUNK, groups)) for a in range(0, groups, GROUPS_PER_CHUNK)]
    workers = min(cfg.workers or os.cpu_count() or 1, len(chunks))
    if "fork" not in multiprocessing.get_all_start_methods():
        workers = 1  # spawned workers would re-import the caller's script: stay serial
    images, scenes, captions, swapped, rows = [], [], [], [], []
    with (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) if workers > 1
          else nullcontext()) as pool:
        parts = (pool.map if pool else map)(partial(generate_groups, cfg, task, split), chunks)
        for part_images, part_scenes, part_captions, part_swapped, part_rows in tqdm(
                parts, total=len(chunks), desc=f"{task}/{split}", disable=not progress, leave=False):
            raise_if_interrupted()
            rows += [(tuple(len(scenes) + i for i in k), *rest) for k, *rest in part_rows]
            images.append(part_images)
            scenes += part_scenes
            captions += part_captions
            swapped += part_swapped
    rows = rows[:n]  # the last group may be cut; its images stay (a prefix is a prefix)
    texts, tokenizer, answers = [r[1] for r in rows], Tokenizer(lexicon(cfg)), answer_vocabulary(cfg)
    text_ids, caption_ids = tokenizer.encode_batch(texts), tokenizer.encode_batch(captions)
    swapped_ids = tokenizer.encode_batch(swapped)
    if (text_ids == Tokenizer.UNK).any() or (caption_ids == Tokenizer.UNK).any():
        raise RuntimeError("a template produced a word missing from lexicon()")
    return RawSplit(
        images=np.concatenate(images),
        image_index=torch.tensor([r[0] for r in rows], dtype=torch.long),
        labels=torch.tensor([r[2] for r in rows], dtype=torch.long),
        family=torch.tensor([r[3] for r in rows], dtype=torch.long),
        text_ids=text_ids, caption_ids=caption_ids, swapped_caption_ids=swapped_ids, texts=texts,
        captions=captions, swapped_captions=swapped, scenes=scenes,
        curtain=torch.tensor([s.curtain is not None for s in scenes], dtype=torch.bool),
        annotators=torch.tensor([[answers.index(a) for a in r[4]] for r in rows], dtype=torch.long)
        if task == "vqa" else None)


def cache_key(cfg: DataConfig, task: str, split: str) -> str:
    """A hash of every setting that changes this split (not max_text_len: padding happens
    after loading; not the other splits' size)."""
    settings = {k: v for k, v in asdict(cfg).items()
                if k not in ("cache_dir", "workers", "max_text_len", "train_examples", "eval_examples")}
    settings.update(task=task, split=split, examples=split_size(cfg, split), version=VERSION)
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def load_split(cfg: DataConfig, task: str, split: str, progress: bool = False) -> RawSplit:
    """The cached split if there is one, else generate it and cache it: images in .npy,
    texts in .json, tensors in .pt (written last, so its presence marks a complete entry)."""
    if not cfg.cache_dir:
        return generate_split(cfg, task, split, progress)
    stem = os.path.join(cfg.cache_dir, f"{task}_{split}_{cache_key(cfg, task, split)}")
    if all(os.path.exists(stem + ext) for ext in (".npy", ".json", ".pt")):
        try:
            with open(stem + ".json") as f:
                texts = json.load(f)
            return RawSplit(images=np.load(stem + ".npy"), **texts, **torch.load(stem + ".pt", weights_only=True))
        except Exception as error:   # damaged (a full disk, a hand edit), and torch.load's unpickler then
            # raises errors of many kinds; a cache can always be rebuilt
            print(f"the cached {task} {split} split {stem}.* cannot be read ({type(error).__name__}: "
                  f"{str(error)[:120]}); rendering it again", file=sys.stderr, flush=True)
    raw = generate_split(cfg, task, split, progress)
    os.makedirs(cfg.cache_dir, exist_ok=True)
    atomic_write(stem + ".npy", lambda f: np.save(f, raw.images))
    texts = {"texts": raw.texts, "captions": raw.captions, "swapped_captions": raw.swapped_captions}
    atomic_write(stem + ".json", lambda f: f.write(json.dumps(texts).encode()))
    tensors = {k: getattr(raw, k) for k in ("image_index", "labels", "family", "text_ids", "caption_ids",
                                          "swapped_caption_ids", "curtain", "annotators")}
    atomic_write(stem + ".pt", lambda f: torch.save(tensors, f))
    return raw


# ------------------------------------------------------------------------------ tensors

def _to(obj, device):
    """A copy of the dataclass `obj` with every tensor field moved to `device`."""
    return replace(obj, **{f.name: getattr(obj, f.name).to(device) for f in fields(obj)
                           if isinstance(getattr(obj, f.name), torch.Tensor)})


@dataclass
class TaskSplit:
    task: str
    images: torch.Tensor         # uint8 [N_img, H, W, 3], shared by examples
    image_index: torch.Tensor    # long [N, K], K = model.NUM_IMAGES[task]
    text_ids: torch.Tensor       # long [N, L]
    labels: torch.Tensor         # long [N] (vqa: index of the noise-free answer)
    family: torch.Tensor         # long [N], index into family_names
    family_names: list[str]
    texts: list[str]
    vqa_scores: torch.Tensor | None = None  # float [N, A] VQA soft scores (vqa only)
    curtain: torch.Tensor | None = None     # bool [N]: the example's image has a curtain (entailment only)

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device) -> TaskSplit:
        return _to(self, device)

    def subset(self, families: list[str]) -> TaskSplit:
        """Only the examples of the named families (the images stay shared)."""
        names = torch.tensor([self.family_names.index(f) for f in families], device=self.family.device)
        return self.select(torch.isin(self.family, names))

    def select(self, keep: torch.Tensor) -> TaskSplit:
        """Only the examples where `keep` (bool [N]) is True (the images stay shared)."""
        rows = keep.nonzero().flatten().tolist()
        return replace(self, image_index=self.image_index[keep], text_ids=self.text_ids[keep],
                       labels=self.labels[keep], family=self.family[keep], texts=[self.texts[i] for i in rows],
                       vqa_scores=None if self.vqa_scores is None else self.vqa_scores[keep],
                       curtain=None if self.curtain is None else self.curtain[keep])


@dataclass
class CaptionSplit:
    images: torch.Tensor         # uint8 [N_img, H, W, 3], every image of every task built
    text_ids: torch.Tensor       # long [N_img, L], one caption per image
    swapped_ids: torch.Tensor    # long [N_img, L], each caption with two colours exchanged (pretrain.py)
    texts: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def to(self, device) -> CaptionSplit:
        return _to(self, device)


@dataclass
class Benchmark:
    config: DataConfig
    tokenizer: Tokenizer
    answers: list[str]                                      # VQA answer vocabulary
    splits: dict[str, dict[str, TaskSplit]] = field(default_factory=dict)  # [task][split]
    captions: dict[str, CaptionSplit] = field(default_factory=dict)        # [split]

    def num_classes(self, task: str) -> int:
        return {"reasoning": 2, "entailment": 3, "vqa": len(self.answers)}[task]

    @property
    def max_text_len(self) -> int:
        return self.config.max_text_len


def vqa_soft_scores(annotators: torch.Tensor, num_answers: int) -> torch.Tensor:
    """long [N, 10] annotator answers -> float [N, A]: each distinct answer given by n
    annotators scores SOFT_SCORE[min(n, 4)] (ViLT / BUTD), every other answer 0."""
    counts = torch.zeros(len(annotators), num_answers, dtype=torch.long)
    counts.scatter_add_(1, annotators, torch.ones_like(annotators))
    return torch.tensor(SOFT_SCORE)[counts.clamp(max=len(SOFT_SCORE) - 1)]


def _pad(ids: torch.Tensor, texts: list[str], max_len: int, width: int | None = None) -> torch.Tensor:
    """long [N, l] -> [N, width], width None: the longest text's length. A text longer than max_len
    is an error (one line), not a cut. Padded to the longest text, not to max_len: a model's cost
    grows with the text's length, and padding never changes its answer (tests/test_model.py)."""
    lengths = (ids != Tokenizer.PAD).sum(dim=1)
    if len(ids) and int(lengths.max()) > max_len:
        i = int(lengths.argmax())
        raise SystemExit(f"error: --max-text-len {max_len}: a text needs {int(lengths[i])} tokens: {texts[i]!r}")
    width = width or (int(lengths.max()) if len(ids) else 1)
    return torch.nn.functional.pad(ids[:, :width], (0, max(0, width - ids.shape[1])))


def build_benchmark(cfg: DataConfig, tasks=TASKS, progress: bool = True) -> Benchmark:
    """Load (or generate and cache) every split of `tasks`."""
    cfg.validate()
    if not tasks or set(tasks) - set(TASKS):
        raise ValueError(f"tasks={tasks!r}: each must be one of {TASKS}")
    tasks = [t for t in TASKS if t in tasks]
    # The template lexicon is the vocabulary: every word of every generated text is in it
    # (generate_split checks), and it does not depend on the tasks or the number of examples.
    bench = Benchmark(cfg, Tokenizer(lexicon(cfg)), answer_vocabulary(cfg))
    for t in tasks:
        bench.splits[t] = {}
    for s in SPLITS:
        raw = {t: load_split(cfg, t, s, progress) for t in tasks}
        raise_if_interrupted()
        # One tensor holds every image of the split; each task's images are a view of it.
        images = torch.from_numpy(np.concatenate([raw[t].images for t in tasks]))  # uint8 [N_img, H, W, 3]
        start = 0
        for t, r in raw.items():
            bench.splits[t][s] = TaskSplit(
                t, images[start: start + len(r.images)], r.image_index, _pad(r.text_ids, r.texts, cfg.max_text_len),
                r.labels, r.family, list(FAMILIES[t]), r.texts,
                vqa_scores=vqa_soft_scores(r.annotators, len(bench.answers)) if t == "vqa" else None,
                curtain=r.curtain[r.image_index[:, 0]] if t == "entailment" else None)   # bool [N], of its image
            start += len(r.images)
        captions = [c for t in tasks for c in raw[t].captions]
        width = max(int((ids != Tokenizer.PAD).sum(1).max()) for t in tasks
                    for ids in (raw[t].caption_ids, raw[t].swapped_caption_ids))   # one for every caption
        caption_ids = torch.cat([_pad(raw[t].caption_ids, raw[t].captions, cfg.max_text_len, width) for t in tasks])
        swapped_ids = torch.cat([_pad(raw[t].swapped_caption_ids, raw[t].swapped_captions, cfg.max_text_len, width)
                                 for t in tasks])
        bench.captions[s] = CaptionSplit(images, caption_ids, swapped_ids, captions)
    return bench


def check_tasks(tasks: list[str]) -> None:
    """--tasks (train.py and data.py): raise ValueError naming the first unknown or repeated task."""
    if not tasks:
        raise ValueError(f"--tasks must name at least one of {', '.join(TASKS)}")
    check_each_once("tasks", tasks)
    for task in tasks:
        if task not in TASKS:
            raise ValueError(f"--tasks: unknown task {task!r}; choose from {', '.join(TASKS)}")


def only_families(splits: dict, task: str, families: list[str]) -> dict:
    """A task's splits ({name: TaskSplit}) cut to those of `families` (--families) that are the task's
    own; all of its examples when none are."""
    chosen = [f for f in families if f in FAMILIES[task]]
    return {name: split.subset(chosen) for name, split in splits.items()} if chosen else splits


# ---------------------------------------------------------------------------------- main

def add_benchmark_flags(parser) -> None:
    """--size and one flag per DataConfig field (data.py and export.py read the benchmark as train.py does)."""
    from model import MODEL_SIZES
    parser.add_argument("--size", choices=list(MODEL_SIZES), default="small",
                        help="the benchmark train.py --size trains on (mini and vilt-b32: small's) (default: small)")
    add_flags(parser, DataConfig)  # every field, overriding the preset


def benchmark_config(args) -> DataConfig:
    """The --size preset, then the DataConfig flags given; ValueError names a bad setting."""
    return DataConfig(**{**data_preset(args.size), **given_values(args, DataConfig)}).validate()


def parse_args(argv=None) -> tuple[DataConfig, list[str], list[str], str]:
    """Flags -> (DataConfig, tasks, families, contact sheet path); a bad value exits with one line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks to build")
    parser.add_argument("--families", default="", help="report only these question families, as train.py's --families")
    parser.add_argument("--sheet", default="", help="save a PNG contact sheet of validation examples here")
    add_benchmark_flags(parser)
    args = parser.parse_args(argv)
    tasks, families = split_list(args.tasks), split_list(args.families)
    try:
        cfg = benchmark_config(args)
        check_tasks(tasks)
        check_families(families, tasks)
        if args.sheet:
            check_out_file("sheet", args.sheet, extensions=(".png",))
    except ValueError as error:
        parser.error(str(error))
    return cfg, tasks, families, args.sheet


def main(argv=None) -> None:
    from benchmark_report import contact_sheet, report   # here: it imports this file
    cfg, tasks, families, sheet = parse_args(argv)
    start = time.time()
    bench = build_benchmark(cfg, tasks=tasks)
    print(f"built in {time.time() - start:.1f} s")
    for task, splits in bench.splits.items():
        bench.splits[task] = only_families(splits, task, families)
    print(report(bench, families=families))
    if sheet:
        contact_sheet(bench, sheet)
        print(f"contact sheet: {sheet}")


if __name__ == "__main__":
    interrupt_on_signals()
    try:
        main()
    except TooFewScenes as error:   # scene flags that leave too little variety: which, not a stack trace
        raise SystemExit(f"error: {error}") from None
    except KeyboardInterrupt:   # Ctrl-C or SIGTERM: each split is cached whole or not at all
        raise SystemExit("\nstopped; the splits already cached stay cached, the others are rendered "
                         "next time.") from None
