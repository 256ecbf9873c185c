"""Train the fusion teacher, the dual-encoder baseline and DiDE's distilled students.

    python train.py                       # the whole experiment: every row of the table, three tasks
    python train.py --size tiny           # the same end to end on a CPU in a couple of minutes
    python train.py --rows teacher,dual --pretrain-steps 0   # the foundation: ground truth only
    python train.py --help                # every knob
    torchrun --standalone --nproc_per_node=8 train.py   # several GPUs (DistributedDataParallel)

Per seed: (1) the teacher is pre-trained on image-caption pairs with image-text matching
(ITM) and masked language modelling (MLM); (2) for the row `pretrain+soft+attention`, a student is pre-trained by distillation
from it (ITM soft labels + cross-modal attention). Per task: the teacher is fine-tuned with
ground truth, frozen, and each student row is trained on the same data:

    dual                     ground truth only (the baseline)
    soft                     soft labels only
    attention                ground truth + cross-modal attention
    soft+attention           soft labels + attention (DiDE's released recipe), fine-tuning only
    pretrain+dual            ITM pre-training with ground truth, then ground truth (pre-training alone)
    pretrain+soft+attention  distillation in pre-training and in fine-tuning (DiDE)

trainer.py holds the loop every stage and row shares (optimiser, schedule, step, fit).

Everything goes under --out-dir: config.json, tokenizer.json, metrics.jsonl (one JSON record
per line), checkpoints/, runs/ (one JSON per finished run: a re-run skips finished runs),
results.md and attention/*.png.
"""

import argparse
import dataclasses
import glob
import os
import sys
from dataclasses import dataclass

import torch

from runtime import (Runtime, allow_tf32, check_device_flags, interrupt_on_signals, launched_processes, run_processes,
                     setup_distributed)
from checkpoint import (MetricsLog, atomic_write, finished_run, load_weights, prepare_out_dir, record_run,
                        write_json)
from config import add_flags, check_each_once, given_values, split_list
from batches import CurriculumBatches, TaskBatches, check_batch_size, names_left_image_first
from data import DataConfig, build_benchmark, check_tasks, data_preset, only_families
from tasks import TooFewScenes, check_families
from distill import DistillWeights
from evaluate import attention_agreement, evaluate, evaluate_itm, predict_vqa
from loader import LoaderBatches, RealData, RealDataConfig, describe, load_real_data
from realdata import DataError
from model import DualEncoder, model_config
from teacher import FusionEncoder, freeze
from pretrain import ITMBatches, itm_validation_batches
from trainer import fit
from report import differing_flags, draw_attention, inference_speedups, read_config, read_results, table_of

STUDENT_ROWS = ("dual", "soft", "attention", "soft+attention", "pretrain+dual", "pretrain+soft+attention")
ROWS = ("teacher",) + STUDENT_ROWS


# -----------------------------------------------------------------------------
# Configuration: one dataclass, turned into command-line flags

