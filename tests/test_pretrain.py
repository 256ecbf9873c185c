"""Pre-training batches: the ITM negatives are what they claim to be; MLM masks what it says."""

import types
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from data import Tokenizer
from evaluate import evaluate_itm, right_without_binding
from model import model_config
from pretrain import (ITM_KINDS, SWAPPED, ITMBatches, itm_validation_batches, mask_words, masked_language_loss,
                      token_ids_of)
from train import TrainConfig
from teacher import FusionEncoder


class FakeCaptions:
    def __init__(self, n=64, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 255, (n, 8, 8, 3), dtype=torch.uint8, generator=g)
        self.text_ids = torch.randint(5, 30, (n, 7), generator=g)
        self.text_ids[:, 0], self.text_ids[:, -1] = 1, 2
        assert n <= 64
        index = torch.arange(n)
        self.text_ids[:, 2], self.text_ids[:, 4] = 12 + index // 8, 12 + index % 8   # no two captions alike
        self.text_ids[:, 1], self.text_ids[:, 3] = 10, 11   # two colours in every caption
        self.swapped_ids = self.text_ids.clone()
        self.swapped_ids[:, 1], self.swapped_ids[:, 3] = 11, 10   # exchanged
        self.swapped_ids[:8] = self.text_ids[:8]            # no exchange false of these images: kept

    def __len__(self):
        return len(self.images)


class FakeTokenizer:
    def encode(self, word):
        return [1, {"red": 10, "green": 11}.get(word, 3), 2]

    def __len__(self):
        return 30


def test_itm_batches_label_matches_by_construction():
    captions = FakeCaptions()
    stream = ITMBatches(captions, FakeTokenizer(), 256, seed=0, device="cpu")
    batch = stream.next()
    assert batch["images"].shape == (256, 1, 3, 8, 8)
    assert 0.35 < batch["labels"].float().mean() < 0.65
    # which image each example shows, found from its pixels
    flat = captions.images.flatten(1).float() / 127.5 - 1.0
    shown = torch.cdist(batch["images"][:, 0].permute(0, 2, 3, 1).flatten(1), flat).argmin(1)
    own = captions.text_ids[shown]
    matched = (batch["text_ids"] == own).all(1)
    assert torch.equal(matched.long(), batch["labels"])
    # a quarter are the shown image's cached swapped caption (label 0, or 1 where it is the caption itself),
    # a quarter another image's caption: nothing else
    swapped = (batch["text_ids"] == captions.swapped_ids[shown]).all(1) & ~matched
    other = (batch["text_ids"][:, None] == captions.text_ids[None]).all(2).float().argmax(1)   # (B,) a caption's image
    random = (batch["text_ids"] == captions.text_ids[other]).all(1) & (other != shown)
    assert 0.15 < swapped.float().mean() < 0.35 and 0.15 < random.float().mean() < 0.35
    assert (matched | swapped | random).all() and not batch["labels"][swapped | random].any()


def test_mask_words_masks_only_maskable_words_and_at_least_one_per_caption():
    g = torch.Generator().manual_seed(0)
    maskable = torch.zeros(30, dtype=torch.bool)
    maskable[[10, 11, 12]] = True
    text = torch.randint(5, 30, (500, 12), generator=g)
    text[:, 0], text[:, -2:] = Tokenizer.CLS, Tokenizer.PAD
    text[0] = torch.tensor([1, 5, 6, 7, 8, 9, 13, 14, 15, 2, 0, 0])            # nothing maskable
    masked, labels = mask_words(text, maskable, 0.3, torch.Generator().manual_seed(1))
    chosen = masked == Tokenizer.MASK
    assert torch.equal(chosen, labels != -100)
    assert maskable[text[chosen]].all()                                     # only maskable words
    assert torch.equal(labels[chosen], text[chosen])                        # targets are the original words
    assert torch.equal(masked[~chosen], text[~chosen])                      # everything else untouched
    has_maskable = maskable[text].any(1)
    assert torch.equal(chosen.any(1), has_maskable)                         # at least one where possible
    assert not chosen[0].any()
    # each maskable word is masked with probability p, and one is forced where none was drawn:
    # n maskable words give max(1, Binomial(n, p)) masks, whose mean is n p + (1 - p)^n
    n = maskable[text].sum(1)[has_maskable].double()
    expected = (n * 0.3 + 0.7 ** n).sum()
    assert abs(chosen.sum() / expected - 1) < 0.1, (chosen.sum(), expected)
    again, _ = mask_words(text, maskable, 0.3, torch.Generator().manual_seed(1))
    assert torch.equal(masked, again)                                       # deterministic for a seed


