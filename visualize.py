"""Pictures of cross-modal attention: where does each word look?

For a few test examples, one column per word: the teacher's text-to-image attention
(last layer, mean over heads, the softmax within the cross-modal block) on top, the
student's "virtual" text-to-image attention (text-tower queries against image-tower keys)
below, each as a heat map over the image's patch grid. A distilled student should look
where its teacher looks; the ground-truth baseline has no reason to.

    python visualize.py --checkpoint-dir runs/default/checkpoints --task vqa --row soft+attention
"""

import argparse
import dataclasses
import os

import numpy as np
import torch
from PIL import Image, ImageDraw

from checkpoint import check_out_folder, save_png
from distill import student_cross_modal_attention
from teacher import teacher_cross_modal_attention

SCALE = 2   # pixels of the picture per pixel of the benchmark image (at least 96 px per panel)


@torch.no_grad()
def word_maps(teacher, student, batch, task):
    """Text-to-image attention over patches, mean over heads: teacher and student, (B, Lt, g, g) each."""
    teacher.eval(), student.eval()
    mask = batch["text_mask"]
    fused = teacher(batch, task, details_from=(-1,)).fusion[0]
    teacher_t2i = teacher_cross_modal_attention(fused, -1, mask).text_to_image.mean(1)    # (B, Lt, Nv)
    out = student(batch, task, details_from=(-1,))
    student_t2i = student_cross_modal_attention(out, -1, 0, mask).text_to_image.mean(1)   # (B, Lt, Nv)
    g = int(round((teacher_t2i.shape[-1] - 1) ** 0.5))                                   # patches per side
    as_grid = lambda a: a[..., 1:].reshape(*a.shape[:2], g, g)      # drop the image [CLS] key: (B, Lt, g, g)
    return as_grid(teacher_t2i), as_grid(student_t2i)


def heat_panel(image, heat, size):
    """An image (H, W, 3) uint8 under a red heat map (g, g), scaled to size x size."""
    base = Image.fromarray(image).resize((size, size), Image.Resampling.NEAREST).convert("L").convert("RGB")
    heat = (heat / max(heat.max(), 1e-8) * 255).astype(np.uint8)
    red = Image.fromarray(heat).resize((size, size), Image.Resampling.NEAREST)
    overlay = Image.merge("RGB", (red, Image.new("L", (size, size)), Image.new("L", (size, size))))
    return Image.blend(base, overlay, 0.6)


def attention_figure(teacher, student, batch, task, tokenizer, raw_images, path, max_words=10):
    """Save one PNG per example: rows teacher / student, one column per word."""
    teacher_maps, student_maps = word_maps(teacher, student, batch, task)
    size = max(96, SCALE * raw_images.shape[1])
    paths = []
    for b in range(len(raw_images)):
        ids = batch["text_ids"][b][batch["text_mask"][b]].tolist()
        words = [tokenizer.itos[i] for i in ids][:max_words]
        canvas = Image.new("RGB", (70 + size * (len(words) + 1), 20 + 2 * (size + 16)), "white")
        draw = ImageDraw.Draw(canvas)
        image = raw_images[b]
        canvas.paste(Image.fromarray(image).resize((size, size), Image.Resampling.NEAREST), (70, 20))
        draw.text((70, 20 + size + 2), "input", fill="black")
        for row, (label, maps) in enumerate((("teacher", teacher_maps), ("student", student_maps))):
            top = 20 + row * (size + 16)
            draw.text((4, top + size // 2), label, fill="black")
            for w, word in enumerate(words):
                left = 70 + size * (w + 1)
                canvas.paste(heat_panel(image, maps[b, w].float().cpu().numpy(), size), (left, top))
                if row == 0:
                    draw.text((left + 2, 4), word, fill="black")
        file = f"{path}-{b}.png"
        save_png(file, canvas)
        paths.append(file)
    return paths


def main(argv=None):
    from checkpoint import load_checkpoint, load_weights, same_tokenizer
    from batches import fit_images, make_batch
    from data import TASKS, DataConfig, build_benchmark
    from model import DualEncoder, ModelConfig
    from report import MERGEABLE
    from teacher import FusionEncoder
    from train import STUDENT_ROWS

    parser = argparse.ArgumentParser(description="Save teacher-vs-student attention heat maps as PNG.")
    parser.add_argument("--checkpoint-dir", default="runs/default/checkpoints")
    parser.add_argument("--task", default="vqa", choices=TASKS)
    parser.add_argument("--row", default="soft+attention", choices=STUDENT_ROWS, help="which student row to draw")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--examples", type=int, default=4)
    parser.add_argument("--out", default="attention", help="files are named {out}-{k}.png")
    args = parser.parse_args(argv)
    if args.examples < 1:
        parser.error(f"--examples must be positive, got {args.examples}")
    folder = os.path.dirname(args.out) or "."   # created below if missing
    try:
        check_out_folder("out", folder)
    except ValueError as error:
        parser.error(str(error))
    path = lambda row: os.path.join(args.checkpoint_dir, f"{args.task}-{row}-seed{args.seed}-best.pt")
    t_state, s_state = load_checkpoint(path("teacher")), load_checkpoint(path(args.row))
    data_fields = {f.name for f in dataclasses.fields(DataConfig)}
    for file, state in ((path("teacher"), t_state), (path(args.row), s_state)):
        if not isinstance(state.get("data_config"), dict) or set(state["data_config"]) - data_fields:
            parser.error(f"{file}: not trained on the built-in benchmark, whose test scenes this program draws "
                         f"(a --data run, or not a checkpoint train.py wrote)")

    def benchmark(state):   # the settings that change what is learnt (not --cache-dir or --workers)
        return {k: v for k, v in state["data_config"].items() if k not in MERGEABLE["data"]}, state.get("tokenizer")
    if benchmark(t_state) != benchmark(s_state):   # one benchmark, one vocabulary: else the maps would not compare
        parser.error(f"{path('teacher')} and {path(args.row)} were trained on different benchmarks or vocabularies")
    teacher = FusionEncoder(ModelConfig(**t_state["model_config"]))
    load_weights(teacher, path("teacher"), t_state)
    student = DualEncoder(ModelConfig(**s_state["model_config"]))
    load_weights(student, path(args.row), s_state)
    bench = build_benchmark(DataConfig(**t_state["data_config"]), tasks=[args.task])
    if not same_tokenizer(t_state, bench.tokenizer):
        parser.error(f"{path('teacher')}: its vocabulary is not the one its benchmark builds (another version "
                     f"of the code?)")
    split = bench.splits[args.task]["test"]
    if args.examples > len(split):
        parser.error(f"--examples {args.examples}: the test split has {len(split)}")
    index = torch.arange(args.examples)
    batch = fit_images(make_batch(split, index), teacher.config.image_size)
    raw = split.images[split.image_index[index, 0]].numpy()
    os.makedirs(folder, exist_ok=True)
    paths = attention_figure(teacher, student, batch, args.task, bench.tokenizer, raw, args.out)
    print("\n".join(paths))
    return paths


if __name__ == "__main__":
    main()
