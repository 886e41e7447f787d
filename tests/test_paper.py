"""`xattn paper` end to end, as real processes: every papers/ notebook through papermill on a tiny demo run (real videos,
fusion and both single-stream baselines) and an ablation folder. Run twice with the same inputs it writes byte-identical
tables and figures, and its manifest lists every file it wrote, each figure and table with the sha256 of the configs and
feature stores it came from. Missing inputs are one line, exit 2."""
import hashlib, json, os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
TABLES = ("ablation", "dataset", "embeddings", "errors_classes", "errors_confused_pairs", "errors_streams", "models")
FIGURES = ("ablation_top1", "attention", "confusion", "dataset_classes", "embeddings", "learning_curves", "reliability",
           *(f"errors_{k}" for k in ("class_accuracy", "class_calibration", "confused_pairs", "confusion", "hardest", "reliability", "streams")))


def _env(tmp):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XATTN_CACHE": str(tmp/"cache"), "MPLBACKEND": "Agg"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"     # papermill's python3 kernel
    return env


def _xattn(tmp, *args, timeout=900):
    return subprocess.run([sys.executable, "-m", "xattn.cli", *map(str, args)], capture_output=True, text=True, env=_env(tmp),
                          timeout=timeout, cwd=tmp)


# An ablation folder as `xattn ablate` leaves it (runs.csv, summary.csv from `xattn.ablate.summarize`, ablation.json), from
# real `xattn.train` runs of two kinds x two seeds on the toy feature store: seconds, where papermill runs would take minutes
# (`xattn ablate` itself is tested in test_ablate.py).
ABLATION = """
import sys, pandas as pd
from pathlib import Path
from xattn.core import save_json
from xattn.features import write_toy_dataset, TOY_SEMANTIC, TOY_MOTION
from xattn.train import run_training
from xattn.ablate import summarize, summary_markdown
out = Path(sys.argv[1]); toy = write_toy_dataset(out/"toy", n_videos=36, noise=0.8, seed=1)
data = dict(store=str(toy/"features.h5"), dataset_root=str(toy), semantic=TOY_SEMANTIC, motion=TOY_MOTION)
rows = []
for kind in ("cross_attention", "motion"):
    for seed in (0, 1):
        rd = out/"points"/f"kind={kind}"/f"seed{seed}"
        m = run_training(data, dict(kind=kind, dim=16, heads=2, depth=1), dict(epochs=2, batch_size=8, seed=seed), run_dir=rd)["metrics"]
        rows.append(dict(point=f"kind={kind}", seed=seed, run_dir=str(rd), kind=kind, status="ok", **{k: m[k] for k in ("top1", "top5", "mean_class_accuracy", "ece")},
                         best_epoch=m["best_epoch"], params=m["parameters"]["trainable"]))
pd.DataFrame(rows).to_csv(out/"runs.csv", index=False)
s = summarize(rows, axes=["kind"]); s.to_csv(out/"summary.csv", index=False)
(out/"summary.md").write_text(summary_markdown(s, axes=["kind"]))
save_json(dict(store=str(toy/"features.h5"), dataset_root=str(toy), grid={"kind": ["cross_attention", "motion"]}, seeds=[0, 1]), out/"ablation.json")
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("paper")
    r = _xattn(d, "demo", "--tiny", "--engine", "python", "--name", "tiny", "--run-dir", d/"run", "--dataset-root", d/"data",
               "--features", d/"features.h5", "--num-workers", "0", "--no-register")
    assert r.returncode == 0, r.stderr[-3000:]
    a = subprocess.run([sys.executable, "-c", ABLATION, str(d/"ablation")], capture_output=True, text=True, env=_env(d), timeout=600, cwd=d)
    assert a.returncode == 0, a.stderr[-3000:]
    return d


def _files(out: Path) -> dict:
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in out.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def twice(inputs):
    d = inputs
    outs = []
    for name in ("p1", "p2"):
        r = _xattn(d, "paper", "--run", d/"run", "--ablation", d/"ablation", "--out", d/name)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        assert r.stdout.startswith(f"{d/name}: {len(FIGURES)} figures (PNG + PDF), {len(TABLES)} tables (Markdown + LaTeX) from 1 run(s) and 1 ablation(s)")
        outs.append(d/name)
    return outs


def test_same_inputs_same_tables_and_figures(twice):
    a, b = (_files(o) for o in twice)
    tables = {f"tables/{t}.{e}" for t in TABLES for e in ("md", "tex")}
    figures = {f"figures/{f}.{e}" for f in FIGURES for e in ("png", "pdf")}
    assert {k for k in a if k.startswith("tables/")} == tables
    assert {k for k in a if k.startswith("figures/")} == figures
    for k in sorted(tables | figures): assert a[k] == b[k], f"{k} differs between two runs with the same inputs"
    assert "$" in (twice[0]/"tables"/"ablation.tex").read_text() and " ± " in (twice[0]/"tables"/"ablation.md").read_text()   # mean ± std


def test_manifest_lists_every_file_with_its_sources(twice, inputs):
    d = inputs
    for out in twice:
        man = json.loads((out/"manifest.json").read_text())
        files = _files(out); files.pop("manifest.json")
        listed = {a["path"]: a["sha256"] for a in man["artifacts"]} | {o["path"]: o["sha256"] for o in man["other_files"]}
        assert listed == files                                                    # every file written, with its sha256
        assert {o["kind"] for o in man["other_files"]} == {"executed notebook", "artifact record"}
        art = {a["path"]: a for a in man["artifacts"]}
        run_cfg, store = str((d/"run"/"config.json").resolve()), str((d/"features.h5").resolve())
        for p in ("tables/models.md", "figures/errors_hardest.pdf", "figures/dataset_classes.png"):
            assert art[p]["configs"][run_cfg] == hashlib.sha256((d/"run"/"config.json").read_bytes()).hexdigest(), p
            assert art[p]["stores"] == {store: hashlib.sha256((d/"features.h5").read_bytes()).hexdigest()}, p
        ab = art["tables/ablation.tex"]
        assert ab["ablations"] == [str((d/"ablation").resolve())] and ab["runs"] == []
        assert str((d/"ablation"/"summary.csv").resolve()) in ab["configs"]
    m1, m2 = (json.loads((o/"manifest.json").read_text()) for o in twice)
    assert [(a["path"], a["sha256"]) for a in m1["artifacts"]] == [(a["path"], a["sha256"]) for a in m2["artifacts"]]


def test_missing_inputs_are_one_line(inputs):
    d = inputs
    r = _xattn(d, "paper", "--out", d/"none")
    assert r.returncode == 2 and "give the runs to draw from" in r.stderr and r.stderr.strip().count("\n") == 0
    r = _xattn(d, "paper", "--run", d/"run", "--ablation", d/"data", "--out", d/"none")
    assert r.returncode == 2 and "no summary.csv" in r.stderr
