"""Checkpoints and logs that survive crashes.

A checkpoint (like every file the project writes: `atomic_write`) is written to a temporary
file and renamed over the old one (atomic on POSIX), so a crash mid-write leaves the previous
checkpoint whole. Loading uses
`torch.load(weights_only=True)`: tensors and plain containers only, never code. A finished
run leaves a small JSON record in runs/, so re-running the same command skips it.
"""

import dataclasses
import errno
import json
import os

import torch


def fsync(f) -> None:
    """os.fsync, where the file system has it (some network and FUSE mounts do not: EINVAL, ENOTSUP)."""
    try:
        os.fsync(f.fileno())
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP):   # a real write error (EIO, ENOSPC) is raised
            raise


def atomic_write(path, write) -> None:
    """Write a file through a temporary one and a rename: readers (and a resumed run) see the old
    file or the new one, never half of each. `write(f)` fills the binary file object f."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp"   # per process: two processes never share one
    try:
        with open(temporary, "wb") as f:
            write(f)
            f.flush()
            fsync(f)   # on disk before the rename: a power cut cannot leave an empty file
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):   # the write failed: leave no litter beside the old file
            os.remove(temporary)


def save_png(path, image) -> None:
    """A Pillow image as a PNG file, atomically."""
    atomic_write(path, lambda f: image.save(f, format="PNG"))


def save_checkpoint(path, **state):
    atomic_write(path, lambda f: torch.save(state, f))


def same_tokenizer(state, tokenizer) -> bool:
    """Whether a checkpoint was made with `tokenizer` (one that records none is taken to be)."""
    return state.get("tokenizer", tokenizer.to_dict()) == tokenizer.to_dict()


def load_checkpoint(path, expect=None, tokenizer=None):
    """Load with weights_only=True; refuse a file that is truncated, or that was made for another
    model configuration (`expect`, a ModelConfig) or another tokenizer."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SystemExit(f"error: checkpoint {path} does not exist") from None
    except Exception as error:   # truncated, corrupt, or holding pickled code
        raise SystemExit(f"error: cannot load checkpoint {path} (truncated or not a checkpoint): {error}") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise SystemExit(f"error: {path}: not a checkpoint that this project wrote (no model weights)")
    if expect is not None and state.get("model_config") != dataclasses.asdict(expect):
        raise SystemExit(f"error: checkpoint {path} was made for model {state.get('model_config')}, "
                         f"not {dataclasses.asdict(expect)}")
    if tokenizer is not None and not same_tokenizer(state, tokenizer):
        raise SystemExit(f"error: checkpoint {path} was made with a different tokenizer")
    return state


def load_weights(model, path, state=None, **expect):
    """Load a checkpoint's weights into `model`; a file from another version of the code (parameters
    missing or unexpected) is one line naming it, not a stack trace. Returns the checkpoint."""
    state = state if state is not None else load_checkpoint(path, **expect)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise SystemExit(f"error: checkpoint {path} holds another version of {type(model).__name__} ({first}); "
                         f"it was written by other code: use another --out-dir, or --resume false") from None
    return state


def check_out_file(flag, path, extensions=()) -> None:
    """A file a program writes when it ends (bench.py's and probe.py's --out, data.py's --sheet), checked
    when it starts, so that no work is lost to a bad path: ValueError naming the flag."""
    folder = os.path.dirname(os.path.abspath(path))
    if not path or path.endswith(os.sep):
        raise ValueError(f"--{flag} {path!r}: give a file's name")
    if os.path.isdir(path):
        raise ValueError(f"--{flag} {path}: is a folder; give a file's name")
    if not os.path.isdir(folder):
        raise ValueError(f"--{flag} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"--{flag} {path}: cannot write in {folder}")
    if extensions and not path.lower().endswith(extensions):
        raise ValueError(f"--{flag} {path}: the file's name must end in {' or '.join(extensions)}")


def check_out_folder(flag, path) -> None:
    """A folder a program creates if missing and writes into (--cache-dir, export.py's --out), checked
    when it starts: ValueError naming the flag if it, or a folder above it, is a file."""
    if not path:
        raise ValueError(f"--{flag} '': give a folder's name")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):   # the nearest part of the path that is there
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f"--{flag} {path}: {existing} is a file, not a folder")


def write_json(path, obj):
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2).encode()))


RECORDED_FILES = ("checkpoint", "predictions")   # a run record's entries that name files of its folder


def record_run(out_dir, name, result):
    """Mark run `name` finished, with its result. Its files are named from out_dir, so that the folder
    can be moved, or named from another directory, and still read as finished."""
    result = {key: os.path.relpath(value, out_dir) if key in RECORDED_FILES and value else value
              for key, value in result.items()}
    write_json(os.path.join(out_dir, "runs", f"{name}.json"), result)


def forget_run(out_dir, name, *checkpoints):
    """A run of `name` starts from step 1: an earlier run's record and checkpoints go first, so that
    if this one is stopped, the next invocation resumes it rather than taking it for finished."""
    for path in (os.path.join(out_dir, "runs", f"{name}.json"), *checkpoints):
        if os.path.exists(path):
            os.remove(path)


def read_json(path):
    """A JSON file this project wrote (a run record, config.json); one line naming it if it is damaged."""
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SystemExit(f"error: {path}: not valid JSON ({error}); a hand edit, or a full disk?") from None
    except OSError as error:   # e.g. a folder of that name
        raise SystemExit(f"error: {path}: cannot read it ({error.strerror})") from None


def read_run_record(path) -> dict:
    """One runs/*.json record (train.py's record_run), its files named as paths one can open; one line
    naming it if it is not a record."""
    result = read_json(path)
    if not isinstance(result, dict):
        raise SystemExit(f"error: {path}: not a run record that train.py wrote")
    out_dir = os.path.dirname(os.path.dirname(path))   # records live in {out_dir}/runs/
    for key in RECORDED_FILES:
        if isinstance(result.get(key), str):
            inside = os.path.join(out_dir, result[key])
            # older records named their files as --out-dir was spelt, from the directory train.py ran in
            result[key] = inside if os.path.exists(inside) or not os.path.exists(result[key]) else result[key]
    return result


def finished_run(out_dir, name):
    """The result of run `name` if an earlier invocation finished it, else None."""
    path = os.path.join(out_dir, "runs", f"{name}.json")
    if not os.path.exists(path):
        return None
    result = read_run_record(path)
    if not isinstance(result.get("checkpoint"), str):   # every record train.py writes names its checkpoint
        raise SystemExit(f"error: {path}: a run record without its checkpoint; delete it to train the run again")
    return result if os.path.exists(result["checkpoint"]) else None


class MetricsLog:
    """Line-per-record JSON log, readable by any plotting tool."""

    def __init__(self, path):
        self.path = path

    def write(self, **record):
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def prepare_out_dir(out_dir):
    """Create the run's folder and check that it is writable: one line of error, not a stack trace."""
    try:
        os.makedirs(out_dir, exist_ok=True)
        probe = os.path.join(out_dir, f".write-test.{os.getpid()}")   # per process: seeds' processes start together
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as error:
        raise SystemExit(f"error: --out-dir {out_dir}: cannot write there ({error.strerror})") from None
