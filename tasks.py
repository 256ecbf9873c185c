"""The three tasks of the built-in benchmark: their question families and generators.

Each task is a list of question *families* (README, "The benchmark"): a template plus a
program. A generator draws a group of examples from one random stream: first the text's
skeleton (family, bound, which attributes), then scenes and attribute values until the
planned label comes out, so that the text alone says little about the label. The label
is always what the program returns on the symbolic scene (programs.execute,
programs.entailment_label), never string logic.

- task A, reasoning  (NLVR2-like):   two images + statement -> true / false
- task B, entailment (SNLI-VE-like): image + hypothesis -> entailment / neutral / contradiction
- task C, vqa        (VQA v2-like):  image + question -> answer, ten synthetic annotators

The words of every text (noun phrases, numbers, relations) and the captions of the
pre-training stage are in templates.py, read it first; data.py turns the groups into cached
tensors.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from config import check_each_once
from programs import ENTAILMENT_LABELS, IllPosed, entailment_label, execute, holds
from scenes import (ATTRIBUTE_SETS, ATTRIBUTES, OPPOSITE, RELATIONS, SHAPES, SIZES, Description, Scene,
                    SceneConfig, describe, sample_scene)
from templates import NUMBER_WORDS, REL_TEXT, choice, counted, noun

if TYPE_CHECKING:   # type hints only: data.py imports this file
    from data import DataConfig

FAMILIES = {
    "reasoning": ("A1_binding", "A2_relation", "A3_both_or_one", "A4_count_control",
                  "A5_filtered_count"),
    "entailment": ("B1_exist", "B2_not_exist", "B3_every", "B4_count_bound",
                   "B5_relation_exist", "B6_definite_relation"),
    "vqa": ("C1_exist_control", "C2_count_control", "C3_exist_binding", "C4_query_binding",
            "C5_query_relation", "C6_count_relation", "C7_exist_relation"),
}
ANNOTATORS = 10                       # answers per VQA question, as in VQA v2
TRIES = 40                            # proposals per example before a scene is resampled
ATTEMPTS = 30                         # scenes per group with the planned labels (then VQA takes any count)


def check_families(families: list[str], tasks: list[str]) -> None:
    """--families (train.py and data.py): each must be a family of one of `tasks`, and leave every task one."""
    check_each_once("families", families)
    known = [f for t in tasks if t in FAMILIES for f in FAMILIES[t]]
    for family in families:
        if family not in known:
            raise ValueError(f"--families: {family!r} is not a family of --tasks {','.join(tasks)}; "
                             f"choose from {known}")
    if families and not all(set(families) & set(FAMILIES.get(t, ())) for t in tasks):
        raise ValueError(f"--families {','.join(families)} leaves a task of --tasks {','.join(tasks)} with no family")


def _weighted(rng: np.random.Generator, weights: dict):
    """A key of `weights`, drawn in proportion to its value."""
    u = rng.random() * sum(weights.values())
    for key, w in weights.items():
        u -= w
        if u < 0:
            return key
    return key


class NoCandidate(Exception):
    """This scene cannot give the planned label: sample another scene."""


def _first(propose, accept, tries: int = TRIES):
    """The first proposal that is not None and is accepted, or None after `tries`."""
    try:
        for _ in range(tries):
            x = propose()
            if x is not None and accept(x):
                return x
    except NoCandidate:
        pass
    return None


def _attrs(rng: np.random.Generator, sizes=(2, 2, 3)) -> tuple[str, ...]:
    """A random set of attribute names (how many: drawn from `sizes`), in noun order."""
    return choice(rng, ATTRIBUTE_SETS_OF_SIZE[choice(rng, sizes)])


ATTRIBUTE_SETS_OF_SIZE = {k: [s for s in ATTRIBUTE_SETS if len(s) == k] for k in (1, 2, 3)}


def _reference(rng: np.random.Generator, expressions) -> Description | None:
    """One of an object's (binding, plain) referring expressions (Scene.references): a
    binding one, when the scene has one, 80% of the time, which forces binding."""
    binding, plain = expressions
    if binding and (rng.random() < 0.8 or not plain):
        return choice(rng, binding)
    return choice(rng, plain) if plain else None


# --------------------------------------------------------------- task A: visual reasoning

@dataclass(frozen=True)
class Statement:
    """An NLVR2-like statement, before it becomes a text and a program."""
    family: int                       # index into FAMILIES["reasoning"]
    form: str                         # "exist" | "relation" | "more" | "exactly"
    where: str                        # "left" | "right" | "both" | "exactly_one"
    d1: Description
    rel: str | None = None            # relation forms: d1 is rel of d2
    d2: Description | None = None
    n: int = 0                        # "exactly" form: the count

    def program(self) -> tuple:
        f1 = ("filter", self.d1, ("scene",))
        if self.form == "more":       # `where` names the image said to have more
            i = 0 if self.where == "left" else 1
            return ("gt", ("image", i, ("count", f1)), ("image", 1 - i, ("count", f1)))
        if self.form == "exactly":
            return ("eq", ("image", 0 if self.where == "left" else 1, ("count", f1)), self.n)
        if self.form == "relation":
            f1 = ("filter", self.d1, ("relate", self.rel, ("filter", self.d2, ("scene",))))
        p = ("exist", f1)
        return ("image", 0, p) if self.where == "left" else ("image", 1, p) if self.where == "right" \
            else (self.where, p)

    def text(self) -> str:
        image = {"left": "the left image", "right": "the right image", "both": "both images",
                 "exactly_one": "exactly one image"}[self.where]
        other = "the right image" if self.where == "left" else "the left image"
        if self.form == "exist":
            verb = "contain" if self.where == "both" else "contains"
            return f"{image} {verb} a {noun(self.d1)} ."
        if self.form == "relation":
            return f"in {image} a {noun(self.d1)} is {REL_TEXT[self.rel]} a {noun(self.d2)} ."
        if self.form == "exactly":
            return f"{image} has exactly {counted(self.n, self.d1)} ."
        if self.family == 3:          # A4, the control: a single attribute, global counts
            return f"{image} has more {noun(self.d1, True)} than {other} ."
        return f"there are more {noun(self.d1, True)} in {image} than in {other} ."

    def true_on(self, pair: tuple[Scene, Scene]) -> bool:
        return bool(execute(self.program(), pair))


def propose_statement(rng: np.random.Generator, family: int, pair: tuple[Scene, Scene]) -> Statement:
    """A statement of `family` built around objects of `pair`, so that it is often true."""
    i = int(rng.integers(2))
    objects = pair[i].objects
    o = choice(rng, objects)
    where = ("left", "right")[i]
    if family == 0:   # A1: "the left image contains a large red circle ."
        return Statement(family, "exist", where, describe(o, _attrs(rng, (2, 3))))
    if family in (1, 2):  # A2 / A3: a relation, or (A3) a binding, in one or both images
        if family == 2:
            where = choice(rng, ("both", "exactly_one"))
            if rng.random() < 0.5:
                return Statement(family, "exist", where, describe(o, _attrs(rng, (1, 2, 2))))
        b = choice(rng, [x for x in objects if x is not o])
        rel = choice(rng, [r for r in RELATIONS if holds(r, o, b)])
        sizes = (1, 2) if family == 2 else (1, 2, 2)
        return Statement(family, "relation", where, describe(o, _attrs(rng, sizes)), rel,
                         describe(b, _attrs(rng, sizes)))
    if family == 3:   # A4: "the left image has more circles than the right image ."
        return Statement(family, "more", where, describe(o, (choice(rng, ("colour", "shape")),)))
    d = describe(o, _attrs(rng, (2,)))  # A5: counts of a bound description
    if rng.random() < 0.5:
        return Statement(family, "more", where, d)
    return Statement(family, "exactly", where, d, n=sum(d.matches(x) for x in objects))


def perturbations(rng: np.random.Generator, s: Statement, pair: tuple[Scene, Scene]) -> list[Statement]:
    """Minimal edits of `s` (ShapeWorld / NLVR2 contrast): swap one attribute for a value
    present in the pair, flip the relation, swap its arguments, change the image, count +-1."""
    out = [replace(s, where={"left": "right", "right": "left", "both": "exactly_one",
                             "exactly_one": "both"}[s.where])]
    objects = pair[0].objects + pair[1].objects
    for which in ("d1", "d2"):
        d = getattr(s, which)
        for a in (d.named() if d else ()):
            values = sorted({getattr(o, a) for o in objects} - {getattr(d, a)})
            if values:
                out.append(replace(s, **{which: d._replace(**{a: choice(rng, values)})}))
    if s.form == "relation":
        out += [replace(s, rel=OPPOSITE[s.rel]), replace(s, d1=s.d2, d2=s.d1)]
    if s.form == "exactly":
        out += [replace(s, n=n) for n in (s.n - 1, s.n + 1) if 1 <= n < len(NUMBER_WORDS)]
    return out


def reasoning_group(rng: np.random.Generator, g: int, cfg: DataConfig):
    """Two scene pairs A and B, four examples, two per pair, half of them true:

        (A, s, True)  (A, s', False)  (B, s, False)  (B, t, True)

    s' is a minimal edit of s; (B, s) is NLVR2's contrast: the same sentence, now false,
    so half of the false examples cannot be told from the text alone."""
    family, sc = g % len(FAMILIES["reasoning"]), cfg.scene_config()
    for _ in range(ATTEMPTS):
        a = (sample_scene(rng, sc), sample_scene(rng, sc))
        b = (sample_scene(rng, sc), sample_scene(rng, sc))
        s = _first(lambda: propose_statement(rng, family, a),
                   lambda x: x.true_on(a) and not x.true_on(b))
        if s is None:
            continue
        edits = [x for x in perturbations(rng, s, a) if not x.true_on(a)]
        t = _first(lambda: propose_statement(rng, family, b),
                   lambda x: x.true_on(b) and x.text() != s.text())
        if edits and t is not None:
            s_edit = choice(rng, edits)
            examples = [((0, 1), s, 1), ((0, 1), s_edit, 0), ((2, 3), s, 0), ((2, 3), t, 1)]
            return [*a, *b], [(k, x.text(), y, family, None) for k, x, y in examples]
    raise RuntimeError(f"reasoning group {g}: no statement found")


# ------------------------------------------------------------ task B: visual entailment

ENTAILMENT_GROUPS = ((0, 1), (2, 3), (4,), (5,))  # families balanced together: {B1,B2} {B3,B4} B5 B6
# Per group, a cycle of four images: (curtain?, planned labels of its three hypotheses).
# Without a curtain only E/C are possible; each group gets exactly 4 E, 4 N, 4 C per cycle,
# and 25% of all images have no curtain.
IMAGE_PLAN = (
    ((False, "EEC"), (False, "ECC"), (True, "ENN"), (True, "CNN")),
    ((False, "EEC"), (False, "ECC"), (True, "ENN"), (True, "CNN")),
    ((True, "ENC"),) * 4,
    ((True, "ENC"),) * 4,
)
# Which family a hypothesis uses, by (group, curtain?, planned label): {family: weight}.
# Some are forced: with a curtain, "there is a ..." is never a contradiction, "there is no
# ..." never entailed and "every ..." never entailed. The weights give every family of
# the two mixed groups exactly a third of each label, and both labels that are possible
# with and without a curtain.
FAMILY_WEIGHTS = {
    0: {(False, "E"): {0: 1, 1: 2}, (False, "C"): {0: 2, 1: 1},
        (True, "E"): {0: 1}, (True, "C"): {1: 1}, (True, "N"): {0: 1, 1: 1}},
    1: {(False, "E"): {2: 2, 3: 1}, (False, "C"): {2: 1, 3: 1},
        (True, "E"): {3: 1}, (True, "C"): {2: 1, 3: 1}, (True, "N"): {2: 1, 3: 1}},
}


def _some_description(rng: np.random.Generator, scene: Scene, attrs) -> Description:
    """Naming `attrs`: of a visible object, of a hidden one, or a mix of attribute values seen
    in the scene (so that a false description still names colours and shapes present)."""
    u, hidden = rng.random(), scene.hidden_objects
    if u < 0.4 or (u < 0.6 and not hidden):
        return describe(choice(rng, scene.visible_objects or scene.objects), attrs)
    if u < 0.6:
        return describe(choice(rng, hidden), attrs)
    return Description(**{a: getattr(choice(rng, scene.objects), a) for a in attrs})


BOUNDS = tuple((op, n) for op in ("ge", "le", "eq") for n in (1, 2, 3))  # B4: at least / at most / exactly n
BOUND_WORDS = {"ge": "at least", "le": "at most", "eq": "exactly"}


def hypothesis_skeleton(rng: np.random.Generator, family: int, curtain: bool, target: str) -> dict:
    """What a hypothesis says, apart from attribute values: drawn once per hypothesis,
    before the values are searched for the planned label, so that the skeleton (how many
    attributes, which bound) does not give the label away."""
    if family in (0, 1, 4):
        return {"attrs": _attrs(rng, (2, 3))}
    if family == 2:  # "every <attrs> is <predicate>"
        attrs = _attrs(rng, (1, 1, 2))
        return {"attrs": attrs, "predicate": choice(rng, [a for a in ATTRIBUTES if a not in attrs])}
    if family == 3:  # the bounds that can take the planned label (see possible_values)
        if curtain and target == "E":    # only "at least n" can be sure of hidden cells
            bounds = BOUNDS[:3]
        elif curtain and target == "C":  # "at least 1 / 2" cannot be refuted with 2+ hidden cells
            bounds = BOUNDS[2:]
        else:
            bounds = BOUNDS
        return {"attrs": _attrs(rng, (1,)), "bound": choice(rng, bounds)}
    return {}


def propose_hypothesis(rng: np.random.Generator, family: int, scene: Scene, skeleton: dict):
    """(text, program) of a hypothesis of `family` (0..5 for B1..B6)."""
    if family in (0, 1):  # "there is a large red circle ." / "there is no large red circle ."
        d = _some_description(rng, scene, skeleton["attrs"])
        if family == 0:
            return f"there is a {noun(d)} .", ("exist", ("filter", d, ("scene",)))
        return f"there is no {noun(d)} .", ("not", ("exist", ("filter", d, ("scene",))))
    if family == 2:   # "every circle is red ." / "every large square is blue ."
        if not scene.visible_objects:
            return None
        o = choice(rng, scene.visible_objects)  # at least one visible match: not vacuous
        a = skeleton["predicate"]
        value = getattr(o if rng.random() < 0.5 else choice(rng, scene.objects), a)
        return f"every {noun(describe(o, skeleton['attrs']))} is {'a ' + value if a == 'shape' else value} .", \
            ("all", ("filter", describe(o, skeleton["attrs"]), ("scene",)), Description(**{a: value}))
    if family == 3:   # "there are at least two red objects ." / at most / exactly
        d, (op, n) = _some_description(rng, scene, skeleton["attrs"]), skeleton["bound"]
        return f"there {'is' if n == 1 else 'are'} {BOUND_WORDS[op]} {counted(n, d)} .", \
            (op, ("count", ("filter", d, ("scene",))), n)
    rel = choice(rng, RELATIONS)
    if family == 4:   # "a red circle is left of a blue square ."
        d1, d2 = _some_description(rng, scene, skeleton["attrs"]), _some_description(rng, scene, _attrs(rng))
        return f"a {noun(d1)} is {REL_TEXT[rel]} a {noun(d2)} .", \
            ("exist", ("filter", d1, ("relate", rel, ("filter", d2, ("scene",)))))
    d1, d2 = _definite(rng, scene), _definite(rng, scene)  # B6
    if d1 is None or d2 is None or d1 == d2:
        return None
    return f"the {noun(d1)} is {REL_TEXT[rel]} the {noun(d2)} .", \
        ("holds", rel, ("unique", ("filter", d1, ("scene",))), ("unique", ("filter", d2, ("scene",))))


def _definite(rng: np.random.Generator, scene: Scene) -> Description | None:
    """For "the ...": a description of one visible object that no other visible object
    matches or, when there is a curtain, one that no visible object matches (its referent
    may be behind the curtain: the label then depends on where the curtain is)."""
    visible = scene.visible_objects
    if scene.curtain is not None and rng.random() < 0.5:
        attrs = _attrs(rng, (2, 3))
        if scene.hidden_objects and rng.random() < 0.7:
            d = describe(choice(rng, scene.hidden_objects), attrs)
        else:  # a mix of values seen in the scene
            d = Description(**{a: getattr(choice(rng, scene.objects), a) for a in attrs})
        return None if any(d.matches(o) for o in visible) else d
    return _reference(rng, scene.visible_references[choice(rng, visible)]) if visible else None


def entailment_group(rng: np.random.Generator, g: int, cfg: DataConfig):
    """One image, three hypotheses with the labels planned by IMAGE_PLAN."""
    group, (curtain, plan), sc = ENTAILMENT_GROUPS[g % 4], IMAGE_PLAN[g % 4][(g // 4) % 4], cfg.scene_config()
    for _ in range(ATTEMPTS):
        scene = sample_scene(rng, sc, curtain)
        chosen = []
        for target in plan:
            family = _weighted(rng, FAMILY_WEIGHTS.get(g % 4, {}).get((curtain, target), {group[0]: 1}))
            skeleton = hypothesis_skeleton(rng, family, curtain, target)

            def propose():
                h = propose_hypothesis(rng, family, scene, skeleton)
                try:
                    return h and (*h, entailment_label(h[1], scene, sc))
                except IllPosed:
                    return None
            h = _first(propose, lambda h: h[2][0].upper() == target and h[0] not in [c[1] for c in chosen])
            if h is None:
                break
            chosen.append((family, *h))
        else:
            return [scene], [((0,), text, ENTAILMENT_LABELS.index(label), family, None)
                             for family, text, _, label in chosen]
    raise RuntimeError(f"entailment group {g}: no hypotheses found")


# --------------------------------------------------------------------------- task C: VQA

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
        ref = _reference(rng, scene.references[r])
        return f"how many {noun(d, True)} are {REL_TEXT[rel]} the {noun(ref)} ?", \
            ("count", ("filter", d, ("relate", rel, ("unique", ("filter", ref, ("scene",))))))
    # C5 and C7 relate to a reference object o: "... left of the red square ?"
    ref, rel = _reference(rng, scene.references[o]), choice(rng, RELATIONS)
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
    d = describe(choice(rng, [x for x in objects if x is not o]), _attrs(rng, (1, 1, 2)))
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
        skeleton = {"query": QUERY_ATTRS[k % 3], "attrs": _attrs(rng, (2, 3)), "count": choice(rng, kinds)}
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
            q = _first(propose, lambda q: target in (None, q[3]) and q[1] not in [c[1] for c in chosen.values()])
            if q is None:
                break
            chosen[i] = q
        else:
            return [scene], [((0,), text, answers.index(a), family, annotate(rng, a, scene, sc, cfg.vqa_noise))
                             for family, text, _, a in (chosen[i] for i in range(per))]
    raise RuntimeError(f"vqa group {g}: no questions found")
