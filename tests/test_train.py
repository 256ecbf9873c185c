"""The training program: it learns, its flags are checked, and it runs end to end at the tiny size."""

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train
import trainer
from batches import names_left_image_first
from data import Tokenizer
from realdata import DataError
from distill import ground_truth_loss
from runtime import Runtime, StopRequest, run_processes, shard
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
    (["--rows", ""], "--rows must each name"),
    (["--seeds", "zero"], "--seeds"),
    (["--attention-layers", "first"], "--attention-layers"),
    (["--size", "tiny", "--attention-layers", "0,5"], "the tiny size has"),
    (["--vocab", "/no/such/vocab.txt"], "--vocab"),
    (["--min-answer-count", "0"], "--min-answer-count"),
    (["--val-examples", "0"], "--val-examples"),
    (["--image-side", "-1"], "--image-side"),
    (["--train-limit", "-1"], "--train-limit"),
    (["--loader-workers", "-1"], "--loader-workers"),
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


def stop_after(step, argv):
    """Run `train.main(argv)` as if killed after `step` steps of its first run (fit's stop_after)."""
    original_fit = train.fit
    train.fit = lambda *a, **k: original_fit(*a, **{**k, "stop_after": step})
    try:
        with pytest.raises(SystemExit, match=f"stopped after step {step}"):
            train.main(argv)
    finally:
        train.fit = original_fit


def test_resuming_with_another_curriculum_is_one_clear_line(tmp_path):
    common = ["--size", "tiny", "--tasks", "reasoning", "--rows", "dual", "--pretrain-steps", "0", "--steps", "6",
              "--batch-size", "8", "--progress", "false", "--speed", "false", "--out-dir", str(tmp_path / "run"),
              "--cache-dir", str(tmp_path / "cache")]
    stop_after(3, common)
    with pytest.raises(SystemExit, match="--curriculum-steps"):
        train.main(common + ["--curriculum-steps", "2"])


def test_resuming_on_another_kind_of_device_is_one_clear_line(tmp_path):
    """A run stopped on a GPU cannot go on, on a CPU, with the same batch order (the random streams differ):
    one line that says so, not a stack trace from the generator."""
    common = ["--size", "tiny", "--tasks", "reasoning", "--rows", "dual", "--pretrain-steps", "0", "--steps", "6",
              "--batch-size", "8", "--progress", "false", "--speed", "false", "--out-dir", str(tmp_path / "run"),
              "--cache-dir", str(tmp_path / "cache")]
    stop_after(3, common)
    path = tmp_path / "run" / "checkpoints" / "reasoning-dual-seed0-last.pt"
    state = torch.load(path, weights_only=True)
    state["cuda_rng"] = torch.zeros(16, dtype=torch.uint8)   # what a CUDA generator's state looks like
    torch.save(state, path)
    with pytest.raises(SystemExit, match="saved on cuda, and this run is on cpu"):
        train.main(common)
    train.main(common + ["--resume", "false"])


def test_a_folder_trained_with_other_settings_is_refused_in_one_clear_line(tmp_path):
    """Finished runs are reused by name: a folder of other settings is refused (also with --resume false,
    which would leave the other seeds' runs beside the new ones), other seeds are not."""
    run = tmp_path / "run"
    common = ["--size", "tiny", "--tasks", "entailment", "--rows", "dual", "--pretrain-steps", "0", "--eval-every", "2",
              "--progress", "false", "--speed", "false", "--out-dir", str(run), "--cache-dir", str(tmp_path / "cache")]
    train.main(common + ["--steps", "2"])
    train.main(common + ["--steps", "2", "--seeds", "1"])
    train.main(common + ["--steps", "2", "--pretrain-eval-every", "2"])   # 0 means as --eval-every: the same

    def written():
        return {path.name: path.read_bytes() for path in [run / "config.json", *(run / "runs").iterdir()]}
    before = written()
    for other in (["--steps", "3"], ["--steps", "3", "--resume", "false"]):
        with pytest.raises(SystemExit, match=r"other settings \(--steps\)"):
            train.main(common + other)
        assert written() == before   # nothing touched
    (run / "config.json").write_text("{")
    with pytest.raises(SystemExit, match="config.json: not valid JSON"):
        train.main(common + ["--steps", "3"])


