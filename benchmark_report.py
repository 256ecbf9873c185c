"""What the built-in benchmark holds, for a reader checking it: per task, each question family's
size and label shares; a text-only baseline (SNLI's hypothesis-only check: what answering from
the text alone scores, entailment also knowing whether the image has a curtain); and a contact
sheet of examples as a PNG. `python data.py` builds the benchmark and prints this report.
"""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from checkpoint import save_png
from data import Benchmark, TaskSplit
from programs import ENTAILMENT_LABELS


def label_name(bench: Benchmark, task: str, label: int) -> str:
    return (("false", "true") if task == "reasoning" else ENTAILMENT_LABELS if task == "entailment"
            else bench.answers)[label]


def text_only_baseline(train: TaskSplit, test: TaskSplit, with_curtain: bool = False) -> dict:
    """The test accuracy (%) of a rule that reads the text and not the image, like SNLI's hypothesis-only
    baselines: the most frequent training label of the same text (of its family when the text was never
    seen; else label 0). `with_curtain` (entailment): the rule also knows whether the image has a curtain.
    VQA: the VQA score of that answer. {"all": %; with_curtain adds "image without curtain", "image with
    curtain"}."""
    def curtains(split):   # what the rule sees of each image: whether it has a curtain, or nothing
        return split.curtain.tolist() if with_curtain else [None] * len(split)
    by_text, by_family = defaultdict(Counter), defaultdict(Counter)   # (text or family, curtain) -> label counts
    for text, family, curtain, label in zip(train.texts, train.family.tolist(), curtains(train), train.labels.tolist()):
        by_text[(text, curtain)][label] += 1
        by_family[(family, curtain)][label] += 1
    scores = defaultdict(list)     # curtain (None: not known) -> the rule's score on each test example
    for i, (text, family, curtain, label) in enumerate(zip(test.texts, test.family.tolist(), curtains(test),
                                                            test.labels.tolist())):
        counts = by_text.get((text, curtain)) or by_family.get((family, curtain)) or Counter({0: 1})
        guess = counts.most_common(1)[0][0]
        score = float(test.vqa_scores[i, guess]) if test.vqa_scores is not None else float(guess == label)
        scores[curtain].append(score)
    every = [score for part in scores.values() for score in part]
    result = {"all": 100 * sum(every) / max(1, len(every))}
    for name, part in (("image without curtain", False), ("image with curtain", True)):
        if scores.get(part):
            result[name] = 100 * sum(scores[part]) / len(scores[part])
    return result


def report(bench: Benchmark, examples: int = 3, families=()) -> str:
    """Per task: sizes, per family the count and label distribution of the training set, and what a
    rule reading only the text scores on the test set. `families`: only these (as chosen by --families)."""
    lines = []
    for task, splits in bench.splits.items():
        sizes = ", ".join(f"{s} {len(x)} ex / {len(x.images)} img" for s, x in splits.items())
        lines.append(f"== {task}: {sizes}")
        train = splits["train"]
        for f, name in enumerate(train.family_names):
            if families and name not in families:
                continue
            labels = train.labels[train.family == f].tolist()
            shares = Counter(label_name(bench, task, y) for y in labels).most_common(6)
            shares = " ".join(f"{k}:{100 * v / max(1, len(labels)):.0f}%" for k, v in shares)
            lines.append(f"  {name:22s} {len(labels):6d}  {shares}")
        baseline = text_only_baseline(train, splits["test"], with_curtain=train.curtain is not None)
        lines.append("  text-only baseline on test (each text's majority training label"
                     + (", knowing whether there is a curtain" if train.curtain is not None else "") + "): "
                     + ", ".join(f"{k} {v:.1f}" for k, v in baseline.items()))
        for i in range(examples):
            lines.append(f"  e.g. {train.texts[i]!r} -> {label_name(bench, task, int(train.labels[i]))}")
    train = bench.captions["train"]
    kept = (train.swapped_ids == train.text_ids).all(1).float().mean().item()     # no exchange false of the image
    lines.append("== captions: " + ", ".join(f"{s} {len(c)}" for s, c in bench.captions.items())
                 + f"; e.g. {train.texts[0]!r}; colour-swapped negatives false of their image: "
                 + f"{100 * (1 - kept):.1f}% of train (the rest keep the caption)")
    lines.append(f"== vocabulary {len(bench.tokenizer)} tokens, {len(bench.answers)} VQA answers")
    return "\n".join(lines)


def contact_sheet(bench: Benchmark, path: str, per_task: int = 6, split: str = "val") -> None:
    """A PNG of examples spread over each task's split: image(s), text, label, family."""
    import textwrap
    from PIL import Image, ImageDraw, ImageFont
    font = ImageFont.load_default(size=12)
    side = 3 * bench.config.image_size if bench.config.image_size >= 64 else 6 * bench.config.image_size
    tile_w, tile_h = 2 * side + 12, side + 70
    sheet = Image.new("RGB", (per_task * tile_w, len(bench.splits) * tile_h), "white")
    draw = ImageDraw.Draw(sheet)
    for row, (task, splits) in enumerate(bench.splits.items()):
        data = splits[split]
        for col, i in enumerate(np.linspace(0, len(data) - 1, per_task).astype(int).tolist()):
            x, y = col * tile_w, row * tile_h
            for k, j in enumerate(data.image_index[i].tolist()):
                im = Image.fromarray(data.images[j].numpy()).resize((side, side), Image.Resampling.NEAREST)
                sheet.paste(im, (x + k * (side + 4), y))
            family = data.family_names[int(data.family[i])]
            text = f"{data.texts[i]} -> {label_name(bench, task, int(data.labels[i]))} [{family}]"
            draw.multiline_text((x + 2, y + side + 3), "\n".join(textwrap.wrap(text, tile_w // 7)),
                                fill="black", font=font)
    save_png(path, sheet)
