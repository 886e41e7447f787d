"""`xattn bench extract-model` runs as a real process and prints consistent JSON (tiny workload; no timing asserted)."""
import json, os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_extract_model_command(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "xattn.cli", "bench", "extract-model", "--extractors", "i3d_r50,clip_vitb32",
           "--device", "cpu", "--size", "32", "--batch-sizes", "1,2", "--min-time", "0.01", "--matmul-n", "128",
           "--threads", "1", "--out", str(tmp_path / "bench.json")]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    assert doc == json.loads((tmp_path / "bench.json").read_text())
    assert doc["threads"] == 1 and doc["matmul_fp32_gflops"]["reference"] > 0
    i3d, clip = doc["extractors"]["i3d_r50"], doc["extractors"]["clip_vitb32"]
    # a CNN gets fp32 with and without channels_last (and bf16 only where supported); a ViT no channels_last
    assert {(x["precision"], x["channels_last"]) for x in i3d["results"]} >= {("fp32", False), ("fp32", True)}
    assert all(not x["channels_last"] for x in clip["results"])
    assert any("bf16" in s for s in i3d["skipped"]) or any(x["precision"] == "bf16" for x in i3d["results"])
    for r_ in i3d["results"]:
        assert abs(r_["frames_per_s"] - 8 * r_["clips_per_s"]) <= 0.02 * r_["frames_per_s"] + 0.01   # 8-frame clips
        assert r_["best_batch"] in (1, 2) and set(r_["items_per_s_by_batch"]) == {"1", "2"}
        assert abs(r_["ratio_to_matmul"] - r_["gflops_achieved"] / doc["matmul_fp32_gflops"]["reference"]) < 0.01 + 0.01 * r_["ratio_to_matmul"]
    assert i3d["best"]["frames_per_s"] == max(x["frames_per_s"] for x in i3d["results"])
    assert i3d["peak_memory_mb"] > 0 and i3d["gflops_per_item"] > 0
