"""Several processes agree with one: torchrun's DDP trains the weights of one process (also where real
data's unreadable images leave shards of different sizes), --jobs trains each seed as one process
would, and they share the CPU and stop together, each saved."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train
from runtime import Runtime, run_processes, shard

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
