"""Real data sets as training batches: VQA v2, NLVR2 and SNLI-VE, read by realdata.py.

The built-in benchmark lives on the GPU and a batch is tensor indexing (batches.py). Real
photographs are too many for that: here a batch is decoded from the image files, in
DataLoader worker processes, into pinned memory, while the GPU trains on the one before.

    cfg = RealDataConfig(data="nlvr2", data_dir="/data/nlvr2")
    data = load_real_data(cfg, image_side=384, patch_size=32, max_text_len=40)
    batches = LoaderBatches(data.splits["reasoning"]["train"], 128, seed=0, device=device, workers=8)
    batch = batches.next()   # images (B, K, 3, H, W), pixel_mask (B, K, H, W), text_ids, text_mask, labels

Images are resized as ViLT does (shorter side 384, longer side at most 640, whole patches),
so they differ in size: a batch is padded at the bottom and right to its largest image, and
`pixel_mask` tells the model which pixels are real (model.ImageEmbedding).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field, fields, replace

import torch
from torch.utils.data import DataLoader, Dataset

from batches import check_batch_size, model_images
from data import Tokenizer
from metrics import build_answer_vocab
from realdata import SPLITS, VQA_ANSWER_TYPES, DataError, add_soft_targets, load_image, read_split
from wordpiece import WordPieceTokenizer

DATA_SETS = {"vqav2": "vqa", "nlvr2": "reasoning", "snli-ve": "entailment"}   # data set -> the task it is
TEXT_FIELD = {"vqav2": "question", "nlvr2": "sentence", "snli-ve": "hypothesis"}
ID_FIELD = {"vqav2": "question_id", "nlvr2": "identifier", "snli-ve": "pair_id"}


@dataclass
class RealDataConfig:
    data: str = "benchmark"        # benchmark (built in), or a data set you downloaded: vqav2, nlvr2, snli-ve
    data_dir: str = ""             # root folder of that data set, in its official layout (README: Real data sets)
    image_dir: str = ""            # SNLI-VE only: the Flickr30k image folder, if it is not under --data-dir
    vocab: str = ""                # a BERT vocab.txt: WordPiece tokens (else words of the training text)
    min_answer_count: int = 9      # VQA v2: answers given this often in training make the vocabulary (ViLT: 9)
    missing_images: str = "skip"   # an example whose image is missing or unreadable: skip (counted) or error
    image_side: int = 0            # shorter image side in pixels (0: the model's image size, 384 at vilt-b32)
    train_limit: int = 0           # train on the first N examples only (0: all)
    val_examples: int = 2000       # validate during training on this many examples; the test split is whole
    loader_workers: int = 8        # DataLoader processes decoding images (0: in the training process)
    vqa_predict: str = ""          # VQA v2: also answer this split's questions (test-dev or test) for the server
    vqa_train_val: bool = False    # VQA v2: train on val2014 too, less two held-out sets of images (as ViLT, for the server)

    @property
    def real(self) -> bool:
        return self.data != "benchmark"

    @property
    def task(self) -> str:
        return DATA_SETS[self.data]

    def validate(self) -> RealDataConfig:
        """Raise ValueError naming the flag at fault."""
        if self.data != "benchmark" and self.data not in DATA_SETS:
            raise ValueError(f"--data: unknown data set {self.data!r}; choose benchmark, {', '.join(DATA_SETS)}")
        if self.real and not self.data_dir:
            raise ValueError(f"--data {self.data} needs --data-dir, the folder of your copy (nothing is downloaded)")
        if self.real and not os.path.isdir(self.data_dir):
            raise ValueError(f"--data-dir {self.data_dir}: no such folder")
        if self.vocab and not os.path.isfile(self.vocab):
            raise ValueError(f"--vocab {self.vocab}: no such file")
        if self.missing_images not in ("skip", "error"):
            raise ValueError(f"--missing-images must be skip or error, got {self.missing_images!r}")
        for name in ("min_answer_count", "val_examples"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.vqa_predict and (self.data != "vqav2" or self.vqa_predict not in ("test-dev", "test")):
            raise ValueError(f"--vqa-predict {self.vqa_predict}: only with --data vqav2, and test-dev or test")
        if self.vqa_train_val and self.data != "vqav2":
            raise ValueError("--vqa-train-val: only with --data vqav2")
        for name in ("image_side", "train_limit", "loader_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must not be negative, got {getattr(self, name)}")
        if self.image_dir and self.data != "snli-ve":
            raise ValueError(f"--image-dir {self.image_dir}: only with --data snli-ve")
        if self.image_dir and not os.path.isdir(self.image_dir):
            raise ValueError(f"--image-dir {self.image_dir}: no such folder")
        default = RealDataConfig()
        given = [f.name for f in fields(self) if getattr(self, f.name) != getattr(default, f.name)]
        if not self.real and given:   # the built-in benchmark would silently ignore it
            raise ValueError(f"--{given[0].replace('_', '-')} is for a data set you downloaded: "
                             f"give --data ({', '.join(DATA_SETS)}) too")
        return self


# -----------------------------------------------------------------------------
# One split: examples as read, texts tokenised once, images read on demand

@dataclass
class RealSplit(Dataset):
    task: str
    image_paths: list[list[str]]       # K image files per example
    text_ids: torch.Tensor             # long [N, L]
    labels: torch.Tensor               # long [N] (vqa: the highest-scoring answer, 0 if none is in the vocabulary)
    family: torch.Tensor               # long [N]: VQA answer type; 0 elsewhere
    family_names: list[str]            # VQA: yes/no, number, other; empty elsewhere
    texts: list[str]
    ids: list                          # question_id / identifier / pair_id, for results files and consistency
    vqa_targets: list[tuple[list[int], list[float]]] | None   # vqa: (answer indices, soft scores) per example
    num_answers: int
    pad_id: int
    image_side: int
    patch_size: int
    missing: str                       # skip or error
    workers: int = 0                   # DataLoader processes decoding its images

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: list[int]) -> RealSplit:
        """The examples at `index`, in that order."""
        pick = torch.tensor(index, dtype=torch.long)
        return replace(self, image_paths=[self.image_paths[i] for i in index], text_ids=self.text_ids[pick],
                       labels=self.labels[pick], family=self.family[pick], texts=[self.texts[i] for i in index],
                       ids=[self.ids[i] for i in index],
                       vqa_targets=None if self.vqa_targets is None else [self.vqa_targets[i] for i in index])

    def __getitem__(self, i):
        """(i, [uint8 (H, W, 3) per image]), or (i, error message) where an image cannot be read.

        Never raises a DataError: raised in a DataLoader worker, torch would hand it on wrapped in
        the worker's traceback, 30 lines. The message travels with the batch instead, and
        `raise_unreadable`, in the training process, skips it or raises it as one line."""
        try:
            return i, [torch.from_numpy(load_image(p, self.image_side, self.patch_size)) for p in self.image_paths[i]]
        except DataError as error:
            return i, str(error)

    def collate(self, items) -> tuple[dict, list[str]]:
        """Examples -> one batch, padded to the largest image, and the errors of examples left out of it."""
        errors = [images for _, images in items if isinstance(images, str)]
        items = [(i, images) for i, images in items if not isinstance(images, str)]
        B, K = len(items), len(self.image_paths[0])
        H = max((im.shape[0] for _, images in items for im in images), default=self.patch_size)
        W = max((im.shape[1] for _, images in items for im in images), default=self.patch_size)
        images = torch.zeros(B, K, H, W, 3, dtype=torch.uint8)          # padded with black
        image_sizes = torch.zeros(B, K, 2, dtype=torch.long)            # (height, width) of each real image
        for b, (_, example) in enumerate(items):
            for k, image in enumerate(example):
                h, w = image.shape[:2]
                images[b, k, :h, :w], image_sizes[b, k] = image, torch.tensor([h, w])
        index = torch.tensor([i for i, _ in items], dtype=torch.long)   # (B,) positions in the split
        text_ids = self.text_ids[index]                                 # (B, L)
        batch = {"index": index, "images": images, "image_sizes": image_sizes, "text_ids": text_ids,
                 "text_mask": text_ids != self.pad_id, "labels": self.labels[index]}
        if self.vqa_targets is not None:
            scores = torch.zeros(B, self.num_answers)                   # (B, A) VQA soft scores
            for b, i in enumerate(index.tolist()):
                answers, values = self.vqa_targets[i]
                scores[b, answers] = torch.tensor(values)
            batch["vqa_scores"] = scores
        return batch, errors


def to_device(batch: dict, device) -> dict:
    """Copy a collated batch to the device (asynchronously from pinned memory); there, turn uint8
    images (B, K, H, W, 3) into the model's float (B, K, 3, H, W) in [-1, 1], and the image sizes
    into the pixel mask, bool (B, K, H, W), True at real pixels."""
    batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
    H, W = batch["images"].shape[2:4]
    sizes = batch.pop("image_sizes")                                            # (B, K, 2)
    rows = torch.arange(H, device=sizes.device) < sizes[..., 0, None]           # (B, K, H)
    cols = torch.arange(W, device=sizes.device) < sizes[..., 1, None]           # (B, K, W)
    return {**batch, "images": model_images(batch["images"]), "pixel_mask": rows[..., :, None] & cols[..., None, :]}


def raise_unreadable(split: RealSplit, errors: list[str]) -> None:
    """With missing="error", raise the batch's first unreadable image as a DataError (skip it otherwise)."""
    if errors and split.missing == "error":
        raise DataError(errors[0])


