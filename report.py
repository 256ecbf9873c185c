"""What a run reports: the results table, the attention pictures, the speed column.

train.py calls these at the end of the experiment; they read results and checkpoints and
never change them.
"""

import math
import os

import torch

from data import fit_images, make_batch


def mean_std(values):
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {std:.1f}"


def results_table(results, tasks, rows, seeds, speedups=None):
    """Markdown: rows of the table, columns tasks (mean ± std over seeds), then per-family tables."""
    by = {(r["task"], r["row"], r["seed"]): r for r in results}
    speed_head = " | inference speed-up |" if speedups else " |"
    lines = [f"Test accuracy (%), mean ± std over seeds {', '.join(map(str, seeds))}.", "",
             "| row | " + " | ".join(tasks) + speed_head, "|---|" + "---|" * (len(tasks) + bool(speedups))]
    for row in rows:
        cells = [mean_std([by[(t, row, s)]["accuracy"] for s in seeds]) for t in tasks]
        speed = f" | {speedups['teacher' if row == 'teacher' else 'student']}" if speedups else ""
        lines.append(f"| {row} | " + " | ".join(cells) + speed + " |")
    for t in tasks:
        families = list(by[(t, rows[0], seeds[0])]["per_family"])
        # benchmark: per family of questions; VQA v2: per answer type; NLVR2: consistency
        lines += ["", f"Breakdown, {t}:", "", "| family / metric | " + " | ".join(rows) + " |",
                  "|---|" + "---|" * len(rows)]
        for family in families:
            cells = [mean_std([by[(t, row, s)]["per_family"][family] for s in seeds]) for row in rows]
            lines.append(f"| {family} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def draw_attention(teacher, student_result, task, bench, cfg, device, examples=3):
    """Save the teacher's and the last student row's text-to-image attention for a few test examples."""
    from visualize import attention_figure
    from train import new_model
    student = new_model("student", cfg, bench, device, student_result["checkpoint"])
    split = bench.splits[task]["test"]
    index = torch.arange(examples, device=device)
    batch = fit_images(make_batch(split, index), student.config.image_size)
    raw = split.images[split.image_index[index, 0]].cpu().numpy()
    os.makedirs(os.path.join(cfg.out_dir, "attention"), exist_ok=True)
    path = os.path.join(cfg.out_dir, "attention", f"{task}-{student_result['row']}")
    attention_figure(teacher, student, batch, task, bench.tokenizer, raw, path)


def inference_speedups(cfg, bench, device):
    """Inference throughput relative to the teacher, images pre-computed, from bench.py's code."""
    from bench import BenchConfig, run
    bench_cfg = BenchConfig(size=cfg.size, batch_size=min(256, cfg.eval_batch_size), vocab_size=len(bench.tokenizer),
                            num_answers=bench.num_classes("vqa"), train=False, device=str(device), dtype=cfg.dtype,
                            repeats=5 if device.type == "cpu" else 20, retrieval_images=8, retrieval_texts=8)
    rows, _, _ = run(bench_cfg)
    rate = {r["model"]: r["throughput"] for r in rows if r["row"] == "precomputed"}
    return {"teacher": "1.0x", "student": f"{rate['student'] / rate['teacher']:.1f}x (images pre-computed)"}
