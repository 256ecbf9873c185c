"""Checkpoints are atomic, safe to load, and refuse what does not fit; finished runs are skipped."""

import os

import pytest
import torch

import train
from checkpoint import finished_run, load_checkpoint, load_weights, prepare_out_dir, record_run, save_checkpoint
from model import DualEncoder, model_config


def test_save_is_atomic_and_round_trips(tmp_path):
    path = str(tmp_path / "c" / "x.pt")
    save_checkpoint(path, model={"w": torch.ones(3)}, step=4)
    assert not os.path.exists(path + ".tmp")
    state = load_checkpoint(path)
    assert state["step"] == 4 and torch.equal(state["model"]["w"], torch.ones(3))


def test_a_file_is_on_disk_before_it_is_renamed_into_place(tmp_path, monkeypatch):
    """fsync, then rename: else a power cut after the rename can leave an empty file where the old one was."""
    import checkpoint
    calls = []
    monkeypatch.setattr(checkpoint.os, "fsync", lambda fd: calls.append("fsync"))
    real_replace = os.replace
    monkeypatch.setattr(checkpoint.os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b)))
    checkpoint.write_json(str(tmp_path / "x.json"), {"a": 1})
    assert calls == ["fsync", "replace"]
    import errno

    def fsync_fails(code):
        def fsync(fd):
            raise OSError(code, os.strerror(code))
        return fsync
    monkeypatch.setattr(checkpoint.os, "fsync", fsync_fails(errno.EINVAL))   # a file system without fsync
    checkpoint.write_json(str(tmp_path / "x.json"), {"a": 2})
    assert checkpoint.read_json(str(tmp_path / "x.json")) == {"a": 2}
    monkeypatch.setattr(checkpoint.os, "fsync", fsync_fails(errno.EIO))      # a real write error
    with pytest.raises(OSError):
        checkpoint.write_json(str(tmp_path / "x.json"), {"a": 3})
    assert checkpoint.read_json(str(tmp_path / "x.json")) == {"a": 2} and os.listdir(tmp_path) == ["x.json"]


@pytest.mark.parametrize("writer", ["vqa predictions", "png"])
def test_a_write_that_fails_leaves_the_old_file_whole(writer, tmp_path, monkeypatch):
    """The VQA server's results file and the PNGs are written like checkpoints: a failure (here, at the
    rename) leaves the file of the run before intact and no temporary file beside it."""
    import checkpoint
    from PIL import Image
    from realdata import write_vqa_results
    path = tmp_path / ("results.json" if writer == "vqa predictions" else "figure.png")
    path.write_bytes(b"the earlier run's file")

    def fail(a, b):
        raise OSError("disk full")
    monkeypatch.setattr(checkpoint.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        if writer == "vqa predictions":
            write_vqa_results(path, [1, 2], ["yes", "2"])
        else:
            checkpoint.save_png(path, Image.new("RGB", (4, 4)))
    assert path.read_bytes() == b"the earlier run's file" and os.listdir(tmp_path) == [path.name]


def test_truncated_checkpoint_is_refused_with_its_name(tmp_path):
    path = str(tmp_path / "x.pt")
    save_checkpoint(path, model=DualEncoder(model_config("tiny")).state_dict())
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(SystemExit, match="x.pt"):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [torch.zeros(3), {"step": 4}, {"model": [1, 2]}])
def test_a_loadable_file_that_is_not_a_checkpoint_is_refused_with_its_name(content, tmp_path):
    path = str(tmp_path / "weights.pt")
    torch.save(content, path)
    with pytest.raises(SystemExit, match="weights.pt: not a checkpoint that this project wrote"):
        load_checkpoint(path)


def test_code_in_a_checkpoint_is_never_run(tmp_path):
    path = str(tmp_path / "evil.pt")

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))
    torch.save({"model": Payload()}, path)
    with pytest.raises(SystemExit, match="evil.pt"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def test_checkpoint_of_another_size_is_refused(tmp_path):
    path = str(tmp_path / "x.pt")
    tiny = model_config("tiny")
    save_checkpoint(path, model={}, model_config=train.dataclasses.asdict(tiny))
    load_checkpoint(path, expect=tiny)
    with pytest.raises(SystemExit, match="made for model"):
        load_checkpoint(path, expect=model_config("tiny", n_layer=3))


def test_finished_runs_are_recorded_and_found(tmp_path):
    assert finished_run(str(tmp_path), "a") is None
    ckpt = tmp_path / "a.pt"
    ckpt.write_bytes(b"")
    record_run(str(tmp_path), "a", {"accuracy": 50.0, "checkpoint": str(ckpt)})
    assert finished_run(str(tmp_path), "a")["accuracy"] == 50.0
    ckpt.unlink()   # a record whose checkpoint is gone does not count
    assert finished_run(str(tmp_path), "a") is None
    (tmp_path / "runs" / "a.json").write_text("")   # a damaged record is one line naming it
    with pytest.raises(SystemExit, match=r"runs/a.json: not valid JSON"):
        finished_run(str(tmp_path), "a")
    (tmp_path / "runs" / "a.json").write_text("[]")
    with pytest.raises(SystemExit, match=r"runs/a.json: not a run record"):
        finished_run(str(tmp_path), "a")
    (tmp_path / "runs" / "a.json").write_text('{"accuracy": 50.0}')   # not taken for finished, nor a KeyError later
    with pytest.raises(SystemExit, match=r"runs/a.json: a run record without its checkpoint"):
        finished_run(str(tmp_path), "a")


def test_checkpoint_with_another_tokenizer_is_refused(tmp_path):
    from data import Tokenizer
    path = str(tmp_path / "x.pt")
    mine, other = Tokenizer(["red", "circle"]), Tokenizer(["blue", "square"])
    save_checkpoint(path, model={}, tokenizer=mine.to_dict())
    load_checkpoint(path, tokenizer=mine)
    with pytest.raises(SystemExit, match="different tokenizer"):
        load_checkpoint(path, tokenizer=other)


def test_weights_from_another_version_of_the_code_are_one_line_naming_the_file(tmp_path):
    """E.g. a teacher saved when the MLM head had no decoder of its own: parameters missing, one unexpected."""
    from teacher import FusionEncoder
    path = str(tmp_path / "old-teacher.pt")
    teacher = FusionEncoder(model_config("tiny"))
    old = {k: v for k, v in teacher.state_dict().items() if not k.startswith("mlm_head.decoder")}
    save_checkpoint(path, model={**old, "mlm_head.bias": torch.zeros(5)})
    with pytest.raises(SystemExit, match="old-teacher.pt holds another version of FusionEncoder") as error:
        load_weights(teacher, path)
    assert "\n" not in str(error.value)
    save_checkpoint(path, model=teacher.state_dict())
    assert load_weights(FusionEncoder(model_config("tiny")), path)["model"].keys() == teacher.state_dict().keys()


def test_the_write_check_leaves_another_process_s_probe_alone(tmp_path):
    """Seeds' processes start together and each checks --out-dir is writable: a probe file shared by
    name was removed under the other one, which then said it 'cannot write there' (a CI failure)."""
    others = [tmp_path / ".write-test", tmp_path / f".write-test.{os.getpid() + 1}"]
    for other in others:
        other.write_text("another process's")
    prepare_out_dir(str(tmp_path))
    assert [other.read_text() for other in others] == ["another process's"] * 2
    assert sorted(os.listdir(tmp_path)) == sorted(other.name for other in others)   # its own probe is gone
