"""What can an image tower see? A supervised probe of the benchmark's scenes.

    python probe.py                                   # a mini tower on the default scenes
    python probe.py --cell-size 8                     # the same tower, 8 px cells on its 8 px patches
    python probe.py --size tiny --steps 200           # a smoke run on any machine

A question about "the red triangle" can only be answered by a model that sees triangles.
This program trains a fresh image tower (model.ImageEncoder, the size's width, depth and
patch) with one linear head on its [CLS] vector to count, for every colour, shape and size,
the objects of a scene that have it (a count of 0 to max_objects, one classification per
value), with ground truth and nothing else. It prints, per attribute, the validation accuracy
of the counts against the prior (always the most common count). Counting each value alone
needs no binding; but an attribute the tower cannot even count under direct supervision is
one that no caption pre-training and no question will teach it to bind to anything.

Where the grid's cells straddle the patches (the default: 10 px cells on 8 px patches) an
object is cut across up to four patches, and the patch embedding sees only parts of it;
where every cell lies inside one patch (8 px cells, margin 8 px), so does every object. The
probe measures what that costs (EXPERIMENTS.md, section 6). Scenes have no curtains here.
At vilt-b32 size the probe trains a 12 x 768 ViT: a GPU's job.
"""

import argparse
import dataclasses
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from batches import model_images, resize_images
from checkpoint import check_out_file, write_json
from config import add_flags, given_values
from data import data_preset
from model import MODEL_SIZES, ImageEncoder, init_weights, model_config
from runtime import allow_tf32, check_device_flags, eval_mode, resolve_device
from scenes import SHAPES, SIZES, SceneConfig, render_batch, sample_scene


@dataclass
class ProbeConfig:
    size: str = "mini"            # image tower size: tiny, mini, small, vilt-b32 (sets the scenes too)
    steps: int = 2000             # optimisation steps
    batch_size: int = 128         # scenes per step
    lr: float = 5e-4              # AdamW learning rate (constant after a linear warm-up over the first 1/20 of the steps)
    train_scenes: int = 20000     # training scenes
    eval_scenes: int = 2000       # validation scenes
    eval_every: int = 500         # validate every this many steps (and after the last)
    seed: int = 0                 # seed of the scenes and of the model
    device: str = "auto"          # auto, cpu, cuda or cuda:N
    out: str = "probe.json"       # where the validation records go


# -----------------------------------------------------------------------------
# The targets: per attribute value, how many objects of the scene have it

def attribute_values(scene_cfg: SceneConfig) -> dict[str, tuple[str, ...]]:
    return {"colour": scene_cfg.colours, "shape": SHAPES, "size": SIZES}


def count_targets(scenes, scene_cfg: SceneConfig) -> torch.Tensor:
    """long (N, V): for each of the V attribute values (colours, then shapes, then sizes), the
    number of objects of each scene that have it."""
    rows = []
    for scene in scenes:
        row = []
        for attribute, values in attribute_values(scene_cfg).items():
            have = Counter(getattr(o, attribute) for o in scene.objects)   # value -> how many objects
            row += [have[v] for v in values]
        rows.append(row)
    return torch.tensor(rows, dtype=torch.long)                    # (N, V)


def make_split(n: int, scene_cfg: SceneConfig, rng: np.random.Generator):
    """n random scenes: uint8 images (n, H, W, 3) and their count targets (n, V)."""
    scenes = [sample_scene(rng, scene_cfg) for _ in range(n)]
    images = torch.from_numpy(render_batch(scenes, scene_cfg))       # uint8 (n, H, W, 3)
    return images, count_targets(scenes, scene_cfg)                  # (n, H, W, 3), long (n, V)


# -----------------------------------------------------------------------------
# The probe: an image tower and one linear read-out of its [CLS]

class CountingProbe(nn.Module):
    def __init__(self, size: str, num_values: int, max_count: int):
        super().__init__()
        cfg = model_config(size)
        self.image_size = cfg.image_size                                # the tower's input side
        self.num_values = num_values                                    # V: colours + shapes + sizes
        self.num_counts = max_count + 1                                 # a count is 0 .. max_count
        self.tower = ImageEncoder(cfg)
        self.head = nn.Linear(cfg.n_embd, num_values * self.num_counts)
        self.apply(init_weights)

    def forward(self, images):
        """images: uint8 (B, H, W, 3) -> count logits (B, V, max_count + 1)."""
        x = model_images(images[:, None])[:, 0]                         # (B, 3, H, W) in [-1, 1]
        x = resize_images(x, self.image_size)                           # vilt-b32 reads 384 px
        cls = self.tower(x).hidden[:, 0]                                # (B, C)
        return self.head(cls).view(-1, self.num_values, self.num_counts)  # (B, V, max_count + 1)


def per_attribute(correct: torch.Tensor, scene_cfg: SceneConfig) -> dict[str, float]:
    """bool (N, V) -> per attribute, the % of (scene, value) counts that are right."""
    result, start = {}, 0
    for attribute, vs in attribute_values(scene_cfg).items():
        result[attribute] = round(100.0 * correct[:, start:start + len(vs)].float().mean().item(), 1)
        start += len(vs)
    return result


@torch.no_grad()
def evaluate(probe, images, targets, scene_cfg, batch_size=512) -> dict[str, float]:
    with eval_mode(probe):
        predictions = torch.cat([probe(images[i:i + batch_size]).argmax(-1)
                                 for i in range(0, len(images), batch_size)])  # (N, V)
    return per_attribute(predictions == targets, scene_cfg)


