"""The three tasks of the built-in benchmark: their question families and generators.

Each task is a list of question *families* (README, "The benchmark"): a template plus a
program. A generator draws a group of examples from one random stream: first the text's
skeleton (family, bound, which attributes), then scenes and attribute values until the
planned label comes out, so that the text alone says little about the label. The label
is always what the program returns on the symbolic scene (programs.execute,
programs.entailment_label), never string logic.

- task A, reasoning  (NLVR2-like):   two images + statement -> true / false
- task B, entailment (SNLI-VE-like): image + hypothesis -> entailment / neutral / contradiction
- task C, vqa        (VQA v2-like):  image + question -> answer, ten synthetic annotators (vqa_task.py)

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
from scenes import ATTRIBUTE_SETS, ATTRIBUTES, OPPOSITE, RELATIONS, Description, Scene, describe, sample_scene
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
TRIES = 40                            # proposals per example before a scene is resampled
ATTEMPTS = 30                         # scenes per group with the planned labels (then VQA takes any count)


class TooFewScenes(ValueError):
    """No scene of the grammar gave a group its planned labels: the scene flags leave too little variety
    (a setting to change, not a bug). Its message names the flags."""


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


def first_accepted(propose, accept, tries: int = TRIES):
    """The first proposal that is not None and is accepted, or None after `tries`."""
    try:
        for _ in range(tries):
            x = propose()
            if x is not None and accept(x):
                return x
    except NoCandidate:
        pass
    return None


def some_attributes(rng: np.random.Generator, sizes=(2, 2, 3)) -> tuple[str, ...]:
    """A random set of attribute names (how many: drawn from `sizes`), in noun order."""
    return choice(rng, ATTRIBUTE_SETS_OF_SIZE[choice(rng, sizes)])


ATTRIBUTE_SETS_OF_SIZE = {k: [s for s in ATTRIBUTE_SETS if len(s) == k] for k in (1, 2, 3)}


def referring_expression(rng: np.random.Generator, expressions) -> Description | None:
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
        return Statement(family, "exist", where, describe(o, some_attributes(rng, (2, 3))))
    if family in (1, 2):  # A2 / A3: a relation, or (A3) a binding, in one or both images
        if family == 2:
            where = choice(rng, ("both", "exactly_one"))
            if rng.random() < 0.5:
                return Statement(family, "exist", where, describe(o, some_attributes(rng, (1, 2, 2))))
        b = choice(rng, [x for x in objects if x is not o])
        rel = choice(rng, [r for r in RELATIONS if holds(r, o, b)])
        sizes = (1, 2) if family == 2 else (1, 2, 2)
        return Statement(family, "relation", where, describe(o, some_attributes(rng, sizes)), rel,
                         describe(b, some_attributes(rng, sizes)))
    if family == 3:   # A4: "the left image has more circles than the right image ."
        return Statement(family, "more", where, describe(o, (choice(rng, ("colour", "shape")),)))
    d = describe(o, some_attributes(rng, (2,)))  # A5: counts of a bound description
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
        s = first_accepted(lambda: propose_statement(rng, family, a),
                   lambda x: x.true_on(a) and not x.true_on(b))
        if s is None:
            continue
        edits = [x for x in perturbations(rng, s, a) if not x.true_on(a)]
        t = first_accepted(lambda: propose_statement(rng, family, b),
                   lambda x: x.true_on(b) and x.text() != s.text())
        if edits and t is not None:
            s_edit = choice(rng, edits)
            examples = [((0, 1), s, 1), ((0, 1), s_edit, 0), ((2, 3), s, 0), ((2, 3), t, 1)]
            return [*a, *b], [(k, x.text(), y, family, None) for k, x, y in examples]
    raise TooFewScenes(f"reasoning group {g}: no two scene pairs in {ATTEMPTS} draws took a statement true "
                       f"of one and false of the other; allow more objects or colours (--max-objects, --num-colours)")


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
        return {"attrs": some_attributes(rng, (2, 3))}
    if family == 2:  # "every <attrs> is <predicate>"
        attrs = some_attributes(rng, (1, 1, 2))
        return {"attrs": attrs, "predicate": choice(rng, [a for a in ATTRIBUTES if a not in attrs])}
    if family == 3:  # the bounds that can take the planned label (see possible_values)
        if curtain and target == "E":    # only "at least n" can be sure of hidden cells
            bounds = BOUNDS[:3]
        elif curtain and target == "C":  # "at least 1 / 2" cannot be refuted with 2+ hidden cells
            bounds = BOUNDS[2:]
        else:
            bounds = BOUNDS
        return {"attrs": some_attributes(rng, (1,)), "bound": choice(rng, bounds)}
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
        d1, d2 = _some_description(rng, scene, skeleton["attrs"]), _some_description(rng, scene, some_attributes(rng))
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
        attrs = some_attributes(rng, (2, 3))
        if scene.hidden_objects and rng.random() < 0.7:
            d = describe(choice(rng, scene.hidden_objects), attrs)
        else:  # a mix of values seen in the scene
            d = Description(**{a: getattr(choice(rng, scene.objects), a) for a in attrs})
        return None if any(d.matches(o) for o in visible) else d
    return referring_expression(rng, scene.visible_references[choice(rng, visible)]) if visible else None


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
            h = first_accepted(propose, lambda h: h[2][0].upper() == target and h[0] not in [c[1] for c in chosen])
            if h is None:
                break
            chosen.append((family, *h))
        else:
            return [scene], [((0,), text, ENTAILMENT_LABELS.index(label), family, None)
                             for family, text, _, label in chosen]
    raise TooFewScenes(f"entailment group {g}: no scene in {ATTEMPTS} draws took the planned hypotheses; "
                       f"allow more objects or colours (--max-objects, --num-colours)")
