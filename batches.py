"""How a training step gets its batch from the built-in benchmark (data.py).

The whole benchmark lives on the device as uint8 tensors, so a batch is tensor indexing:
`make_batch` picks examples and turns their images into the model's input, `EpochSampler`
draws a fresh random order every epoch, and `TaskBatches` joins the two for the training loop
(`CurriculumBatches` runs one order before another: first the reasoning statements for which
`names_left_image_first`, then all). Real photographs come from loader.py,
whose `LoaderBatches` hands the training loop batches of the same form.

    batches = TaskBatches(bench.splits["vqa"]["train"], batch_size=128, seed=0, device=device, image_size=64)
    batch = batches.next()   # images [B, K, 3, H, W], text_ids [B, L], text_mask [B, L], labels [B], vqa_scores [B, A]
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from data import TaskSplit, Tokenizer


def model_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, K, H, W, 3] -> float [B, K, 3, H, W] in [-1, 1]: (x/255 - 0.5)/0.5."""
    return images.permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0


def make_batch(split: TaskSplit, index: torch.Tensor) -> dict:
    """Pure tensor indexing, on the split's device. index: long [B]."""
    images = model_images(split.images[split.image_index[index]])  # [B, K, 3, H, W]
    text_ids = split.text_ids[index]                              # long [B, L]
    batch = {"images": images, "text_ids": text_ids, "text_mask": text_ids != Tokenizer.PAD,
             "labels": split.labels[index]}
    if split.vqa_scores is not None:
        batch["vqa_scores"] = split.vqa_scores[index]             # float [B, A]
    return batch


def resize_images(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """float [..., 3, H, W] -> [..., 3, image_size, image_size], nearest neighbour (only vilt-b32 differs)."""
    if images.shape[-1] == image_size:
        return images
    resized = F.interpolate(images.flatten(0, -4), size=(image_size, image_size), mode="nearest")
    return resized.view(*images.shape[:-2], image_size, image_size)


def fit_images(batch, image_size):
    """Resize the benchmark's images of a batch to the model's input size."""
    return {**batch, "images": resize_images(batch["images"], image_size)}


def check_batch_size(batch_size: int, n: int, split: str = "training set") -> None:
    """A training batch is drawn without repeats from one epoch: it cannot be larger than the split."""
    if batch_size > n:
        raise SystemExit(f"error: --batch-size {batch_size} is larger than the {split} ({n} examples)")


class EpochSampler:
    """Batches of indices: a fresh random order every epoch, drawn on the data's device."""

    def __init__(self, n, batch_size, seed, device):
        check_batch_size(batch_size, n)
        self.n, self.batch_size = n, batch_size
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.order, self.position = torch.randperm(n, generator=self.generator, device=device), 0

    def next(self):
        if self.position + self.batch_size > self.n:
            self.order, self.position = torch.randperm(self.n, generator=self.generator, device=self.order.device), 0
        index = self.order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return index

    def state_dict(self):
        return {"order": self.order.cpu(), "position": self.position, "generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.order, self.position = state["order"].to(self.order.device), state["position"]
        self.generator.set_state(state["generator"])


def names_left_image_first(statement: str) -> bool:
    """A reasoning statement about the left image, or about both with the left one named first:
    "the left image contains a red circle ." or "there are more circles in the left image than in
    the right image ." ("left of" is a relation, not an image.)"""
    if "left image" not in statement:
        return False
    return "right image" not in statement or statement.index("left image") < statement.index("right image")


class CurriculumBatches:
    """The batches of `first` for the first `steps` steps, then those of `then`."""

    def __init__(self, first, then, steps: int):
        self.first, self.then, self.steps, self.taken = first, then, steps, 0

    def next(self):
        self.taken += 1
        return (self.first if self.taken <= self.steps else self.then).next()

    def state_dict(self):
        return {"taken": self.taken, "first": self.first.state_dict(), "then": self.then.state_dict()}

    def load_state_dict(self, state):
        self.taken = state["taken"]
        self.first.load_state_dict(state["first"])
        self.then.load_state_dict(state["then"])


class TaskBatches:
    """Training batches of one task split, in the order of an EpochSampler."""

    def __init__(self, split, batch_size, seed, device, image_size):
        self.split, self.image_size = split, image_size
        self.sampler = EpochSampler(len(split), batch_size, seed, device)

    def next(self):
        return fit_images(make_batch(self.split, self.sampler.next()), self.image_size)

    def state_dict(self):
        return self.sampler.state_dict()

    def load_state_dict(self, state):
        self.sampler.load_state_dict(state)
