"""Scenes of coloured shapes on a grid: the grammar, the renderer and the one evaluator.

All three tasks in data.py stand on this file (DATASETS.md Part 3):

- `Object` / `Scene`: at most one object per grid cell, each with a shape, a colour and a
  size; a scene may carry a "curtain", a grey hatched rectangle that hides some cells
  (the source of *neutral* in the entailment task).
- `sample_scene(rng, cfg)` draws a random scene; `render(scene, cfg)` draws it with Pillow
  at 4x and box-downsamples (anti-aliased), uint8 [H, W, 3]; `render_batch(scenes, cfg)`
  gives the same bytes for many scenes, faster (tested against `render`).
- `execute(program, scenes)` runs a CLEVR-style program (Johnson et al. 2017) on one scene
  or a pair; `entailment_label(program, scene)` gives the three-valued SNLI-VE label when
  a curtain hides some cells. Every label in the benchmark comes from these two.

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

Run `python scenes.py` to print a random scene and a few programs with their values.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from itertools import combinations, product
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("square", "circle", "triangle")
# Well separated after anti-aliasing (DATASETS.md §3.2); the first num_colours are used.
COLOURS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
    "yellow": (230, 200, 40), "purple": (150, 60, 200), "cyan": (40, 190, 200),
}
SIZES = ("small", "large")
ATTRIBUTES = ("size", "colour", "shape")           # the order words take in a noun phrase
ATTRIBUTE_SETS = tuple(s for k in (1, 2, 3) for s in combinations(ATTRIBUTES, k))
ATTRIBUTE_MASKS = tuple(sum(1 << ATTRIBUTES.index(a) for a in s) for s in ATTRIBUTE_SETS)
RELATIONS = ("left", "right", "above", "below")
OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}
SUPERSAMPLE = 4                                     # draw at 4x, then box-filter down
CURTAIN_SHAPES = ((1, 2), (2, 1), (1, 3), (3, 1), (2, 2), (1, 4), (4, 1))  # rows x cols


@dataclass(frozen=True)
class SceneConfig:
    image_size: int = 64        # output image side in pixels
    grid_size: int = 6          # cells per side; at most one object per cell
    cell_size: int = 10         # cell side in pixels; the grid is centred in the image
    min_objects: int = 6        # fewest objects in a scene
    max_objects: int = 9        # most objects in a scene
    num_colours: int = 6        # the first num_colours entries of COLOURS are used
    small_size: float = 0.5     # side of a small object as a fraction of the cell
    large_size: float = 0.9     # side of a large object as a fraction of the cell
    jitter: int = 1             # max shift of an object's centre in pixels (kept inside its cell)
    curtain_min_cells: int = 2  # fewest cells a curtain hides
    curtain_max_cells: int = 4  # most cells a curtain hides

    @property
    def colours(self) -> tuple[str, ...]:
        return tuple(COLOURS)[: self.num_colours]

    @property
    def margin(self) -> int:
        return (self.image_size - self.grid_size * self.cell_size) // 2

    def validate(self) -> None:
        def check(ok: bool, field: str, why: str) -> None:
            if not ok:
                raise ValueError(f"{field}={getattr(self, field)!r}: {why}")
        check(self.grid_size >= 2, "grid_size", "needs at least 2 cells per side")
        check(self.cell_size >= 4, "cell_size", "cells under 4 px make shapes unreadable")
        check(self.image_size >= self.grid_size * self.cell_size, "image_size",
              f"must hold the grid ({self.grid_size} x {self.cell_size} px)")
        check(self.min_objects >= 2, "min_objects", "relations need at least 2 objects")
        check(self.max_objects >= self.min_objects, "max_objects", "must be >= min_objects")
        check(self.max_objects <= self.grid_size ** 2, "max_objects", "more objects than cells")
        check(2 <= self.num_colours <= len(COLOURS), "num_colours", f"must be in 2..{len(COLOURS)}")
        check(0.2 <= self.small_size < self.large_size, "small_size", "must be in [0.2, large_size)")
        check(self.large_size <= 1.0, "large_size", "must be <= 1 (objects stay in their cell)")
        check(self.jitter >= 0, "jitter", "must be >= 0")
        check(self.curtain_min_cells >= 1, "curtain_min_cells", "must be >= 1")
        check(self.curtain_max_cells >= self.curtain_min_cells, "curtain_max_cells",
              "must be >= curtain_min_cells")
        check(any(self.curtain_min_cells <= h * w <= self.curtain_max_cells and max(h, w) <= self.grid_size
                  for h, w in CURTAIN_SHAPES), "curtain_max_cells", "no curtain shape fits")


class Object(NamedTuple):  # a NamedTuple: compared by value, and fast to create
    row: int      # grid row, 0 at the top
    col: int      # grid column, 0 at the left
    shape: str    # one of SHAPES
    colour: str   # one of COLOURS
    size: str     # one of SIZES
    dx: int       # jitter of the centre, in render pixels (1/SUPERSAMPLE of an output pixel)
    dy: int


@dataclass(frozen=True)
class Scene:
    """A scene; the cached properties are derived from it once, when first asked for."""
    objects: tuple[Object, ...]                      # sorted by (row, col)
    background: int                                  # grey level of the background
    curtain: tuple[int, int, int, int] | None = None  # hidden cells: rows r0:r1, cols c0:c1

    def is_hidden(self, row: int, col: int) -> bool:
        if self.curtain is None:
            return False
        r0, c0, r1, c1 = self.curtain
        return r0 <= row < r1 and c0 <= col < c1

    @cached_property
    def hidden_cells(self) -> list[tuple[int, int]]:
        if self.curtain is None:
            return []
        r0, c0, r1, c1 = self.curtain
        return [(r, c) for r in range(r0, r1) for c in range(c0, c1)]

    @cached_property
    def references(self) -> dict[Object, tuple[list[Description], list[Description]]]:
        """referring_expressions of each object among all objects (computed once)."""
        return {o: referring_expressions(o, self.objects) for o in self.objects}

    @cached_property
    def visible_references(self) -> dict[Object, tuple[list[Description], list[Description]]]:
        """referring_expressions of each visible object among the visible objects."""
        return {o: referring_expressions(o, self.visible_objects) for o in self.visible_objects}

    @cached_property
    def hidden_objects(self) -> tuple[Object, ...]:
        return tuple(o for o in self.objects if self.is_hidden(o.row, o.col))

    @cached_property
    def visible_objects(self) -> tuple[Object, ...]:
        return tuple(o for o in self.objects if not self.is_hidden(o.row, o.col))

    def to_dict(self) -> dict:
        return {"objects": [o._asdict() for o in self.objects], "background": self.background,
                "curtain": list(self.curtain) if self.curtain else None}

    @staticmethod
    def from_dict(d: dict) -> Scene:
        return Scene(tuple(Object(**o) for o in d["objects"]), d["background"],
                     tuple(d["curtain"]) if d["curtain"] else None)


class Description(NamedTuple):
    """A referring expression: the attribute values it names (None = not named)."""
    size: str | None = None
    colour: str | None = None
    shape: str | None = None

    def matches(self, obj: Object) -> bool:
        return ((self.size is None or obj.size == self.size)
                and (self.colour is None or obj.colour == self.colour)
                and (self.shape is None or obj.shape == self.shape))

    def named(self) -> tuple[str, ...]:
        return tuple(a for a in ATTRIBUTES if getattr(self, a) is not None)

    def compatible(self, other: Description) -> bool:
        """Could one object match both descriptions?"""
        return all(getattr(self, a) is None or getattr(other, a) is None
                   or getattr(self, a) == getattr(other, a) for a in ATTRIBUTES)


def describe(obj: Object, attributes) -> Description:
    """The description of `obj` that names exactly `attributes`."""
    return Description(obj.size if "size" in attributes else None,
                       obj.colour if "colour" in attributes else None,
                       obj.shape if "shape" in attributes else None)


def referring_expressions(obj: Object, objects) -> tuple[list[Description], list[Description]]:
    """Descriptions that match `obj` and no other object of `objects`: (binding, plain).

    A binding description names two or more attributes, each of which alone would also
    match another object: only their combination picks `obj` out, so a model must bind
    the attributes to one object ("each attribute alone ambiguous", DATASETS.md §3.3).
    """
    # For each other object, one bit per attribute it shares with obj (in ATTRIBUTES order).
    shares = [(o.size == obj.size) | (o.colour == obj.colour) << 1 | (o.shape == obj.shape) << 2
              for o in objects if o is not obj]
    shared_by_some = 0
    for bits in shares:
        shared_by_some |= bits
    binding, plain = [], []
    for attrs, mask in zip(ATTRIBUTE_SETS, ATTRIBUTE_MASKS):
        if any(bits & mask == mask for bits in shares):
            continue  # another object matches too: not unique
        is_binding = len(attrs) >= 2 and shared_by_some & mask == mask
        (binding if is_binding else plain).append(describe(obj, attrs))
    return binding, plain


# ----------------------------------------------------------------------------- sampling

def sample_scene(rng: np.random.Generator, cfg: SceneConfig, curtain: bool = False) -> Scene:
    """Uniform number of objects in distinct random cells, independent uniform attributes."""
    g, n = cfg.grid_size, int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    cells = sorted(rng.permutation(g * g)[:n].tolist())
    colours, most = cfg.colours, SUPERSAMPLE * cfg.jitter
    # Clamp the jitter so that an object never leaves its cell (no overlaps, no colour
    # mixing across cells, and a curtain over a cell hides it completely).
    slack = {z: (SUPERSAMPLE * cfg.cell_size - _side(z, cfg)) // 2 for z in SIZES}
    objects = []
    for c, (us, uc, uz, ux, uy) in zip(cells, rng.random((n, 5)).tolist()):  # one call: fast
        size = SIZES[int(uz * len(SIZES))]
        dx, dy = (max(-slack[size], min(slack[size], int(v * (2 * most + 1)) - most)) for v in (ux, uy))
        objects.append(Object(c // g, c % g, SHAPES[int(us * len(SHAPES))], colours[int(uc * len(colours))],
                              size, dx, dy))
    background = int(rng.integers(225, 251))  # a light grey, a little different per image
    return Scene(tuple(objects), background, sample_curtain(rng, cfg) if curtain else None)


def sample_curtain(rng: np.random.Generator, cfg: SceneConfig) -> tuple[int, int, int, int]:
    """A row segment, a column segment or a 2x2 block of curtain_min..max_cells cells."""
    fits = [(h, w) for h, w in CURTAIN_SHAPES
            if cfg.curtain_min_cells <= h * w <= cfg.curtain_max_cells and max(h, w) <= cfg.grid_size]
    h, w = fits[int(rng.integers(len(fits)))]
    r0, c0 = int(rng.integers(cfg.grid_size - h + 1)), int(rng.integers(cfg.grid_size - w + 1))
    return (r0, c0, r0 + h, c0 + w)


# ---------------------------------------------------------------------------- rendering

def _side(size: str, cfg: SceneConfig) -> int:
    """Side of an object's bounding box in render pixels."""
    fraction = cfg.small_size if size == "small" else cfg.large_size
    return int(round(fraction * cfg.cell_size * SUPERSAMPLE))


