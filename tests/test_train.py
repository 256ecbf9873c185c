"""The training program: it learns, its flags are checked, and it runs end to end at the tiny size.
Stopping and resuming are in test_resume.py, several processes in test_processes.py."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

import train
import trainer
from batches import names_left_image_first
from data import Tokenizer
from distill import ground_truth_loss
from model import DualEncoder, model_config
from teacher import FusionEncoder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fixed_batch(cfg, task, B=16):
    g = torch.Generator().manual_seed(1)
    K = 2 if task == "reasoning" else 1
    lengths = torch.randint(3, 10, (B,), generator=g)
    text_mask = torch.arange(10)[None, :] < lengths[:, None]
    batch = {"images": torch.randn(B, K, 3, cfg.image_size, cfg.image_size, generator=g),
             "text_ids": torch.randint(5, cfg.vocab_size, (B, 10), generator=g) * text_mask,
             "text_mask": text_mask,
             "labels": torch.randint(0, 2 if task == "reasoning" else 3, (B,), generator=g)}
    if task == "vqa":
        batch["vqa_scores"] = (torch.rand(B, cfg.num_answers, generator=g) > 0.8).float()
    return batch


@pytest.mark.parametrize("Model", [FusionEncoder, DualEncoder])
@pytest.mark.parametrize("task", ["reasoning", "entailment", "vqa"])
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(Model, task):
    torch.manual_seed(0)
    cfg = model_config("tiny", vocab_size=40, num_answers=6)
    model = Model(cfg)
    tcfg = train.TrainConfig(size="tiny", steps=30, lr=3e-3, warmup=0.0)
    device = torch.device("cpu")
    optimizer, batch = trainer.make_optimizer(model, tcfg, device), fixed_batch(cfg, task)
    schedule = trainer.make_schedule(optimizer, tcfg)
    with torch.no_grad():
        before = ground_truth_loss(task, model(batch, task).logits, batch).item()
    for _ in range(30):
        trainer.train_step(model, batch, task, optimizer, schedule, tcfg, device)
    with torch.no_grad():
        after = ground_truth_loss(task, model(batch, task).logits, batch).item()
    assert after < 0.6 * before, (before, after)


def test_vqa_loss_is_bce_summed_over_answers():
    logits = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    scores = torch.tensor([[1.0, 0, 0, 0.3, 0]] * 4)
    by_hand = -(scores * torch.log(torch.sigmoid(logits)) + (1 - scores) * torch.log(1 - torch.sigmoid(logits)))
    loss = ground_truth_loss("vqa", logits, {"vqa_scores": scores})
    torch.testing.assert_close(loss, by_hand.sum(1).mean())


def test_schedule_warms_up_then_decays_to_zero():
    model = torch.nn.Linear(2, 2)
    cfg = train.TrainConfig(steps=100, warmup=0.1, lr=1.0)
    optimizer = trainer.make_optimizer(model, cfg, torch.device("cpu"))
    schedule = trainer.make_schedule(optimizer, cfg)
    lrs = []
    for _ in range(100):
        lrs.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert max(lrs) == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.0111, abs=1e-3)


def test_help_lists_every_field():
    text = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT, capture_output=True, text=True).stdout
    for cls in (train.TrainConfig, train.DataConfig):
        for f in train.dataclasses.fields(cls):
            assert f"--{f.name.replace('_', '-')}" in text, f"--{f.name} missing from --help"
    # the defaults shown are the small size's; what each --size sets instead is said too
    epilog = " ".join(text.split("--size sets these first")[1].split())
    for size, flags in train.TRAIN_PRESETS.items():
        preset = epilog.split(f" {size}: ")[1].split(":")[0]   # up to the next size's colon
        for name, value in {**flags, **train.data_preset(size)}.items():
            assert f"--{name.replace('_', '-')} {value} " in preset + " ", (size, name)


@pytest.mark.parametrize("argv, message", [
    (["--size", "huge"], "--size"),
    (["--batch-size", "-4"], "--batch-size"),
    (["--batch-size", "four"], "--batch-size"),
    (["--pretrain-eval-every", "-1"], "--pretrain-eval-every"),
    (["--tasks", "captioning"], "--tasks"),
    (["--compile", "maybe"], "--compile"),
    (["--no-such-flag", "1"], "unrecognized"),
    (["--data", "coco"], "--data"),
    (["--data", "nlvr2"], "--data-dir"),
    (["--data", "nlvr2", "--data-dir", "/no/such/folder"], "--data-dir"),
    (["--data", "vqav2", "--data-dir", ".", "--tasks", "reasoning"], "--tasks vqa"),
    (["--data", "snli-ve", "--data-dir", ".", "--pretrain-steps", "10"], "--pretrain-steps 0"),
    (["--missing-images", "ignore"], "--missing-images"),
    (["--families", "A9_nothing"], "--families"),
    (["--tasks", "vqa", "--families", "A4_count_control"], "--families"),
    (["--tasks", "vqa,reasoning", "--families", "A4_count_control"], "no family"),
    (["--data", "nlvr2", "--data-dir", ".", "--vqa-predict", "test-dev"], "--vqa-predict"),
    (["--steps", "100", "--curriculum-steps", "100"], "--curriculum-steps"),
    (["--tasks", "vqa", "--curriculum-steps", "10"], "--curriculum-steps"),
    (["--data", "nlvr2", "--data-dir", ".", "--curriculum-steps", "10"], "--curriculum-steps"),
    (["--data", "nlvr2", "--data-dir", ".", "--cell-size", "8"], "--cell-size: for the built-in benchmark"),
    (["--data", "vqav2", "--data-dir", ".", "--workers", "2"], "--loader-workers"),
    (["--device", "gpu"], "--device"),
    (["--dtype", "fp16"], "--dtype"),
    (["--steps", "0"], "--steps"),
    (["--eval-every", "0"], "--eval-every"),
    (["--eval-batch-size", "0"], "--eval-batch-size"),
    (["--log-every", "0"], "--log-every"),
    (["--jobs", "0"], "--jobs"),
    (["--pretrain-steps", "-1"], "--pretrain-steps"),
    (["--soft-weight", "-1"], "--soft-weight"),
    (["--attention-weight", "-1"], "--attention-weight"),
    (["--gt-weight", "-0.5"], "--gt-weight"),
    (["--weight-decay", "-1"], "--weight-decay"),
    (["--grad-clip", "-1"], "--grad-clip"),
    (["--lr", "0"], "--lr"),
    (["--temperature", "0"], "--temperature"),
    (["--warmup", "1"], "--warmup"),
    (["--mlm-prob", "1.5"], "--mlm-prob"),
    (["--rows", "teacher,distilled"], "--rows: unknown row 'distilled'"),
    (["--rows", "pretrain+dual", "--pretrain-steps", "0"], "--pretrain-steps is 0"),
    (["--rows", ""], "--rows must name at least one"),
    (["--seeds", "zero"], "--seeds takes comma-separated integers, got 'zero'"),
    (["--seeds", "0,99999999999999999999999"], "--seeds takes integers in [0, 2**32)"),
    (["--seeds", "-1"], "--seeds takes integers in [0, 2**32)"),
    (["--attention-layers", "first"], "--attention-layers takes last, all"),
    (["--size", "tiny", "--attention-layers", "0,5"], "the tiny size has"),
    (["--size", "tiny", "--attention-layers", "1,-1"], "--attention-layers 1,-1: a layer is named twice"),
    (["--seeds", "0,1,0"], "--seeds 0,1,0: 0 is named twice"),
    (["--rows", "soft", "--soft-weight", "0", "--gt-weight", "1"], "the row soft (--rows) trains on no loss: --soft-weight is 0"),
    (["--rows", "soft+attention", "--soft-weight", "0", "--attention-weight", "0"],
     "the row soft+attention (--rows) trains on no loss: --soft-weight, --attention-weight and --gt-weight are 0"),
    (["--attention-layers", ","], "--attention-layers must name at least one"),
    (["--tasks", ""], "--tasks must name at least one"),
    (["--lr", "nan"], "--lr: expected a finite number, got 'nan'"),
    (["--soft-weight", "inf"], "--soft-weight: expected a finite number"),
    (["--temperature", "two"], "--temperature: expected a number, got 'two'"),
    (["--size", "tiny", "--image-size", "40"], "--image-size 40: the tiny model reads 32 px images"),
    (["--rows", "teacher,dual,teacher"], "--rows teacher,dual,teacher: teacher is named twice"),
    (["--tasks", "vqa, vqa"], "vqa is named twice"),
    (["--tasks", "reasoning", "--families", "A1_binding,A1_binding"], "A1_binding is named twice"),
    (["--vocab", "/no/such/vocab.txt"], "--vocab"),
    (["--min-answer-count", "0"], "--min-answer-count"),
    (["--val-examples", "0"], "--val-examples"),
    (["--image-side", "-1"], "--image-side"),
    (["--train-limit", "-1"], "--train-limit"),
    (["--loader-workers", "-1"], "--loader-workers"),
    (["--data-dir", "/tmp"], "--data-dir is for a data set you downloaded: give --data"),
    (["--data", "nlvr2", "--data-dir", "/tmp", "--image-dir", "/tmp"], "--image-dir /tmp: only with --data snli-ve"),
    (["--data", "snli-ve", "--data-dir", "/tmp", "--image-dir", "/no/such"], "--image-dir /no/such: no such folder"),
])
def test_bad_flags_get_one_clear_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_jobs_is_refused_under_torchrun(monkeypatch, capsys):
    """--jobs starts one process per seed itself; under torchrun (WORLD_SIZE > 1) every rank would."""
    train.parse_args(["--jobs", "2", "--seeds", "0,1"])   # alone it is fine
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(["--jobs", "2", "--seeds", "0,1"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--jobs 2" in err and "torchrun" in err
    train.parse_args(["--seeds", "0,1"])                  # --jobs 1 under torchrun is the normal case


def test_every_model_size_has_a_training_preset():
    """train.py, bench.py, data.py and export.py offer the sizes of model.MODEL_SIZES; train.py needs a preset for each."""
    from model import MODEL_SIZES
    assert set(train.TRAIN_PRESETS) == set(MODEL_SIZES)


def test_flags_override_the_size_preset():
    cfg, data_cfg, real_cfg = train.parse_args(["--size", "tiny", "--steps", "7", "--compile", "false"])
    assert cfg.steps == 7 and cfg.batch_size == train.TRAIN_PRESETS["tiny"]["batch_size"] and cfg.compile is False
    assert data_cfg.image_size == 32 and not real_cfg.real


def test_a_real_data_set_is_one_task_without_pre_training(tmp_path):
    cfg, _, real_cfg = train.parse_args(["--data", "nlvr2", "--data-dir", str(tmp_path)])
    assert real_cfg.task == "reasoning" and cfg.tasks == "reasoning" and cfg.pretrain_steps == 0
    assert "pretrain" not in cfg.rows and "soft+attention" in cfg.rows
    _, data_cfg, _ = train.parse_args(["--data", "nlvr2", "--data-dir", str(tmp_path), "--max-text-len", "48"])
    assert data_cfg.max_text_len == 48   # the one benchmark flag that --data reads


def test_unwritable_out_dir_is_one_clear_line(tmp_path):
    target = tmp_path / "read-only"
    target.mkdir()
    target.chmod(0o500)
    if os.access(target, os.W_OK):   # running as root: permissions do not bind
        target.chmod(0o700)
        target = tmp_path / "a-file"
        target.write_text("")
    with pytest.raises(SystemExit, match="--out-dir"):
        train.main(["--size", "tiny", "--out-dir", str(target / "run")])


def test_tiny_run_end_to_end(tmp_path):
    """`python train.py --size tiny`, shortened: every file of a run is written and the table is complete."""
    out = tmp_path / "run"
    results = train.main(["--size", "tiny", "--steps", "20", "--pretrain-steps", "10", "--eval-every", "10",
                          "--out-dir", str(out),
                          "--cache-dir", str(tmp_path / "cache"), "--progress", "false"])
    assert len(results) == 3 * len(train.ROWS)                   # 3 tasks x every row
    for name in ("config.json", "tokenizer.json", "metrics.jsonl", "results.md", "results.json"):
        assert (out / name).exists(), name
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in records} == {"train", "val", "test"}
    assert all(0 <= r["accuracy"] <= 100 for r in results)
    # the teacher pre-trains with ITM + MLM; the students' pre-training has no MLM
    for kind, term in (("train", "mlm"), ("val", "mlm_accuracy"), ("val", "mlm_per_kind"), ("val", "colours_together")):
        by_run = {r["run"]: term in r for r in records if r["kind"] == kind and r["run"].startswith("pretrain")}
        assert by_run == {"pretrain-teacher-seed0": True, "pretrain-dual-seed0": False,
                          "pretrain-student-seed0": False}, (kind, by_run)
    table = (out / "results.md").read_text()
    assert "| teacher |" in table and "| dual |" in table and "| pretrain+soft+attention |" in table
    assert "inference speed-up" in table
    # every run reports the teacher's attention entropy; every student its KL from the teacher too
    assert all(("kl" in r["attention"]["text_to_image"]) == (r["row"] != "teacher") for r in results)
    assert "| teacher: entropy / uniform |" in table and "| pretrain+soft+attention: KL |" in table
    assert len(list((out / "attention").glob("*.png"))) == 3 * 3   # 3 examples for each task
    checkpoint = torch.load(out / "checkpoints" / "vqa-dual-seed0-best.pt", weights_only=True)
    assert checkpoint["model_config"]["n_embd"] == 32 and "tokenizer" in checkpoint


@pytest.mark.parametrize("rows", ["teacher", "teacher,dual"])
def test_rows_without_a_distilled_student_draw_no_attention(rows, tmp_path):
    """The teacher alone, or with the baseline only: a table and no attention pictures (nothing was distilled)."""
    out = tmp_path / "run"
    train.main(["--size", "tiny", "--tasks", "entailment", "--rows", rows, "--pretrain-steps", "0", "--steps", "2",
                "--out-dir", str(out), "--cache-dir", str(tmp_path / "cache"), "--progress", "false",
                "--speed", "false"])
    assert "| teacher |" in (out / "results.md").read_text() and not (out / "attention").exists()


def test_results_md_holds_every_run_the_folder_holds(tmp_path):
    """Rows trained by a second command into the same folder join the first command's in its table."""
    out = tmp_path / "run"
    common = ["--size", "tiny", "--tasks", "vqa", "--pretrain-steps", "0", "--steps", "2", "--out-dir", str(out),
              "--cache-dir", str(tmp_path / "cache"), "--progress", "false", "--speed", "false"]
    train.main(common + ["--rows", "teacher,dual"])
    second = train.main(common + ["--rows", "dual,soft", "--attention-figures", "false"])
    assert [r["row"] for r in second] == ["dual", "soft"]   # what this command trained or read back
    table = (out / "results.md").read_text()
    assert all(f"| {row} |" in table for row in ("teacher", "dual", "soft"))
    assert sorted(r["row"] for r in json.loads((out / "results.json").read_text())) == ["dual", "soft", "teacher"]


