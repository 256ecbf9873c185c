"""Programs over scenes, and the one evaluator that labels every example of the benchmark.

- `execute(program, scenes)` runs a CLEVR-style program (Johnson et al. 2017) on one scene
  (scenes.py) or a pair; `entailment_label(program, scene, cfg)` gives the three-valued SNLI-VE
  label when a curtain hides some cells. Every label in the benchmark comes from these two.

Programs are nested tuples, `(op, *arguments)`; sets of objects are tuples:

    ("scene",)                    all objects of the current image
    ("filter", desc, X)           objects of X that match the Description desc
    ("unique", X)                 the one object of X; raises IllPosed otherwise
    ("relate", rel, X)            objects that are `rel` ("left"...) of some object of X
    ("exist", X) ("count", X)     bool / int
    ("query", attr, x)            an attribute of the object x ("colour", ...)
    ("all", X, desc)              every object of X matches desc
    ("holds", rel, x, y)          x is `rel` of y
    ("not", P) ("gt"|"eq"|"ge"|"le", P, Q)   logic and comparisons; Q may be an int
    ("image", i, P)               run P on image i of a pair
    ("both", P) ("exactly_one", P)   run P on every image of the pair

Run `python programs.py` to print a random scene and a few programs with their values.
"""
from __future__ import annotations

from itertools import product

import numpy as np

from scenes import ATTRIBUTES, SHAPES, SIZES, Description, Object, Scene, SceneConfig, describe, sample_scene


class IllPosed(Exception):
    """A `unique` found zero or several objects: the question has no single referent."""


# rel(a, b) is "a is <rel> of b"; strict column / row comparison, as in CLEVR. a and b are
# (row, col, ...) tuples: Objects, or the cells behind a curtain.
RELATION_TEST = {
    "left": lambda a, b: a[1] < b[1],
    "right": lambda a, b: a[1] > b[1],
    "above": lambda a, b: a[0] < b[0],
    "below": lambda a, b: a[0] > b[0],
}


def holds(rel: str, a: Object, b: Object) -> bool:
    return RELATION_TEST[rel](a, b)


COMPARE = {"gt": lambda a, b: a > b, "eq": lambda a, b: a == b,
           "ge": lambda a, b: a >= b, "le": lambda a, b: a <= b}


def execute(program: tuple, scenes: Scene | tuple[Scene, ...], image: int = 0):
    """Run `program` on a scene, or on image `image` of a tuple of scenes.

    Two-valued: the whole symbolic scene counts, hidden objects included.
    """
    if isinstance(program, int):  # a constant, as in ("eq", ("count", ...), 2)
        return program
    if isinstance(scenes, Scene):
        scenes = (scenes,)
    op, args = program[0], program[1:]
    if op == "scene":
        return scenes[image].objects
    if op == "filter":
        desc = args[0]
        return tuple(o for o in execute(args[1], scenes, image) if desc.matches(o))
    if op == "unique":
        found = execute(args[0], scenes, image)
        if len(found) != 1:
            raise IllPosed(f"{len(found)} objects where one was expected")
        return found[0]
    if op == "relate":
        test, anchors = RELATION_TEST[args[0]], execute(args[1], scenes, image)
        anchors = (anchors,) if isinstance(anchors, Object) else anchors  # one object or a set
        return tuple(o for o in scenes[image].objects if any(test(o, a) for a in anchors))
    if op == "exist":
        return len(execute(args[0], scenes, image)) > 0
    if op == "count":
        return len(execute(args[0], scenes, image))
    if op == "query":
        return getattr(execute(args[1], scenes, image), args[0])
    if op == "all":
        return all(args[1].matches(o) for o in execute(args[0], scenes, image))
    if op == "holds":
        return holds(args[0], execute(args[1], scenes, image), execute(args[2], scenes, image))
    if op == "not":
        return not execute(args[0], scenes, image)
    if op in COMPARE:
        return COMPARE[op](execute(args[0], scenes, image), execute(args[1], scenes, image))
    if op == "image":
        return execute(args[1], scenes, args[0])
    if op == "both":
        return all(execute(args[0], scenes, i) for i in range(len(scenes)))
    if op == "exactly_one":
        return sum(bool(execute(args[0], scenes, i)) for i in range(len(scenes))) == 1
    raise ValueError(f"unknown program op {op!r}")


# ---------------------------------------------------- three-valued (entailment) evaluation
# A hidden cell may hold anything: nothing, or any object. A hypothesis is *entailed* iff it
# is true in every completion of the hidden cells, a *contradiction* iff it is false in
# every completion, *neutral* otherwise (SNLI's notion). Instead of enumerating completions
# (37^4 of them for 4 cells) each supported program form gets its exact rule below;
# tests/test_labels.py checks them against brute-force enumeration.

ENTAILMENT_LABELS = ("entailment", "neutral", "contradiction")


