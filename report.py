"""What a run reports: the results table, the attention pictures, the speed column.

train.py calls these at the end of the experiment; they read results and checkpoints and
never change them. As a program, it prints the table of runs finished in one or more
--out-dir folders, for example seeds trained on different machines:

    python report.py runs/seeds01 runs/seed2
"""

import argparse
import dataclasses
import glob
import math
import os

import torch

from batches import fit_images, make_batch
from checkpoint import RECORDED_FILES, read_json, read_run_record
from data import TASKS, DataConfig
from evaluate import DIRECTIONS
from loader import RealDataConfig


def mean_std(values, expected: int):
    """'mean ± std' (sample std) of the values found; '-' for none; '(n=k)' when fewer than `expected`
    were found. One value has no spread: just the value (a run of one seed prints no '± 0.0')."""
    if not values:
        return "-"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.1f}" + (" (n=1)" if expected > 1 else "")
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{mean:.1f} ± {std:.1f}" + (f" (n={len(values)})" if len(values) < expected else "")


def results_table(results, tasks, rows, seeds, speedups=None):
    """Markdown: rows of the table, columns tasks (mean ± std over seeds), then per-family tables.
    A cell with runs missing says how many it averages."""
    by = {(r["task"], r["row"], r["seed"]): r for r in results}

    def cell(task, row, family=None):
        runs = [by[(task, row, s)] for s in seeds if (task, row, s) in by]
        runs = [r for r in runs if family is None or family in r["per_family"]]  # older runs lack newer breakdowns
        return mean_std([r["accuracy"] if family is None else r["per_family"][family] for r in runs], len(seeds))

    speed_head = " | inference speed-up |" if speedups else " |"
    lines = [f"Test accuracy (%), mean ± std over seeds {', '.join(map(str, seeds))}.", "",
             "| row | " + " | ".join(tasks) + speed_head, "|---|" + "---|" * (len(tasks) + bool(speedups))]
    for row in rows:
        speed = f" | {speedups['teacher' if row == 'teacher' else 'student']}" if speedups else ""
        lines.append(f"| {row} | " + " | ".join(cell(t, row) for t in tasks) + speed + " |")
    lines += gap_table(results, tasks, rows, seeds)
    for t in tasks:
        # benchmark: per family of questions; VQA v2: per answer type; NLVR2: consistency
        families = list(dict.fromkeys(f for r in results if r["task"] == t for f in r["per_family"]))
        lines += ["", f"Breakdown, {t}:", "", "| family / metric | " + " | ".join(rows) + " |",
                  "|---|" + "---|" * len(rows)]
        for family in families:
            lines.append(f"| {family} | " + " | ".join(cell(t, row, family) for row in rows) + " |")
    return "\n".join(lines + attention_table(results, tasks, rows, seeds)) + "\n"


MIN_GAP = 2.0   # accuracy points: a smaller teacher/dual gap is within seed noise, and no share of it is taken


def gap_table(results, tasks, rows, seeds):
    """Markdown lines: the teacher/dual gap per task, and the share of it each other student row
    closes, (row - dual) / (teacher - dual), per seed (a seed's students learn from that seed's
    teacher), mean ± std over seeds. A seed whose gap is under MIN_GAP points is left out."""
    accuracy = {(r["task"], r["row"], r["seed"]): r["accuracy"] for r in results}
    students = [row for row in rows if row not in ("teacher", "dual")]
    if "teacher" not in rows or "dual" not in rows or not students:
        return []

    def gaps(task):   # {seed: teacher - dual}
        return {s: accuracy[(task, "teacher", s)] - accuracy[(task, "dual", s)] for s in seeds
                if (task, "teacher", s) in accuracy and (task, "dual", s) in accuracy}

    def share_closed(task, row):
        shares = [100 * (accuracy[(task, row, s)] - accuracy[(task, "dual", s)]) / gap
                  for s, gap in gaps(task).items() if gap >= MIN_GAP and (task, row, s) in accuracy]
        return mean_std(shares, len(seeds))

    lines = ["", f"The teacher/dual gap (points), and the share of it each row closes (%): (row - dual) / "
             f"(teacher - dual) per seed; seeds with a gap under {MIN_GAP:g} points are left out.", "",
             "| | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks),
             "| gap, teacher - dual | " + " | ".join(mean_std(list(gaps(t).values()), len(seeds)) for t in tasks) + " |"]
    lines += [f"| {row}: gap closed | " + " | ".join(share_closed(t, row) for t in tasks) + " |" for row in students]
    return lines


