"""Speed of the fusion teacher and the dual-encoder student, timed honestly.

    python bench.py                                  # small size, on the GPU if there is one
    python bench.py --size vilt-b32 --batch-size 256 # the papers' size
    python bench.py --size tiny --device cpu         # a smoke run on any machine

On CUDA every row is timed with CUDA events after warm-up, with synchronisation, as the
median of several repeats; on a CPU with time.perf_counter. Random weights: speed does
not depend on what the weights learnt. Prints a markdown table and writes JSON.

Inference regimes (one image per example, the VQA / entailment shape):
  scratch      every (image, text) pair encoded from nothing
  precomputed  image features cached: the student runs its text tower and the fusion MLP only
  per-image    Q questions per image, everything counted (VQA v2: about 5.4)
  retrieval    N images x M texts: the teacher runs N*M joint passes (timed on batches, then
               scaled), the student N + M encodings and N*M fusion heads
Training rows: the teacher, and the student with ground truth, soft labels, soft labels + attention;
and the ground-truth student again with each batch drawn from a benchmark held on the device, as
train.py draws it: the ratio of the two is what data costs a step (near 1.00 would mean that the GPU
never waits on data).
"""

import argparse
import dataclasses
import shlex
import statistics
import sys
import time
from dataclasses import dataclass

import torch

from distill import DistillWeights
from model import MODEL_SIZES, DualEncoder, model_config
from teacher import FusionEncoder, freeze
from batches import TaskBatches
from checkpoint import check_out_file, write_json
from config import add_flags, given_values
from data import DataConfig, TaskSplit, data_preset
from runtime import allow_tf32, autocast_for, check_device_flags, resolve_device, uses_bf16
from train import TrainConfig
from trainer import make_optimizer, make_schedule, train_step

# Dense bf16 peak (TFLOP/s) of known GPUs, from their data sheets, to report utilisation. The first key
# found in the device's name wins: the PCIe and NVL cards before the SXM ones that share their names.
# None: a card whose name holds a known key but whose own figure is not known here (AWS's A10G).
PEAK_BF16_TFLOPS = {"H100 PCIe": 756.0, "H100 NVL": 835.0, "H200 NVL": 835.0, "H100": 989.0, "H200": 989.0,
                    "A100": 312.0, "L40S": 362.0, "A10G": None, "A10": 125.0, "4090": 165.0}


@dataclass
class BenchConfig:
    size: str = "small"                # model size: tiny, mini, small, vilt-b32
    batch_size: int = 256              # pairs (or questions) per timed call
    text_len: int = 16                 # tokens per text, [CLS] and [SEP] included (the benchmark's: 14 to 18)
    vocab_size: int = 128              # word vocabulary of the random models
    num_answers: int = 32              # VQA answers of the random models
    questions_per_image: int = 5       # the per-image regime's questions per image
    retrieval_images: int = 1000       # N of the retrieval regime
    retrieval_texts: int = 1000        # M of the retrieval regime
    warmup: int = 5                    # untimed calls before timing
    repeats: int = 20                  # timed calls; the median is reported
    train: bool = True                 # also time training steps
    device: str = "auto"               # auto, cpu, cuda
    dtype: str = "auto"                # auto (bf16 on CUDA, fp32 on CPU), bf16, fp32
    compile: bool = False              # torch.compile the models first
    out: str = "bench.json"            # JSON results file


def timer(device):
    """A function that times `fn()` in milliseconds: median of repeats, after warm-up."""
    def measure(fn, warmup, repeats):
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize(device)
                times.append(start.elapsed_time(end))
            else:
                tick = time.perf_counter()
                fn()
                times.append(1000 * (time.perf_counter() - tick))
        return statistics.median(times)
    return measure