@dataclass
class TrainConfig:
    size: str = "small"                  # model size (tiny, mini, small, vilt-b32); also picks the data and schedule presets
    tasks: str = "reasoning,entailment,vqa"  # comma-separated tasks
    rows: str = ",".join(ROWS)           # comma-separated rows of the table to train (see the module docstring)
    seeds: str = "0"                     # comma-separated training seeds; the table shows mean ± std over them
    jobs: int = 1                        # train this many seeds at once, one process each (small models leave a GPU idle)
    steps: int = 6000                    # fine-tuning steps per (task, row, seed)
    pretrain_steps: int = 3000           # ITM pre-training steps per seed (0: no pre-training stage)
    mlm_prob: float = 0.3                # teacher pre-training: chance each colour/size/shape/relation word is masked for MLM (0: ITM only)
    batch_size: int = 256                # examples per step
    lr: float = 5e-4                     # peak learning rate of AdamW
    warmup: float = 0.05                 # fraction of steps of linear warm-up, then linear decay to 0
    weight_decay: float = 0.01           # AdamW weight decay (none on biases, LayerNorms, embeddings)
    grad_clip: float = 1.0               # clip the global gradient norm (0 = off)
    soft_weight: float = 1.0             # weight of the soft-label loss in distilled rows
    attention_weight: float = 1.0        # weight of the cross-modal attention loss in distilled rows
    gt_weight: float = 0.0               # weight of ground truth in the soft+attention rows (DiDE: 0)
    temperature: float = 1.0             # soft-label temperature, classification tasks only (DiDE: 1; VQA: BCE)
    attention_layers: str = "last"       # layers whose cross-modal attention is distilled: last (DiDE), all, or e.g. 2,3
    families: str = ""                   # benchmark: train and test only these question families, e.g. A4_count_control
    curriculum_steps: int = 0            # reasoning: the first N fine-tuning steps use only statements naming the left image first
    eval_every: int = 500                # validate every this many steps (and at the end)
    pretrain_eval_every: int = 0         # validate pre-training every this many steps (0: as --eval-every); picks its best checkpoint
    eval_batch_size: int = 512           # examples per validation / test forward
    log_every: int = 50                  # write a metrics record every this many steps
    device: str = "auto"                 # auto, cpu, cuda, cuda:1, ...
    dtype: str = "auto"                  # auto (bf16 autocast on CUDA, fp32 on CPU), bf16, fp32
    compile: bool = False                # torch.compile the trained model and a distilling teacher
    out_dir: str = "runs/default"        # everything a run writes goes here
    resume: bool = True                  # continue what --out-dir holds: skip finished runs, resume a stopped one
    progress: bool = True                # tqdm progress bars
    speed: bool = True                   # add bench.py's inference speed-up column to the table
    attention_figures: bool = True       # save teacher vs student attention heat maps (attention/*.png) for the first seed


# Presets applied by --size before explicit flags: `tiny` runs end to end on a CPU in minutes.
TRAIN_PRESETS = {
    "tiny": dict(steps=100, pretrain_steps=60, batch_size=64, eval_every=50, log_every=25, eval_batch_size=256),
    "mini": dict(steps=1500, pretrain_steps=500, batch_size=64, eval_every=250, eval_batch_size=256),
    "small": dict(),
    "vilt-b32": dict(batch_size=128, lr=1e-4),
}


def real_data_preset(real: RealDataConfig) -> dict:
    """A real data set is one task, and has no image-caption pairs for ITM pre-training."""
    if not real.real:
        return {}
    return dict(tasks=real.task, pretrain_steps=0, rows=",".join(r for r in ROWS if not r.startswith("pretrain")))


def presets_help(width=80) -> str:
    """What each --size sets before the flags given, a paragraph per size, for the end of --help."""
    lines = []
    for size in TRAIN_PRESETS:
        flags = [f"--{name.replace('_', '-')} {value}"
                 for name, value in {**TRAIN_PRESETS[size], **data_preset(size)}.items()]
        line = f"  {size}:"
        for flag in flags or ["-"]:
            if len(line) + 1 + len(flag) > width:   # a flag and its value stay on one line
                lines.append(line)
                line = "     "
            line += " " + flag
        lines.append(line)
    return "\n".join(lines)