def _shape_box(o: Object, sides: dict, cell: int) -> tuple[int, int, int, int]:
    """The bounding box of an object inside its cell, in render pixels (inclusive)."""
    x0 = (cell - sides[o.size]) // 2 + o.dx
    y0 = (cell - sides[o.size]) // 2 + o.dy
    return x0, y0, x0 + sides[o.size] - 1, y0 + sides[o.size] - 1  # Pillow includes the last pixel


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box, fill, x: int = 0, y: int = 0) -> None:
    x0, y0, x1, y1 = box[0] + x, box[1] + y, box[2] + x, box[3] + y
    if shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    elif shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    else:  # an upward triangle filling the box
        draw.polygon(((x0 + x1) / 2, y0, x1, y1, x0, y1), fill=fill)


def _curtain_sheet(rows: int, cols: int, cfg: SceneConfig) -> Image.Image:
    """A mid-grey sheet with dark diagonal hatching over whole cells, at render scale: it
    hides objects completely (they never leave their cell) and looks like no object."""
    s, cell = SUPERSAMPLE, SUPERSAMPLE * cfg.cell_size
    width, height = cols * cell, rows * cell
    sheet = Image.new("RGB", (width, height), (150, 150, 150))
    draw = ImageDraw.Draw(sheet)
    for k in range(-height, width, 4 * s):  # one line every 4 output pixels
        draw.line((k, 0, k + height, height), fill=(95, 95, 95), width=s)
    return sheet


