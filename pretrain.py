"""Image-text matching (ITM) batches for the pre-training stage.

Every image of the benchmark has a caption ("a large red circle left of a small blue square .
..."). ITM asks: does this caption describe this image? Our design (the DiDE paper
pre-trains on real image-caption corpora; the released code has no pre-training stage):

    1/2  matched:   the image's own caption                          label 1
    1/4  random:    the caption of another image                     label 0
    1/4  swapped:   the image's caption with the colours of two of   label 0
                    its objects exchanged: the same words, other bindings

The swapped negatives cannot be told apart by a bag of words: they need the binding of
colours to shapes, which is what fusion does well and what the student must learn. They
are made with the captions, one per image, fixed by the data seed (templates.swapped_caption),
and checked against the objects in view of the symbolic scene: an exchange can happen to
describe two other objects of the picture, about one in twenty on the default scenes, and is
then no negative (the code until 2026-11-30 drew the exchange per training seed and labelled
those 0 all the same). An image whose every exchange is true keeps its caption there, and
that pair counts as matched. Another image's caption is true of this one far more rarely (under
0.2% of pairs on the tiny and default scenes) and is left unchecked.

The teacher also learns masked language modelling (MLM), as ViLT does: in the image's own
caption, words are replaced by [MASK] and predicted from the words left and the image. ViLT
masks 15% of all tokens; we mask only the words that name what is in the picture (colours,
sizes, shapes, relations), each with probability `mlm_prob` and at least one per caption:
"a", "of" and "." can be guessed from the text alone and teach nothing about the image.

Why MLM: ITM is a question about text *and* image together. Trained alone from scratch it
stays at its prior (EXPERIMENTS.md, section 1), because no single word and no single
image says "matched". A masked colour word is different: which colours the image holds
already predicts it, so the gradient reaches the image patches from the first step, and
words learn to look at the patches that answer them. With it, ITM leaves its prior too.
The student cannot do MLM (its text tower never sees the image) and does not need to: it
learns from the teacher's ITM predictions and cross-modal attention.

What MLM does not teach by itself is binding. One masked colour among others is given away
by the colours in view less those the rest of the caption names, so a model that knows which
colours the picture holds, but not which object has which, gets most of them right. The
validation batches therefore carry a probe: each caption with every colour word masked at
once, scored against the best such a model can do (evaluate.evaluate_itm; EXPERIMENTS.md,
section 1, has what it measured).
"""

import torch
import torch.nn.functional as F

from batches import fit_images, model_images
from data import Tokenizer
from distill import mean_over_global_batch
from scenes import COLOURS, RELATIONS, SHAPES, SIZES

MATCHED, RANDOM, SWAPPED = 0, 1, 2
ITM_KINDS = ("matched", "another image's caption", "colours exchanged")   # names of the three, in that order


# The words MLM may mask, by kind: colours, sizes, shapes (singular and plural) and relations.
# Validation reports the masked-word accuracy of each kind ("mlm_per_kind").
WORD_KINDS = {"colour": tuple(COLOURS), "size": SIZES, "shape": (*SHAPES, *(s + "s" for s in SHAPES)),
              "relation": RELATIONS}
MASKABLE_WORDS = tuple(word for words in WORD_KINDS.values() for word in words)


def token_ids_of(tokenizer, words) -> list[int]:
    """The ids of those words that are one token of the vocabulary each."""
    pieces = [tokenizer.encode(word)[1:-1] for word in words]           # [CLS] word [SEP] -> word
    return sorted({p[0] for p in pieces if len(p) == 1} - {Tokenizer.UNK})


def vocabulary_table(tokenizer, words, device) -> torch.Tensor:
    """bool (vocab,): True at the ids of `words` (token_ids_of), to look token ids up in."""
    table = torch.zeros(len(tokenizer), dtype=torch.bool, device=device)
    table[token_ids_of(tokenizer, words)] = True
    return table


def word_kind_table(tokenizer, device) -> torch.Tensor:
    """long (vocab,): at each maskable word's id the index of its kind in WORD_KINDS, -1 elsewhere."""
    table = torch.full((len(tokenizer),), -1, dtype=torch.long, device=device)
    for k, words in enumerate(WORD_KINDS.values()):
        table[token_ids_of(tokenizer, words)] = k
    return table


def mask_words(text_ids, maskable, prob, generator):
    """MLM inputs and targets: each maskable word becomes [MASK] with probability `prob`, and
    every caption that has a maskable word gets at least one (its highest random draw).
    text_ids: long (B, L); maskable: bool (vocab,). Returns masked ids (B, L) and labels (B, L):
    the original word where masked, -100 (ignored by cross entropy) elsewhere."""
    can = maskable[text_ids]                                            # (B, L) bool
    draw = torch.rand(text_ids.shape, generator=generator, device=text_ids.device)
    draw = draw.masked_fill(~can, -1.0)
    chosen = (draw > 1.0 - prob) | (draw == draw.max(1, keepdim=True).values)
    chosen &= can
    masked = torch.where(chosen, Tokenizer.MASK, text_ids)
    labels = torch.where(chosen, text_ids, -100)
    return masked, labels


def mask_every_colour(text_ids, is_colour):
    """The binding probe of validation: every colour word of each caption masked at once.
    text_ids: long (B, L); is_colour: bool (vocab,). Returns masked ids and labels as mask_words.
    One masked colour among others is given away without binding: it is the colour in view
    that the rest of the caption does not name. With all of them masked, only the words around
    each one (its size, shape, relation) say which object's colour it is."""
    colour = is_colour[text_ids]                                        # (B, L) bool
    return torch.where(colour, Tokenizer.MASK, text_ids), torch.where(colour, text_ids, -100)