def _loader(split: RealSplit, batch_sampler, workers: int, device) -> DataLoader:
    # Each worker keeps two batches ready: photographs are large (a batch of 128 NLVR2 pairs
    # at 384 x 640 is about 200 MB), and they travel through shared memory (/dev/shm).
    return DataLoader(split, batch_sampler=batch_sampler, num_workers=workers, collate_fn=split.collate,
                      pin_memory=torch.device(device).type == "cuda", prefetch_factor=2 if workers else None)


class LoaderBatches:
    """Training batches of a RealSplit, endless, in a fresh random order every epoch.

    The order of epoch e is a permutation drawn from (seed, e) alone, so a resumed run needs
    only (epoch, position) to continue exactly. Under DDP each process loads only its own rows
    of the global batch (`per_process`: trainer.fit does not shard them again), and a process
    whose rows are all unreadable gets an empty batch (B = 0), so that every process steps alike.
    """
    per_process = True

    def __init__(self, split: RealSplit, batch_size: int, seed: int, device, workers: int = 0, rank=0, world=1):
        check_batch_size(batch_size, len(split))
        self.split, self.batch_size, self.seed, self.device = split, batch_size, seed, device
        self.workers, self.rank, self.world = workers, rank, world
        self.epoch, self.position, self.skipped = 0, 0, 0   # what has been consumed
        self.unreadable_in_a_row = 0                        # examples skipped since the last readable one
        self.iterator = None

    def order(self, epoch: int) -> torch.Tensor:
        return torch.randperm(len(self.split), generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))

    def index_lists(self, epoch: int, position: int):
        """This process's rows of every global batch from (epoch, position) on; the last partial batch is dropped."""
        while True:
            order = self.order(epoch)
            for start in range(position, len(self.split) - self.batch_size + 1, self.batch_size):
                yield order[start: start + self.batch_size][self.rank:: self.world].tolist()
            epoch, position = epoch + 1, 0

    def next(self) -> dict:
        while True:
            if self.iterator is None:
                self.iterator = iter(_loader(self.split, self.index_lists(self.epoch, self.position),
                                             self.workers, self.device))
            batch, errors = next(self.iterator)
            raise_unreadable(self.split, errors)
            self.position += self.batch_size
            if self.position + self.batch_size > len(self.split):
                self.epoch, self.position = self.epoch + 1, 0
            if errors:
                self.skipped += len(errors)
                warnings.warn(f"skipped {len(errors)} examples with unreadable images ({self.skipped} so far): "
                              f"{errors[0]}", stacklevel=2)
            self.unreadable_in_a_row = 0 if len(batch["index"]) else self.unreadable_in_a_row + len(errors)
            if self.unreadable_in_a_row >= len(self.split) // max(1, self.world):   # a whole epoch: stop, do not spin
                raise DataError(f"no image of the training split could be read in a whole epoch; the last error: "
                                f"{errors[0]}")
            # Under DDP an empty shard still takes its step, adding nothing to the global batch's losses
            # (they divide by its count): moving on alone, this process would train on other batches.
            if len(batch["index"]) or self.world > 1:
                return to_device(batch, self.device)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position, self.skipped = state["epoch"], state["position"], state["skipped"]
        self.iterator = None   # restart the workers at the restored position


