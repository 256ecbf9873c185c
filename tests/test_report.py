"""The results table: mean ± std over seeds, missing runs marked, and tables merged from several folders."""

import json

import pytest
import torch

import report


def result(task, row, seed, accuracy, families=None):
    return {"run": f"{task}-{row}-seed{seed}", "task": task, "row": row, "seed": seed, "accuracy": accuracy,
            "per_family": families or {"F1": accuracy}}


def write_runs(folder, results, size="small", seeds="0", real_data=None, **train):
    (folder / "runs").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"train": {"size": size, "seeds": seeds, "steps": 6000, **train},
                                                    "data": {"cache_dir": str(folder)}, "real_data": real_data or {}}))
    for r in results:
        (folder / "runs" / f"{r['run']}.json").write_text(json.dumps(r))
    (folder / "runs" / "pretrain-teacher-seed0.json").write_text(json.dumps({"checkpoint": "x.pt", "val": 60.0}))


def test_cells_are_mean_and_sample_std_over_seeds_and_say_when_runs_are_missing():
    results = [result("vqa", "teacher", 0, 70.0), result("vqa", "teacher", 1, 74.0), result("vqa", "dual", 0, 61.0)]
    table = report.results_table(results, ["vqa", "entailment"], ["teacher", "dual"], [0, 1])
    # mean 72, sample std sqrt(((70-72)^2 + (74-72)^2) / 1) = 2.83
    assert "| teacher | 72.0 ± 2.8 | - |" in table
    assert "| dual | 61.0 (n=1) | - |" in table
    assert "| F1 | 72.0 ± 2.8 | 61.0 (n=1) |" in table
    assert "| teacher | 70.0 |" in report.results_table(results, ["vqa"], ["teacher"], [0])   # one seed: no spread


def test_the_program_merges_seeds_from_several_folders(tmp_path, capsys):
    write_runs(tmp_path / "a", [result("reasoning", "dual", 0, 50.0), result("reasoning", "teacher", 0, 90.0)])
    write_runs(tmp_path / "b", [result("reasoning", "dual", 1, 54.0), result("reasoning", "teacher", 1, 92.0),
                                result("reasoning", "teacher", 0, 90.0)],   # a copy of a's teacher: counted once
               seeds="1", rows="teacher,dual", attention_figures=False)   # seeds, rows, figures, cache may differ
    table = report.main([str(tmp_path / "a"), str(tmp_path / "b")])
    assert "over seeds 0, 1." in table
    lines = table.splitlines()
    assert lines.index("| teacher | 91.0 ± 1.4 |") < lines.index("| dual | 52.0 ± 2.8 |")   # the order of train.ROWS
    assert table in capsys.readouterr().out


def test_the_program_refuses_a_run_found_twice_other_settings_and_folders_without_runs(tmp_path):
    write_runs(tmp_path / "a", [result("vqa", "dual", 0, 50.0)])
    write_runs(tmp_path / "b", [result("vqa", "dual", 0, 51.0)])
    with pytest.raises(SystemExit, match="vqa-dual-seed0 is in both"):
        report.main([str(tmp_path / "a"), str(tmp_path / "b")])
    with pytest.raises(SystemExit, match="no config.json"):
        report.main([str(tmp_path / "empty")])
    write_runs(tmp_path / "c", [result("vqa", "dual", 1, 51.0)], size="tiny")
    with pytest.raises(SystemExit, match="different settings: --size"):
        report.main([str(tmp_path / "a"), str(tmp_path / "c")])
    # a config.json written before a flag existed holds that flag's default
    write_runs(tmp_path / "e", [result("vqa", "dual", 2, 52.0)], real_data={"vqa_train_val": False})
    assert "| dual | 51.0 ± 1.4 |" in report.main([str(tmp_path / "a"), str(tmp_path / "e")])
    write_runs(tmp_path / "f", [result("vqa", "dual", 3, 52.0)], real_data={"vqa_train_val": True})
    with pytest.raises(SystemExit, match="different settings: --vqa-train-val"):
        report.main([str(tmp_path / "a"), str(tmp_path / "f")])
    write_runs(tmp_path / "d", [])
    with pytest.raises(SystemExit, match="only pre-training"):
        report.main([str(tmp_path / "d")])
    # damaged files: one line naming each
    (tmp_path / "a" / "runs" / "vqa-dual-seed0.json").write_text("")
    with pytest.raises(SystemExit, match=r"vqa-dual-seed0.json: not valid JSON"):
        report.main([str(tmp_path / "a")])
    (tmp_path / "a" / "runs" / "vqa-dual-seed0.json").write_text('{"task": "vqa", "row": "dual"}')
    with pytest.raises(SystemExit, match=r"vqa-dual-seed0.json: a run record without accuracy, per_family, seed"):
        report.main([str(tmp_path / "a")])
    for damage in ({"accuracy": "high"}, {"seed": "0"}, {"per_family": [50.0]}):
        (tmp_path / "a" / "runs" / "vqa-dual-seed0.json").write_text(json.dumps({**result("vqa", "dual", 0, 50.0),
                                                                                 **damage}))
        with pytest.raises(SystemExit, match=r"vqa-dual-seed0.json: not a run record that train.py wrote"):
            report.main([str(tmp_path / "a")])
    (tmp_path / "a" / "runs" / "vqa-dual-seed0.json").unlink()
    (tmp_path / "a" / "runs" / "vqa-dual-seed0.json").mkdir()   # a folder of that name
    with pytest.raises(SystemExit, match=r"vqa-dual-seed0.json: cannot read it"):
        report.main([str(tmp_path / "a")])
    (tmp_path / "a" / "runs" / "vqa-dual-seed0.json").rmdir()
    (tmp_path / "a" / "runs" / "vqa-dual-seed0.json").write_text("[]")
    with pytest.raises(SystemExit, match=r"vqa-dual-seed0.json: not a run record"):
        report.main([str(tmp_path / "a")])
    for config in ("[]", '{"train": {}, "data": []}'):
        (tmp_path / "a" / "config.json").write_text(config)
        with pytest.raises(SystemExit, match=r"config.json: not a config.json that train.py wrote"):
            report.main([str(tmp_path / "a")])