def test_a_folder_with_no_run_yet_takes_other_settings(tmp_path):
    """A start that failed before training (here: a data path) leaves config.json but no run; fixing the
    flag and starting again is not refused."""
    common = ["--size", "tiny", "--tasks", "entailment", "--rows", "dual", "--steps", "2", "--progress", "false",
              "--speed", "false", "--out-dir", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")]
    data = ["--data", "snli-ve", "--pretrain-steps", "0"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not found"):
        train.main(common + data + ["--data-dir", str(tmp_path / "empty")])
    assert (tmp_path / "run" / "config.json").exists()
    train.main(common + ["--pretrain-steps", "0"])


def test_config_without_a_later_flag_reads_as_the_code_before_it():
    """An older config.json lacks flags added since: --mlm-prob's absence means ITM-only pre-training."""
    from report import differing_flags
    new = {"train": dataclasses.asdict(train.TrainConfig()), "data": {}, "real_data": {}}
    old = {"train": {k: v for k, v in new["train"].items() if k != "mlm_prob"}, "data": {}, "real_data": {}}
    assert differing_flags(old, new) == ["--mlm-prob"]
    assert differing_flags(old, {**new, "train": {**new["train"], "mlm_prob": 0.0}}) == []


def test_one_data_folder_spelt_two_ways_is_one_setting(tmp_path, monkeypatch):
    """--data-dir vqa, ./vqa/ and its absolute path name one folder; another folder is another setting."""
    from report import differing_flags
    monkeypatch.chdir(tmp_path)

    def config(data_dir):
        return {"train": {}, "data": {}, "real_data": {"data": "vqav2", "data_dir": data_dir}}
    assert differing_flags(config("vqa"), config("./vqa/")) == []
    assert differing_flags(config("vqa"), config(str(tmp_path / "vqa"))) == []
    assert differing_flags(config("vqa"), config("vqa2")) == ["--data-dir"]


@pytest.mark.parametrize("figures", ["true", "false"])
def test_attention_figures_flag(figures, tmp_path):
    out = tmp_path / "run"
    train.main(["--size", "tiny", "--tasks", "entailment", "--rows", "soft", "--pretrain-steps", "0", "--steps", "2",
                "--attention-figures", figures, "--out-dir", str(out), "--cache-dir", str(tmp_path / "cache"),
                "--progress", "false", "--speed", "false"])
    assert len(list((out / "attention").glob("*.png"))) == (3 if figures == "true" else 0)


def test_a_stopped_run_resumes_to_exactly_the_uninterrupted_weights(tmp_path):
    """Stop a run after 7 of 12 steps, run the same command again: the weights equal an uninterrupted run's."""
    common = ["--size", "tiny", "--tasks", "entailment", "--rows", "dual", "--pretrain-steps", "0", "--steps", "12",
              "--eval-every", "5", "--progress", "false", "--speed", "false", "--cache-dir", str(tmp_path / "cache")]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train.main(common + ["--out-dir", str(whole)])
    stop_after(7, common + ["--out-dir", str(parts)])
    assert not (parts / "runs").exists()
    train.main(common + ["--out-dir", str(parts)])
    a = torch.load(whole / "checkpoints" / "entailment-dual-seed0-last.pt", weights_only=True)
    b = torch.load(parts / "checkpoints" / "entailment-dual-seed0-last.pt", weights_only=True)
    assert a["step"] == b["step"] == 12
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_the_first_record_after_a_resume_averages_the_steps_it_ran(tmp_path):
    """Stopped after step 7 and resumed, logging every 5: the stop writes a record of steps 6-7, and the
    record at step 10 is the mean loss of steps 8-10, as a run logging every step measured them (not their
    sum over 5)."""
    common = ["--size", "tiny", "--tasks", "entailment", "--rows", "dual", "--pretrain-steps", "0", "--steps", "12",
              "--eval-every", "12", "--progress", "false", "--speed", "false", "--cache-dir", str(tmp_path / "cache")]
    train.main(common + ["--log-every", "1", "--out-dir", str(tmp_path / "every")])
    stop_after(7, common + ["--log-every", "5", "--out-dir", str(tmp_path / "parts")])
    train.main(common + ["--log-every", "5", "--out-dir", str(tmp_path / "parts")])

    def losses(folder):
        records = [json.loads(line) for line in (tmp_path / folder / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}
    every, parts = losses("every"), losses("parts")
    assert sorted(parts) == [5, 7, 10, 12]
    assert parts[7] == pytest.approx(sum(every[s] for s in (6, 7)) / 2, rel=1e-5)
    assert parts[10] == pytest.approx(sum(every[s] for s in (8, 9, 10)) / 3, rel=1e-5)


def test_finished_runs_are_skipped_on_a_second_invocation(tmp_path, capsys):
    argv = ["--size", "tiny", "--tasks", "vqa", "--rows", "dual", "--pretrain-steps", "0", "--steps", "4",
            "--eval-every", "4", "--progress", "false", "--speed", "false", "--out-dir", str(tmp_path / "run"),
            "--cache-dir", str(tmp_path / "cache")]
    first = train.main(argv)
    log_lines = (tmp_path / "run" / "metrics.jsonl").read_text().count("\n")
    second = train.main(argv)
    assert first[0]["accuracy"] == second[0]["accuracy"]
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") == log_lines   # nothing was retrained


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


def test_an_injected_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    argv = ["--size", "tiny", "--tasks", "entailment", "--rows", "dual", "--pretrain-steps", "0", "--steps", "20",
            "--eval-every", "5", "--log-every", "5", "--progress", "false", "--speed", "false",
            "--out-dir", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")]
    calls = {"n": 0}

    def poisoned(task, logits, batch):
        calls["n"] += 1
        loss = ground_truth_loss(task, logits, batch)
        return loss * float("nan") if calls["n"] == 8 else loss
    monkeypatch.setattr(trainer, "ground_truth_loss", poisoned)
    with pytest.raises(SystemExit, match="NaN or inf before step 10"):
        train.main(argv)
    last = torch.load(tmp_path / "run" / "checkpoints" / "entailment-dual-seed0-last.pt", weights_only=True)
    assert last["step"] == 5 and all(torch.isfinite(v).all() for v in last["model"].values())


def test_ddp_with_two_cpu_processes_matches_one_process(tmp_path):
    """torchrun, gloo backend, 2 processes x 8 rows = one process x 16 rows: the same weights."""
    common = ["--size", "tiny", "--tasks", "entailment", "--rows", "dual", "--pretrain-steps", "0", "--steps", "6",
              "--batch-size", "16", "--eval-every", "6", "--progress", "false", "--speed", "false",
              "--cache-dir", str(tmp_path / "cache")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "train.py", *common, "--out-dir", str(tmp_path / "one")],
                            cwd=ROOT, env=env, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "train.py", *common, "--out-dir", str(tmp_path / "two")],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    assert "device cpu x 2" in ddp.stdout                        # two processes took part
    assert ddp.stdout.count("test accuracy") == 1                # only rank 0 prints
    a = torch.load(tmp_path / "one" / "checkpoints" / "entailment-dual-seed0-last.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "checkpoints" / "entailment-dual-seed0-last.pt", weights_only=True)
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], atol=1e-5, rtol=1e-4)


def test_a_stop_signal_delivered_twice_is_one_request_and_a_later_one_stops_at_once():
    """torchrun and job schedulers often deliver one SIGTERM twice: that must not skip the save. A second
    signal later than StopRequest.REPEAT_S is a user insisting, and stops at once."""
    import signal
    with StopRequest() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested
        stop.requested_at -= StopRequest.REPEAT_S + 1
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL      # the previous handlers are back


@pytest.mark.parametrize("local_rank", ["0", "1"])
def test_a_stop_signal_to_one_ddp_process_stops_both_at_the_same_step_and_saves(local_rank, tmp_path):
    """torchrun, 2 processes: SIGTERM reaches one of them only (rank 0, which saves, or rank 1). Both stop
    at the same logging step (a process stopping alone would leave the other waiting in an all-reduce
    for the hour of the timeout), rank 0 saves there, and the run can be continued."""
    import signal
    import time
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                "train.py", "--size", "tiny", "--tasks", "entailment", "--rows", "dual",
                                "--pretrain-steps", "0", "--steps", "100000", "--batch-size", "16", "--log-every", "5",
                                "--eval-every", "100000", "--progress", "false", "--speed", "false",
                                "--out-dir", str(out), "--cache-dir", str(tmp_path / "cache")],
                               cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)

    def worker(rank):   # the torchrun agent's child whose environment says LOCAL_RANK=rank
        for pid in Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split():
            if f"LOCAL_RANK={rank}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                return int(pid)
        raise AssertionError(f"no worker with LOCAL_RANK={rank}")
    try:
        deadline = time.time() + 180
        while not ((out / "metrics.jsonl").exists() and (out / "metrics.jsonl").stat().st_size):
            assert time.time() < deadline and process.poll() is None, "training should have logged within 180 s"
            time.sleep(0.2)
        os.kill(worker(local_rank), signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    state = torch.load(out / "checkpoints" / "entailment-dual-seed0-last.pt", weights_only=True)
    assert state["step"] >= 5 and state["step"] % 5 == 0
    assert stderr.count(f"stopped after step {state['step']} of") == 1, stderr[-3000:]   # rank 0 says so, once


def test_jobs_trains_seeds_in_parallel_processes_with_the_weights_of_one_process(tmp_path):
    """--seeds 0,1 --jobs 2: one process per seed, each with its own log; the same weights and table as
    training the seeds one after the other, and config.json records the command that was given."""
    common = ["--size", "tiny", "--tasks", "entailment", "--rows", "dual", "--pretrain-steps", "0", "--steps", "3",
              "--eval-every", "3", "--seeds", "0,1", "--progress", "false", "--speed", "false",
              "--cache-dir", str(tmp_path / "cache")]
    one_by_one = train.main(common + ["--out-dir", str(tmp_path / "one")])
    parallel = train.main(common + ["--jobs", "2", "--out-dir", str(tmp_path / "jobs")])
    assert [(r["seed"], r["accuracy"]) for r in parallel] == [(r["seed"], r["accuracy"]) for r in one_by_one]
    for seed in (0, 1):
        assert "test accuracy" in (tmp_path / "jobs" / "logs" / f"seed{seed}.log").read_text()
        a = torch.load(tmp_path / "one" / "checkpoints" / f"entailment-dual-seed{seed}-last.pt", weights_only=True)
        b = torch.load(tmp_path / "jobs" / "checkpoints" / f"entailment-dual-seed{seed}-last.pt", weights_only=True)
        for key in a["model"]:
            torch.testing.assert_close(a["model"][key], b["model"][key], atol=1e-5, rtol=1e-4)
    config = json.loads((tmp_path / "jobs" / "config.json").read_text())
    assert config["train"]["seeds"] == "0,1" and config["train"]["jobs"] == 2


def test_a_failed_seed_process_stops_the_others_and_names_its_log(tmp_path):
    """Seed 0 cannot resume (its checkpoint is garbage); seed 1, set for 100,000 steps, is stopped as by
    Ctrl-C instead of running on, and the error names seed 0's log."""
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "entailment-dual-seed0-last.pt").write_bytes(b"not a checkpoint")
    argv = ["--size", "tiny", "--tasks", "entailment", "--rows", "dual", "--pretrain-steps", "0", "--steps", "100000",
            "--log-every", "5", "--out-dir", str(out), "--cache-dir", str(tmp_path / "cache")]
    with pytest.raises(SystemExit, match=r"seed 0 failed \(exit code 1\); its log: .*seed0\.log"):
        run_processes(train.seed_commands(argv, [0, 1], str(out)), 2, print)
    assert "seed0-last.pt" in (out / "logs" / "seed0.log").read_text()
    assert "test accuracy" not in (out / "logs" / "seed1.log").read_text()