def test_the_reasoning_curriculum_trains_first_on_statements_naming_the_left_image(tmp_path, monkeypatch):
    seen = []
    original = trainer.train_step
    monkeypatch.setattr(trainer, "train_step", lambda model, batch, *a, **k: (seen.append(batch["text_ids"]),
                                                                             original(model, batch, *a, **k))[1])
    train.main(["--size", "tiny", "--tasks", "reasoning", "--rows", "dual", "--pretrain-steps", "0", "--steps", "4",
                "--curriculum-steps", "2", "--batch-size", "8", "--progress", "false", "--speed", "false",
                "--out-dir", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")])
    tokenizer = Tokenizer.load(str(tmp_path / "run" / "tokenizer.json"))
    texts = [[tokenizer.decode(row) for row in batch.tolist()] for batch in seen]
    assert len(texts) == 4
    assert all(names_left_image_first(t) for batch in texts[:2] for t in batch)
    assert not all(names_left_image_first(t) for batch in texts[2:] for t in batch)


@pytest.mark.parametrize("figures, eval_examples, pictures", [("true", "96", 3), ("false", "96", 0), ("true", "2", 2)])
def test_attention_figures_flag(figures, eval_examples, pictures, tmp_path):
    """Three test examples are drawn, or as many as the test split has."""
    out = tmp_path / "run"
    train.main(["--size", "tiny", "--tasks", "vqa", "--rows", "soft", "--pretrain-steps", "0", "--steps", "2",
                "--attention-figures", figures, "--eval-examples", eval_examples, "--out-dir", str(out),
                "--cache-dir", str(tmp_path / "cache"), "--progress", "false", "--speed", "false"])
    assert len(list((out / "attention").glob("*.png"))) == pictures
    assert (out / "results.md").exists()


def test_a_batch_larger_than_a_training_set_is_refused_before_pre_training(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(SystemExit, match="--batch-size 5000 is larger than the vqa training set"):
        train.main(["--size", "tiny", "--tasks", "vqa", "--rows", "teacher", "--pretrain-steps", "1", "--batch-size",
                    "5000", "--out-dir", str(out), "--cache-dir", str(tmp_path / "cache"), "--progress", "false"])
    assert not (out / "checkpoints").exists()


def test_visualize_draws_a_finished_student_and_refuses_bad_input_in_one_line(tmp_path, capsys):
    """visualize.py on train.py's checkpoints: one PNG per example; a bad count, a teacher as the student,
    or a student of another benchmark is one line from argparse (exit 2), not a stack trace."""
    import visualize
    out = tmp_path / "run"
    train.main(["--size", "tiny", "--tasks", "vqa", "--rows", "teacher,soft", "--pretrain-steps", "0", "--steps", "2",
                "--attention-figures", "false", "--out-dir", str(out), "--cache-dir", str(tmp_path / "cache"),
                "--progress", "false", "--speed", "false"])
    common = ["--checkpoint-dir", str(out / "checkpoints"), "--task", "vqa", "--out", str(tmp_path / "pics" / "a")]
    paths = visualize.main(common + ["--row", "soft", "--examples", "2"])
    assert sorted(os.path.basename(p) for p in paths) == ["a-0.png", "a-1.png"] and all(map(os.path.exists, paths))
    student = out / "checkpoints" / "vqa-soft-seed0-best.pt"
    for argv, message in [(["--row", "soft", "--examples", "0"], "--examples must be positive"),
                          (["--row", "soft", "--examples", "100000"], "the test split has 96"),
                          (["--row", "teacher"], "invalid choice: 'teacher'"),
                          (["--row", "soft"], "were trained on different benchmarks")]:
        if "different" in message:   # the student's checkpoint now says it saw another benchmark
            state = torch.load(student, weights_only=True)
            torch.save({**state, "data_config": {**state["data_config"], "cache_dir": "elsewhere"}}, student)
            assert len(visualize.main(common + ["--row", "soft", "--examples", "1"])) == 1   # the same benchmark
            torch.save({**state, "data_config": {**state["data_config"], "seed": 7}}, student)
        with pytest.raises(SystemExit) as exit_info:
            visualize.main(common + argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    torch.save(state, student)
    teacher = out / "checkpoints" / "vqa-teacher-seed0-best.pt"
    teacher_state = torch.load(teacher, weights_only=True)
    (tmp_path / "a-file").write_text("")
    for change, argv, message in [
            (None, ["--out", str(tmp_path / "a-file" / "sub" / "a")], "a-file is a file, not a folder"),
            ({"data_config": {"data": "vqav2", "data_dir": "/data/vqav2"}}, [], "not trained on the built-in benchmark"),
            ({"tokenizer": {"itos": teacher_state["tokenizer"]["itos"][:-1]}}, [], "its vocabulary is not the one")]:
        if change:   # the teacher and the student alike
            torch.save({**teacher_state, **change}, teacher)
            torch.save({**state, **change}, student)
        with pytest.raises(SystemExit) as exit_info:
            visualize.main(common + ["--row", "soft"] + argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("pretrain_every", [None, "2"])
def test_pretraining_is_validated_every_pretrain_eval_every_steps(pretrain_every, tmp_path):
    """--pretrain-eval-every sets when pre-training is validated (so which checkpoint is its best), apart
    from --eval-every; left out, pre-training follows --eval-every as before."""
    argv = ["--size", "tiny", "--tasks", "vqa", "--rows", "teacher", "--pretrain-steps", "6", "--steps", "6",
            "--eval-every", "3", "--progress", "false", "--speed", "false", "--out-dir", str(tmp_path / "run"),
            "--cache-dir", str(tmp_path / "cache")] + (["--pretrain-eval-every", pretrain_every] if pretrain_every else [])
    train.main(argv)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = {run: [r["step"] for r in records if r["kind"] == "val" and r["run"] == run]
             for run in ("pretrain-teacher-seed0", "vqa-teacher-seed0")}
    assert steps == {"pretrain-teacher-seed0": [2, 4, 6] if pretrain_every else [3, 6], "vqa-teacher-seed0": [3, 6]}


def test_bf16_autocast_the_gpu_default_trains_and_distils_on_a_cpu(tmp_path):
    """--dtype bf16 (what auto means on CUDA): pre-training, fine-tuning and both distillation losses
    run under autocast and give finite losses and accuracies."""
    out = tmp_path / "run"
    results = train.main(["--size", "tiny", "--tasks", "entailment,vqa", "--rows", "soft+attention",
                          "--pretrain-steps", "2", "--steps", "2", "--eval-every", "2", "--log-every", "1",
                          "--dtype", "bf16", "--progress", "false", "--speed", "false", "--attention-figures", "false",
                          "--out-dir", str(out), "--cache-dir", str(tmp_path / "cache")])
    assert all(0 <= r["accuracy"] <= 100 for r in results) and len(results) == 2
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    distilled = [r for r in records if r["kind"] == "train" and r["run"].endswith("soft+attention-seed0")]
    assert distilled and all(math.isfinite(r["loss"]) and r["attention"] > 0 for r in distilled)


def test_the_reasoning_teacher_starts_its_second_image_type_from_the_first(tmp_path):
    """ViLT, NLVR2: pre-training never trains modality type 2, so fine-tuning starts it from type 1."""
    out = tmp_path / "run"
    train.main(["--size", "tiny", "--tasks", "reasoning", "--rows", "teacher", "--pretrain-steps", "2", "--steps", "1",
                "--lr", "1e-9", "--out-dir", str(out), "--cache-dir", str(tmp_path / "cache"), "--progress", "false",
                "--speed", "false", "--attention-figures", "false"])
    types = {name: torch.load(out / "checkpoints" / f"{name}-seed0-best.pt", weights_only=True)["model"]
             ["modality_type.weight"] for name in ("pretrain-teacher", "reasoning-teacher")}
    assert not torch.allclose(types["pretrain-teacher"][2], types["pretrain-teacher"][1], atol=1e-4)
    torch.testing.assert_close(types["reasoning-teacher"][2], types["reasoning-teacher"][1], atol=1e-6, rtol=0)


def test_each_row_trains_with_the_loss_its_name_says():
    """README, "The rows of the table": the recipes, with DiDE's released one (1:1, no ground truth) the default."""
    from distill import DistillWeights
    cfg = train.TrainConfig(temperature=2.0)
    assert all(train.row_weights(row, cfg) is None for row in ("teacher", "dual", "pretrain+dual"))
    assert train.row_weights("soft", cfg) == DistillWeights(soft_label=1.0, attention=0.0, ground_truth=0.0, temperature=2.0)
    assert train.row_weights("attention", cfg) == DistillWeights(soft_label=0.0, attention=1.0, ground_truth=1.0)
    dide = DistillWeights(soft_label=1.0, attention=1.0, ground_truth=0.0, temperature=2.0)
    assert train.row_weights("soft+attention", cfg) == train.row_weights("pretrain+soft+attention", cfg) == dide
    mixed = train.TrainConfig(soft_weight=0.5, attention_weight=3.0, gt_weight=1.0)
    assert train.row_weights("soft+attention", mixed) == DistillWeights(soft_label=0.5, attention=3.0, ground_truth=1.0)


def test_a_curriculum_stage_smaller_than_a_batch_is_refused_before_pre_training(tmp_path):
    """A batch as large as the training set passes its own check; the curriculum's first stage holds
    only the statements naming the left image first, about half of them."""
    out = tmp_path / "run"
    with pytest.raises(SystemExit, match=r"--batch-size 64 is larger than the curriculum's first stage"):
        train.main(["--size", "tiny", "--tasks", "reasoning", "--rows", "teacher", "--pretrain-steps", "1",
                    "--train-examples", "64", "--batch-size", "64", "--curriculum-steps", "2", "--out-dir", str(out),
                    "--cache-dir", str(tmp_path / "cache"), "--progress", "false"])
    assert not (out / "checkpoints").exists()


def test_the_speed_in_train_records_counts_training_steps_only(tmp_path, monkeypatch):
    """On a clock where a training step takes 1 s and a validation 100 s, every train record says
    1000 ms per step, also when validation (every 3 steps) falls between two records (every 2)."""
    from types import SimpleNamespace
    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(trainer, "time", SimpleNamespace(perf_counter=lambda: clock.now))
    original_step, original_evaluate = trainer.train_step, train.evaluate

    def timed(seconds, function):
        def run(*args, **kwargs):
            clock.now += seconds
            return function(*args, **kwargs)
        return run
    monkeypatch.setattr(trainer, "train_step", timed(1.0, original_step))
    monkeypatch.setattr(train, "evaluate", timed(100.0, original_evaluate))
    train.main(["--size", "tiny", "--tasks", "entailment", "--rows", "dual", "--pretrain-steps", "0", "--steps", "8",
                "--eval-every", "3", "--log-every", "2", "--batch-size", "8", "--progress", "false", "--speed", "false",
                "--out-dir", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")])
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    speeds = {r["step"]: (r["ms_per_step"], r["samples_per_s"]) for r in records if r["kind"] == "train"}
    assert sorted(speeds) == [2, 4, 6, 8]
    assert all(speed == pytest.approx((1000.0, 8.0)) for speed in speeds.values()), speeds


def test_the_teacher_stays_frozen_in_eval_mode_and_unchanged_while_its_student_trains(tmp_path, monkeypatch):
    """Every distillation step of a real run (train.main: soft labels + attention, with validation in
    between) sees the same teacher: in eval mode, no parameter trainable, every weight as it was loaded."""
    seen = []

    def checked_dide_loss(student, teacher, *args, **kwargs):
        weights = torch.cat([p.detach().flatten() for p in teacher.parameters()])
        seen.append((teacher.training, any(p.requires_grad for p in teacher.parameters()), weights.clone()))
        return real_dide_loss(student, teacher, *args, **kwargs)
    real_dide_loss = trainer.dide_loss
    monkeypatch.setattr(trainer, "dide_loss", checked_dide_loss)
    train.main(["--size", "tiny", "--tasks", "entailment", "--rows", "teacher,soft+attention", "--pretrain-steps", "0",
                "--steps", "4", "--eval-every", "2", "--progress", "false", "--speed", "false",
                "--out-dir", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")])
    assert len(seen) == 4
    assert not any(training or trainable for training, trainable, _ in seen)
    assert all(torch.equal(weights, seen[0][2]) for _, _, weights in seen)