def attention_table(results, tasks, rows, seeds):
    """Markdown lines: the teacher's cross-modal attention entropy and each student's KL from it
    (evaluate.attention_agreement), text-to-image / image-to-text, mean over the seeds found
    ('(n=k)' when runs without it, e.g. from older code, leave fewer seeds than asked)."""
    def mean_of(task, row, key):
        found = [r["attention"] for r in results
                 if r["task"] == task and r["row"] == row and r["seed"] in seeds and "attention" in r]
        if not found or key not in found[0]["text_to_image"]:
            return "-"
        means = [sum(a[d][key] for a in found) / len(found) for d in DIRECTIONS]
        text = " / ".join(f"{m:.3f}" if key.endswith("entropy") else f"{m:.3g}" for m in means)
        return text + (f" (n={len(found)})" if len(found) < len(seeds) else "")

    if not any("attention" in r for r in results):
        return []
    lines = ["", "Cross-modal attention on the first test examples, last layer, text-to-image / image-to-text.",
             "The teacher's entropy over that of uniform attention (1: uniform, 0: one key per row); each",
             "student's KL(teacher || student) per row, averaged over rows and images (the attention loss",
             "term per image, on unseen examples).", "",
             "| row | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    if "teacher" in rows:
        lines.append("| teacher: entropy / uniform | " + " | ".join(mean_of(t, "teacher", "teacher_entropy")
                                                                  for t in tasks) + " |")
    lines += [f"| {row}: KL | " + " | ".join(mean_of(t, row, "kl") for t in tasks) + " |"
              for row in rows if row != "teacher"]
    return lines


# Settings that do not change what a run learns: folders that differ only in these can be merged. Rows and seeds
# choose which runs are made (every run is seeded alone); the others, where and how fast they run, and what is shown.
MERGEABLE = {"train": {"rows", "seeds", "jobs", "out_dir", "resume", "progress", "speed", "attention_figures", "device",
                       "compile", "log_every", "eval_batch_size"},
             "data": {"cache_dir", "workers"}, "real_data": {"loader_workers"}}


def read_config(out_dir) -> dict:
    """The config.json that train.py wrote into `out_dir`."""
    path = os.path.join(out_dir, "config.json")
    if not os.path.exists(path):
        raise SystemExit(f"error: {out_dir}: no config.json; is it a folder that train.py wrote?")
    config = read_json(path)
    if not isinstance(config, dict) or not isinstance(config.get("train"), dict):
        raise SystemExit(f"error: {path}: not a config.json that train.py wrote (no \"train\" settings)")
    for part in ("data", "real_data"):   # absent from older files; present, they are settings by name
        if not isinstance(config.get(part, {}), dict):
            raise SystemExit(f"error: {path}: not a config.json that train.py wrote (\"{part}\" is not settings)")
    return config


# A setting missing from an older config.json is a flag added since; the code before it behaved as the
# flag's default does, except for these.
BEFORE_THE_FLAG = {("train", "mlm_prob"): 0.0}   # teacher pre-training was ITM alone before --mlm-prob
# Settings that name a file or folder: "data/vqa", "./data/vqa/" and its absolute path are one setting.
PATHS = (("real_data", "data_dir"), ("real_data", "image_dir"), ("real_data", "vocab"))


def experiment_settings(config: dict) -> dict:
    """The settings of a config.json that change results, {(part, name): value}: every merged folder shares them."""
    from train import TrainConfig   # here, not at the top: train.py imports this file
    defaults = {"train": TrainConfig(), "data": DataConfig(), "real_data": RealDataConfig()}
    settings = {}
    for part, ignored in MERGEABLE.items():
        for f in dataclasses.fields(defaults[part]):
            if f.name not in ignored:
                missing = BEFORE_THE_FLAG.get((part, f.name), getattr(defaults[part], f.name))
                settings[(part, f.name)] = config.get(part, {}).get(f.name, missing)
    if not settings[("train", "pretrain_eval_every")]:   # 0: as --eval-every
        settings[("train", "pretrain_eval_every")] = settings[("train", "eval_every")]
    for key in PATHS:
        if settings[key]:
            settings[key] = os.path.abspath(settings[key])
    return settings


def differing_flags(config: dict, other: dict) -> list[str]:
    """The flags, as --names, whose values in two configs would make their runs' results differ."""
    a, b = experiment_settings(config), experiment_settings(other)
    return sorted("--" + name.replace("_", "-") for part, name in a.keys() | b.keys()
                  if a.get((part, name)) != b.get((part, name)))


def same_run(a, b) -> bool:
    """Two records of one run: equal but for where its files are now (each names its own folder's copy)."""
    def kept(result):
        return {key: value for key, value in result.items() if key not in RECORDED_FILES}
    return kept(a) == kept(b)


def read_results(out_dirs):
    """The test results of every finished fine-tuning run (runs/*.json) under the given --out-dir folders,
    which must have been trained with the same settings (seeds and the like apart)."""
    results, found_in = [], {}
    first = read_config(out_dirs[0])
    for out_dir in out_dirs:
        if out_dir != out_dirs[0] and (differ := differing_flags(first, read_config(out_dir))):
            raise SystemExit(f"error: {out_dirs[0]} and {out_dir} were trained with different settings: "
                             f"{', '.join(differ)}")
        paths = sorted(glob.glob(os.path.join(out_dir, "runs", "*.json")))
        if not paths:
            raise SystemExit(f"error: {out_dir}: no finished runs (no {os.path.join(out_dir, 'runs', '*.json')})")
        for path in paths:
            result = read_run_record(path)
            if "task" not in result:   # pre-training runs have no test result
                continue
            if missing := {"row", "seed", "accuracy", "per_family"} - result.keys():
                raise SystemExit(f"error: {path}: a run record without {', '.join(sorted(missing))}")
            if not (isinstance(result["accuracy"], (int, float)) and isinstance(result["seed"], int)
                    and isinstance(result["per_family"], dict)):
                raise SystemExit(f"error: {path}: not a run record that train.py wrote (its accuracy, seed or "
                                 f"per_family is of another kind)")
            key = (result["task"], result["row"], result["seed"])
            if key in found_in:
                if same_run(result, found_in[key][1]):   # one run, its record copied (e.g. a teacher its students need)
                    continue
                raise SystemExit(f"error: run {result['run']} is in both {found_in[key][0]} and {out_dir}")
            found_in[key] = (out_dir, result)
            results.append(result)
    if not results:
        raise SystemExit(f"error: {', '.join(out_dirs)}: no finished fine-tuning run, only pre-training")
    return results


def draw_attention(teacher, student_result, task, bench, cfg, device, examples=3):
    """Save the teacher's and the last student row's text-to-image attention for a few test examples."""
    from visualize import attention_figure
    from train import new_model
    student = new_model("student", cfg, bench, device, student_result["checkpoint"])
    split = bench.splits[task]["test"]
    index = torch.arange(min(examples, len(split)), device=device)   # --eval-examples may be fewer
    batch = fit_images(make_batch(split, index), student.config.image_size)
    raw = split.images[split.image_index[index, 0]].cpu().numpy()
    os.makedirs(os.path.join(cfg.out_dir, "attention"), exist_ok=True)
    path = os.path.join(cfg.out_dir, "attention", f"{task}-{student_result['row']}")
    attention_figure(teacher, student, batch, task, bench.tokenizer, raw, path)


def inference_speedups(cfg, bench, device):
    """Inference throughput relative to the teacher, images pre-computed, from bench.py's code: one image
    and one text per example, the text as long as the run's test texts are padded (the longest of its
    tasks), compiled if the run was."""
    from bench import BenchConfig, run
    text_len = max(splits["test"].text_ids.shape[1] for splits in bench.splits.values())
    bench_cfg = BenchConfig(size=cfg.size, batch_size=min(256, cfg.eval_batch_size), text_len=text_len,
                            vocab_size=len(bench.tokenizer), num_answers=bench.num_classes("vqa"), train=False,
                            device=str(device), dtype=cfg.dtype, compile=cfg.compile,
                            repeats=5 if device.type == "cpu" else 20, retrieval_images=8, retrieval_texts=8)
    rows, _, _ = run(bench_cfg)
    rate = {r["model"]: r["throughput"] for r in rows if r["row"] == "precomputed"}
    return {"teacher": "1.0x", "student": f"{rate['student'] / rate['teacher']:.1f}x (images pre-computed)"}


def parse_args(argv=None) -> list[str]:
    """The table of finished runs, from one or more --out-dir folders (e.g. seeds trained on different machines)."""
    parser = argparse.ArgumentParser(description=parse_args.__doc__)
    parser.add_argument("out_dirs", nargs="+", help="folders that train.py wrote (their runs/*.json are read)")
    return parser.parse_args(argv).out_dirs


def table_of(results, speedups=None) -> str:
    """results_table over the tasks, rows (in train.py's order) and seeds that `results` holds."""
    from train import ROWS

    def present(key, order):
        return [x for x in order if any(r[key] == x for r in results)]
    return results_table(results, present("task", TASKS), present("row", ROWS), sorted({r["seed"] for r in results}),
                         speedups)


def main(argv=None):
    table = table_of(read_results(parse_args(argv)))
    print(table)
    return table


if __name__ == "__main__":
    main()
