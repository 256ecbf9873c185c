"""Image-text matching (ITM) batches for the pre-training stage.

Every image of the benchmark has a caption ("a large red circle left of a small blue square .
..."). ITM asks: does this caption describe this image? Our design (the DiDE paper
pre-trains on real image-caption corpora; the released code has no pre-training stage):

    1/2  matched:   the image's own caption                          label 1
    1/4  random:    the caption of another image                     label 0
    1/4  swapped:   the image's caption with two different colour    label 0
                    words exchanged: the same words, other bindings

The swapped negatives cannot be told apart by a bag of words: they need the binding of
colours to shapes, which is what fusion does well and what the student must learn.
"""

import random

import torch

from data import Tokenizer, fit_images, model_images
from scenes import COLOURS

MATCHED, RANDOM, SWAPPED = 0, 1, 2


def swap_two_colours(text_ids, colour_ids, seed):
    """Each caption with two of its colour words of different value exchanged (the caption itself
    when it has no two different colours). text_ids: long (N, L)."""
    rng = random.Random(seed)
    colours = set(colour_ids)
    rows = text_ids.tolist()
    for row in rows:
        positions = [p for p, token in enumerate(row) if token in colours]
        pairs = [(a, b) for a in positions for b in positions if a < b and row[a] != row[b]]
        if pairs:
            a, b = rng.choice(pairs)
            row[a], row[b] = row[b], row[a]
    return torch.tensor(rows, dtype=text_ids.dtype)


def itm_batch(captions, image_index, kind, other, swapped_ids):
    """Images of `image_index` with a matched, random-other or colour-swapped caption."""
    text_ids = captions.text_ids[image_index]                           # (B, L) matched captions
    text_ids = torch.where((kind == RANDOM)[:, None], captions.text_ids[other], text_ids)
    text_ids = torch.where((kind == SWAPPED)[:, None], swapped_ids[image_index], text_ids)
    images = model_images(captions.images[image_index][:, None])        # (B, 1, 3, H, W) in [-1, 1]
    labels = (kind == MATCHED).long()                                   # (B,)
    # a swap that found no two colours left the caption unchanged: it is a match after all
    labels = torch.where((kind == SWAPPED) & (text_ids == captions.text_ids[image_index]).all(1), 1, labels)
    return {"images": images, "text_ids": text_ids, "text_mask": text_ids != Tokenizer.PAD, "labels": labels}


def colour_token_ids(tokenizer):
    ids = [tokenizer.encode(name)[1] for name in COLOURS]               # [CLS] word [SEP] -> word
    return [i for i in ids if i != Tokenizer.UNK]


def _kinds_and_others(n_images, index, generator):
    B = len(index)
    u = torch.rand(B, generator=generator, device=index.device)
    kind = torch.where(u < 0.5, MATCHED, torch.where(u < 0.75, RANDOM, SWAPPED))
    shift = torch.randint(1, n_images, (B,), generator=generator, device=index.device)
    return kind, (index + shift) % n_images                             # another image, never the same one


class ITMBatches:
    """An endless stream of ITM batches over one caption split, random from a seed."""

    def __init__(self, captions, tokenizer, batch_size, seed, device, image_size=None):
        self.captions, self.batch_size, self.image_size = captions, batch_size, image_size
        self.swapped = swap_two_colours(captions.text_ids, colour_token_ids(tokenizer), seed).to(device)
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def next(self):
        n = len(self.captions)
        index = torch.randint(n, (self.batch_size,), generator=self.generator, device=self.swapped.device)
        kind, other = _kinds_and_others(n, index, self.generator)
        batch = itm_batch(self.captions, index, kind, other, self.swapped)
        return fit_images(batch, self.image_size) if self.image_size else batch

    def state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])


def itm_validation_batches(captions, tokenizer, batch_size, device, seed=1234):
    """A fixed list of ITM batches over a whole split (the same for every run)."""
    stream = ITMBatches(captions, tokenizer, batch_size, seed, device)
    n = len(captions)
    batches = []
    for start in range(0, n, batch_size):
        index = torch.arange(start, min(n, start + batch_size), device=device)
        kind, other = _kinds_and_others(n, index, stream.generator)
        batches.append(itm_batch(captions, index, kind, other, stream.swapped))
    return batches
