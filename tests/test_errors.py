"""`xattn errors` end to end, as real processes, on a tiny `xattn demo` run (real video files, the pretrained semantic
stream, cross-attention and both single-stream baselines): the report has its sections and panels, its numbers are
those of `xattn evaluate` on the same checkpoint, and the stream agreement, confused pairs and hardest videos follow
from the predictions the run stored. A `xattn train` run has no baselines: the report says so, and takes them from
other runs with `--baselines`. A folder that is not a run is one line, exit 2."""
import json, os, subprocess, sys
from pathlib import Path
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("Most confused class pairs", "Per-class accuracy against frequency and length", "Where fusion helped or hurt",
            "Calibration per class", "Hardest videos: frames and attention")
PANELS = ("confused_pairs", "confusion", "class_accuracy", "streams", "class_calibration", "reliability", "hardest")


def _xattn(tmp, *args, timeout=900):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XATTN_CACHE": str(tmp/"cache"), "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "xattn.cli", *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=tmp)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    "A tiny demo run (python engine, its own dataset and store, not registered) and its error report."
    d = tmp_path_factory.mktemp("errors")
    r = _xattn(d, "demo", "--tiny", "--engine", "python", "--name", "tiny", "--run-dir", d/"run", "--dataset-root", d/"data",
               "--features", d/"features.h5", "--num-workers", "0", "--no-register")
    assert r.returncode == 0, r.stderr[-3000:]
    rep = _xattn(d, "errors", d/"run", "--out", d/"report", "--hardest", "3")
    assert rep.returncode == 0, rep.stderr[-3000:]
    return d, rep


def _npz(path):
    z = np.load(path)
    return z["probs"], z["labels"], [str(i) for i in z["ids"]]


def test_report_has_every_section_and_panel(demo):
    d, rep = demo
    assert rep.stdout.startswith(f"{d/'report'/'report.html'}: top-1 ")
    assert "fusion helped on" in rep.stdout
    page = (d/"report"/"report.html").read_text(encoding="utf-8")
    for s in SECTIONS: assert f"<h2>{s}</h2>" in page, s
    assert page.count('src="data:image/png;base64,') == len(PANELS)            # self-contained: panels embedded
    assert "src=\"http" not in page and "<script" not in page
    for k in PANELS: assert (d/"report"/f"{k}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", k


def test_numbers_agree_with_xattn_evaluate(demo):
    d, _ = demo
    cfg = json.loads((d/"run"/"config.json").read_text())
    ev = _xattn(d, "evaluate", "--checkpoint", d/"run"/"models"/"cross_attention"/"checkpoints"/"best.pt", "--store", d/"features.h5",
                "--dataset-root", d/"data", "--semantic", cfg["semantic"], "--motion", cfg["motion"], "--out", d/"eval")
    assert ev.returncode == 0, ev.stderr[-3000:]
    e, m = json.loads(ev.stdout.strip().splitlines()[-1]), json.loads((d/"eval"/"metrics.json").read_text())
    j = json.loads((d/"report"/"errors.json").read_text())
    s = j["summary"]
    assert s["n_videos"] == e["n_videos"] and s["top1"] == pytest.approx(e["top1"], abs=1e-12)
    for k in ("top5", "mean_class_accuracy", "ece"): assert s[k] == pytest.approx(e[k], abs=1e-6), k
    assert s["consistent"] is True
    assert [c["accuracy"] for c in j["classes"]] == pytest.approx(m["per_class"], abs=1e-9)
    assert [c["name"] for c in j["classes"]] == m["class_names"]


def test_pairs_streams_and_hardest_follow_from_the_predictions(demo):
    d, _ = demo
    j = json.loads((d/"report"/"errors.json").read_text())
    probs, labels, ids = _npz(d/"run"/"models"/"cross_attention"/"predictions.npz")
    preds = probs.argmax(1)
    # confused pairs: the largest off-diagonal counts, each with videos of exactly that mistake
    wrong = {}
    for t, p in zip(labels, preds):
        if t != p: wrong[(t, p)] = wrong.get((t, p), 0) + 1
    assert [p["count"] for p in j["pairs"]] == sorted(wrong.values(), reverse=True)[:len(j["pairs"])]
    for p in j["pairs"]:
        for ex in p["examples"]:
            i = ids.index(ex["id"]); assert (labels[i], preds[i]) == (p["true"], p["pred"])
    # stream agreement against the baselines' own predictions
    right = {k: dict(zip(v[2], v[0].argmax(1) == v[1])) for k, v in
             (("semantic", _npz(d/"run"/"models"/"semantic"/"predictions.npz")), ("motion", _npz(d/"run"/"models"/"motion"/"predictions.npz")))}
    fused = dict(zip(ids, preds == labels))
    agr = j["streams"]
    assert agr["available"] and agr["streams"] == ["semantic", "motion"] and sum(g["n"] for g in agr["groups"]) == len(ids)
    assert agr["helped"] == [v for v in ids if fused[v] and not right["semantic"][v] and not right["motion"][v]]
    assert agr["hurt"] == [v for v in ids if not fused[v] and (right["semantic"][v] or right["motion"][v])]
    # the hardest videos: highest -log p(true), with their frames decoded and the model's attention
    loss = -np.log(probs[np.arange(len(labels)), labels])
    assert [h["id"] for h in j["hardest"]] == [ids[i] for i in np.argsort(-loss, kind="stable")[:3]]
    assert all(h["frames_read"] and h["attention"] for h in j["hardest"])


def test_train_run_without_baselines_then_with_them(demo):
    d, _ = demo
    cfg = json.loads((d/"run"/"config.json").read_text())
    tr = _xattn(d, "train", "--store", d/"features.h5", "--dataset-root", d/"data", "--semantic", cfg["semantic"], "--motion", cfg["motion"],
                "--epochs", "1", "--batch-size", "8", "--dim", "16", "--heads", "2", "--depth", "1", "--run-dir", d/"train")
    assert tr.returncode == 0, tr.stderr[-3000:]
    r = _xattn(d, "errors", d/"train", "--hardest", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "no single-stream baselines" in r.stdout
    page = (d/"train"/"errors"/"report.html").read_text(encoding="utf-8")
    assert "no single-stream baseline predictions in this run" in page
    assert json.loads((d/"train"/"errors"/"errors.json").read_text())["streams"]["available"] is False
    r = _xattn(d, "errors", d/"train", "--hardest", "1", "--out", d/"train-vs", "--baselines",
               f"semantic={d/'run'/'models'/'semantic'},motion={d/'run'/'models'/'motion'}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((d/"train-vs"/"errors.json").read_text())["streams"]["streams"] == ["semantic", "motion"]


def test_not_a_run_is_one_line(demo):
    d, _ = demo
    r = _xattn(d, "errors", d/"data")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().count("\n") == 0 and "no metrics.json" in r.stderr
