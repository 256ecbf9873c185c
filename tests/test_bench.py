"""bench.py runs on a CPU at the tiny size and prints its table (no test asserts a time)."""

import json

import bench


def test_bench_runs_at_tiny_size_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rows = bench.main(["--size", "tiny", "--device", "cpu", "--batch-size", "16", "--repeats", "2", "--warmup", "1",
                       "--retrieval-images", "8", "--retrieval-texts", "8", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "| scratch | teacher |" in printed and "soft labels + attention" in printed
    names = {(r["row"], r["model"]) for r in rows}
    assert ("precomputed", "student") in names and ("retrieval", "student") in names
    assert all(r["ms"] > 0 and r["gflops_per_sample"] > 0 for r in rows)
    assert json.loads(out.read_text())["rows"][0]["row"] == "scratch"


def test_flop_count_matches_a_hand_count():
    # one layer, width 4, ratio 4, 2 tokens: per token 2*(4+8)*16 = 384 FLOPs, so 768, plus 2*2*2*2*4 = 64 for attention
    assert bench.encoder_flops(1, 4, 4, 2) == 768 + 64