def test_processes_run_at_once_share_the_cpu_threads(tmp_path, monkeypatch):
    """Two processes at once: each gets half of the threads torch uses here (at least one); a single
    process, even with jobs to spare, gets them all; a user's OMP_NUM_THREADS wins."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    probe = [sys.executable, "-c", "import os, torch; print(os.environ['OMP_NUM_THREADS'], torch.get_num_threads())"]

    def threads(names, jobs):   # [(OMP_NUM_THREADS, torch threads)] seen by each child
        run_processes({name: (probe, str(tmp_path / f"{name}.log")) for name in names}, jobs, print)
        return [tuple(int(x) for x in (tmp_path / f"{name}.log").read_text().split()) for name in names]

    half = max(1, torch.get_num_threads() // 2)
    assert threads(["a", "b"], jobs=2) == [(half, half)] * 2
    assert threads(["c"], jobs=4)[0][0] == torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    assert threads(["d"], jobs=2)[0][0] == 7


def test_shards_of_all_processes_partition_the_global_batch():
    batch = {"x": torch.arange(12), "y": torch.arange(12) * 10}
    parts = [shard(batch, Runtime(torch.device("cpu"), None, rank, 3)) for rank in range(3)]
    assert all(len(p["x"]) == 4 for p in parts)
    assert sorted(torch.cat([p["x"] for p in parts]).tolist()) == list(range(12))
    assert all(torch.equal(p["y"], p["x"] * 10) for p in parts)


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_saves_and_exits_with_a_message(signal_name, tmp_path):
    """Ctrl-C, and SIGTERM (what `kill`, `timeout` and job schedulers send), finish the step and save."""
    import signal
    import time
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "train.py", "--size", "tiny", "--tasks", "vqa", "--rows", "dual",
                                "--pretrain-steps", "0", "--steps", "100000", "--log-every", "5", "--progress", "false",
                                "--out-dir", str(out), "--cache-dir", str(tmp_path / "cache")],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / "metrics.jsonl").exists() and (out / "metrics.jsonl").stat().st_size):
        time.sleep(0.2)
    process.send_signal(getattr(signal, signal_name))
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1 and "stopped after step" in stderr and "Traceback" not in stderr
    state = torch.load(out / "checkpoints" / "vqa-dual-seed0-last.pt", weights_only=True)
    assert state["step"] >= 5


def test_ctrl_c_under_jobs_stops_every_seed_saved_and_exits_with_a_message(tmp_path):
    """--jobs 2: Ctrl-C reaches the parent only; it passes it on, each seed saves, and the parent
    exits with one message, not a stack trace. The parent is started with SIGINT ignored, as a shell
    starts a command in the background: train.py must still hear it."""
    import signal
    import time
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "train.py", "--size", "tiny", "--tasks", "entailment", "--rows", "dual",
                                "--pretrain-steps", "0", "--steps", "100000", "--log-every", "5", "--seeds", "0,1",
                                "--jobs", "2", "--out-dir", str(out), "--cache-dir", str(tmp_path / "cache")],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))

    def runs_logged():   # the runs with a record in metrics.jsonl; a line still being written is skipped
        path, runs = out / "metrics.jsonl", set()
        for line in path.read_text().splitlines() if path.exists() else []:
            try:
                runs.add(json.loads(line)["run"])
            except json.JSONDecodeError:
                pass
        return runs

    try:
        deadline = time.time() + 180
        while time.time() < deadline and len(runs_logged()) < 2:
            time.sleep(0.5)
        assert len(runs_logged()) == 2, "both seeds should have logged a step within 180 s"
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)   # the parent passes it on to the seeds' processes
            process.wait(timeout=120)
    assert process.returncode == 1 and "Traceback" not in stderr
    assert "stopped: each process was asked to finish its step and save" in stderr and "Run the same command again" in stderr
    for seed in (0, 1):
        assert "stopped after step" in (out / "logs" / f"seed{seed}.log").read_text()
        state = torch.load(out / "checkpoints" / f"entailment-dual-seed{seed}-last.pt", weights_only=True)
        assert state["step"] >= 5


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
