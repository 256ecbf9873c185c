"""Where a training process runs: its device and dtype, its place among several processes,
and a clean stop on Ctrl-C; and `run_processes`, which runs several training programs at once.

Under `torchrun` every process runs train.py; `setup_distributed` joins them into one
process group (NCCL on GPUs, gloo on CPUs), and each takes its share of every global batch
(`shard`). Only rank 0 writes files and prints (`Runtime.write`, `Runtime.say`).
"""

import datetime
import os
import re
import signal
import subprocess
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist

from checkpoint import MetricsLog


def check_device_flags(device: str, dtype: str) -> None:
    """--device and --dtype (train.py and bench.py): raise ValueError naming the flag at fault."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ValueError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N")
    if dtype not in ("auto", "bf16", "fp32"):
        raise ValueError(f"--dtype must be auto, bf16 or fp32, got {dtype!r}")


def resolve_device(cfg):
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(cfg.device)  # a name torch knows: check_device_flags ran on the flags
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {cfg.device}: CUDA is not available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise SystemExit(f"error: --device {cfg.device}: this machine has {torch.cuda.device_count()} GPU(s)")
    if device.type == "cuda" and device.index is not None:   # what names no GPU (CUDA events, streams) runs there too
        torch.cuda.set_device(device)
    return device


def uses_bf16(cfg, device) -> bool:
    return cfg.dtype == "bf16" or (cfg.dtype == "auto" and device.type == "cuda")


def autocast_for(cfg, device):
    """bf16 autocast on CUDA (matmuls in bf16, soft-max and LayerNorm in fp32), plain fp32 on CPU."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if uses_bf16(cfg, device) else nullcontext()


@contextmanager
def eval_mode(*models):
    """Evaluate `models` (None entries skipped) in eval mode, then give each back the train/eval mode it
    had, also when the evaluation raises: a frozen teacher stays in eval mode, a student in training
    goes on training."""
    models = [m for m in models if m is not None]
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)


COMPILED_VARIANTS = 64   # compiled graphs torch.compile may keep per function (its default: 8)


def allow_compiled_variants() -> None:
    """--compile: keep a compiled graph for every variant of a forward that one train.py process meets.
    Its stages, tasks and rows call the same forward in their own ways (train or eval mode, gradients
    on or off, with or without attention details): the teacher's meets 11 in a whole table. Past 8,
    torch.compile's default, it would run the rest eagerly, with only a warning."""
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, COMPILED_VARIANTS)


def allow_tf32(device) -> None:
    """On CUDA, let fp32 matmuls (the attention-distillation logits, all of --dtype fp32) use TF32 tensor cores."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


@dataclass
class Runtime:
    """Where this process stands: its device, its rank among `world` processes (torchrun), its log.
    Only rank 0 writes files and prints."""
    device: torch.device
    log: MetricsLog
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def write(self, **record):
        if self.main:
            self.log.write(**record)

    def say(self, text):
        if self.main:
            print(text)

    def barrier(self):
        """Wait here until every process has come. Polled rather than blocking: Python runs a signal
        handler only between bytecodes, so a process blocked in dist.barrier() (while rank 0 renders
        the benchmark, say) would not hear Ctrl-C or SIGTERM until all the others arrived."""
        if self.world > 1:
            arrived = dist.barrier(async_op=True)
            while not arrived.is_completed():
                time.sleep(0.01)


def launched_processes() -> int:
    """How many processes torchrun started (its WORLD_SIZE); 1 without torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup_distributed(cfg):
    """Under torchrun (WORLD_SIZE > 1) join the process group: NCCL on GPUs, gloo on CPUs.
    Returns (rank, world size, device)."""
    world, device = launched_processes(), resolve_device(cfg)
    if world == 1:
        return 0, 1, device
    if device.type == "cuda":   # each process its own GPU, chosen before NCCL starts
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    # An hour, not NCCL's default ten minutes: rank 0 alone renders the benchmark's cache once.
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=1))
    if cfg.batch_size % world:
        raise SystemExit(f"error: --batch-size {cfg.batch_size} must be divisible by the {world} processes")
    return dist.get_rank(), world, device


