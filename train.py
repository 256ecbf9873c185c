"""Train the fusion teacher and the dual-encoder student on the built-in benchmark.

    python train.py                      # the default experiment: both models, three tasks, a results table
    python train.py --size tiny          # the same end to end on a CPU in a couple of minutes
    python train.py --help               # every knob

For each task and seed it trains the teacher (teacher.py) and the dual-encoder baseline
(model.py) with ground truth, validates during training, keeps the best checkpoint by
validation accuracy, tests it, and writes everything under --out-dir:
config.json, tokenizer.json, metrics.jsonl (one JSON record per line),
checkpoints/{task}-{model}-seed{seed}-{last,best}.pt, and results.md.
"""

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from data import DATA_SIZES, TASKS, DataConfig, build_benchmark, make_batch, vqa_accuracy
from model import DualEncoder, model_config
from teacher import FusionEncoder

MODELS = {"teacher": FusionEncoder, "dual": DualEncoder}


# -----------------------------------------------------------------------------
# Configuration: one dataclass, turned into command-line flags

@dataclass
class TrainConfig:
    size: str = "small"                  # model size (tiny, small, vilt-b32); also picks the data and schedule presets
    tasks: str = "reasoning,entailment,vqa"  # comma-separated tasks to run
    models: str = "teacher,dual"         # comma-separated models to train: teacher (fusion), dual (student baseline)
    seeds: str = "0"                     # comma-separated training seeds; the table reports mean ± std over them
    steps: int = 6000                    # optimisation steps per (task, model, seed)
    batch_size: int = 256                # examples per step
    lr: float = 5e-4                     # peak learning rate of AdamW
    warmup: float = 0.05                 # fraction of steps of linear warm-up, then linear decay to 0
    weight_decay: float = 0.01           # AdamW weight decay (none on biases, LayerNorms, embeddings)
    grad_clip: float = 1.0               # clip the global gradient norm (0 = off)
    eval_every: int = 500                # validate every this many steps (and at the end)
    eval_batch_size: int = 512           # examples per validation / test forward
    log_every: int = 50                  # write a metrics record every this many steps
    device: str = "auto"                 # auto, cpu, cuda, cuda:1, ...
    dtype: str = "auto"                  # auto (bf16 autocast on CUDA, fp32 on CPU), bf16, fp32
    compile: bool = False                # torch.compile the model
    out_dir: str = "runs/default"        # everything a run writes goes here
    progress: bool = True                # tqdm progress bars


# Presets applied by --size before explicit flags: `tiny` must run end to end on a CPU in minutes.
TRAIN_PRESETS = {
    "tiny": dict(steps=150, batch_size=64, eval_every=75, log_every=25, eval_batch_size=256),
    "small": dict(),
    "vilt-b32": dict(batch_size=128, lr=1e-4),
}


def parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_flags(parser, cls, names_taken=()):
    """One flag per dataclass field, typed, with its comment as help. Taken names get a `data-` prefix."""
    comments = field_comments(cls)
    for f in dataclasses.fields(cls):
        name = f.name.replace("_", "-")
        flag = f"--data-{name}" if f.name in names_taken else f"--{name}"
        kind = parse_bool if f.type in (bool, "bool") else {"int": int, "float": float, "str": str}.get(
            f.type if isinstance(f.type, str) else f.type.__name__, str)
        parser.add_argument(flag, dest=f"{cls.__name__}.{f.name}", type=kind, default=argparse.SUPPRESS,
                            metavar=f.type if isinstance(f.type, str) else f.type.__name__,
                            help=f"{comments.get(f.name, '')} (default: {f.default})")


def field_comments(cls) -> dict:
    """The one-line comment after each field in the class source: the flag's help."""
    import inspect
    comments = {}
    for line in inspect.getsource(cls).splitlines():
        if ":" in line and "#" in line and "=" in line:
            name = line.split(":")[0].strip()
            comments[name] = line.split("#", 1)[1].strip()
    return comments