def entailment_label(program: tuple, scene: Scene, cfg: SceneConfig) -> str:
    values = possible_values(program, scene, cfg)
    if not values:
        raise IllPosed("no completion of the hidden cells gives the hypothesis a referent")
    return "neutral" if len(values) == 2 else ("entailment" if True in values else "contradiction")


def _matches_visible(desc: Description, scene: Scene) -> list[Object]:
    return [o for o in scene.visible_objects if desc.matches(o)]


def _simple_filter(program: tuple) -> Description:
    """The Description of ("filter", desc, ("scene",)); anything else is unsupported."""
    if program[0] != "filter" or program[2] != ("scene",):
        raise ValueError(f"three-valued evaluation does not support {program!r}")
    return program[1]


def possible_values(program: tuple, scene: Scene, cfg: SceneConfig) -> set:
    """The set of values `program` takes over all completions of the hidden cells."""
    op, hidden = program[0], scene.hidden_cells
    if op == "not":
        return {not v for v in possible_values(program[1], scene, cfg)}
    if op == "exist" and program[1][0] == "filter" and program[1][2][0] == "relate":
        # "a d1 is rel of a d2": a witness pair may use visible matches or hidden cells.
        d1, (_, rel, inner) = program[1][1], program[1][2]
        d2 = _simple_filter(inner)
        v1 = [(o.row, o.col) for o in _matches_visible(d1, scene)]
        v2 = [(o.row, o.col) for o in _matches_visible(d2, scene)]
        surely = any(RELATION_TEST[rel](a, b) for a in v1 for b in v2)
        # Strict relations put a and b in different cells, so each may be filled at will.
        maybe = any(RELATION_TEST[rel](a, b) for a in v1 + hidden for b in v2 + hidden)
        return {True} if surely else ({True, False} if maybe else {False})
    if op == "exist" or (op in COMPARE and program[1][0] == "count" and isinstance(program[2], int)):
        # Counts of a simple filter: every value from the visible count up to the visible
        # count plus the number of hidden cells is possible (each cell holds a match or not).
        target = program[1] if op == "exist" else program[1][1]
        low = len(_matches_visible(_simple_filter(target), scene))
        counts = range(low, low + len(hidden) + 1)
        if op == "exist":
            return {c > 0 for c in counts}
        return {COMPARE[op](c, program[2]) for c in counts}
    if op == "all":
        d1, d2 = _simple_filter(program[1]), program[2]
        if any(not d2.matches(o) for o in _matches_visible(d1, scene)):
            return {False}  # a visible counterexample
        # A hidden cell could hold a counterexample if some kind of object matches d1 but not d2.
        kinds = (Object(0, 0, s, c, z, 0, 0) for s, c, z in product(SHAPES, cfg.colours, SIZES))
        counterexample_possible = any(d1.matches(k) and not d2.matches(k) for k in kinds)
        return {True, False} if hidden and counterexample_possible else {True}
    if op == "holds":
        # "the d1 is rel of the d2": a definite description refers to the unique *visible*
        # match; with no visible match, to the one matching object behind the curtain.
        if program[2][0] != "unique" or program[3][0] != "unique":
            raise ValueError(f"three-valued evaluation does not support {program!r}")
        rel, places, behind = program[1], [], []
        descriptions = [_simple_filter(program[2][1]), _simple_filter(program[3][1])]
        for d in descriptions:
            seen = _matches_visible(d, scene)
            if len(seen) > 1:
                raise IllPosed("a definite description matches several visible objects")
            places.append([(seen[0].row, seen[0].col)] if seen else hidden)
            behind.append(not seen)
        if all(behind) and descriptions[0].compatible(descriptions[1]):
            raise IllPosed("both descriptions could name the same hidden object")
        # Two referents behind the curtain are two objects, so they sit in two cells.
        return {RELATION_TEST[rel](a, b) for a in places[0] for b in places[1] if a != b}
    raise ValueError(f"three-valued evaluation does not support {program!r}")


def main() -> None:
    cfg = SceneConfig()
    scene = sample_scene(np.random.default_rng(0), cfg, curtain=True)
    for o in scene.objects:
        print(o, "(hidden)" if scene.is_hidden(o.row, o.col) else "")
    print("curtain rows/cols", scene.curtain)
    o = scene.objects[0]
    same_colour = ("filter", Description(colour=o.colour), ("scene",))
    circle_left = ("exist", ("filter", Description(shape="circle"), ("relate", "left", same_colour)))
    for program in [("count", same_colour), circle_left,
                    ("query", "shape", ("unique", ("filter", describe(o, ATTRIBUTES), ("scene",))))]:
        print(program, "->", execute(program, scene))
    print(("exist", same_colour), "->", entailment_label(("exist", same_colour), scene, cfg))


if __name__ == "__main__":
    main()