def parse_args(argv=None):
    """Flags -> (TrainConfig, DataConfig, RealDataConfig): dataclass defaults, then the size and data
    presets, then explicit flags."""
    class Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
        """Defaults after each flag; the description and the presets' lines as written."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=Help,
                                     epilog="The defaults shown are the small size's. --size sets these first,\n"
                                            f"then explicit flags apply:\n{presets_help()}")
    add_flags(parser, TrainConfig)
    add_flags(parser, DataConfig)
    add_flags(parser, RealDataConfig)
    args = parser.parse_args(argv)
    train_given, data_given = given_values(args, TrainConfig), given_values(args, DataConfig)
    size = train_given.get("size", TrainConfig.size)
    if size not in TRAIN_PRESETS:
        parser.error(f"--size: unknown size {size!r}; choose one of {', '.join(TRAIN_PRESETS)}")
    try:
        real_cfg = RealDataConfig(**given_values(args, RealDataConfig)).validate()
        train_cfg = TrainConfig(**{**TRAIN_PRESETS[size], **real_data_preset(real_cfg), **train_given})
        check_train_config(train_cfg)
        data_cfg = DataConfig(**{**data_preset(size), **data_given}).validate()
        tower_side = model_config(size).image_size
        if not real_cfg.real and tower_side % data_cfg.image_size:   # else resizing drops or unevenly repeats pixels
            raise ValueError(f"--image-size {data_cfg.image_size}: the {size} model reads {tower_side} px images, "
                             f"not a whole multiple of it")
        benchmark_flags = [f"--{name.replace('_', '-')}" for name in data_given if name != "max_text_len"]
        if real_cfg.real and train_cfg.families:
            benchmark_flags.append("--families")
        if real_cfg.real and train_cfg.curriculum_steps:
            benchmark_flags.append("--curriculum-steps")
        if real_cfg.real and benchmark_flags:   # else they would be ignored without a word
            raise ValueError(f"{', '.join(benchmark_flags)}: for the built-in benchmark, not with --data "
                             f"(which reads --max-text-len of these; its images load with --loader-workers)")
        if real_cfg.real and (split_list(train_cfg.tasks) != [real_cfg.task] or train_cfg.pretrain_steps):
            raise ValueError(f"--data {real_cfg.data} is the {real_cfg.task} task alone, without image-caption "
                             f"pairs: use --tasks {real_cfg.task} --pretrain-steps 0 and no pretrain+ rows")
    except ValueError as error:
        parser.error(str(error))
    return train_cfg, data_cfg, real_cfg


def check_train_config(cfg: TrainConfig) -> None:
    """Raise ValueError naming the flag at fault."""
    for name in ("steps", "batch_size", "eval_every", "eval_batch_size", "log_every", "jobs"):
        if getattr(cfg, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(cfg, name)}")
    if not 0 <= cfg.curriculum_steps < cfg.steps:
        raise ValueError(f"--curriculum-steps must be in [0, --steps), got {cfg.curriculum_steps}")
    if cfg.curriculum_steps and "reasoning" not in split_list(cfg.tasks):
        raise ValueError("--curriculum-steps orders the reasoning task's statements; --tasks has no reasoning")
    for name in ("pretrain_steps", "pretrain_eval_every", "soft_weight", "attention_weight", "gt_weight",
                 "weight_decay", "grad_clip"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must not be negative, got {getattr(cfg, name)}")
    if cfg.lr <= 0 or cfg.temperature <= 0:
        raise ValueError(f"--lr and --temperature must be positive, got {cfg.lr} and {cfg.temperature}")
    if not 0 <= cfg.warmup < 1:
        raise ValueError(f"--warmup must be a fraction in [0, 1), got {cfg.warmup}")
    if not 0 <= cfg.mlm_prob <= 1:
        raise ValueError(f"--mlm-prob must be a probability in [0, 1], got {cfg.mlm_prob}")
    check_tasks(split_list(cfg.tasks))
    rows = split_list(cfg.rows)
    for row in rows:
        if row not in ROWS:
            raise ValueError(f"--rows: unknown row {row!r}; choose from {', '.join(ROWS)}")
    if any(r.startswith("pretrain") for r in rows) and cfg.pretrain_steps == 0:
        raise ValueError("--rows has a pretrain+ row but --pretrain-steps is 0")
    try:
        seeds = [int(s) for s in split_list(cfg.seeds)]
    except ValueError:
        raise ValueError(f"--seeds takes comma-separated integers, got {cfg.seeds!r}") from None
    try:
        layers = [] if cfg.attention_layers in ("last", "all") else [int(s) for s in split_list(cfg.attention_layers)]
    except ValueError:
        raise ValueError(f"--attention-layers takes last, all or comma-separated integers, "
                         f"got {cfg.attention_layers!r}") from None
    for flag, values in (("rows", rows), ("seeds", seeds)):
        if not values:   # e.g. --rows ","
            raise ValueError(f"--{flag} must name at least one")
    if not layers and cfg.attention_layers not in ("last", "all"):
        raise ValueError("--attention-layers must name at least one")
    check_each_once("rows", rows)
    check_each_once("seeds", seeds)
    if any(not 0 <= seed < 2**32 for seed in seeds):   # what numpy and torch generators take
        raise ValueError(f"--seeds takes integers in [0, 2**32), got {cfg.seeds!r}")
    for row in rows:   # the soft row reads --soft-weight alone; soft+attention rows read all three
        weights = row_weights(row, cfg)
        if weights and not (weights.soft_label or weights.attention or weights.ground_truth):
            flags = "--soft-weight is" if row == "soft" else "--soft-weight, --attention-weight and --gt-weight are"
            raise ValueError(f"the row {row} (--rows) trains on no loss: {flags} 0")
    if cfg.jobs > 1 and launched_processes() > 1:
        raise ValueError(f"--jobs {cfg.jobs} starts its own processes, one per seed; not under torchrun")
    n_layer = model_config(cfg.size).n_layer
    if any(not -n_layer <= layer < n_layer for layer in layers):
        raise ValueError(f"--attention-layers {cfg.attention_layers}: the {cfg.size} size has {n_layer} layers")
    if len({layer % n_layer for layer in layers}) < len(layers):   # -1 is the last layer, n_layer - 1
        raise ValueError(f"--attention-layers {cfg.attention_layers}: a layer is named twice "
                         f"(negative numbers count from the last of the {n_layer})")
    check_families(split_list(cfg.families), split_list(cfg.tasks))
    check_device_flags(cfg.device, cfg.dtype)


def left_image_first(train) -> torch.Tensor:
    """bool [N]: the reasoning statements that name the left image first, the curriculum's first stage."""
    return torch.tensor([names_left_image_first(t) for t in train.texts], device=train.labels.device)