def test_masked_language_loss_is_the_mean_cross_entropy_of_masked_words():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=g)
    labels = torch.full((3, 5), -100)
    labels[0, 1], labels[0, 3], labels[2, 4] = 4, 7, 0
    by_hand = -(F.log_softmax(logits[0, 1], -1)[4] + F.log_softmax(logits[0, 3], -1)[7]
                + F.log_softmax(logits[2, 4], -1)[0]) / 3
    torch.testing.assert_close(masked_language_loss(logits, labels), by_hand)
    nothing = masked_language_loss(logits, torch.full((3, 5), -100))
    assert nothing.item() == 0.0                                            # no NaN when nothing is masked


def test_mlm_batches_mask_each_images_own_caption():
    captions = FakeCaptions()
    stream = ITMBatches(captions, FakeTokenizer(), 128, seed=0, device="cpu", mlm_prob=0.3)
    batch = stream.next()
    flat = captions.images.flatten(1).float() / 127.5 - 1.0
    shown = torch.cdist(batch["images"][:, 0].permute(0, 2, 3, 1).flatten(1), flat).argmin(1)
    own = captions.text_ids[shown]
    masked = batch["mlm_labels"] != -100
    assert masked.any(1).all()                               # every caption has two colours: one is masked
    assert torch.equal(torch.where(masked, batch["mlm_labels"], batch["mlm_text_ids"]), own)
    assert set(own[masked].tolist()) <= {10, 11}
    assert "mlm_labels" not in ITMBatches(captions, FakeTokenizer(), 8, seed=0, device="cpu").next()
    fixed = itm_validation_batches(captions, FakeTokenizer(), 16, "cpu", mlm_prob=0.3)
    again = itm_validation_batches(captions, FakeTokenizer(), 16, "cpu", mlm_prob=0.3)
    assert all(torch.equal(a["mlm_text_ids"], b["mlm_text_ids"]) for a, b in zip(fixed, again))


@pytest.mark.parametrize("batch_size", [7, 64])
def test_validation_pairs_and_masks_do_not_depend_on_the_eval_batch_size(batch_size):
    # the ITM and MLM validation figures of two runs must be comparable whatever --eval-batch-size they used
    captions = FakeCaptions()
    keys = ("itm_kind", "labels", "text_ids", "mlm_text_ids", "mlm_labels", "mlm_text_mask")

    def whole_split(size):
        batches = itm_validation_batches(captions, FakeTokenizer(), size, "cpu", mlm_prob=0.3)
        assert sum(len(b["labels"]) for b in batches) == len(captions)
        return {key: torch.cat([b[key] for b in batches]) for key in keys}

    reference, other = whole_split(16), whole_split(batch_size)
    for key in keys:
        assert torch.equal(reference[key], other[key]), key


