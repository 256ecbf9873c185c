"""Nothing written is lost: a stopped run (Ctrl-C, SIGTERM, a NaN) saves and resumes to exactly the
weights of one that was never stopped; a folder is resumed only with the settings it was trained
with; and several processes (torchrun's DDP, --jobs) agree with one, share the CPU, and stop together."""

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
from runtime import Runtime, StopRequest, run_processes, shard

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


def train_in_one_and_two_processes(common, tmp_path):
    """train.py with the flags `common` in one process (tmp_path/one) and under torchrun in two, gloo
    backend (tmp_path/two); one thread each. Both must succeed. Returns the two CompletedProcesses."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "train.py", *common, "--out-dir", str(tmp_path / "one")],
                            cwd=ROOT, env=env, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "train.py", *common, "--out-dir", str(tmp_path / "two")],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    return single, ddp


def assert_same_weights(tmp_path, runs):
    """Each run's last checkpoint holds the same weights in tmp_path/one and tmp_path/two."""
    for run in runs:
        a = torch.load(tmp_path / "one" / "checkpoints" / f"{run}-seed0-last.pt", weights_only=True)
        b = torch.load(tmp_path / "two" / "checkpoints" / f"{run}-seed0-last.pt", weights_only=True)
        for key in a["model"]:
            torch.testing.assert_close(a["model"][key], b["model"][key], atol=1e-4, rtol=1e-4, msg=f"{run}: {key}")


def test_ddp_with_two_cpu_processes_matches_one_process(tmp_path):
    """torchrun, gloo backend, 2 processes x 8 examples = one process x 16 examples: the same weights, for
    ground truth and for DiDE in both stages, and for the teacher's pre-training. The attention loss
    averages over real words, MLM over masked words: each process must divide by the global batch's
    count (distill.mean_over_global_batch), not its own, or the weights differ by about 1e-3."""
    common = ["--size", "tiny", "--tasks", "entailment", "--rows", "dual,soft+attention,pretrain+soft+attention",
              "--pretrain-steps", "4", "--pretrain-eval-every", "4", "--steps", "6", "--batch-size", "16",
              "--eval-every", "6", "--eval-examples", "64", "--progress", "false", "--speed", "false",
              "--attention-figures", "false", "--cache-dir", str(tmp_path / "cache")]
    single, ddp = train_in_one_and_two_processes(common, tmp_path)
    assert "device cpu x 2" in ddp.stdout                        # two processes took part
    assert ddp.stdout.count("test accuracy") == 4                # only rank 0 prints: teacher and three rows
    # measured: at most 2e-5 apart (summation order, amplified by Adam's first steps); 1e-3 with per-shard counts
    assert_same_weights(tmp_path, ("pretrain-teacher", "entailment-teacher", "entailment-dual",
                                   "entailment-soft+attention", "pretrain-student", "entailment-pretrain+soft+attention"))
    # the train records log the global batch's loss terms, not rank 0's shard's
    records = [map(json.loads, (tmp_path / folder / "metrics.jsonl").read_text().splitlines()) for folder in ("one", "two")]
    logged = [{(r["run"], r["step"]): r for r in folder if r["kind"] == "train"} for folder in records]
    assert logged[0].keys() == logged[1].keys() and len(logged[0]) >= 6
    for key, one in logged[0].items():
        for term in ("loss", "ground_truth", "mlm", "soft_label", "attention"):
            if term in one:
                assert logged[1][key][term] == pytest.approx(one[term], rel=1e-3, abs=1e-6), (key, term)