def attention_layers(cfg: TrainConfig, n_layer: int) -> tuple[int, ...]:
    if cfg.attention_layers == "last":
        return (-1,)
    if cfg.attention_layers == "all":
        return tuple(range(n_layer))
    return tuple(int(s) for s in split_list(cfg.attention_layers))


def row_weights(row: str, cfg: TrainConfig) -> DistillWeights | None:
    """The loss of each row; None means ground truth only (the teacher, the baselines: no teacher needed)."""
    if row in ("teacher", "dual", "pretrain+dual"):
        return None
    if row == "soft":
        return DistillWeights(soft_label=cfg.soft_weight, attention=0.0, ground_truth=0.0, temperature=cfg.temperature)
    if row == "attention":
        return DistillWeights(soft_label=0.0, attention=cfg.attention_weight, ground_truth=1.0)
    return DistillWeights(soft_label=cfg.soft_weight, attention=cfg.attention_weight, ground_truth=cfg.gt_weight,
                          temperature=cfg.temperature)


def new_model(kind, cfg: TrainConfig, bench, device, init_from=None):
    """A teacher or student of the configured size, optionally starting from a checkpoint."""
    model_cfg = model_config(cfg.size, vocab_size=len(bench.tokenizer), num_answers=bench.num_classes("vqa"),
                             max_text_len=bench.max_text_len)
    model = (FusionEncoder if kind == "teacher" else DualEncoder)(model_cfg).to(device)
    if init_from:
        load_weights(model, init_from, expect=model_cfg, tokenizer=bench.tokenizer)
    return model