def encoder_flops(n_layer, n_embd, mlp_ratio, tokens):
    """Forward matmul FLOPs of one encoder over `tokens` tokens: 2 per multiply-add.
    Per layer: qkv 3C^2, projection C^2, MLP 2*ratio*C^2 per token, and Q K^T and A V (2 T^2 C)."""
    per_token = (4 + 2 * mlp_ratio) * n_embd * n_embd
    return n_layer * (2 * tokens * per_token + 2 * 2 * tokens * tokens * n_embd)


def linear_flops(module) -> int:
    """Forward FLOPs of the Linear layers of `module`, once each: 2 * in * out."""
    return sum(2 * m.in_features * m.out_features for m in module.modules() if isinstance(m, torch.nn.Linear))


def flops_per_sample(teacher, student, task, text_len):
    """Forward FLOPs of one (image, text) pair for each model and part (patch embedding included).
    Heads: the teacher's pooler and task head; the student's fusion MLP and task head ("head")."""
    cfg = teacher.config
    Nv = 1 + cfg.num_patches
    patch = 2 * cfg.num_patches * 3 * cfg.patch_size ** 2 * cfg.n_embd
    h = cfg.n_embd
    return {"teacher": encoder_flops(cfg.n_layer, h, cfg.mlp_ratio, text_len + Nv) + patch
            + linear_flops(teacher.pooler) + linear_flops(teacher.heads[task]),
            "image": encoder_flops(cfg.n_layer, h, cfg.mlp_ratio, Nv) + patch,
            "text": encoder_flops(cfg.n_layer, h, cfg.mlp_ratio, text_len),
            "head": linear_flops(student.fuse) + linear_flops(student.heads[task]),
            # one distilled layer's cross-modal Q K^T blocks, text-to-image and image-to-text (DiDE's last layer)
            "cross_attention": 2 * 2 * text_len * Nv * h,
            "patch": patch}


def training_flops(flops) -> dict:
    """FLOPs per sample of each training step of train_rows: backward costs twice the forward (the
    gradients of the inputs and of the weights), except at the patch embedding, whose input (pixels)
    needs no gradient; distillation adds the frozen teacher's forward and the cross-modal maps
    (the teacher's once, the student's forward and backward)."""
    student_step = 3 * (flops["image"] + flops["text"] + flops["head"]) - flops["patch"]   # forward and backward
    return {"teacher": 3 * flops["teacher"] - flops["patch"],
            "ground truth": student_step,
            "soft labels": student_step + flops["teacher"],
            "soft labels + attention": student_step + flops["teacher"] + 4 * flops["cross_attention"]}


def gpu_peak(name: str) -> float | None:
    """The dense bf16 peak of the GPU called `name` (torch.cuda.get_device_name), None if unknown."""
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


def random_batch(cfg, B, text_len, device, num_images=1):
    text_ids = torch.randint(5, cfg.vocab_size, (B, text_len), device=device)
    return {"images": torch.randn(B, num_images, 3, cfg.image_size, cfg.image_size, device=device),
            "text_ids": text_ids, "text_mask": torch.ones(B, text_len, dtype=torch.bool, device=device),
            "labels": torch.randint(0, 3, (B,), device=device),
            "vqa_scores": (torch.rand(B, cfg.num_answers, device=device) > 0.9).float()}