def test_ddp_with_unreadable_images_matches_one_process(tmp_path):
    """Real data, --missing-images skip: each process drops its own unreadable rows, so the shards of a
    batch differ in size, and one may be empty. Every loss divides by the global batch's count, and an
    empty shard still takes its step: two processes train the weights of one. (Before, the per-example
    losses weighed each shard the same, and a process whose whole shard was unreadable took the next
    batch alone.)"""
    import export
    from data import DATA_SIZES, DataConfig
    from loader import LoaderBatches, RealDataConfig, load_real_data
    data_cfg = DataConfig(**{**DATA_SIZES["tiny"], "train_examples": 64, "eval_examples": 32, "workers": 1,
                             "cache_dir": str(tmp_path / "cache")})
    root = export.export("snli-ve", tmp_path / "snli-ve", data_cfg)
    split = load_real_data(RealDataConfig(data="snli-ve", data_dir=str(root), val_examples=16, loader_workers=0),
                           image_side=32, patch_size=8, max_text_len=32).splits["entailment"]["train"]
    first_batch = [next(LoaderBatches(split, 16, 0, "cpu", rank=r, world=2).index_lists(0, 0)) for r in (0, 1)]
    broken = {path for i in first_batch[1] for path in split.image_paths[i]}      # rank 1's whole shard
    kept = [i for i in first_batch[0] if not set(split.image_paths[i]) & broken]  # rank 0's readable rows
    assert 0 < len(kept) < len(first_batch[0])   # rank 0 loses some of its rows too: shards of 0 and 1..7
    for path in broken:
        Path(path).write_bytes(Path(path).read_bytes()[:100])                     # truncated JPEGs
    common = ["--size", "tiny", "--data", "snli-ve", "--data-dir", str(root), "--val-examples", "16",
              "--loader-workers", "0", "--rows", "soft+attention", "--steps", "5", "--batch-size", "16",
              "--eval-every", "5", "--progress", "false", "--speed", "false", "--attention-figures", "false"]
    single, ddp = train_in_one_and_two_processes(common, tmp_path)
    assert "device cpu x 2" in ddp.stdout and "skipped" in single.stderr
    assert_same_weights(tmp_path, ("entailment-teacher", "entailment-soft+attention"))   # 8e-6; 3e-3 before


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


WAIT_IN_A_BARRIER = """
import os, sys, time
import torch.distributed as dist
from checkpoint import MetricsLog
from runtime import Runtime, interrupt_on_signals
rank, folder = int(sys.argv[1]), sys.argv[2]
interrupt_on_signals()
dist.init_process_group("gloo", init_method="file://" + os.path.join(folder, "store"), rank=rank, world_size=2)
if rank == 1:                          # never comes to the barrier while rank 0 lives
    while not os.path.exists(os.path.join(folder, "release")):
        time.sleep(0.05)
    os._exit(0)
open(os.path.join(folder, "waiting"), "w").close()
try:
    Runtime("cpu", MetricsLog(None), rank=0, world=2).barrier()
except KeyboardInterrupt:
    print("interrupted in the barrier", flush=True)
    os._exit(3)
"""


def test_a_process_waiting_in_a_barrier_hears_sigterm(tmp_path):
    """Rank 1 never comes to the barrier (as while rank 0 renders the benchmark, the other way round):
    SIGTERM must still stop rank 0 there, not only once every process has arrived."""
    import signal
    import time
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    ranks = [subprocess.Popen([sys.executable, "-c", WAIT_IN_A_BARRIER, str(rank), str(tmp_path)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    try:
        deadline = time.time() + 120
        while not (tmp_path / "waiting").exists():
            assert time.time() < deadline and ranks[0].poll() is None, ranks[0].communicate()[1][-2000:]
            time.sleep(0.05)
        time.sleep(0.5)                # rank 0 is inside the barrier now
        ranks[0].send_signal(signal.SIGTERM)
        stdout, stderr = ranks[0].communicate(timeout=60)
        assert ranks[0].returncode == 3 and "interrupted in the barrier" in stdout, stderr[-2000:]
    finally:
        (tmp_path / "release").touch()
        for process in ranks:
            try:
                process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


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
    configs = [dataclasses.asdict(c) for c in train.parse_args(argv)]   # as the parent of --jobs writes it
    (out / "config.json").write_text(json.dumps(dict(zip(("train", "data", "real_data"), configs))))
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