def pretrain(kind, seed, bench, cfg, rt: Runtime, teacher=None, weights=None):
    """Pre-training on the captions: ITM + MLM with ground truth for the teacher, ITM with ground truth
    for pretrain+dual, distillation from the pre-trained teacher for the DiDE student. Returns the best
    checkpoint's path (by ITM validation accuracy)."""
    name, device = f"pretrain-{kind}-seed{seed}", rt.device
    done = finished_run(cfg.out_dir, name) if cfg.resume else None
    if done:
        return done["checkpoint"]
    torch.manual_seed(seed)
    model = new_model("teacher" if kind == "teacher" else "student", cfg, bench, device)
    mlm_prob = cfg.mlm_prob if kind == "teacher" else 0.0     # only the fusion encoder can read words off the image
    batches = ITMBatches(bench.captions["train"], bench.tokenizer, cfg.batch_size, seed, device,
                         model.config.image_size, mlm_prob)
    val_batches = itm_validation_batches(bench.captions["val"], bench.tokenizer, cfg.eval_batch_size, device,
                                         mlm_prob=mlm_prob)
    best_path, best_val = fit(name, model, "itm", batches, lambda m: evaluate_itm(m, val_batches, cfg, device),
                              cfg.pretrain_steps, cfg, rt, bench, teacher, weights,
                              attention_layers(cfg, model.config.n_layer), cfg.pretrain_eval_every)
    if rt.main:
        record_run(cfg.out_dir, name, {"checkpoint": best_path, "val": best_val})
    rt.barrier()
    rt.say(f"{name}: ITM val accuracy {best_val:.2f}")
    return best_path


def finetune(row, task, seed, bench, cfg, rt: Runtime, init_from=None, teacher=None):
    """Train one row on one task; test its best-validation checkpoint. Finished runs are read back."""
    name, device = f"{task}-{row}-seed{seed}", rt.device
    done = finished_run(cfg.out_dir, name) if cfg.resume else None
    if done:
        return done
    torch.manual_seed(seed)
    model = new_model("teacher" if row == "teacher" else "student", cfg, bench, device, init_from)
    if row == "teacher" and task == "reasoning" and init_from:   # pre-trained on single images only
        model.second_image_like_first()
    train, val, test = (bench.splits[task][s] for s in ("train", "val", "test"))
    if isinstance(bench, RealData):   # photographs decoded by DataLoader workers
        batches = LoaderBatches(train, cfg.batch_size, seed, device, train.workers, rt.rank, rt.world)
    else:                             # the benchmark, resident on the device
        batches = TaskBatches(train, cfg.batch_size, seed, device, model.config.image_size)
        if task == "reasoning" and cfg.curriculum_steps:   # the direction words come later (EXPERIMENTS.md, section 2)
            first = TaskBatches(train.select(left_image_first(train)), cfg.batch_size, seed, device,
                                model.config.image_size)
            batches = CurriculumBatches(first, batches, cfg.curriculum_steps)
    weights = row_weights(row, cfg)
    best_path, best_val = fit(name, model, task, batches, lambda m: evaluate(m, val, task, cfg, rt),
                              cfg.steps, cfg, rt, bench, teacher if weights else None, weights,
                              attention_layers(cfg, model.config.n_layer))
    del batches   # its loader processes and pinned batches are not needed for testing
    load_weights(model, best_path)
    result = evaluate(model, test, task, cfg, rt)
    result.update(val=best_val, run=name, task=task, row=row, seed=seed, checkpoint=best_path)
    # how diffuse the teacher's attention is, and how near the student's comes (one process is enough)
    if rt.main and (row == "teacher" or teacher is not None):
        pair = (model, None) if row == "teacher" else (teacher, model)
        result["attention"] = attention_agreement(*pair, test, task, cfg, device)
    if isinstance(bench, RealData) and bench.questions is not None:   # for the VQA evaluation server
        result["predictions"] = os.path.join(cfg.out_dir, "predictions", f"{name}-{bench.config.vqa_predict}.json")
        predict_vqa(model, bench.questions, bench.answers, cfg, rt, result["predictions"])
    rt.write(kind="test", **result)
    if rt.main:
        record_run(cfg.out_dir, name, result)
    rt.barrier()
    rt.say(f"{name}: test accuracy {result['accuracy']:.2f} (best val {best_val:.2f})")
    return result


# -----------------------------------------------------------------------------
# The experiment and its table

