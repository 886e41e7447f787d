"The ablation runner end to end: the synthetic benchmark command on the tiny demo dataset (real videos, real extractors)."
import csv, json, os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_synthetic_benchmark_cli_tiny(tmp_path):
    out = tmp_path/"bench"
    r = subprocess.run([sys.executable, "-m", "xattn.cli", "ablate", "synthetic", "--tiny", "--seeds", "0,1",
                        "--kinds", "cross_attention,motion", "--train", "epochs=2", "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    lines = r.stdout.splitlines()
    assert lines[0] == "| kind | seeds | top1 | top5 | mean_class_accuracy | ece | params |"
    assert [l.split(" | ")[0] for l in lines[2:4]] == ["| cross_attention", "| motion"]
    rows = list(csv.DictReader(open(out/"runs.csv")))
    assert [(r["kind"], r["seed"], r["status"]) for r in rows] == [("cross_attention", "0", "ok"), ("cross_attention", "1", "ok"),
                                                                   ("motion", "0", "ok"), ("motion", "1", "ok")]
    summary = list(csv.DictReader(open(out/"summary.csv")))
    top1 = [float(r["top1"]) for r in rows[:2]]
    assert float(summary[0]["top1_mean"]) == sum(top1) / 2
    bench = json.loads((out/"benchmark.json").read_text())
    assert bench["provenance"]["efficientnet_lite0"]["weights"].startswith("sha256:5793442")     # the pretrained semantic stream
    assert bench["provenance"]["i3d_r50_flow"]["weights"] == "random-init"
    run = Path(rows[0]["run_dir"])
    m = json.loads((run/"metrics.json").read_text())
    assert m["selected_on"] == "selection" and m["epochs_run"] == 2
    assert json.loads((run/"config.json").read_text())["model"]["kind"] == "cross_attention"
    assert (run/"06b_train_run.out.ipynb").exists()