def shard(batch, rt):
    """This process's rows of the global batch: every world-th row from its rank on."""
    if rt.world == 1:
        return batch
    return {key: value[rt.rank::rt.world] for key, value in batch.items()}


class StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM (`kill`, `timeout`, a job scheduler's notice) sets a flag; the loop
    finishes its step, saves, and exits cleanly. A second signal stops at once, unless it comes within
    REPEAT_S of the first: torchrun and job schedulers often deliver one stop twice."""
    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    REPEAT_S = 2.0

    def __init__(self):
        self.requested_at = None     # time.monotonic() of the first signal
        self.previous = {}

    @property
    def requested(self) -> bool:
        return self.requested_at is not None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self.handle) for sig in self.SIGNALS}
        return self

    def handle(self, signum, frame):
        if self.requested_at is None:
            self.requested_at = time.monotonic()
        elif time.monotonic() - self.requested_at > self.REPEAT_S:
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():   # None: installed outside Python; the default then
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


class Interrupt:
    """The handler of Ctrl-C and SIGTERM outside a training loop: raise KeyboardInterrupt, and remember
    that a stop came. C code that clears every error it meets (numpy/numpy#20596 lists such places)
    can lose the exception on its way; a long loop calls raise_if_interrupted() to raise it again."""

    def __init__(self):
        self.requested = False

    def __call__(self, signum, frame):
        self.requested = True
        raise KeyboardInterrupt


def interrupt_on_signals() -> Interrupt:
    """For a program's __main__: Ctrl-C and SIGTERM raise KeyboardInterrupt, which __main__ turns into
    one line. Inside a training loop StopRequest takes over (finish the step, save); outside one (building
    the benchmark, testing a checkpoint) a stop then ends with that line, not a stack trace or, for
    SIGTERM, a silent death. Set explicitly, so that a program started in the background hears Ctrl-C too."""
    handler = Interrupt()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
    return handler


def raise_if_interrupted() -> None:
    """KeyboardInterrupt if a stop signal came to an Interrupt handler and its exception was lost."""
    if any(isinstance(handler := signal.getsignal(sig), Interrupt) and handler.requested
           for sig in (signal.SIGINT, signal.SIGTERM)):
        raise KeyboardInterrupt


def shared_cpu_environment(jobs: int) -> dict:
    """The environment for `jobs` processes at once. Each gets its share of the threads torch uses
    in one process; by default every process would take them all, and they would slow one another
    down. A user's OMP_NUM_THREADS is kept."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, torch.get_num_threads() // jobs)))
    return env


def run_processes(commands: dict, jobs: int, say) -> None:
    """Run commands {name: (argv, log path)}, `jobs` at a time, each logging to its file and using its
    share of torch's CPU threads. Each runs in a session of its own, so a terminal's Ctrl-C reaches only
    this process, which passes it on once: the children finish their step, save and exit, and this
    process ends with a message, not a stack trace. SIGTERM and a failed child stop the others the
    same way; a failure raises SystemExit naming its log."""
    waiting, running = list(commands), {}       # running: name -> process
    env = shared_cpu_environment(min(jobs, len(commands)))
    # Ctrl-C and SIGTERM raise KeyboardInterrupt here, set explicitly: a process started from a script in
    # the background inherits SIGINT ignored, and would never pass a Ctrl-C on.
    previous = {}
    if threading.current_thread() is threading.main_thread():
        interrupt = Interrupt()
        previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                name = waiting.pop(0)
                argv, log = commands[name]
                with open(log, "w") as f:
                    running[name] = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                                     env=env)
                say(f"{name}: started, log in {log}")
            time.sleep(1)
            for name, process in list(running.items()):
                if process.poll() is None:
                    continue
                del running[name]
                if process.returncode != 0:
                    raise SystemExit(f"error: {name} failed (exit code {process.returncode}); its log: {commands[name][1]}")
                say(f"{name}: finished")
    except KeyboardInterrupt:
        logs = ", ".join(commands[name][1] for name in running)
        raise SystemExit(f"\nstopped: each process was asked to finish its step and save (logs: {logs}). "
                         "Run the same command again to continue.") from None
    finally:
        for process in running.values():        # Ctrl-C, SIGTERM or a failure: the others save and exit
            process.send_signal(signal.SIGINT)
        for process in running.values():
            process.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