def load_data(cfg, data_cfg, real_cfg, rt: Runtime):
    """The built-in benchmark, resident on the device; or a real data set, read from its files."""
    if real_cfg.real:
        model_cfg = model_config(cfg.size)
        data = load_real_data(real_cfg, model_cfg.image_size, model_cfg.patch_size,
                              max(model_cfg.max_text_len, data_cfg.max_text_len))
        rt.say(describe(data))
        return data
    if not rt.main:
        rt.barrier()   # rank 0 renders and caches the benchmark first; the others read the cache
    bench = build_benchmark(data_cfg, tasks=split_list(cfg.tasks), progress=cfg.progress and rt.main)
    if rt.main:
        rt.barrier()
    for task, splits in bench.splits.items():   # the whole benchmark lives on the device: a batch is tensor indexing
        bench.splits[task] = {name: split.to(rt.device)
                              for name, split in only_families(splits, task, split_list(cfg.families)).items()}
    bench.captions = {name: split.to(rt.device) for name, split in bench.captions.items()}
    return bench


def check_same_experiment(out_dir, config, rank=0) -> None:
    """Runs are found by name, and a folder's table reads all of them: refuse, in one line, a folder that
    holds runs (finished or stopped) trained with settings that change results. Other seeds and rows may
    join; a folder with no run yet (e.g. a start that failed on a data path) takes any settings; one with
    runs but no config.json only a teacher's (copied there for its students), and says so."""
    trained = [*glob.glob(os.path.join(out_dir, "runs", "*.json")), *glob.glob(os.path.join(out_dir, "checkpoints", "*.pt"))]
    if not trained:
        return
    if not os.path.exists(os.path.join(out_dir, "config.json")):
        # A teacher's runs copied into a fresh folder teach students of other settings (EXPERIMENTS.md,
        # section 3); students' runs of unknown settings would be mixed into the table.
        if not all("-teacher-" in os.path.basename(path) for path in trained):
            raise SystemExit(f"error: --out-dir {out_dir} holds runs or checkpoints but no config.json saying "
                             f"which settings trained them, so they cannot be checked against these: restore "
                             f"it, or use another --out-dir")
        if rank == 0:
            print(f"--out-dir {out_dir} holds a teacher's runs and no config.json: they are reused as they are, "
                  f"their settings unchecked", flush=True)
        return
    if differ := differing_flags(read_config(out_dir), config):
        raise SystemExit(f"error: --out-dir {out_dir} holds runs trained with other settings ({', '.join(differ)}), "
                         f"which would be reused and mixed into this table: use another --out-dir")


def seed_commands(argv, seeds, out_dir) -> dict:
    """`python train.py <argv> --seeds s` for each seed, into the same --out-dir (runs and checkpoints
    carry the seed in their names), each logging to logs/seed{s}.log; for run_processes."""
    os.makedirs(os.path.join(out_dir, "logs"), exist_ok=True)
    return {f"seed {seed}": ([sys.executable, os.path.abspath(__file__), *argv, "--seeds", str(seed), "--jobs", "1",
                              "--speed", "false", "--progress", "false",
                              "--attention-figures", "false"],   # drawn once, by the parent
                             os.path.join(out_dir, "logs", f"seed{seed}.log"))
            for seed in seeds}