def test_teacher_mlm_scores_every_word_and_ignores_padding():
    torch.manual_seed(0)
    cfg = model_config("tiny", vocab_size=30, num_answers=5)
    teacher = FusionEncoder(cfg).eval()
    batch = ITMBatches(FakeCaptions(), FakeTokenizer(), 4, seed=0, device="cpu", mlm_prob=0.3).next()
    batch["images"] = torch.randn(4, 1, 3, cfg.image_size, cfg.image_size)
    batch["mlm_text_mask"][1, 4:] = False                                   # a shorter caption
    batch["mlm_text_ids"][1, 4:] = Tokenizer.PAD
    out = teacher(batch, "itm")
    assert out.mlm_logits.shape == (4, 7, 30)
    extra = {**batch, "mlm_text_ids": F.pad(batch["mlm_text_ids"], (0, 3)),
             "mlm_text_mask": F.pad(batch["mlm_text_mask"], (0, 3))}
    real = batch["mlm_text_mask"][:, :, None]
    torch.testing.assert_close(teacher(extra, "itm").mlm_logits[:, :7] * real, out.mlm_logits * real,
                               atol=1e-5, rtol=1e-5)
    # the MLM loss trains its own decoder (untied, as in ViLT) and, through the joint pass, the encoder
    teacher.train()
    masked_language_loss(teacher(batch, "itm").mlm_logits, batch["mlm_labels"]).backward()
    assert teacher.mlm_head.decoder.weight.grad.abs().sum() > 0
    assert teacher.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert teacher(batch, "vqa").mlm_logits is None                         # only in pre-training


def test_itm_validation_reports_each_kind_of_pair():
    """A model that calls every pair matched: right on every matched pair, wrong on every other image's
    caption, right on a swapped pair only where the image kept its caption (no false exchange)."""
    class AlwaysMatched(torch.nn.Module):
        config = model_config("tiny", vocab_size=30, num_answers=5)

        def forward(self, batch, task):
            logits = torch.tensor([0.0, 1.0]).expand(len(batch["labels"]), 2)
            return types.SimpleNamespace(logits=logits, mlm_logits=None)

    captions = FakeCaptions()
    batches = itm_validation_batches(captions, FakeTokenizer(), 16, "cpu")
    kinds = torch.cat([b["itm_kind"] for b in batches])
    image = torch.arange(len(captions))                                  # validation: every image once, in order
    metrics = evaluate_itm(AlwaysMatched(), batches, TrainConfig(device="cpu", dtype="fp32"), torch.device("cpu"))
    matched, other, swapped = (metrics["per_family"][name] for name in ITM_KINDS)
    assert matched == 100.0 and other == 0.0
    assert swapped == 100 * (image[kinds == SWAPPED] < 8).float().mean().item()
    labels = torch.cat([b["labels"] for b in batches]).float()
    assert metrics["accuracy"] == pytest.approx(100 * labels.mean().item())


def test_token_ids_of_keeps_the_words_that_are_one_token():
    class Pieces:
        def encode(self, word):
            return [1, *{"red": [10], "purple": [12, 13]}.get(word, [Tokenizer.UNK]), 2]

    assert token_ids_of(Pieces(), ["red", "purple", "mauve"]) == [10]


def test_colour_probe_masks_every_colour_of_the_own_caption_and_nothing_else():
    captions = FakeCaptions()
    batches = itm_validation_batches(captions, FakeTokenizer(), 16, "cpu", mlm_prob=0.3)
    probe_ids = torch.cat([b["colour_probe_ids"] for b in batches])
    labels = torch.cat([b["colour_probe_labels"] for b in batches])
    colour = (captions.text_ids == 10) | (captions.text_ids == 11)          # every image once, in order
    assert torch.equal(probe_ids == Tokenizer.MASK, colour)
    assert torch.equal(torch.where(colour, labels, probe_ids), captions.text_ids)
    assert (labels[~colour] == -100).all()
    assert "colour_probe_ids" not in itm_validation_batches(captions, FakeTokenizer(), 16, "cpu")[0]


def test_right_without_binding_counts_each_captions_most_frequent_masked_word():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(10, 14, (50, 9), generator=g)
    labels[torch.rand(50, 9, generator=g) < 0.5] = -100
    labels[0] = -100                                                        # nothing masked
    by_hand = sum(max(Counter(row[row != -100].tolist()).values(), default=0) for row in labels)
    assert right_without_binding(labels) == by_hand


