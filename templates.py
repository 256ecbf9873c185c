"""The words of the benchmark: noun phrases, numbers, relations, the lexicon, the captions.

The sentence templates of tasks.py are built from these words and noun phrases, so the
tokenizer's vocabulary is a fixed list (`lexicon`), the same however many examples are
generated: TEMPLATE_WORDS must hold every other word of those sentences (a test checks it).
The captions are the image-text pairs of the pre-training stage (pretrain.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from programs import holds
from scenes import ATTRIBUTES, RELATIONS, SHAPES, SIZES, Description, Scene, describe

if TYPE_CHECKING:   # type hints only: data.py imports this file
    from data import DataConfig

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
REL_TEXT = {"left": "left of", "right": "right of", "above": "above", "below": "below"}
TEMPLATE_WORDS = ("a the is are there no every at least most exactly how many what colour "
                  "shape size object objects of in image images both contain contains has more "
                  "than curtain ? .").split()


def choice(rng: np.random.Generator, items):
    """One of `items`, uniformly (2x faster than rng.integers); tasks.py draws with it too."""
    return items[int(rng.random() * len(items))]


def noun(d: Description, plural: bool = False) -> str:
    """'large red circle', 'red objects', 'object'."""
    words = [w for w in (d.size, d.colour, d.shape or "object") if w]
    return " ".join(words) + ("s" if plural else "")


def counted(n: int, d: Description) -> str:
    """'one red circle', 'two red circles'."""
    return f"{NUMBER_WORDS[n]} {noun(d, plural=n != 1)}"


def lexicon(cfg: DataConfig) -> list[str]:
    """Every word a template can produce: the tokenizer's vocabulary never depends on
    how many examples were generated."""
    values = [*cfg.scene_config().colours, *SIZES, *SHAPES, *(s + "s" for s in SHAPES)]
    return TEMPLATE_WORDS + [w for r in REL_TEXT.values() for w in r.split()] + values + list(NUMBER_WORDS)


def caption(rng: np.random.Generator, scene: Scene) -> str:
    """Up to four visible objects, paired by a relation that holds, and the curtain:
    'a large red circle left of a small blue square . a small green triangle .'"""
    visible = scene.visible_objects
    picked = [visible[i] for i in rng.permutation(len(visible))[:4].tolist()]
    clauses = []
    for i in range(0, len(picked), 2):
        a = noun(describe(picked[i], ATTRIBUTES))
        if i + 1 < len(picked):
            rel = choice(rng, [r for r in RELATIONS if holds(r, picked[i], picked[i + 1])])
            a += f" {REL_TEXT[rel]} a {noun(describe(picked[i + 1], ATTRIBUTES))}"
        clauses.append(f"a {a}")
    if scene.curtain is not None:
        clauses.append("a curtain")
    return " . ".join(clauses) + " ."