def test_the_attention_table_averages_seeds_and_marks_what_is_missing():
    def attention(entropy, kl=None):
        one = {"teacher_entropy": entropy, **({"kl": kl, "student_entropy": 0.5} if kl is not None else {})}
        return {"text_to_image": one, "image_to_text": {k: v / 2 for k, v in one.items()}}
    results = [{**result("vqa", "teacher", s, 70.0), "attention": attention(0.9 - 0.1 * s)} for s in (0, 1)]
    results += [{**result("vqa", "dual", 0, 60.0), "attention": attention(0.9, kl=0.25)}]
    table = report.results_table(results, ["vqa", "entailment"], ["teacher", "dual"], [0, 1])
    assert "| teacher: entropy / uniform | 0.850 / 0.425 | - |" in table
    assert "| dual: KL | 0.25 / 0.125 (n=1) | - |" in table
    assert "Cross-modal attention" not in report.results_table([result("vqa", "dual", 0, 60.0)], ["vqa"], ["dual"], [0])


def test_the_gap_table_takes_each_seeds_share_of_its_own_gap_and_skips_gaps_within_noise():
    results = [result("vqa", "teacher", 0, 80.0), result("vqa", "dual", 0, 60.0), result("vqa", "soft", 0, 75.0),
               result("vqa", "teacher", 1, 70.0), result("vqa", "dual", 1, 50.0), result("vqa", "soft", 1, 55.0),
               result("entailment", "teacher", 0, 51.0), result("entailment", "dual", 0, 50.0),
               result("entailment", "soft", 0, 60.0)]
    table = report.results_table(results, ["vqa", "entailment"], ["teacher", "dual", "soft"], [0, 1])
    # vqa: gaps 20 and 20; shares (75-60)/20 = 75% and (55-50)/20 = 25%: mean 50, sample std 35.4.
    # entailment: seed 0's gap of 1 point is under MIN_GAP, so no share is taken
    assert "| gap, teacher - dual | 20.0 ± 0.0 | 1.0 (n=1) |" in table
    assert "| soft: gap closed | 50.0 ± 35.4 | - |" in table
    assert "gap closed" not in report.results_table(results, ["vqa"], ["teacher", "soft"], [0, 1])   # no dual row


def test_a_breakdown_that_older_runs_lack_averages_the_runs_that_have_it():
    results = [result("entailment", "teacher", 0, 60.0, {"B1": 60.0}),
               result("entailment", "teacher", 1, 64.0, {"B1": 64.0, "image with curtain": 58.0})]
    table = report.results_table(results, ["entailment"], ["teacher"], [0, 1])
    assert "| B1 | 62.0 ± 2.8 |" in table
    assert "| image with curtain | 58.0 (n=1) |" in table


def test_the_speed_column_times_texts_as_long_as_the_runs(monkeypatch):
    """The student's text tower costs the length its texts are padded to, so the speed-up is timed at the
    run's (the longest of its tasks' test splits; bench.py's own default, 16 tokens, could flatter it)."""
    import types
    import bench
    from train import TrainConfig
    timed = []

    def spy(cfg):
        timed.append(cfg)
        return real_run(cfg)
    splits = {task: {"test": types.SimpleNamespace(text_ids=torch.zeros(3, length))} for task, length in
              (("vqa", 40), ("entailment", 24))}
    real_run, data = bench.run, types.SimpleNamespace(tokenizer=[0] * 40, splits=splits, num_classes=lambda task: 7)
    monkeypatch.setattr(bench, "run", spy)
    speedups = report.inference_speedups(TrainConfig(size="tiny", eval_batch_size=8), data, torch.device("cpu"))
    assert [(c.text_len, c.vocab_size, c.num_answers, c.compile) for c in timed] == [(40, 40, 7, False)]
    assert speedups["teacher"] == "1.0x" and speedups["student"].endswith("x (images pre-computed)")
