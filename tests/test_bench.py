"""bench.py runs on a CPU at the tiny size and prints its table (no test asserts a time)."""

import json

import pytest
import torch

import bench


def test_bench_runs_at_tiny_size_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rows = bench.main(["--size", "tiny", "--device", "cpu", "--batch-size", "16", "--repeats", "2", "--warmup", "1",
                       "--retrieval-images", "8", "--retrieval-texts", "8", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "| scratch | teacher |" in printed and "soft labels + attention" in printed
    assert "Drawing each batch from the benchmark on the cpu costs" in printed
    names = {(r["row"], r["model"]) for r in rows}
    assert ("precomputed", "student") in names and ("retrieval", "student") in names
    assert ("train student, ground truth, benchmark batches", "student") in names
    assert all(r["ms"] > 0 and r["gflops_per_sample"] > 0 for r in rows)
    written = json.loads(out.read_text())
    assert written["rows"][0]["row"] == "scratch" and written["device"] == "CPU" and written["dtype"] == "fp32"
    assert written["batch_size"] == 16 and written["torch"] == torch.__version__ and written["peak_bf16_tflops"] is None
    assert written["command"] == f"python bench.py --size tiny --device cpu --batch-size 16 --repeats 2 --warmup 1 " \
                                 f"--retrieval-images 8 --retrieval-texts 8 --out {out}"   # given, not pytest's


@pytest.mark.parametrize("argv, message", [
    (["--size", "huge"], "--size"), (["--dtype", "fp16"], "--dtype"), (["--device", "gpu"], "--device"), (["--device", "meta"], "--device"),
    (["--batch-size", "0"], "--batch-size"), (["--warmup", "-1"], "--warmup"),
    (["--out", "/no/such/folder/b.json"], "--out /no/such/folder/b.json: the folder /no/such/folder does not exist"),
    (["--out", "."], "--out .: is a folder"), (["--out", ""], "--out '': give a file's name"),
    (["--out", "new/"], "--out 'new/': give a file's name"), (["--vocab-size", "3"], "--vocab-size must be above 5"),
    (["--num-answers", "0"], "--num-answers must be positive"),
])
def test_bad_flags_get_one_clear_line(argv, message, capsys):
    """Before any model is built: one line of argparse error naming the flag, never a trace from torch."""
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_flop_count_matches_a_hand_count():
    # one layer, width 4, ratio 4, 2 tokens: per token 2*(4+8)*16 = 384 FLOPs, so 768, plus 2*2*2*2*4 = 64 for attention
    assert bench.encoder_flops(1, 4, 4, 2) == 768 + 64


def test_each_model_is_charged_its_own_head():
    """The teacher: pooler h*h and the entailment head h -> 2h -> 3; the student: its fusion MLP 2h -> 2h -> h
    and the same head (2 FLOPs per multiply-add). Width 32 (tiny)."""
    cfg = bench.model_config("tiny", vocab_size=50, num_answers=7)
    teacher, student = bench.FusionEncoder(cfg), bench.DualEncoder(cfg)
    flops, h, Nv = bench.flops_per_sample(teacher, student, "entailment", 6), 32, 1 + cfg.num_patches
    head = 2 * (h * 2 * h + 2 * h * 3)
    patch = 2 * cfg.num_patches * 3 * cfg.patch_size ** 2 * h
    assert flops["head"] == 2 * (2 * h * 2 * h + 2 * h * h) + head
    assert flops["teacher"] == bench.encoder_flops(cfg.n_layer, h, cfg.mlp_ratio, 6 + Nv) + patch + 2 * h * h + head
    assert flops["cross_attention"] == 2 * (6 * Nv * h + Nv * 6 * h)


@pytest.mark.parametrize("step, weights", [("teacher", None), ("ground truth", None), ("soft labels", (1.0, 0.0)),
                                           ("soft labels + attention", (1.0, 1.0))])
def test_training_flops_match_torchs_flop_counter(step, weights):
    """bench.training_flops against torch.utils.flop_counter over one train_step (forward, backward,
    and the frozen teacher's forward in distillation), attention on its MATH kernel, which the counter
    counts on a CPU."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode
    from train import TrainConfig
    from trainer import make_optimizer, make_schedule, train_step
    torch.manual_seed(0)
    cfg, device, B, L = bench.model_config("tiny", vocab_size=50, num_answers=7), torch.device("cpu"), 4, 9
    teacher, student = bench.FusionEncoder(cfg), bench.DualEncoder(cfg)
    expected = bench.training_flops(bench.flops_per_sample(teacher, student, "entailment", L))[step]
    trained = teacher if step == "teacher" else student
    tcfg = TrainConfig(size="tiny", dtype="fp32")
    optimizer = make_optimizer(trained, tcfg, device)
    schedule = make_schedule(optimizer, tcfg, steps=2)
    distill = bench.DistillWeights(*weights) if weights else None
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        train_step(trained, bench.random_batch(cfg, B, L, device), "entailment", optimizer, schedule, tcfg, device,
                   teacher=bench.freeze(bench.FusionEncoder(cfg)) if distill else None, weights=distill)
    assert counter.get_total_flops() / B == expected


@pytest.mark.parametrize("name, peak", [("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0),
                                        ("NVIDIA H100 NVL", 835.0), ("NVIDIA H200", 989.0), ("NVIDIA H200 NVL", 835.0),
                                        ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA A10", 125.0), ("NVIDIA A10G", None),
                                        ("Tesla T4", None)])
def test_each_gpu_gets_its_own_data_sheet_peak(name, peak):
    """The PCIe and NVL cards are not read as the SXM ones whose names they contain; an unknown GPU has none."""
    assert bench.gpu_peak(name) == peak


def test_benchmark_batches_come_from_uint8_images_at_the_benchmarks_resolution():
    # vilt-b32 reads the 64 px benchmark and resizes each batch to 384 px, as train.py does
    mcfg = bench.model_config("vilt-b32", vocab_size=50, num_answers=4)
    split = bench.resident_split(mcfg, bench.BenchConfig(size="vilt-b32", batch_size=8, text_len=6), torch.device("cpu"))
    assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (64, 64, 3)
    batches = bench.TaskBatches(split, 8, 0, torch.device("cpu"), mcfg.image_size)
    first, second = batches.next(), batches.next()
    assert first["images"].shape == (8, 1, 3, 384, 384) and first["text_ids"].shape == (8, 6)
    assert not torch.equal(first["text_ids"], second["text_ids"])   # a fresh batch every step


def test_a_named_gpu_becomes_the_current_one(monkeypatch):
    """bench.py's CUDA events record on the current device's stream: on --device cuda:1 without
    set_device they would time an idle cuda:0 while the work ran on cuda:1."""
    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    assert bench.resolve_device(bench.BenchConfig(device="cuda:1")) == torch.device("cuda", 1)
    assert current == [torch.device("cuda", 1)]
    with pytest.raises(SystemExit, match="--device cuda:2: this machine has 2 GPU"):
        bench.resolve_device(bench.BenchConfig(device="cuda:2"))
