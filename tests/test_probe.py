"""probe.py: its targets are counts of the scene, its prior is what it says, and the probe learns."""

import json
from collections import Counter

import numpy as np
import pytest
import torch

import probe
from model import model_config
from scenes import SHAPES, SIZES, SceneConfig, sample_scene


def test_count_targets_are_the_scenes_counts():
    cfg = SceneConfig()
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng, cfg) for _ in range(50)]
    targets = probe.count_targets(scenes, cfg)
    assert targets.shape == (50, len(cfg.colours) + len(SHAPES) + len(SIZES))
    for scene, row in zip(scenes, targets.tolist()):
        by_hand = Counter(o.colour for o in scene.objects) + Counter(o.shape for o in scene.objects) \
            + Counter(o.size for o in scene.objects)
        assert row == [by_hand[v] for v in (*cfg.colours, *SHAPES, *SIZES)]
        assert sum(row[:len(cfg.colours)]) == len(scene.objects)


def test_prior_is_the_most_common_training_count():
    cfg = SceneConfig(num_colours=2)
    # per column, the mode of the five training rows: [1, 2 | 0, 0, 3 | 1, 2] (the medians are 4 more)
    mode = torch.tensor([1, 2, 0, 0, 3, 1, 2])
    train = torch.stack([mode, mode, mode + 3, mode + 4, mode + 5])
    evaluation = torch.tensor([[1, 2, 0, 0, 3, 2, 1], [1, 0, 1, 1, 1, 1, 0]])
    # colours 3 of 4 right, shapes 3 of 6, sizes 1 of 4
    assert probe.prior(train, evaluation, cfg) == {"colour": 75.0, "shape": 50.0, "size": 25.0}


def test_alignment_says_whether_each_cell_lies_inside_one_patch():
    assert "straddle" in probe.alignment(SceneConfig(), "mini")                         # 10 px cells, margin 2
    assert "inside one patch" in probe.alignment(SceneConfig(cell_size=8), "mini")      # margin 8
    assert "straddle" in probe.alignment(SceneConfig(cell_size=8, grid_size=7), "mini")  # margin 4
    assert "inside one patch" in probe.alignment(SceneConfig(cell_size=4), "mini")      # two cells a patch
    assert "straddle" in probe.alignment(SceneConfig(cell_size=16, grid_size=4), "mini")  # a cell on 4 patches
    # vilt-b32 reads the scenes 6 times larger: 8 px cells become 48 px on its 32 px patches
    assert "straddle" in probe.alignment(SceneConfig(cell_size=8), "vilt-b32")


def run_tiny(out, steps):
    return probe.main(["--size", "tiny", "--steps", str(steps), "--eval-every", "100", "--lr", "2e-3",
                       "--train-scenes", "2000", "--eval-scenes", "500", "--device", "cpu", "--out", str(out)])


def test_probe_learns_to_count_colours_and_sizes(tmp_path):
    """On the tiny scenes a tiny tower counts colours and sizes well above the prior in 200 steps."""
    baseline, records = run_tiny(tmp_path / "probe.json", 200)
    assert [r["step"] for r in records] == [100, 200]
    final = records[-1]["accuracy"]
    assert final["colour"] > baseline["colour"] + 20 and final["size"] > baseline["size"] + 10
    saved = json.loads((tmp_path / "probe.json").read_text())
    assert saved["records"] == records and saved["prior"] == baseline and "inside one patch" in saved["alignment"]


def test_probe_is_deterministic_for_a_seed(tmp_path):
    assert run_tiny(tmp_path / "a.json", 30) == run_tiny(tmp_path / "b.json", 30)


def test_vilt_b32_tower_reads_the_scenes_at_its_own_size(monkeypatch):
    """The 64 px scenes are resized to the tower's 384 px (here a 2-layer stand-in of that size)."""
    monkeypatch.setattr(probe, "model_config", lambda size: model_config("tiny", image_size=384, patch_size=32))
    counting = probe.CountingProbe("vilt-b32", num_values=11, max_count=9)
    seen = []
    counting.tower.embed.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape))
    logits = counting(torch.zeros(2, 64, 64, 3, dtype=torch.uint8))
    assert seen == [(2, 3, 384, 384)] and logits.shape == (2, 11, 10)


@pytest.mark.parametrize("argv, flag", [(["--size", "huge"], "--size"), (["--steps", "0"], "--steps"),
                                        (["--lr", "0"], "--lr"), (["--lr", "inf"], "--lr"),
                                        (["--seed", "-1"], "--seed"), (["--seed", str(2**64)], "--seed must be in [0, 2**32)"),
                                        (["--out", "no/such/folder/p.json"], "--out"), (["--out", "."], "--out .: is a folder"),
                                        (["--cell-size", "20"], "image_size"), (["--device", "gpu"], "--device"),
                                        (["--size", "tiny", "--image-size", "64", "--cell-size", "8"], "--image-size")])
def test_bad_flags_exit_with_one_line_naming_the_flag(argv, flag, capsys):
    with pytest.raises(SystemExit):
        probe.parse_args(argv)
    assert flag in capsys.readouterr().err.strip().splitlines()[-1]