def main(argv=None):
    cfg, data_cfg, real_cfg = parse_args(argv)
    rank, world, device = setup_distributed(cfg)
    tasks, rows, seeds = split_list(cfg.tasks), split_list(cfg.rows), [int(s) for s in split_list(cfg.seeds)]
    argv = sys.argv[1:] if argv is None else argv
    command = "python " + " ".join([os.path.basename(sys.argv[0])] + argv)
    config = {"train": dataclasses.asdict(cfg), "data": dataclasses.asdict(data_cfg),
              "real_data": dataclasses.asdict(real_cfg), "command": command}
    check_same_experiment(cfg.out_dir, config, rank)
    if rank == 0:
        prepare_out_dir(cfg.out_dir)
        write_json(os.path.join(cfg.out_dir, "config.json"), config)
    rt = Runtime(device, MetricsLog(os.path.join(cfg.out_dir, "metrics.jsonl")), rank, world)
    allow_tf32(device)

    rt.say(f"device {device} x {world}, size {cfg.size}, tasks {tasks}, rows {rows}, seeds {seeds}")
    if cfg.jobs > 1 and len(seeds) > 1:
        if not real_cfg.real:   # render and cache the benchmark once, on the CPU, before the seeds' processes read it
            build_benchmark(data_cfg, tasks=tasks, progress=cfg.progress)
        try:
            run_processes(seed_commands(argv, seeds, cfg.out_dir), cfg.jobs, rt.say)
        finally:
            write_json(os.path.join(cfg.out_dir, "config.json"), config)   # each seed's process wrote its own
        cfg = dataclasses.replace(cfg, resume=True)   # the loop below reads back the runs they finished

    bench = load_data(cfg, data_cfg, real_cfg, rt)
    for task in tasks:   # said now, not when fine-tuning starts after a whole pre-training stage
        check_batch_size(cfg.batch_size, len(bench.splits[task]["train"]), f"{task} training set")
    if cfg.curriculum_steps:   # its first stage draws batches from part of the reasoning training set
        check_batch_size(cfg.batch_size, int(left_image_first(bench.splits["reasoning"]["train"]).sum()),
                         "curriculum's first stage (--curriculum-steps: the statements naming the left image first)")
    if rt.main:
        bench.tokenizer.save(os.path.join(cfg.out_dir, "tokenizer.json"))

    distilled = [row for row in rows if row_weights(row, cfg) is not None]
    results = []
    for seed in seeds:
        # stage 1: pre-training on image-caption pairs
        teacher_init, student_init = None, {}
        if cfg.pretrain_steps > 0 and ("teacher" in rows or distilled):
            teacher_init = pretrain("teacher", seed, bench, cfg, rt)
        if "pretrain+dual" in rows:
            student_init["pretrain+dual"] = pretrain("dual", seed, bench, cfg, rt)
        if "pretrain+soft+attention" in rows:
            pretrained_teacher = freeze(new_model("teacher", cfg, bench, device, teacher_init))
            student_init["pretrain+soft+attention"] = pretrain(
                "student", seed, bench, cfg, rt, pretrained_teacher, row_weights("soft+attention", cfg))
        # stage 2: fine-tuning, the teacher first, then every student row from the same frozen teacher
        for task in tasks:
            teacher = None
            if "teacher" in rows or distilled:
                teacher_result = finetune("teacher", task, seed, bench, cfg, rt, teacher_init)
                if "teacher" in rows:
                    results.append(teacher_result)
                teacher = freeze(new_model("teacher", cfg, bench, device, teacher_result["checkpoint"]))
            for row in rows:
                if row != "teacher":
                    results.append(finetune(row, task, seed, bench, cfg, rt, student_init.get(row), teacher))
            if (rt.main and cfg.attention_figures and teacher is not None and distilled and seed == seeds[0]
                    and not real_cfg.real):
                draw_attention(teacher, results[-1], task, bench, cfg, device)

    if not rt.main:
        return results
    speedups = inference_speedups(cfg, bench, device) if cfg.speed else None
    # The folder's table: it holds one configuration, whose other rows or seeds earlier commands may have trained.
    folder_results = read_results([cfg.out_dir])
    table = table_of(folder_results, speedups)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    results_md = f"# Results\n\nLast command: `{command}`  \nDevice: {device_name} x {world}\n\n{table}"
    atomic_write(os.path.join(cfg.out_dir, "results.md"), lambda f: f.write(results_md.encode()))
    write_json(os.path.join(cfg.out_dir, "results.json"), folder_results)
    print("\n" + table)
    return results


if __name__ == "__main__":
    interrupt_on_signals()
    try:
        main()
    except (DataError, TooFewScenes) as error:   # a data file or scene flag at fault: which, not a stack trace
        raise SystemExit(f"error: {error}") from None
    except KeyboardInterrupt:    # Ctrl-C or SIGTERM outside a training loop (inside one, fit saves and exits)
        raise SystemExit("\nstopped; every checkpoint and finished run written so far is intact. "
                         "Run the same command again to continue.") from None