def resident_split(mcfg, cfg, device):
    """Random entailment examples held on the device the way train.py holds the benchmark: uint8
    images at the benchmark's resolution (the model's input size is reached per batch, as in training),
    token ids and labels. Enough examples for a few fresh batches before an epoch repeats."""
    side = DataConfig(**data_preset(cfg.size)).image_size
    examples = max(4096, 4 * cfg.batch_size)
    g = torch.Generator().manual_seed(0)
    split = TaskSplit("entailment",
                      images=torch.randint(0, 256, (examples // 2, side, side, 3), dtype=torch.uint8,
                                           generator=g),                                            # (N/2, H, W, 3)
                      image_index=torch.randint(0, examples // 2, (examples, 1), generator=g),      # (N, 1)
                      text_ids=torch.randint(5, mcfg.vocab_size, (examples, cfg.text_len), generator=g),  # (N, L)
                      labels=torch.randint(0, 3, (examples,), generator=g),
                      family=torch.zeros(examples, dtype=torch.long), family_names=["random"], texts=[""] * examples)
    return split.to(device)


def run(cfg: BenchConfig):
    device = resolve_device(cfg)
    measure = timer(device)
    # the text positions fit --text-len (train.py sizes them to the data's --max-text-len the same way)
    mcfg = model_config(cfg.size, vocab_size=cfg.vocab_size, num_answers=cfg.num_answers,
                        max_text_len=max(MODEL_SIZES[cfg.size]["max_text_len"], cfg.text_len))
    torch.manual_seed(0)
    teacher, student = FusionEncoder(mcfg).to(device).eval(), DualEncoder(mcfg).to(device).eval()
    run_teacher = torch.compile(teacher) if cfg.compile else teacher
    run_student = torch.compile(student) if cfg.compile else student
    # the parts regimes 2-4 call one by one, compiled too, so that they compare with the compiled teacher
    encode_image, encode_text, classify = (torch.compile(part) if cfg.compile else part
                                           for part in (student.encode_image, student.encode_text, student.classify))
    B, L, task = cfg.batch_size, cfg.text_len, "entailment"
    batch = random_batch(mcfg, B, L, device)
    flops = flops_per_sample(teacher, student, task, L)
    # a fraction of the bf16 peak only for bf16 runs: fp32 has another, lower peak
    peak = gpu_peak(torch.cuda.get_device_name(device)) if device.type == "cuda" and uses_bf16(cfg, device) else None
    allow_tf32(device)   # as train.py: the fp32 matmuls that training runs on TF32 are timed on TF32
    rows = []

    def row(name, model, ms, samples, flops_per_sample, unit="pairs"):
        tflops = flops_per_sample * samples / (ms / 1000) / 1e12
        rows.append({"row": name, "model": model, "ms": ms, "samples": samples,
                     f"{unit}_per_s": samples / (ms / 1000), "throughput": samples / (ms / 1000), "unit": unit,
                     "gflops_per_sample": flops_per_sample / 1e9, "tflops": tflops,
                     "peak_fraction": tflops / peak if peak else None})

    def timed(fn):
        return measure(fn, cfg.warmup, cfg.repeats)

    with torch.no_grad(), autocast_for(cfg, device):
        # 1. every pair from scratch
        row("scratch", "teacher", timed(lambda: run_teacher(batch, task)), B, flops["teacher"])
        row("scratch", "student", timed(lambda: run_student(batch, task)), B,
            flops["image"] + flops["text"] + flops["head"])
        # 2. image features pre-computed: the student's online cost is the text tower and the head
        image_cls = encode_image(batch["images"][:, 0]).hidden[:, :1]                   # (B, 1, C), cached
        online = lambda: classify(task, encode_text(batch["text_ids"], batch["text_mask"]).hidden[:, 0], image_cls)
        row("precomputed", "teacher", rows[0]["ms"], B, flops["teacher"])
        row("precomputed", "student", timed(online), B, flops["text"] + flops["head"])
        # 3. Q questions per image, everything counted: B questions about B / Q images
        Q = cfg.questions_per_image
        n_images = -(-B // Q)                                   # ceil(B / Q) images
        images = batch["images"][:n_images, 0]

        def per_image():
            cls = encode_image(images).hidden[:, 0]                                         # (n_images, C)
            cls = cls.repeat_interleave(Q, 0)[:B, None]                                     # (B, 1, C)
            text = encode_text(batch["text_ids"], batch["text_mask"]).hidden[:, 0]
            return classify(task, text, cls)
        row("per-image", "teacher", rows[0]["ms"], B, flops["teacher"], unit="questions")
        row("per-image", "student", timed(per_image), B,
            flops["text"] + flops["head"] + flops["image"] * n_images / B, unit="questions")
        # 4. retrieval, N images x M texts
        N, M = cfg.retrieval_images, cfg.retrieval_texts
        teacher_ms = rows[0]["ms"] * (N * M) / B     # the teacher's cost is linear in pairs: scale the timed batch
        row("retrieval", "teacher", teacher_ms, N * M, flops["teacher"])
        row_images = torch.randn(N, 3, mcfg.image_size, mcfg.image_size, device=device)
        row_text_ids = torch.randint(5, mcfg.vocab_size, (M, L), device=device)
        row_text_mask = torch.ones(M, L, dtype=torch.bool, device=device)

        def retrieval():
            image_cls = torch.cat([encode_image(x).hidden[:, 0] for x in row_images.split(B)])  # (N, C)
            text_cls = torch.cat([encode_text(t, m).hidden[:, 0]
                                  for t, m in zip(row_text_ids.split(B), row_text_mask.split(B))])   # (M, C)
            for chunk in image_cls.split(max(1, 65536 // M)):   # (n, C): N*M fusion heads, ~65k pairs at a time
                text = text_cls[None].expand(chunk.shape[0], -1, -1).flatten(0, 1)   # (n*M, C)
                image = chunk[:, None].expand(-1, M, -1).flatten(0, 1)[:, None]      # (n*M, 1, C)
                classify(task, text, image)
        retrieval_flops = (N * flops["image"] + M * flops["text"]) / (N * M) + flops["head"]
        row("retrieval", "student", measure(retrieval, 1, max(1, cfg.repeats // 5)), N * M, retrieval_flops)

    if cfg.train:
        train_rows(cfg, mcfg, teacher, batch, device, measure, row, flops)
    return rows, device, peak


def train_rows(cfg, mcfg, teacher, batch, device, measure, row, flops):
    """Training steps per second: trainer.train_step, the step train.py runs (forward, backward,
    gradient clipping, AdamW, schedule); distillation adds a frozen teacher's forward."""
    task = "entailment"
    tcfg = TrainConfig(size=cfg.size, dtype=cfg.dtype)   # AdamW, clipping and autocast as in training
    frozen = freeze(FusionEncoder(mcfg).to(device))
    frozen.load_state_dict(teacher.state_dict())
    teacher_step = torch.compile(frozen) if cfg.compile else frozen   # as train.py's distillation runs it
    trainee_teacher = FusionEncoder(mcfg).to(device)
    step_flops = training_flops(flops)
    variants = [
        ("train teacher", trainee_teacher, None, step_flops["teacher"]),
        ("train student, ground truth", DualEncoder(mcfg).to(device), None, step_flops["ground truth"]),
        ("train student, soft labels", DualEncoder(mcfg).to(device),
         DistillWeights(soft_label=1.0, attention=0.0), step_flops["soft labels"]),
        ("train student, soft labels + attention", DualEncoder(mcfg).to(device),
         DistillWeights(soft_label=1.0, attention=1.0), step_flops["soft labels + attention"]),
    ]
    # the same ground-truth step, its batch drawn each time from the benchmark on the device (batches.TaskBatches)
    benchmark = TaskBatches(resident_split(mcfg, cfg, device), cfg.batch_size, 0, device, mcfg.image_size)
    variants.append(("train student, ground truth, benchmark batches", DualEncoder(mcfg).to(device), None,
                     step_flops["ground truth"]))
    for name, model, weights, sample_flops in variants:
        optimizer = make_optimizer(model, tcfg, device)
        schedule = make_schedule(optimizer, tcfg, steps=cfg.warmup + cfg.repeats)   # the rate does not change a step's time
        stepper = torch.compile(model) if cfg.compile else model
        draw = benchmark.next if name.endswith("benchmark batches") else lambda: batch

        def step():
            train_step(stepper, draw(), task, optimizer, schedule, tcfg, device, teacher=teacher_step, weights=weights)
        row(name, "teacher" if model is trainee_teacher else "student",
            measure(step, cfg.warmup, cfg.repeats), cfg.batch_size, sample_flops, unit="samples")


def device_name(device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def markdown(rows, cfg, device, peak):
    lines = [f"Device: {device_name(device)}; size {cfg.size}; batch {cfg.batch_size}; text length {cfg.text_len}; "
             f"dtype {'bf16' if uses_bf16(cfg, device) else 'fp32'}"
             + (f"; dense bf16 peak {peak:.0f} TFLOP/s" if peak else ""), "",
             "| row | model | ms | throughput | speed-up | GFLOP/sample | TFLOP/s | % of peak |",
             "|---|---|---|---|---|---|---|---|"]
    teacher_rate = {}
    for r in rows:
        if r["model"] == "teacher":
            teacher_rate[r["row"]] = r["throughput"]
        speedup = r["throughput"] / teacher_rate[r["row"]] if r["row"] in teacher_rate else None
        speedup_text = f"{speedup:.1f}x" if speedup else "-"
        peak_text = f"{100 * r['peak_fraction']:.1f}" if r["peak_fraction"] else "-"
        lines.append(f"| {r['row']} | {r['model']} | {r['ms']:.2f} | {r['throughput']:,.0f} {r['unit']}/s | "
                     f"{speedup_text} | {r['gflops_per_sample']:.3g} | {r['tflops']:.2f} | {peak_text} |")
    ms = {r["row"]: r["ms"] for r in rows}
    if "train student, soft labels" in ms:
        ratio = ms["train student, soft labels + attention"] / ms["train student, soft labels"]
        data = ms["train student, ground truth, benchmark batches"] / ms["train student, ground truth"]
        lines += ["", f"A soft labels + attention step costs {ratio:.2f}x a soft-labels step.",
                  f"Drawing each batch from the benchmark on the {device.type} costs {data:.2f}x a step on a fixed batch."]
    return "\n".join(lines)


def parse_args(argv=None) -> BenchConfig:
    """Flags -> BenchConfig; a bad value exits with one line naming the flag."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_flags(parser, BenchConfig)
    cfg = BenchConfig(**given_values(parser.parse_args(argv), BenchConfig))
    for name in ("batch_size", "text_len", "num_answers", "repeats", "questions_per_image", "retrieval_images",
                 "retrieval_texts"):
        if getattr(cfg, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(cfg, name)}")
    if cfg.vocab_size <= 5:   # the random texts draw words after the five special tokens
        parser.error(f"--vocab-size must be above 5 ([PAD] [CLS] [SEP] [UNK] [MASK]), got {cfg.vocab_size}")
    if cfg.warmup < 0:
        parser.error(f"--warmup must not be negative, got {cfg.warmup}")
    if cfg.size not in MODEL_SIZES:
        parser.error(f"--size: unknown size {cfg.size!r}; choose one of {', '.join(MODEL_SIZES)}")
    try:
        check_device_flags(cfg.device, cfg.dtype)
        check_out_file("out", cfg.out)
    except ValueError as error:
        parser.error(str(error))
    return cfg


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    cfg = parse_args(argv)
    rows, device, peak = run(cfg)
    table = markdown(rows, cfg, device, peak)
    print(table)
    command = shlex.join(["python", "bench.py", *argv])   # the flags as given, quoted where a shell needs it
    print(f"\ncommand: {command}")
    write_json(cfg.out, {"config": dataclasses.asdict(cfg), "device": device_name(device),
                         "dtype": "bf16" if uses_bf16(cfg, device) else "fp32", "peak_bf16_tflops": peak,
                         "torch": torch.__version__, "batch_size": cfg.batch_size, "text_len": cfg.text_len,
                         "command": command, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