def test_colour_probe_tells_a_model_that_binds_from_one_that_only_sees_which_colours():
    """Every caption holds red (10) at position 1 and green (11) at position 3, nowhere else. A
    teacher that knows which object each colour word describes gets all of them; one that says
    red everywhere gets half, which is the best without binding."""
    captions = FakeCaptions()
    rest = torch.ones_like(captions.text_ids, dtype=torch.bool)
    rest[:, [1, 3]] = False
    captions.text_ids[rest & ((captions.text_ids == 10) | (captions.text_ids == 11))] = 12

    class Teacher(torch.nn.Module):
        config = model_config("tiny", vocab_size=30, num_answers=5)

        def __init__(self, binds):
            super().__init__()
            self.binds = binds

        def masked_words(self, batch, task):
            ids = batch["mlm_text_ids"]                                     # (B, L)
            guess = torch.full_like(ids, 10)                                # red for every [MASK] ...
            if self.binds:
                guess[:, 3] = 11                                            # ... but green where green is
            guess = torch.where(ids == Tokenizer.MASK, guess, ids)          # a word in view is copied
            return F.one_hot(guess, 30).float()                             # (B, L, vocab)

        def forward(self, batch, task):
            return types.SimpleNamespace(logits=torch.zeros(len(batch["labels"]), 2),
                                         mlm_logits=self.masked_words(batch, task))

    batches = itm_validation_batches(captions, FakeTokenizer(), 16, "cpu", mlm_prob=0.3)
    cfg, cpu = TrainConfig(device="cpu", dtype="fp32"), torch.device("cpu")
    binds, sees_colours = (evaluate_itm(Teacher(b), batches, cfg, cpu) for b in (True, False))
    assert binds["colours_together"] == 100.0 and sees_colours["colours_together"] == 50.0
    assert binds["colours_without_binding"] == sees_colours["colours_without_binding"] == 50.0


def test_masked_words_are_scored_per_kind():
    """A stub teacher right on every masked colour and shape word and wrong on every size and
    relation: the per-kind accuracies say exactly that, and the overall one is a hand count."""
    ids = {"red": 10, "green": 11, "small": 12, "large": 13, "circle": 14, "squares": 15, "left": 16}

    class KindsTokenizer:
        def encode(self, word):
            return [1, ids.get(word, 3), 2]

        def __len__(self):
            return 30

    captions = FakeCaptions()
    g = torch.Generator().manual_seed(1)
    captions.text_ids[:, 1:6] = torch.randint(10, 17, (len(captions), 5), generator=g)
    captions.swapped_ids = captions.text_ids.clone()
    right_kinds = {ids["red"], ids["green"], ids["circle"], ids["squares"]}

    class Teacher(torch.nn.Module):
        config = model_config("tiny", vocab_size=30, num_answers=5)

        def forward(self, batch, task):
            labels = batch["mlm_labels"]                                    # the stub reads the answers
            right = (labels[..., None] == torch.tensor(sorted(right_kinds))).any(-1)
            guess = torch.where(right, labels, 0)                           # (B, L): [PAD] where wrong
            return types.SimpleNamespace(logits=torch.zeros(len(labels), 2), mlm_logits=F.one_hot(guess, 30).float())

        def masked_words(self, batch, task):                                # the colour probe: not scored here
            return F.one_hot(batch["mlm_text_ids"], 30).float()

    batches = itm_validation_batches(captions, KindsTokenizer(), 16, "cpu", mlm_prob=0.5)
    metrics = evaluate_itm(Teacher(), batches, TrainConfig(device="cpu", dtype="fp32"), torch.device("cpu"))
    assert metrics["mlm_per_kind"] == {"colour": 100.0, "size": 0.0, "shape": 100.0, "relation": 0.0}
    masked = torch.cat([b["mlm_labels"][b["mlm_labels"] != -100] for b in batches]).tolist()
    by_hand = 100 * sum(word in right_kinds for word in masked) / len(masked)
    assert metrics["mlm_accuracy"] == pytest.approx(by_hand)
    assert all(Counter(masked)[i] > 0 for i in ids.values())                # every kind was masked