def eval_batches(split: RealSplit, batch_size: int, device):
    """The whole split in order; skipped examples are simply absent from `batch["index"]`."""
    index_lists = [list(range(s, min(s + batch_size, len(split)))) for s in range(0, len(split), batch_size)]
    for batch, errors in _loader(split, index_lists, split.workers, device):
        raise_unreadable(split, errors)
        if errors:
            warnings.warn(f"evaluation skipped {len(errors)} examples with unreadable images: {errors[0]}")
        if len(batch["index"]):
            yield to_device(batch, device)


# -----------------------------------------------------------------------------
# Reading a whole data set

@dataclass
class RealData:
    """What train.py needs of a data set, like data.Benchmark: tokenizer, answers, splits."""
    config: RealDataConfig
    tokenizer: Tokenizer | WordPieceTokenizer
    answers: list[str]                                  # VQA answer vocabulary (empty for the others)
    splits: dict[str, dict[str, RealSplit]]             # [task][train / val / test]
    max_text_len: int
    questions: RealSplit | None = None                  # VQA v2 --vqa-predict: questions without answers
    captions: dict = field(default_factory=dict)        # none: no ITM pre-training on real data

    def num_classes(self, task: str) -> int:
        return {"reasoning": 2, "entailment": 3, "vqa": max(1, len(self.answers))}[task]


