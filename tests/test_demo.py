"""The main job, run the three ways a user runs it: the `xattn demo` console script (papermill inside),
papermill on the notebook directly, and the Python API. Tiny configuration, real components."""
import json, re, os, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _env(tmp_path):
    env = dict(os.environ, XATTN_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(args, tmp_path, **kw):
    return subprocess.run(args, capture_output=True, text=True, env=_env(tmp_path), cwd=tmp_path, timeout=600, **kw)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    "One tiny `xattn demo` through papermill, with decoding workers (fork from a notebook kernel)."
    tmp = tmp_path_factory.mktemp("demo")
    rd = tmp / "run"
    r = _run([str(BIN / "xattn"), "demo", "--tiny", "--num-workers", "2", "--run-dir", str(rd)], tmp)
    return r, rd


def test_demo_cli_prints_run_dir_and_top1(demo_run):
    r, rd = demo_run
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"run directory: {rd}" in r.stdout
    assert "cross_attention top-1" in r.stdout and "single streams: semantic" in r.stdout
    assert "semantic stream: efficientnet_lite0, weights sha256:5793442" in r.stdout       # pretrained, from its pip package
    assert "motion stream: i3d_r50_flow, weights random-init" in r.stdout


def test_demo_run_directory_holds_everything(demo_run):
    r, rd = demo_run
    for f in ("config.json", "metrics.json", "environment.json", "log.txt", "checkpoints/model.pt",
              "figures/confusion.png", "09_pipeline.ipynb"):
        assert (rd / f).exists(), f
    assert (rd / "figures/confusion.png").read_bytes()[:4] == b"\x89PNG"
    nb = json.loads((rd / "09_pipeline.ipynb").read_text())
    assert nb["metadata"]["papermill"]["parameters"]["tiny"] is False
    assert nb["metadata"]["papermill"]["exception"] is None
    executed = [c for c in nb["cells"] if c["cell_type"] == "code" and c.get("execution_count")]
    assert len(executed) > 10
    cfg, m = json.loads((rd / "config.json").read_text()), json.loads((rd / "metrics.json").read_text())
    assert cfg["data"]["n_per_class"] == 4 and cfg["num_workers"] == 2
    assert set(m["models"]) == {"cross_attention", "semantic", "motion"}
    assert 0 <= m["top1"] <= m["top5"] <= 1
    n_classes = len(m["class_names"])
    assert n_classes == 12 and len(m["models"]["cross_attention"]["per_class"]) == n_classes


def test_demo_records_each_streams_weights(demo_run):
    "Without a DINOv3 checkpoint the semantic stream is the pretrained EfficientNet-Lite0; only the motion stream is random-init."
    _, rd = demo_run
    m = json.loads((rd / "metrics.json").read_text())
    prov = m["features"]["provenance"]
    assert set(prov) == {"efficientnet_lite0", "i3d_r50_flow"}
    assert prov["efficientnet_lite0"]["weights"].startswith("sha256:5793442") and prov["efficientnet_lite0"]["digest_known_match"] is True
    assert prov["i3d_r50_flow"]["weights"] == "random-init"
    assert m["weights"]["semantic"]["extractor"] == "efficientnet_lite0" and m["weights"]["motion"]["weights"] == "random-init"
    assert json.loads((rd / "config.json").read_text())["semantic"] == "efficientnet_lite0"   # the resolved name, not "auto"


def test_demo_reports_bad_videos_by_name(demo_run):
    _, rd = demo_run
    m = json.loads((rd / "metrics.json").read_text())
    reasons = {s["id"]: s["reason"] for s in m["skipped"]}
    assert len(reasons) == 2, reasons                           # one truncated file, one annotation without video
    assert any("no video" in r for r in reasons.values())
    assert all(r for r in reasons.values())
    total = sum(m["n_videos"].values())
    assert total == 48 - 1                                      # 48 clips + 1 annotation without video - 2 bad: all good ones used


def test_demo_relative_run_dir_lands_where_asked(tmp_path):
    "The kernel runs in nbs/; a relative run directory must still be relative to where the user ran xattn."
    r = _run([str(BIN / "xattn"), "demo", "--tiny", "--num-workers", "0", "--run-dir", "rel/run"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "rel/run/metrics.json").exists() and (tmp_path / "rel/run/09_pipeline.ipynb").exists()


def test_demo_without_weights_is_a_clear_error(tmp_path):
    r = _run([str(BIN / "xattn"), "demo", "--tiny", "--semantic", "dinov3_vits16plus", "--allow-random-init", "none",
              "--engine", "python", "--run-dir", str(tmp_path / "r")], tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert "dinov3_vits16plus" in r.stderr and "allow" in r.stderr


def test_demo_motion_stream_needs_weights_when_not_allowed(tmp_path):
    r = _run([str(BIN / "xattn"), "demo", "--tiny", "--allow-random-init", "none", "--engine", "python",
              "--run-dir", str(tmp_path / "r")], tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "I3D_8x8_R50.pyth" in r.stderr and "xattn weights fetch i3d_r50_flow" in r.stderr


def test_papermill_runs_the_notebook_directly(tmp_path):
    out = tmp_path / "out.ipynb"
    r = _run([str(BIN / "papermill"), str(ROOT / "nbs/09_pipeline.ipynb"), str(out), "-p", "tiny", "True",
              "-p", "run_dir", str(tmp_path / "pm"), "--cwd", str(ROOT / "nbs"), "-k", "python3"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "pm/metrics.json").read_text())
    assert m["main"] == "cross_attention"


def test_paper_figures_from_the_run(demo_run, tmp_path):
    "papers/figures.ipynb (`make figures`) regenerates the paper's figures and tables from the finished run, into <run>/paper."
    r, rd = demo_run
    out = rd / "paper"
    p = subprocess.run([str(BIN / "papermill"), str(ROOT / "papers/figures.ipynb"), str(tmp_path / "paper.ipynb"),
                        "-p", "run_dir", str(rd), "-p", "embed_method", "pca", "-k", "python3", "--cwd", str(ROOT / "papers")],
                       capture_output=True, text=True, env=_env(rd.parent), timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    for name in ("confusion", "attention", "embeddings", "learning_curves", "reliability"):
        assert (out / "figures" / f"{name}.pdf").stat().st_size > 1000 and (out / "figures" / f"{name}.png").exists(), name
    m = json.loads((rd / "metrics.json").read_text())
    text = "".join("".join(o.get("text", "")) for c in json.loads((tmp_path / "paper.ipynb").read_text())["cells"] for o in c.get("outputs", []))
    shown = float(re.search(r"top-1 ([0-9.]+), ECE", text).group(1))
    assert abs(shown - m["top1"]) < 1e-4, (shown, m["top1"])                # the figures show the run's model
    emb = (out / "tables" / "embeddings.md").read_text()
    assert all(s in emb for s in ("semantic", "motion", "fused"))
    assert "| cross_attention |" in (out / "tables" / "models.md").read_text()