def parse_args(argv=None):
    """Flags -> (TrainConfig, DataConfig): dataclass defaults, then the size preset, then explicit flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_flags(parser, TrainConfig)
    add_flags(parser, DataConfig, names_taken={f.name for f in dataclasses.fields(TrainConfig)})
    given = vars(parser.parse_args(argv))
    train_given = {k.split(".", 1)[1]: v for k, v in given.items() if k.startswith("TrainConfig.")}
    data_given = {k.split(".", 1)[1]: v for k, v in given.items() if k.startswith("DataConfig.")}
    size = train_given.get("size", TrainConfig.size)
    if size not in TRAIN_PRESETS:
        parser.error(f"--size: unknown size {size!r}; choose one of {', '.join(TRAIN_PRESETS)}")
    train_cfg = TrainConfig(**{**TRAIN_PRESETS[size], **train_given})
    data_cfg = DataConfig(**{**DATA_SIZES.get(size, DATA_SIZES["small"]), **data_given})
    try:
        check_train_config(train_cfg)
        data_cfg.validate()
    except ValueError as error:
        parser.error(str(error))
    return train_cfg, data_cfg


def check_train_config(cfg: TrainConfig) -> None:
    for name in ("steps", "batch_size", "eval_every", "eval_batch_size", "log_every"):
        if getattr(cfg, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(cfg, name)}")
    if cfg.lr <= 0:
        raise ValueError(f"--lr must be positive, got {cfg.lr}")
    if not 0 <= cfg.warmup < 1:
        raise ValueError(f"--warmup must be a fraction in [0, 1), got {cfg.warmup}")
    for task in split_list(cfg.tasks):
        if task not in TASKS:
            raise ValueError(f"--tasks: unknown task {task!r}; choose from {', '.join(TASKS)}")
    for name in split_list(cfg.models):
        if name not in MODELS:
            raise ValueError(f"--models: unknown model {name!r}; choose from {', '.join(MODELS)}")
    try:
        [int(s) for s in split_list(cfg.seeds)]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, got {cfg.seeds!r}") from None
    if cfg.dtype not in ("auto", "bf16", "fp32"):
        raise ValueError(f"--dtype must be auto, bf16 or fp32, got {cfg.dtype!r}")


def split_list(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


# -----------------------------------------------------------------------------
# Loss, optimiser, schedule

def ground_truth_loss(task, logits, batch):
    """Cross entropy for reasoning and entailment; for VQA, ViLT's binary cross entropy against
    soft scores, summed over answers and averaged over the batch (mean over B*A, times A)."""
    logits = logits.float()
    if task == "vqa":
        scores = batch["vqa_scores"]
        return F.binary_cross_entropy_with_logits(logits, scores) * scores.shape[1]
    return F.cross_entropy(logits, batch["labels"])


def make_optimizer(model, cfg: TrainConfig, device):
    """AdamW (betas 0.9/0.98 as DiDE), decay on matrices only: biases, LayerNorms and embeddings are exempt."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exempt = p.dim() < 2 or "position" in name or "token" in name or "cls" in name or "modality_type" in name
        (no_decay if exempt else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-8, fused=device.type == "cuda")


