"""Task C of the built-in benchmark, VQA v2-like: one image, several questions, ten annotators.

A group is one scene and --vqa-questions-per-image questions about it. The seven families
(C1..C7, tasks.FAMILIES["vqa"]) take turns; yes/no and count families cycle through planned
answers, so that an answer cannot be guessed from the question. Each question's answer is what
its program returns on the scene (programs.execute); ten synthetic annotators then agree with
it, or with probability --vqa-noise give a plausible wrong answer, and data.py turns their
answers into VQA soft scores. The helpers shared with tasks A and B (first_accepted,
some_attributes, referring_expression) are in tasks.py, read it first.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from programs import IllPosed, execute, holds
from scenes import ATTRIBUTES, RELATIONS, SHAPES, SIZES, Description, Scene, SceneConfig, describe, sample_scene
from tasks import (ATTEMPTS, FAMILIES, NoCandidate, TooFewScenes, first_accepted, referring_expression,
                   some_attributes)
from templates import REL_TEXT, choice, noun

if TYPE_CHECKING:   # type hints only: data.py imports this file
    from data import DataConfig

ANNOTATORS = 10                       # answers per VQA question, as in VQA v2


def answer_vocabulary(cfg: DataConfig) -> list[str]:
    return ["yes", "no", *map(str, range(cfg.max_objects + 1)), *cfg.scene_config().colours,
            *SHAPES, *SIZES]


QUERY_ATTRS = ("colour", "shape", "size")
COUNT_TARGETS = {1: 4, 5: 4}  # C2 and C6 answer 0..3, each equally often


def vqa_target(family: int, k: int) -> str | None:
    """The planned answer of the k-th question of a family (None: any answer)."""
    if family in (0, 2, 6):
        return ("yes", "no")[k % 2]
    if family in COUNT_TARGETS:
        return str(k % COUNT_TARGETS[family])
    return None  # C4 / C5 query an attribute; answers are balanced by symmetry


def propose_question(rng: np.random.Generator, family: int, skeleton: dict, target: str | None,
                     scene: Scene, colours):
    """(text, program) of a question of `family` (0..6 for C1..C7). The skeleton, drawn
    once per question, fixes the attribute C4 / C5 ask for and the attributes C3 names
    (so that they do not depend on the planned answer); target: the planned answer."""
    objects = scene.objects
    o = choice(rng, objects)
    if family in (0, 1):  # the controls: pick among the values that give the planned answer
        if family == 0 or skeleton["count"] == "colour":  # C1: "is there a red object ?"
            values = [Description(colour=c) for c in colours]
        else:             # C2: "how many circles are there ?" / "how many red objects ..."
            values = [Description(shape=s) for s in SHAPES]
        values = [d for d in values if target is None
                  or _answer(sum(d.matches(x) for x in objects) > 0 if family == 0
                             else sum(d.matches(x) for x in objects)) == target]
        if not values:
            raise NoCandidate
        d = choice(rng, values)
        if family == 0:
            return f"is there a {noun(d)} ?", ("exist", ("filter", d, ("scene",)))
        return f"how many {noun(d, True)} are there ?", ("count", ("filter", d, ("scene",)))
    if family == 2:   # C3: "is there a large red circle ?"; a "no" still names present values
        attrs = skeleton["attrs"]
        d = describe(o, attrs) if rng.random() < 0.5 else \
            Description(**{a: getattr(choice(rng, objects), a) for a in attrs})
        return f"is there a {noun(d)} ?", ("exist", ("filter", d, ("scene",)))
    if family == 3:   # C4: "what colour is the large circle ?" (a binding reference if any)
        attr = skeleton["query"]
        named = [a for a in ATTRIBUTES if a != attr]
        binding, plain = [], []  # unique descriptions of objects by the two other attributes
        for x in objects:
            d = describe(x, named)
            if d in scene.references[x][0]:
                binding.append(d)
            elif d in scene.references[x][1]:
                plain.append(d)
        if not binding and not plain:
            raise NoCandidate
        d = choice(rng, binding if binding and (rng.random() < 0.8 or not plain) else plain)
        return f"what {attr} is the {noun(d)} ?", ("query", attr, ("unique", ("filter", d, ("scene",))))
    if family == 5:   # C6: "how many circles are above the blue triangle ?"
        # Enumerated: every (reference object, relation, description) with the planned
        # count, where the relation leaves out some matching object (else it is redundant).
        kind, options = skeleton["count"], []
        descriptions = [Description(**{kind: v}) for v in sorted({getattr(x, kind) for x in objects})] \
            if kind != "object" else [Description()]
        for r in objects:
            for rel in RELATIONS if any(scene.references[r]) else ():
                for d in descriptions:
                    matching = [x for x in objects if x is not r and d.matches(x)]
                    n = sum(holds(rel, x, r) for x in matching)
                    if n < len(matching) and (target is None or str(n) == target):
                        options.append((r, rel, d))
        if not options:
            raise NoCandidate
        r, rel, d = choice(rng, options)
        ref = referring_expression(rng, scene.references[r])
        return f"how many {noun(d, True)} are {REL_TEXT[rel]} the {noun(ref)} ?", \
            ("count", ("filter", d, ("relate", rel, ("unique", ("filter", ref, ("scene",))))))
    # C5 and C7 relate to a reference object o: "... left of the red square ?"
    ref, rel = referring_expression(rng, scene.references[o]), choice(rng, RELATIONS)
    if ref is None:
        return None
    anchor, where = ("unique", ("filter", ref, ("scene",))), f"{REL_TEXT[rel]} the {noun(ref)}"
    if family == 4:   # C5: "what shape is the circle left of the red square ?"
        attr, related = skeleton["query"], [x for x in objects if holds(rel, x, o)]
        if not related:
            return None
        t = choice(rng, related)
        # The target's description must pick it out among the related objects but not
        # among all objects, or the relation would be redundant (CLEVR's degenerate check).
        options = [d for d in (describe(t, s) for s in ((), ("size",), ("colour",), ("shape",)) if attr not in s)
                   if sum(d.matches(x) for x in related) == 1 and sum(d.matches(x) for x in objects) >= 2]
        if not options:
            return None
        d = choice(rng, options)
        return f"what {attr} is the {noun(d)} {where} ?", \
            ("query", attr, ("unique", ("filter", d, ("relate", rel, anchor))))
    # C7: "is there a yellow object below the small square ?"; described after another
    # object, so such an object exists: only the relation decides.
    d = describe(choice(rng, [x for x in objects if x is not o]), some_attributes(rng, (1, 1, 2)))
    return f"is there a {noun(d)} {where} ?", ("exist", ("filter", d, ("relate", rel, anchor)))


def _answer(value) -> str:
    return ("yes" if value else "no") if isinstance(value, bool) else str(value)


def annotate(rng: np.random.Generator, answer: str, scene: Scene, sc: SceneConfig, noise: float) -> list[str]:
    """Ten synthetic annotators: right with probability 1 - noise, otherwise a plausible
    wrong answer of the same type (count +-1, another colour of the scene, the other size)."""
    if answer in ("yes", "no"):
        wrong = ["no" if answer == "yes" else "yes"]
    elif answer.isdigit():
        wrong = [str(n) for n in (int(answer) - 1, int(answer) + 1) if 0 <= n <= sc.max_objects]
    else:
        attr = "colour" if answer in sc.colours else "shape" if answer in SHAPES else "size"
        present = sorted({getattr(o, attr) for o in scene.objects} - {answer})
        pool = {"colour": sc.colours, "shape": SHAPES, "size": SIZES}[attr]
        wrong = present or [v for v in pool if v != answer]
    return [answer if u >= noise else wrong[int(v * len(wrong))] for u, v in rng.random((ANNOTATORS, 2)).tolist()]


def vqa_group(rng: np.random.Generator, g: int, cfg: DataConfig):
    """One image, vqa_questions_per_image questions. Families take turns; yes/no and count
    families cycle through planned answers. Each question's skeleton is drawn first, then
    scenes and attribute values are drawn until every question has its planned answer."""
    sc, per, answers = cfg.scene_config(), cfg.vqa_questions_per_image, answer_vocabulary(cfg)
    slots = []
    for q in range(g * per, (g + 1) * per):
        family, k = q % len(FAMILIES["vqa"]), q // len(FAMILIES["vqa"])
        kinds = ("colour", "shape") if family == 1 else (*ATTRIBUTES, "object")
        skeleton = {"query": QUERY_ATTRS[k % 3], "attrs": some_attributes(rng, (2, 3)), "count": choice(rng, kinds)}
        slots.append((family, vqa_target(family, k), skeleton))
    # The planned counts are the hardest to meet: try them first, to reject a scene early.
    order = sorted(range(per), key=lambda i: slots[i][0] not in COUNT_TARGETS)
    for attempt in range(2 * ATTEMPTS):
        scene = sample_scene(rng, sc)
        chosen = {}
        for i in order:
            family, target, skeleton = slots[i]
            if attempt >= ATTEMPTS and family in COUNT_TARGETS:
                target = None  # a count this scene grammar rarely gives: take any count

            def propose():
                q = propose_question(rng, family, skeleton, target, scene, sc.colours)
                try:
                    return q and (family, *q, _answer(execute(q[1], scene)))
                except IllPosed:
                    return None
            q = first_accepted(propose, lambda q: target in (None, q[3]) and q[1] not in [c[1] for c in chosen.values()])
            if q is None:
                break
            chosen[i] = q
        else:
            return [scene], [((0,), text, answers.index(a), family, annotate(rng, a, scene, sc, cfg.vqa_noise))
                             for family, text, _, a in (chosen[i] for i in range(per))]
    raise TooFewScenes(f"vqa group {g}: no scene in {2 * ATTEMPTS} draws took {per} different questions with "
                       f"the planned answers; ask fewer (--vqa-questions-per-image {per}) or allow more objects "
                       f"or colours (--max-objects {cfg.max_objects}, --num-colours {cfg.num_colours})")
