"""ITM batches: the negatives are what they claim to be."""

import torch

from pretrain import ITMBatches, swap_two_colours


def test_swap_exchanges_two_different_colours_and_keeps_the_words():
    red, blue, circle, square = 10, 11, 20, 21
    text = torch.tensor([[1, red, circle, blue, square, 2], [1, red, circle, red, square, 2]])
    swapped = swap_two_colours(text, [red, blue], seed=0)
    assert swapped[0].tolist() == [1, blue, circle, red, square, 2]
    assert torch.equal(swapped[1], text[1])            # no two different colours: unchanged
    assert torch.equal(swapped.sort(1).values, text.sort(1).values)


class FakeCaptions:
    def __init__(self, n=64):
        self.images = torch.randint(0, 255, (n, 8, 8, 3), dtype=torch.uint8)
        self.text_ids = torch.randint(5, 30, (n, 7))
        self.text_ids[:, 0], self.text_ids[:, -1] = 1, 2
        self.text_ids[:, 1], self.text_ids[:, 3] = 10, 11   # two colours in every caption

    def __len__(self):
        return len(self.images)


class FakeTokenizer:
    def encode(self, word):
        return [1, {"red": 10, "green": 11}.get(word, 3), 2]


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