def encode_texts(tokenizer, texts: list[str], max_len: int) -> torch.Tensor:
    """long [N, max_len]: [CLS] tokens [SEP], cut to max_len as ViLT does (the [SEP] kept), padded."""
    out = torch.full((len(texts), max_len), tokenizer.PAD, dtype=torch.long)
    cut = 0
    for row, text in enumerate(texts):
        ids = tokenizer.encode(text)
        if len(ids) > max_len:
            ids, cut = ids[: max_len - 1] + [tokenizer.SEP], cut + 1
        out[row, : len(ids)] = torch.tensor(ids)
    if cut:
        warnings.warn(f"{cut} of {len(texts)} texts were longer than {max_len} tokens and were cut", stacklevel=2)
    return out


def make_split(cfg, task, name, examples, tokenizer, answers, image_side, patch_size, max_text_len) -> RealSplit:
    if not examples:
        raise DataError(f"--data {cfg.data}: the {name} split has no examples: its images are all missing, "
                        f"or --val-examples {cfg.val_examples} took every example of a split shared with the test")
    texts = [e[TEXT_FIELD[cfg.data]] for e in examples]
    if task == "vqa":
        targets = [(e.get("labels", []), e.get("scores", [])) for e in examples]
        labels = [a[max(range(len(s)), key=s.__getitem__)] if s else 0 for a, s in targets]
        family = [VQA_ANSWER_TYPES.index(e["answer_type"]) if e.get("answer_type") in VQA_ANSWER_TYPES else 0
                  for e in examples]
        family_names = list(VQA_ANSWER_TYPES)
    else:
        targets, family, family_names = None, [0] * len(examples), []
        labels = [int(e["label"]) if task == "reasoning" else e["label_id"] for e in examples]
    paths = [e["images"] if task == "reasoning" else [e["image"]] for e in examples]
    return RealSplit(task, paths, encode_texts(tokenizer, texts, max_text_len), torch.tensor(labels),
                     torch.tensor(family), family_names, texts, [e[ID_FIELD[cfg.data]] for e in examples],
                     targets, max(1, len(answers)), tokenizer.PAD, image_side, patch_size, cfg.missing_images,
                     cfg.loader_workers)


def hold_out_images(examples: list[dict], questions: int, parts: int):
    """`parts` disjoint held-out sets of whole images, drawn at random (seed 0), each with at least
    `questions` questions, and the remaining examples: no held-out image has a question in the rest
    (as ViLT holds out val2014 images, not questions). Each list keeps the file's order."""
    images = sorted({e["image"] for e in examples})
    order = [images[i] for i in torch.randperm(len(images), generator=torch.Generator().manual_seed(0)).tolist()]
    per_image = {}
    for position, e in enumerate(examples):
        per_image.setdefault(e["image"], []).append(position)
    held, taken = [[] for _ in range(parts)], 0
    for part in held:
        while len(part) < questions and taken < len(order):
            part += per_image[order[taken]]
            taken += 1
    if taken >= len(order):
        raise DataError(f"--vqa-train-val: the validation split's {len(examples)} questions on {len(images)} images "
                        f"leave none to train on after {parts} held-out sets of --val-examples {questions}")
    kept = {i for part in held for i in part}
    rest = [e for i, e in enumerate(examples) if i not in kept]
    return [[examples[i] for i in sorted(part)] for part in held] + [rest]