def prior(train_targets, eval_targets, scene_cfg) -> dict[str, float]:
    """What always answering each value's most common training count scores."""
    most_common = train_targets.mode(dim=0).values                  # (V,)
    return per_attribute(eval_targets == most_common, scene_cfg)


# -----------------------------------------------------------------------------
# The program

def parse_args(argv=None):
    """Flags -> (ProbeConfig, SceneConfig); a bad value exits with one line naming the flag."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Scene flags default to the --size's benchmark (tiny: 32 px scenes).")
    add_flags(parser, ProbeConfig)
    add_flags(parser, SceneConfig)
    args = parser.parse_args(argv)
    cfg = ProbeConfig(**given_values(args, ProbeConfig))
    for name in ("steps", "batch_size", "train_scenes", "eval_scenes", "eval_every"):
        if getattr(cfg, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(cfg, name)}")
    if cfg.lr <= 0:   # nan and inf are refused by config.parse_float
        parser.error(f"--lr must be positive, got {cfg.lr}")
    if not 0 <= cfg.seed < 2**32:   # what numpy and torch generators take
        parser.error(f"--seed must be in [0, 2**32), got {cfg.seed}")
    if cfg.size not in MODEL_SIZES:
        parser.error(f"--size: unknown size {cfg.size!r}; choose one of {', '.join(MODEL_SIZES)}")
    scene_fields = {f.name for f in fields(SceneConfig)}
    preset = {k: v for k, v in data_preset(cfg.size).items() if k in scene_fields}
    scene_cfg = SceneConfig(**{**preset, **given_values(args, SceneConfig)})
    try:
        check_out_file("out", cfg.out)
        check_device_flags(cfg.device, "fp32")          # the probe always trains in fp32
        scene_cfg.validate()
    except ValueError as error:
        parser.error(str(error))
    tower_side = model_config(cfg.size).image_size
    if tower_side % scene_cfg.image_size:
        parser.error(f"--image-size {scene_cfg.image_size}: the {cfg.size} tower reads {tower_side} px images, "
                     f"not a whole multiple of it")
    return cfg, scene_cfg


def alignment(scene_cfg: SceneConfig, size: str) -> str:
    """Whether every cell of the grid lies inside one patch of the tower, at the tower's resolution
    (vilt-b32 reads the 64 px scenes at 384 px: 6 times larger)."""
    model = model_config(size)
    scale = model.image_size // scene_cfg.image_size                # parse_args checked it is whole
    cell, patch = scale * scene_cfg.cell_size, model.patch_size
    starts = [scale * scene_cfg.margin + k * cell for k in range(scene_cfg.grid_size)]   # left / top pixel of each cell
    inside = all(s // patch == (s + cell - 1) // patch for s in starts)    # first and last pixel in one patch
    verdict = "each cell inside one patch" if inside else "cells straddle patch borders"
    resolution = f" at {model.image_size} px" if scale != 1 else ""
    return f"cells of {scene_cfg.cell_size} px (margin {scene_cfg.margin} px) on {patch} px patches{resolution}: {verdict}"


def main(argv=None):
    cfg, scene_cfg = parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    device = resolve_device(cfg)
    allow_tf32(device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    train_images, train_targets = make_split(cfg.train_scenes, scene_cfg, rng)
    eval_images, eval_targets = make_split(cfg.eval_scenes, scene_cfg, rng)
    train_images, train_targets = train_images.to(device), train_targets.to(device)
    eval_images, eval_targets = eval_images.to(device), eval_targets.to(device)
    where = alignment(scene_cfg, cfg.size)
    print(where)

    probe = CountingProbe(cfg.size, train_targets.shape[1], scene_cfg.max_objects).to(device)
    # Plain AdamW, decay on every parameter, constant rate after warm-up: a probe, not the recipe.
    optimizer = torch.optim.AdamW(probe.parameters(), lr=cfg.lr, weight_decay=0.01)
    warmup = max(1, cfg.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    baseline = prior(train_targets, eval_targets, scene_cfg)
    print(f"prior (most common count): {baseline}")
    records = []
    generator = torch.Generator(device="cpu").manual_seed(cfg.seed)
    start = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        # scenes drawn with replacement: a batch may exceed the training set
        index = torch.randint(len(train_images), (cfg.batch_size,), generator=generator).to(device)  # long (B,)
        logits = probe(train_images[index])                            # (B, V, max_count + 1)
        # One cross entropy per attribute value, summed over values, averaged over scenes.
        loss = F.cross_entropy(logits.flatten(0, 1), train_targets[index].flatten()) * logits.shape[1]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            accuracy = evaluate(probe, eval_images, eval_targets, scene_cfg)
            records.append({"step": step, "loss": round(loss.item(), 4), "accuracy": accuracy})
            print(f"step {step}: loss {loss.item():.3f}, counts right (%): {accuracy} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)

    write_json(cfg.out, {"config": dataclasses.asdict(cfg), "scenes": dataclasses.asdict(scene_cfg),
                         "alignment": where, "prior": baseline, "records": records,
                         "command": " ".join(["python", os.path.basename(sys.argv[0]), *argv])})
    return baseline, records


if __name__ == "__main__":
    main()