def make_schedule(optimizer, cfg: TrainConfig):
    """Linear warm-up to the peak learning rate, then linear decay to zero."""
    warmup_steps = max(1, int(cfg.warmup * cfg.steps))

    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (cfg.steps - step) / max(1, cfg.steps - warmup_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def resolve_device(cfg: TrainConfig):
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {cfg.device}: CUDA is not available on this machine")
    return device


def autocast_for(cfg: TrainConfig, device):
    """bf16 autocast on CUDA (matmuls in bf16, soft-max and LayerNorm in fp32), plain fp32 on CPU."""
    use_bf16 = cfg.dtype == "bf16" or (cfg.dtype == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()


def fit_images(batch, image_size):
    """Resize the benchmark's images to the model's input size (only the vilt-b32 size differs)."""
    images = batch["images"]
    if images.shape[-1] == image_size:
        return batch
    B, K = images.shape[:2]
    resized = F.interpolate(images.flatten(0, 1), size=(image_size, image_size), mode="nearest")
    return {**batch, "images": resized.view(B, K, 3, image_size, image_size)}


# -----------------------------------------------------------------------------
# Evaluation

@torch.no_grad()
def evaluate(model, split, task, cfg: TrainConfig, device):
    """Accuracy on a whole split (VQA: the VQA score of the arg-max answer), overall and per family."""
    model.eval()
    correct = torch.zeros(len(split), device=device)
    for start in range(0, len(split), cfg.eval_batch_size):
        index = torch.arange(start, min(start + cfg.eval_batch_size, len(split)), device=device)
        batch = fit_images(make_batch(split, index), model.config.image_size)
        with autocast_for(cfg, device):
            logits = model(batch, task).logits.float()
        if task == "vqa":
            correct[index] = vqa_accuracy(logits, batch["vqa_scores"])
        else:
            correct[index] = (logits.argmax(-1) == batch["labels"]).float()
    model.train()
    family = split.family.to(device)
    per_family = {}
    for i, name in enumerate(split.family_names):
        members = family == i
        if members.any():
            per_family[name] = 100 * correct[members].mean().item()
    return {"accuracy": 100 * correct.mean().item(), "per_family": per_family}


# -----------------------------------------------------------------------------
# Checkpoints: written atomically, so a crash mid-write never destroys the previous one

def save_checkpoint(path, **state):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = path + ".tmp"
    torch.save(state, temporary)
    os.replace(temporary, path)   # atomic on POSIX: the old file or the new one, never half of each


def load_checkpoint(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:   # truncated, corrupt, or holding pickled code
        raise SystemExit(f"error: cannot load checkpoint {path}: {error}") from None


class MetricsLog:
    """Line-per-record JSON log, readable by any plotting tool."""

    def __init__(self, path):
        self.path = path

    def write(self, **record):
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


# -----------------------------------------------------------------------------
# Training

def train_step(model, batch, task, optimizer, schedule, cfg: TrainConfig, device):
    """One optimisation step on one batch. Returns the loss and gradient norm as tensors (no sync)."""
    with autocast_for(cfg, device):
        logits = model(batch, task).logits
    loss = ground_truth_loss(task, logits, batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    schedule.step()
    return loss.detach(), grad_norm


def train_one(model_name, task, seed, bench, cfg: TrainConfig, device, log, out_dir):
    """Train one model on one task with ground truth; return its test metrics (best validation checkpoint)."""
    torch.manual_seed(seed)
    model_cfg = model_config(cfg.size, vocab_size=len(bench.tokenizer), num_answers=bench.num_classes("vqa"),
                             max_text_len=max(model_config(cfg.size).max_text_len, bench.config.max_text_len))
    model = MODELS[model_name](model_cfg).to(device)
    step_fn = torch.compile(model) if cfg.compile else model   # checkpoints always hold the plain module
    optimizer = make_optimizer(model, cfg, device)
    schedule = make_schedule(optimizer, cfg)
    train, val, test = (bench.splits[task][s] for s in ("train", "val", "test"))
    name = f"{task}-{model_name}-seed{seed}"
    ckpt_dir = os.path.join(out_dir, "checkpoints")
    best_path, last_path = (os.path.join(ckpt_dir, f"{name}-{kind}.pt") for kind in ("best", "last"))
    common = dict(model_config=dataclasses.asdict(model_cfg), train_config=dataclasses.asdict(cfg),
                  data_config=dataclasses.asdict(bench.config), tokenizer=bench.tokenizer.to_dict(),
                  task=task, model_name=model_name, seed=seed)

    order = torch.Generator(device=device).manual_seed(seed)   # data order, on the data's device
    permutation, position = torch.randperm(len(train), generator=order, device=device), 0
    best_val, step = -1.0, 0
    loss_sum = torch.zeros((), device=device)
    finite = torch.ones((), dtype=torch.bool, device=device)
    bar = tqdm(total=cfg.steps, desc=f"{name:<24}", disable=not cfg.progress, dynamic_ncols=True, leave=False)
    tick = time.perf_counter()
    try:
        for step in range(1, cfg.steps + 1):
            if position + cfg.batch_size > len(train):                 # a new epoch: a new order
                permutation, position = torch.randperm(len(train), generator=order, device=device), 0
            index = permutation[position:position + cfg.batch_size]
            position += cfg.batch_size
            batch = fit_images(make_batch(train, index), model_cfg.image_size)
            loss, grad_norm = train_step(step_fn, batch, task, optimizer, schedule, cfg, device)
            loss_sum += loss
            finite &= torch.isfinite(loss)
            bar.update(1)

            if step % cfg.log_every == 0 or step == cfg.steps:        # the only host-device syncs of the loop
                if not finite.item():
                    raise FloatingPointError(f"{name}: loss became NaN or inf before step {step} "
                                             f"(last loss {loss.item()}); last good checkpoint: {last_path}")
                elapsed = time.perf_counter() - tick
                steps_done = cfg.log_every if step % cfg.log_every == 0 else step % cfg.log_every
                mean_loss = loss_sum.item() / steps_done
                rate = steps_done * cfg.batch_size / elapsed
                bar.set_postfix(loss=f"{mean_loss:.4f}", samples_s=f"{rate:,.0f}")
                log.write(kind="train", run=name, step=step, loss=mean_loss, lr=schedule.get_last_lr()[0],
                          grad_norm=grad_norm.item(), ms_per_step=1000 * elapsed / steps_done, samples_per_s=rate)
                loss_sum.zero_()
                tick = time.perf_counter()

            if step % cfg.eval_every == 0 or step == cfg.steps:
                metrics = evaluate(model, val, task, cfg, device)
                log.write(kind="val", run=name, step=step, **metrics)
                bar.write(f"{name} step {step}: val accuracy {metrics['accuracy']:.2f}")
                if metrics["accuracy"] > best_val:
                    best_val = metrics["accuracy"]
                    save_checkpoint(best_path, model=model.state_dict(), step=step, val=metrics, **common)
                save_checkpoint(last_path, model=model.state_dict(), optimizer=optimizer.state_dict(),
                                schedule=schedule.state_dict(), step=step, **common)
                tick = time.perf_counter()
    except KeyboardInterrupt:
        save_checkpoint(last_path, model=model.state_dict(), optimizer=optimizer.state_dict(),
                        schedule=schedule.state_dict(), step=step, **common)
        bar.close()
        raise SystemExit(f"\ninterrupted at step {step} of {name}; saved {last_path}")
    bar.close()

    model.load_state_dict(load_checkpoint(best_path)["model"])
    result = evaluate(model, test, task, cfg, device)
    result.update(val=best_val, run=name, task=task, model=model_name, seed=seed)
    log.write(kind="test", **result)
    return result


# -----------------------------------------------------------------------------
# Results table

def mean_std(values):
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {std:.1f}"


def results_table(results, tasks, models, seeds):
    """Markdown: rows models, columns tasks (mean ± std over seeds); then per-family tables."""
    by = {(r["task"], r["model"], r["seed"]): r for r in results}
    lines = [f"Test accuracy (%), mean ± std over seeds {', '.join(map(str, seeds))}.", "",
             "| model | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for m in models:
        cells = [mean_std([by[(t, m, s)]["accuracy"] for s in seeds]) for t in tasks]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    for t in tasks:
        families = list(by[(t, models[0], seeds[0])]["per_family"])
        lines += ["", f"Per family, {t}:", "", "| family | " + " | ".join(models) + " |",
                  "|---|" + "---|" * len(models)]
        for fam in families:
            cells = [mean_std([by[(t, m, s)]["per_family"][fam] for s in seeds]) for m in models]
            lines.append(f"| {fam} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    cfg, data_cfg = parse_args(argv)
    device = resolve_device(cfg)
    tasks, models, seeds = split_list(cfg.tasks), split_list(cfg.models), [int(s) for s in split_list(cfg.seeds)]
    try:
        os.makedirs(cfg.out_dir, exist_ok=True)
        with open(os.path.join(cfg.out_dir, ".write-test"), "w"):
            pass
        os.remove(os.path.join(cfg.out_dir, ".write-test"))
    except OSError as error:
        raise SystemExit(f"error: --out-dir {cfg.out_dir}: cannot write there ({error.strerror})") from None
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    with open(os.path.join(cfg.out_dir, "config.json"), "w") as f:
        json.dump({"train": dataclasses.asdict(cfg), "data": dataclasses.asdict(data_cfg),
                   "command": " ".join(sys.argv)}, f, indent=2)

    bench = build_benchmark(data_cfg, tasks=tasks, progress=cfg.progress)
    bench.tokenizer.save(os.path.join(cfg.out_dir, "tokenizer.json"))
    for task in tasks:   # the whole benchmark lives on the device: batches are tensor indexing, no loader
        bench.splits[task] = {name: split.to(device) for name, split in bench.splits[task].items()}
    log = MetricsLog(os.path.join(cfg.out_dir, "metrics.jsonl"))
    print(f"device {device}, model size {cfg.size}, tasks {tasks}, models {models}, seeds {seeds}")

    results = []
    for seed in seeds:
        for task in tasks:
            for model_name in models:
                result = train_one(model_name, task, seed, bench, cfg, device, log, cfg.out_dir)
                print(f"{result['run']}: test accuracy {result['accuracy']:.2f} (best val {result['val']:.2f})")
                results.append(result)

    table = results_table(results, tasks, models, seeds)
    with open(os.path.join(cfg.out_dir, "results.md"), "w") as f:
        f.write(f"# Results\n\nCommand: `{' '.join(sys.argv)}`  \nDevice: "
                f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}\n\n{table}")
    with open(os.path.join(cfg.out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print("\n" + table)
    return results


if __name__ == "__main__":
    main()
