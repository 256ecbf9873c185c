"""Nothing written is lost: a stopped run (Ctrl-C, SIGTERM, a NaN) saves and resumes to exactly the
weights of one that was never stopped, and a folder is resumed only with the settings it was trained
with. Several processes (torchrun's DDP, --jobs): test_processes.py."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train
import trainer
from distill import ground_truth_loss
from realdata import DataError
from runtime import StopRequest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
    """Finished runs are reused by name: a folder of other settings, or of unknown ones (no config.json), is
    refused (also with --resume false, which would leave the other seeds' runs beside the new ones), other
    seeds are not."""
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
    (run / "config.json").unlink()   # runs with nothing to say how they were trained are not reused unchecked
    with pytest.raises(SystemExit, match="holds runs or checkpoints but no config.json"):
        train.main(common + ["--steps", "3"])
    assert not (run / "config.json").exists()


def test_a_teachers_runs_copied_without_config_json_teach_students_of_other_settings(tmp_path, capsys):
    """A teacher's finished runs and checkpoints, copied into a fresh folder, are reused (and that is said),
    so its students may differ in settings the folder check would refuse."""
    common = ["--size", "tiny", "--tasks", "entailment", "--pretrain-steps", "0", "--steps", "2", "--progress",
              "false", "--speed", "false", "--attention-figures", "false", "--cache-dir", str(tmp_path / "cache")]
    train.main(common + ["--rows", "teacher", "--out-dir", str(tmp_path / "teacher")])
    fresh = tmp_path / "fresh"
    shutil.copytree(tmp_path / "teacher" / "runs", fresh / "runs")
    shutil.copytree(tmp_path / "teacher" / "checkpoints", fresh / "checkpoints")
    record = (fresh / "runs" / "entailment-teacher-seed0.json").read_bytes()
    capsys.readouterr()
    train.main(common + ["--rows", "teacher,attention", "--attention-layers", "all", "--out-dir", str(fresh)])
    assert "holds a teacher's runs and no config.json" in capsys.readouterr().out
    assert (fresh / "runs" / "entailment-teacher-seed0.json").read_bytes() == record   # not trained again
    assert (fresh / "runs" / "entailment-attention-seed0.json").exists()


def test_a_folder_with_no_run_yet_takes_other_settings(tmp_path):
    """A start that failed before training (here: a data path) leaves config.json but no run; fixing the
    flag and starting again is not refused."""
    common = ["--size", "tiny", "--tasks", "entailment", "--rows", "dual", "--steps", "2", "--progress", "false",
              "--speed", "false", "--out-dir", str(tmp_path / "run")]
    data = ["--data", "snli-ve", "--pretrain-steps", "0"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not found"):
        train.main(common + data + ["--data-dir", str(tmp_path / "empty")])
    assert (tmp_path / "run" / "config.json").exists()
    train.main(common + ["--pretrain-steps", "0", "--cache-dir", str(tmp_path / "cache")])


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


def test_a_stopped_run_started_with_resume_false_is_resumed_not_taken_for_the_finished_one(tmp_path):
    """A finished run, then the same run started again with --resume false and stopped after 2 of 4
    steps: the next plain invocation resumes that run (the old record is gone), not skips it as finished."""
    argv = ["--size", "tiny", "--tasks", "entailment", "--rows", "dual", "--pretrain-steps", "0", "--steps", "4",
            "--eval-every", "4", "--log-every", "1", "--progress", "false", "--speed", "false",
            "--out-dir", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")]
    train.main(argv)
    stop_after(2, argv + ["--resume", "false"])
    assert not (tmp_path / "run" / "runs" / "entailment-dual-seed0.json").exists()
    train.main(argv)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert steps == [1, 2, 3, 4, 1, 2, 3, 4]   # the first run, the stopped one, and its resumption


def test_a_finished_folder_moved_and_named_from_elsewhere_is_not_trained_again(tmp_path, monkeypatch):
    """Run records name their checkpoints from the run's folder: moved, and named by another relative
    path from another directory, the folder's runs still read as finished."""
    argv = ["--size", "tiny", "--tasks", "vqa", "--rows", "pretrain+dual", "--pretrain-steps", "2", "--steps", "2",
            "--eval-every", "2", "--progress", "false", "--speed", "false", "--cache-dir", str(tmp_path / "cache")]
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    first = train.main(argv + ["--out-dir", "run"])
    lines = (tmp_path / "here" / "run" / "metrics.jsonl").read_text().count("\n")
    shutil.move(tmp_path / "here" / "run", tmp_path / "moved")
    monkeypatch.chdir(tmp_path)
    second = train.main(argv + ["--out-dir", "moved"])
    assert (tmp_path / "moved" / "metrics.jsonl").read_text().count("\n") == lines   # nothing was retrained
    assert first[0]["accuracy"] == second[0]["accuracy"]
    assert Path(second[0]["checkpoint"]).resolve() == (tmp_path / "moved" / "checkpoints" /
                                                        "vqa-pretrain+dual-seed0-best.pt")


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


def test_a_stop_whose_exception_was_lost_is_raised_again_by_the_rendering_loop(tmp_path):
    """A program's stop handler remembers the stop: should the KeyboardInterrupt it raised be cleared on
    its way (as C code that clears every error can), the next chunk of the benchmark raises it again."""
    import signal
    from data import DataConfig, data_preset, generate_split
    from runtime import interrupt_on_signals, raise_if_interrupted
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    cfg = DataConfig(**{**data_preset("tiny"), "train_examples": 200, "workers": 1})
    try:
        interrupt_on_signals()
        raise_if_interrupted()               # no stop yet
        assert len(generate_split(cfg, "reasoning", "train").labels) == 200
        try:
            signal.raise_signal(signal.SIGTERM)
        except KeyboardInterrupt:
            pass                             # lost
        with pytest.raises(KeyboardInterrupt):
            generate_split(cfg, "reasoning", "train")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("program", ["train.py", "data.py"])
def test_a_stop_while_the_benchmark_renders_is_one_line(program, signal_name, tmp_path):
    """Outside a training loop there is no step to finish: Ctrl-C or SIGTERM while the benchmark is still
    being rendered ends the program at once with one line, not a stack trace, and leaves no cache file half
    written. The signal is sent once the program is rendering (train.py has written its config.json; data.py
    has drawn its first progress bar)."""
    import signal
    import threading
    import time
    # 200,000 examples render for tens of seconds: a signal sent late on a loaded machine still lands in it
    argv = [sys.executable, program, "--size", "tiny", "--tasks", "reasoning", "--train-examples", "200000",
            "--workers", "1", "--cache-dir", str(tmp_path / "cache")]
    if program == "train.py":
        argv += ["--rows", "dual", "--pretrain-steps", "0", "--progress", "false", "--out-dir", str(tmp_path / "run")]
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = []
    reader = threading.Thread(target=lambda: stderr.extend(iter(lambda: process.stderr.read1(4096), b"")))
    reader.start()
    rendering = ((lambda: (tmp_path / "run" / "config.json").exists()) if program == "train.py" else
                 (lambda: b"reasoning/train" in b"".join(stderr)))
    deadline = time.time() + 120
    while time.time() < deadline and not rendering():
        time.sleep(0.1)
    assert process.poll() is None, "the benchmark was built before the signal could be sent"
    sent_at = b"".join(stderr).decode(errors="replace").split("\r")[-1]   # the progress bar when it was sent
    process.send_signal(getattr(signal, signal_name))
    process.wait(timeout=60)
    reader.join()
    err = b"".join(stderr).decode()
    said = "\n".join(line for line in err.replace("\r", "\n").splitlines() if "it/s" not in line and line.strip())
    assert process.returncode == 1 and "Traceback" not in err, (
        f"exit code {process.returncode}; signal sent at {sent_at!r}; stderr but progress bars:\n{said[-3000:]}")
    assert err.rstrip().splitlines()[-1].startswith("stopped;"), err[-2000:]
    assert not list(tmp_path.rglob("*.tmp"))
