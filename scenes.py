"""Scenes of coloured shapes on a grid: the grammar, sampling and the renderer.

All three tasks of the benchmark (tasks.py, vqa_task.py) stand on this file:

- `Object` / `Scene`: at most one object per grid cell, each with a shape, a colour and a
  size; a scene may carry a "curtain", a grey hatched rectangle that hides some cells
  (the source of *neutral* in the entailment task).
- `Description`: a referring expression ("large red circle"); `referring_expressions`
  finds the ones that pick out a single object, and which of them need binding.
- `sample_scene(rng, cfg)` draws a random scene; `render(scene, cfg)` draws it with Pillow
  at 4x and box-downsamples (anti-aliased), uint8 [H, W, 3]; `render_batch(scenes, cfg)`
  gives the same bytes for many scenes, faster (tested against `render`).

The programs that label every example run on these scenes: programs.py, read it next.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from itertools import combinations
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("square", "circle", "triangle")
# Well separated after anti-aliasing; the first num_colours are used.
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
    the attributes to one object (each attribute alone is ambiguous).
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