def load_real_data(cfg: RealDataConfig, image_side: int, patch_size: int, max_text_len: int) -> RealData:
    """Read train / validation / test of one data set (realdata.SPLITS says which official split is which).

    Validation is a fixed random subset of `val_examples` of the official validation split. Where the
    test split is the same official split (VQA v2: the test server's splits have no answers, so we test
    on val2014), the validation subset is taken out of the test split: a model is never tested on the
    examples that chose its checkpoint. With `vqa_train_val`, val2014 trains too (and gives answers to
    the vocabulary), except two held-out sets of whole images, of about `val_examples` questions each:
    one validates, the other tests.
    """
    cfg.validate()
    task, names = cfg.task, SPLITS[cfg.data]
    options = {"missing": cfg.missing_images}
    if cfg.data == "snli-ve" and cfg.image_dir:
        options["image_dir"] = cfg.image_dir
    train = read_split(cfg.data, cfg.data_dir, names["train"], **options)
    if cfg.train_limit:
        train = train[: cfg.train_limit]
    shared = names["test"] == names["val"]          # VQA v2: both are val2014
    held_out = read_split(cfg.data, cfg.data_dir, names["val"], **options)
    test = held_out if shared else read_split(cfg.data, cfg.data_dir, names["test"], **options)
    if shared and cfg.vqa_train_val:   # the server setting: val2014 trains too, but for two disjoint sets of images
        val, test, rest = hold_out_images(held_out, cfg.val_examples, parts=2)
        train = train + rest
    else:
        order = torch.randperm(len(held_out), generator=torch.Generator().manual_seed(0)).tolist()
        val = [held_out[i] for i in sorted(order[: cfg.val_examples])]
        if shared:                     # test on the rest of val2014: never on what chose the checkpoint
            test = [held_out[i] for i in sorted(order[cfg.val_examples:])]
    answers = []
    if task == "vqa":   # the vocabulary: the training answers; evaluation keeps every question
        answers = build_answer_vocab([e["multiple_choice_answer"] for e in train], cfg.min_answer_count)
        if not answers:
            raise DataError(f"--min-answer-count {cfg.min_answer_count}: no training answer is that frequent")
        train = add_soft_targets(train, answers, drop_unanswerable=True)
        val, test = (add_soft_targets(x, answers, drop_unanswerable=False) for x in (val, test))
    tokenizer = (WordPieceTokenizer.load(cfg.vocab) if cfg.vocab
                 else Tokenizer.build(e[TEXT_FIELD[cfg.data]] for e in train))
    side = cfg.image_side or image_side
    splits = {name: make_split(cfg, task, name, examples, tokenizer, answers, side, patch_size, max_text_len)
              for name, examples in (("train", train), ("val", val), ("test", test))}
    questions = None
    if cfg.vqa_predict:   # read now, not after hours of training; the server wants every question, so no skipping
        examples = read_split("vqav2", cfg.data_dir, cfg.vqa_predict, missing="error")
        questions = make_split(cfg, task, cfg.vqa_predict, examples, tokenizer, answers, side, patch_size, max_text_len)
        questions.missing = "error"   # an unreadable image stops prediction, naming the file
    return RealData(cfg, tokenizer, answers, {task: splits}, max_text_len, questions)


def describe(data: RealData) -> str:
    task = data.config.task
    sizes = ", ".join(f"{name} {len(split):,}" for name, split in data.splits[task].items())
    extra = f", {len(data.answers):,} answers" if data.answers else ""
    if data.config.vqa_train_val:
        extra += "; training on train2014 and val2014, less the validation and test images"
    return (f"{data.config.data} from {data.config.data_dir}: {sizes} examples; "
            f"{len(data.tokenizer):,} tokens{extra}; images: shorter side {data.splits[task]['train'].image_side} px")