def render(scene: Scene, cfg: SceneConfig) -> np.ndarray:
    """Draw at SUPERSAMPLE x the size, then box-filter down: uint8 [H, W, 3]."""
    s, cell = SUPERSAMPLE, SUPERSAMPLE * cfg.cell_size
    origin = s * cfg.margin
    im = Image.new("RGB", (s * cfg.image_size,) * 2, (scene.background,) * 3)
    draw = ImageDraw.Draw(im)
    sides = {z: _side(z, cfg) for z in SIZES}
    for o in scene.objects:
        box = _shape_box(o, sides, cell)
        _draw_shape(draw, o.shape, box, COLOURS[o.colour], origin + o.col * cell, origin + o.row * cell)
    if scene.curtain is not None:
        r0, c0, r1, c1 = scene.curtain
        im.paste(_curtain_sheet(r1 - r0, c1 - c0, cfg), (origin + c0 * cell, origin + r0 * cell))
    # Box filter (anti-aliasing): the same as im.resize(size, Image.Resampling.BOX) for an
    # integer factor, but 3x faster.
    return np.asarray(im.reduce(SUPERSAMPLE), dtype=np.uint8)


def render_batch(scenes, cfg: SceneConfig) -> np.ndarray:
    """render() of many scenes, byte for byte, 3-5x faster: uint8 [N, H, W, 3].

    The box filter is linear and objects never leave their cell (whose corners fall on
    whole output pixels), so an object's pixels are (k * colour + (16 - k) * background)
    / 16, where k counts the render pixels its shape covers in each 4x4 block. k depends
    only on (shape, size, dx, dy): draw each such sprite once with Pillow, then paste all
    objects with numpy.
    """
    n, s, cell, g, m = len(scenes), SUPERSAMPLE, cfg.cell_size, cfg.grid_size, cfg.margin
    sides = {z: _side(z, cfg) for z in SIZES}
    objects = [(i, sc.background, o) for i, sc in enumerate(scenes) for o in sc.objects]
    sprites = sorted({(o.shape, o.size, o.dx, o.dy) for _, _, o in objects})
    coverage = np.zeros((len(sprites), cell, cell), dtype=np.int64)  # k, in 0..s*s
    for j, (shape, size, dx, dy) in enumerate(sprites):
        mask = Image.new("L", (s * cell, s * cell), 0)
        box = _shape_box(Object(0, 0, shape, "", size, dx, dy), sides, s * cell)
        _draw_shape(ImageDraw.Draw(mask), shape, box, 1)
        coverage[j] = np.asarray(mask).reshape(cell, s, cell, s).sum(axis=(1, 3))
    # Every possible pixel value, rounded like reduce(): [background, colour, k, rgb].
    k = np.arange(s * s + 1)[None, None, :, None]
    rgb = np.array(list(COLOURS.values()))[None, :, None, :]
    grey = np.arange(256)[:, None, None, None]
    table = ((k * rgb + (s * s - k) * grey + s * s // 2) // (s * s)).astype(np.uint8)
    sprite_of, colour_of = {key: j for j, key in enumerate(sprites)}, {c: j for j, c in enumerate(COLOURS)}
    columns = list(zip(*[(i, bg, o.row, o.col, sprite_of[o.shape, o.size, o.dx, o.dy], colour_of[o.colour])
                         for i, bg, o in objects])) or [()] * 6
    image, background, row, col, sprite, colour = (np.array(c, dtype=np.int64) for c in columns)
    # The grid as blocks [N, row, y, col, x, rgb]: one object fills one (row, col) block.
    grid = np.empty((n, g, cell, g, cell, 3), dtype=np.uint8)
    grid[:] = np.array([sc.background for sc in scenes], dtype=np.uint8).reshape(-1, 1, 1, 1, 1, 1)
    grid[image, row, :, col] = table[background[:, None, None], colour[:, None, None], coverage[sprite]]
    out = np.empty((n, cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
    out[:] = np.array([sc.background for sc in scenes], dtype=np.uint8).reshape(-1, 1, 1, 1)
    out[:, m: m + g * cell, m: m + g * cell] = grid.reshape(n, g * cell, g * cell, 3)
    sheets = {}  # curtain shape -> its pixels
    for i, scene in enumerate(scenes):
        if scene.curtain is not None:
            r0, c0, r1, c1 = scene.curtain
            if (r1 - r0, c1 - c0) not in sheets:
                sheets[r1 - r0, c1 - c0] = np.asarray(_curtain_sheet(r1 - r0, c1 - c0, cfg).reduce(s))
            out[i, m + r0 * cell: m + r1 * cell, m + c0 * cell: m + c1 * cell] = sheets[r1 - r0, c1 - c0]
    return out


# ----------------------------------------------------------------------------- executor

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
# tests/test_data.py checks them against brute-force enumeration.

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
    red = ("filter", Description(colour=o.colour), ("scene",))
    for program in [("count", red), ("exist", ("filter", Description(shape="circle"), ("relate", "left", red))),
                    ("query", "shape", ("unique", ("filter", describe(o, ATTRIBUTES), ("scene",))))]:
        print(program, "->", execute(program, scene))
    print(("exist", red), "->", entailment_label(("exist", red), scene, cfg))


if __name__ == "__main__":
    main()