def masked_language_loss(mlm_logits, labels):
    """Cross entropy of the masked words only: mlm_logits (B, L, vocab), labels (B, L) with -100
    where nothing is masked. The sum over masked words divided by their number (0 if none; under DDP,
    their number over the global batch: distill.mean_over_global_batch)."""
    total = F.cross_entropy(mlm_logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100,
                            reduction="sum")
    return mean_over_global_batch(total, (labels != -100).sum())


def itm_batch(captions, image_index, kind, other):
    """Images of `image_index` with a matched, random-other or colour-swapped caption."""
    text_ids = captions.text_ids[image_index]                           # (B, L) matched captions
    text_ids = torch.where((kind == RANDOM)[:, None], captions.text_ids[other], text_ids)
    text_ids = torch.where((kind == SWAPPED)[:, None], captions.swapped_ids[image_index], text_ids)
    images = model_images(captions.images[image_index][:, None])        # (B, 1, 3, H, W) in [-1, 1]
    labels = (kind == MATCHED).long()                                   # (B,)
    # an image with no false exchange has its own caption as the swapped one: a match after all
    labels = torch.where((kind == SWAPPED) & (text_ids == captions.text_ids[image_index]).all(1), 1, labels)
    return {"images": images, "text_ids": text_ids, "text_mask": text_ids != Tokenizer.PAD, "labels": labels,
            "itm_kind": kind}                                           # (B,) MATCHED, RANDOM or SWAPPED


def _kinds_and_others(n_images, index, generator):
    B = len(index)
    u = torch.rand(B, generator=generator, device=index.device)
    kind = torch.where(u < 0.5, MATCHED, torch.where(u < 0.75, RANDOM, SWAPPED))
    shift = torch.randint(1, n_images, (B,), generator=generator, device=index.device)
    return kind, (index + shift) % n_images                             # another image, never the same one


def add_masked_captions(batch, captions, image_index, maskable, prob, generator):
    """The MLM half of a teacher's pre-training batch: each image's own caption, masked."""
    own = captions.text_ids[image_index]                                # (B, L)
    batch["mlm_text_ids"], batch["mlm_labels"] = mask_words(own, maskable, prob, generator)
    batch["mlm_text_mask"] = own != Tokenizer.PAD
    return batch


class ITMBatches:
    """An endless stream of ITM batches over one caption split, random from a seed. With
    mlm_prob > 0 (the teacher), every batch also carries the images' own captions masked for MLM."""

    def __init__(self, captions, tokenizer, batch_size, seed, device, image_size=None, mlm_prob=0.0):
        self.captions, self.batch_size, self.image_size, self.mlm_prob = captions, batch_size, image_size, mlm_prob
        self.maskable = vocabulary_table(tokenizer, MASKABLE_WORDS, device)            # (vocab,)
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def next(self):
        index = torch.randint(len(self.captions), (self.batch_size,), generator=self.generator,
                              device=self.maskable.device)
        batch = self.batch_of(index)
        return fit_images(batch, self.image_size) if self.image_size else batch

    def batch_of(self, image_index):
        """The images of `image_index` with a matched, random or swapped caption (and, with MLM,
        their own captions masked), drawn from this stream's generator."""
        kind, other = _kinds_and_others(len(self.captions), image_index, self.generator)
        batch = itm_batch(self.captions, image_index, kind, other)
        if self.mlm_prob > 0:
            add_masked_captions(batch, self.captions, image_index, self.maskable, self.mlm_prob, self.generator)
        return batch

    def state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])


def itm_validation_batches(captions, tokenizer, batch_size, device, seed=1234, mlm_prob=0.0):
    """A fixed list of ITM (and MLM) batches over a whole split (the same for every run). With
    MLM, each batch also holds the kind of each masked word (an index in WORD_KINDS, -1 where
    nothing is masked) and the binding probe: the own captions with every colour masked."""
    generator = torch.Generator(device=device).manual_seed(seed)
    is_colour = vocabulary_table(tokenizer, COLOURS, device)            # (vocab,)
    kind_of = word_kind_table(tokenizer, device)                        # (vocab,)
    n = len(captions)
    # drawn for the whole split at once, so the pairs and masks are the same at any --eval-batch-size
    every_image = torch.arange(n, device=device)                        # (n,)
    kind, other = _kinds_and_others(n, every_image, generator)          # (n,), (n,)
    if mlm_prob > 0:   # mlm_text_ids, mlm_labels, mlm_text_mask of every image: (n, L) each
        maskable = vocabulary_table(tokenizer, MASKABLE_WORDS, device)  # (vocab,)
        masked = add_masked_captions({}, captions, every_image, maskable, mlm_prob, generator)
    batches = []
    for start in range(0, n, batch_size):
        image_index = every_image[start: start + batch_size]            # (B,)
        batch = itm_batch(captions, image_index, kind[image_index], other[image_index])
        if mlm_prob > 0:
            batch.update({key: value[image_index] for key, value in masked.items()})
            labels = batch["mlm_labels"]                                # (B, L), -100 where not masked
            batch["mlm_word_kind"] = torch.where(labels != -100, kind_of[labels.clamp(min=0)], -1)  # (B, L)
            batch["colour_probe_ids"], batch["colour_probe_labels"] = mask_every_colour(
                captions.text_ids[image_index], is_colour)
        batches.append(batch)
    return batches
