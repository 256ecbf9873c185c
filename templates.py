"""The words of the benchmark: noun phrases, numbers, relations, the lexicon, the captions.

The sentence templates of tasks.py and vqa_task.py are built from these words and noun phrases, so the
tokenizer's vocabulary is a fixed list (`lexicon`), the same however many examples are
generated: TEMPLATE_WORDS must hold every other word of those sentences (a test checks it).
The captions are the image-text pairs of the pre-training stage (pretrain.py), each with a
colour-swapped copy that the program finds false of its scene: the stage's hard negative.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from programs import execute, holds
from scenes import ATTRIBUTES, RELATIONS, SHAPES, SIZES, Description, Scene, describe

if TYPE_CHECKING:   # type hints only: data.py imports this file
    from data import DataConfig

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
REL_TEXT = {"left": "left of", "right": "right of", "above": "above", "below": "below"}
TEMPLATE_WORDS = ("a the is are there no every at least most exactly how many what colour "
                  "shape size object objects of in image images both contain contains has more "
                  "than curtain ? .").split()


def choice(rng: np.random.Generator, items):
    """One of `items`, uniformly (2x faster than rng.integers); the tasks draw with it too."""
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


# ----------------------------------------------------------------------------- captions

class Clause(NamedTuple):
    """One sentence of a caption: an object ('a small green triangle'), two objects and a
    relation that holds between them ('a large red circle left of a small blue square'), or,
    with a count, how many objects in view have first's shape ('two circles')."""
    first: Description
    relation: str | None = None
    second: Description | None = None
    count: int | None = None


def caption_clauses(rng: np.random.Generator, scene: Scene) -> list[Clause]:
    """Up to four visible objects, fully described, paired by a relation that holds."""
    visible = scene.visible_objects
    picked = [visible[i] for i in rng.permutation(len(visible))[:4].tolist()]
    clauses = []
    for i in range(0, len(picked), 2):
        first = describe(picked[i], ATTRIBUTES)
        if i + 1 < len(picked):
            rel = choice(rng, [r for r in RELATIONS if holds(r, picked[i], picked[i + 1])])
            clauses.append(Clause(first, rel, describe(picked[i + 1], ATTRIBUTES)))
        else:
            clauses.append(Clause(first))
    return clauses


def count_clause(rng: np.random.Generator, scene: Scene) -> Clause:
    """How many visible objects have a shape drawn at random ('two circles', 'zero squares'): with
    --caption-counts, the last sentence of every caption. A masked shape word there is had by
    seeing the shapes, without binding them to a colour or a size."""
    shape = choice(rng, SHAPES)
    return Clause(Description(shape=shape), count=sum(o.shape == shape for o in scene.visible_objects))


def caption_text(clauses: list[Clause], curtain: bool) -> str:
    """'a large red circle left of a small blue square . a small green triangle . two circles . a curtain .'"""
    sentences = [counted(c.count, c.first) if c.count is not None else
                 f"a {noun(c.first)}" + (f" {REL_TEXT[c.relation]} a {noun(c.second)}" if c.relation else "")
                 for c in clauses]
    if curtain:
        sentences.append("a curtain")
    return " . ".join(sentences) + " ."


def clause_program(c: Clause) -> tuple:
    """The clause as a program of programs.py: is there such an object (related so to such
    another)? Does the count of such objects equal c.count?"""
    if c.count is not None:
        return ("eq", ("count", ("filter", c.first, ("scene",))), c.count)
    if c.relation is None:
        return ("exist", ("filter", c.first, ("scene",)))
    return ("exist", ("filter", c.first, ("relate", c.relation, ("filter", c.second, ("scene",)))))


def describes(clauses: list[Clause], scene: Scene) -> bool:
    """Is every clause true of the objects in view? The program's answer, not the words'."""
    in_view = Scene(scene.visible_objects, scene.background)   # a caption describes what the image shows
    return all(execute(clause_program(c), in_view) for c in clauses)


def colours_exchanged(clauses: list[Clause], one: tuple[int, str], other: tuple[int, str]) -> list[Clause]:
    """The clauses with the colours of two objects exchanged; an object is (clause index, "first" or "second")."""
    out = list(clauses)
    colour_one, colour_other = (getattr(clauses[i], part).colour for i, part in (one, other))
    for (i, part), colour in ((one, colour_other), (other, colour_one)):
        out[i] = out[i]._replace(**{part: getattr(out[i], part)._replace(colour=colour)})
    return out


def swapped_caption(rng: np.random.Generator, scene: Scene, clauses: list[Clause]) -> str | None:
    """A hard negative for image-text matching (pretrain.py): the caption with the colours of two of
    its objects exchanged, the same words in other bindings. Chosen at random among the exchanges that
    make it false of the scene: an exchange can happen to describe other objects in the picture
    (about one in twenty do, on the default scenes), and that caption is no negative. None if no
    exchange makes it false (e.g. every object named has one colour)."""
    objects = [(i, part) for i, c in enumerate(clauses) for part in ("first", "second")
               if getattr(c, part) is not None and c.count is None]      # a count clause names no colour
    colour = {(i, part): getattr(clauses[i], part).colour for i, part in objects}
    pairs = [(a, b) for k, a in enumerate(objects) for b in objects[k + 1:] if colour[a] != colour[b]]
    for k in rng.permutation(len(pairs)).tolist():
        swapped = colours_exchanged(clauses, *pairs[k])
        if not describes(swapped, scene):
            return caption_text(swapped, scene.curtain is not None)
    return None
