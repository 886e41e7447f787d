"""The views of `08a_attention_video` (`xattn.viz_video`) and `08b_temporal_views` (`xattn.viz_temporal`) on a small run:
a toy feature store with an untrained cross-attention model, real clips from ../shared/data/videos for the frames, and
one tiny `xattn demo` run (real extractors, registered) for attention on a video file. Each view builds; heatmap ticks
are timestamps and the frame thumbnails and strip are there; controls change the figure; exports write PNG and
self-contained HTML; `layer_activations` returns the right shapes and leaves no hook behind; the GIF has one frame per
time step."""
import base64, json, re
from pathlib import Path
import numpy as np
import pytest
import torch
from xattn.core import XattnError, repo_root

CLIPS = repo_root().parent/"shared"/"data"/"videos"
CLIP = CLIPS/"human2bot__task5_0.webm"          # 52 frames at 12 fps
TS = re.compile(r"\d+\.\d\ds")
pytestmark = pytest.mark.skipif(not CLIP.is_file(), reason=f"no shared real clip {CLIP}")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    "A toy store with train/validation splits, an untrained 2-block cross-attention model and a real clip per video."
    from xattn.features import DataConfig, FeatureDataset, TOY_MOTION, TOY_SEMANTIC, load_split, write_toy_dataset
    from xattn.model import FusionConfig, build_model
    root = write_toy_dataset(tmp_path_factory.mktemp("viz")/"toy", n_videos=24, frames=8, clips=2)
    cfg = DataConfig(store=root/"features.h5", dataset_root=root, semantic=TOY_SEMANTIC, motion=TOY_MOTION)
    (tr, names), (va, _) = load_split(cfg, "train.json"), load_split(cfg, "validation.json")
    splits = {s: FeatureDataset(cfg.store, r, TOY_SEMANTIC, TOY_MOTION, class_names=names) for s, r in (("train", tr), ("validation", va))}
    torch.manual_seed(0)
    model = build_model(FusionConfig(n_classes=len(names), dim=32, heads=4, depth=2), *splits["train"].dims).eval()
    clips = [CLIPS/n for n in ("human2bot__task5_0.webm", "mmaction2__rawvideo_part_0.mp4", "mmaction2__demo.mp4") if (CLIPS/n).is_file()]
    files = {r.id: clips[i % len(clips)] for i, r in enumerate(tr + va)}
    return dict(root=root, splits=splits, model=model, names=names, files=files, ds=splits["validation"])


@pytest.fixture(scope="module")
def va(toy):
    from xattn.viz_video import attention_from_dataset
    r = toy["ds"].records[0]
    return attention_from_dataset(toy["model"], toy["ds"], r.id, path=toy["files"][r.id])


def test_video_attention_heatmap_has_timestamps_thumbnails_and_strip(toy, va):
    from xattn.viz_video import plot_video_attention, video_attention_figure
    Ts, Tm = len(va.spans["sem"]), len(va.spans["mot"])
    fig = video_attention_figure(va, block=1, direction="sem_to_mot", head=2, frame=3)
    assert [t.type for t in fig.data] == ["heatmap", "image"]                  # heatmap + frame strip
    assert np.asarray(fig.data[0].z).shape == (Ts, Tm)
    ticks = list(fig.layout.xaxis.ticktext) + list(fig.layout.yaxis.ticktext)
    assert len(ticks) == Ts + Tm and all(TS.fullmatch(s) for s in ticks), ticks
    assert len(fig.layout.images) == Ts + Tm and all(i.source.startswith("data:image/png;base64,") for i in fig.layout.images)
    strip = np.asarray(fig.data[1].z)
    assert strip.shape[1] == len(va.strip_times) * va.strip.shape[2] and strip.std() > 5   # real frames side by side
    colours = [s.line.color for s in fig.layout.shapes if s.type == "rect"]
    assert colours.count("cyan") == 1 and colours.count("orange") >= 1      # slider frame, attended moments
    assert f"true: {toy['names'][va.label]}" in fig.layout.title.text and "top-5" in fig.layout.title.text
    f = plot_video_attention(va, 0, "mot_to_sem")
    assert [t.get_text() for t in f.axes[0].get_xticklabels()] == [f"{c:.2f}s" for c in va.spans["sem"].mean(1)]
    assert sum(type(a).__name__ == "AnnotationBbox" for a in f.axes[0].artists) == Ts + Tm
    assert len(f.axes[2].images) == 1


def test_attention_explorer_controls_change_the_figure(toy):
    from xattn.viz_video import attention_from_dataset, dataset_attention_explorer
    ds = toy["ds"]
    ex = dataset_attention_explorer(toy["model"], ds, files=toy["files"], max_videos=3)
    c = ex.controls                                                          # ex.figure: the view's current plain go.Figure
    assert type(ex.figure).__name__ == "Figure" and type(ex.view).__name__ == "FigureView"
    assert c["head"].label == "mean" and c["block"].label == "0"
    z0 = np.asarray(ex.figure.data[0].z).copy()
    c["head"].value = 3
    assert not np.allclose(np.asarray(ex.figure.data[0].z), z0)
    c["direction"].value = "mot_to_sem"; c["block"].value = -1
    want = attention_from_dataset(toy["model"], ds, 0, path="").matrix(None, "mot_to_sem", 3)
    np.testing.assert_allclose(np.asarray(ex.figure.data[0].z), want, atol=1e-6)
    c["video"].value = ds.records[2].id
    assert ex.figure.layout.title.text.startswith(ds.records[2].id)
    c["frame"].value = 5
    assert c["frame"].max == 7 and sum(s.line.color == "cyan" and s.type == "rect" for s in ex.figure.layout.shapes) == 1
    shown = ex.view.outputs[0]["data"]["application/vnd.plotly.v1+json"]     # what the browser draws: the current figure's JSON
    assert shown["layout"]["title"]["text"] == ex.figure.layout.title.text
    assert len(json.dumps(ex.view.outputs)) < 1_000_000                      # no plotly.js copy stored with the widget
    bundle = ex._repr_mimebundle_()                                          # without a kernel: a PNG of the current view, not widget text
    assert "application/vnd.jupyter.widget-view+json" in bundle and base64.b64decode(bundle["image/png"])[:4] == b"\x89PNG"
    assert "VBox(" not in bundle["text/plain"]


def test_class_views_rollout_and_exports(toy, va, tmp_path):
    from xattn.viz_video import attention_rollout, class_attention_profiles, export_view, rollout_figure
    prof = class_attention_profiles(toy["model"], toy["ds"], "sem_to_mot", bins=4)
    assert prof["profiles"].shape == (len(toy["names"]), 4) and prof["counts"].sum() == len(toy["ds"])
    seen = prof["counts"] > 0
    np.testing.assert_allclose(prof["profiles"][seen].sum(1), 1.0, atol=1e-9)
    ro = attention_rollout(va)
    assert len(ro) == 2 and np.allclose(ro[-1].sum(1), 1.0)
    fig = rollout_figure(va)
    assert len(fig.data) == 2 and all(TS.fullmatch(s) for s in fig.layout.xaxis.ticktext)
    for name, args in (("video_attention", (va,)), ("rollout", (va,)), ("class_profiles", (prof,))):
        p = export_view(name, *args, out_dir=tmp_path, dpi=60)
        assert p["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        html = p["html"].read_text()
        assert html.startswith("<html>") or "<html>" in html[:200], name
        assert '<script src="http' not in html and "Plotly.newPlot" in html, name     # self-contained: no CDN
    with pytest.raises(XattnError, match="views: "): export_view("nope", va, out_dir=tmp_path)


def test_feature_space_explorer_hover_select_open(toy, tmp_path):
    from xattn.viz_video import export_view, feature_space_explorer, feature_space_figure
    fx = feature_space_explorer(toy["model"], toy["splits"], files=toy["files"], stored=("toy_semantic",), methods=("pca", "tsne"),
                               disk_cache=tmp_path/"projections")
    pts = fx.points; n = sum(len(d) for d in toy["splits"].values())
    assert len(pts["ids"]) == n and sorted(pts["spaces"]) == ["fused", "motion", "semantic", "toy_semantic"]
    assert len(fx.figure.data) == len(np.unique(pts["labels"]))
    assert len({t.marker.color for t in fx.figure.data}) == len(fx.figure.data)      # one colour per class
    assert sorted(int(i) for t in fx.figure.data for i in t.customdata) == list(range(n))
    for colour, k in (("split", 2), ("correct", len(set(pts["correct"].tolist()))), ("agree", len(set(pts["agree"].tolist())))):
        fx.color.value = colour; assert len(fx.figure.data) == k, colour
    fx.method.value = "tsne"; fx.space.value = "toy_semantic"
    assert "tsne of toy_semantic" in fx.status.value and len(list((tmp_path/"projections").glob("tsne-*.npy"))) == 2   # fused, toy_semantic: cached by content
    fx.hover(4)
    assert pts["ids"][4] in fx.caption.value and fx.image.value[:4] == b"\x89PNG"           # the hovered video's thumbnail
    fx.select([6, 2, 6])
    assert [v for _, v in fx.selected.options] == [6, 2]
    w = fx.open(fx.selected.value)
    assert fx.view.children == (w,) and w.figure.layout.title.text.startswith(pts["ids"][6])
    assert base64.b64decode(fx._repr_mimebundle_()["image/png"])[:4] == b"\x89PNG"
    xy = np.random.default_rng(0).normal(size=(n, 2))
    fig = feature_space_figure(pts, xy, "class")
    assert all(pts["ids"][int(t.customdata[0])] in t.text[0] for t in fig.data)          # hover names the video
    p = export_view("feature_space", pts, xy, color="split", out_dir=tmp_path, dpi=60)
    assert p["png"].stat().st_size > 1000 and p["html"].stat().st_size > 100_000


def test_layer_activations_shapes_and_hooks_removed(toy):
    from xattn.viz_temporal import activation_rows, layer_activations
    model, ds = toy["model"], toy["ds"]
    it = ds[0]; args = (it["sem"][None], it["mot"][None])
    acts = layer_activations(model, args, ["sem_embed", "blocks.0", "blocks.1.cross_s.proj", "head"])
    Ts, Tm = len(it["sem"]), len(it["mot"])
    assert tuple(acts["sem_embed"].shape) == (1, Ts, 32)                  # a tuple output: its first element
    assert tuple(acts["blocks.0"].shape) == (1, Ts, 32)
    assert tuple(acts["blocks.1.cross_s.proj"].shape) == (1, Ts, 32)
    assert tuple(acts["head"].shape) == (1, len(toy["names"]))
    hooks = lambda m: sum(len(x._forward_hooks) for x in m.modules())
    assert hooks(model) == 0
    with pytest.raises(Exception): layer_activations(model, (it["sem"][None, :, :3], it["mot"][None]), ["blocks.0"])
    assert hooks(model) == 0                                               # removed when the forward pass fails too
    with pytest.raises(XattnError, match=r"layer 'block.0'.*close names: \[.*'blocks.0'"): layer_activations(model, args, ["block.0"])
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.ReLU())
    a = layer_activations(conv, torch.zeros(7, 3, 10, 10), "0")["0"]
    assert tuple(a.shape) == (7, 6, 8, 8) and activation_rows(a).shape == (7, 6) and hooks(conv) == 0


def test_temporal_views_one_call_exports_and_gif(toy, tmp_path):
    from PIL import Image
    from xattn.viz_temporal import export_temporal, flow_feature_animation, stored_rows, temporal_view, temporal_views_explorer
    store, ids = toy["root"]/"features.h5", [r.id for r in toy["ds"].records]
    x, t = stored_rows(store, "toy_semantic", ids[0])
    assert x.shape == (8, 24) and np.allclose(t, (np.arange(8) + 0.5) / 8)
    assert len(temporal_view("evolution", store, "toy_semantic", ids[0], k=3).data) == 3
    hm = temporal_view("heatmap", store, "toy_motion", ids[0], tokens="time", top=10)
    assert np.asarray(hm.data[0].z).shape == (10, 4) and all(TS.fullmatch(s) for s in hm.data[0].x)
    assert temporal_view("surface", store, "toy_semantic", ids[0], top=6).data[0].type == "surface"
    cmp = temporal_view("compare", store, "toy_semantic", ids[:3])
    assert [d.type for d in cmp.data] == ["heatmap", "scatter"] * 3
    assert len(temporal_view("compare", store, ["toy_semantic", "toy_motion"], ids[0], static=True).axes) >= 3
    for view in ("evolution", "heatmap", "surface", "compare"):                 # every view has its static (paper) version
        f = temporal_view(view, store, "toy_semantic", ids[:2] if view == "compare" else ids[0], static=True)
        assert f.axes and type(f).__name__ == "Figure", view
    p = export_temporal("heatmap", store, "toy_semantic", ids[0], out_dir=tmp_path, dpi=60)
    assert p["png"].read_bytes()[:4] == b"\x89PNG" and '<script src="http' not in p["html"].read_text()
    gif = temporal_view("animation", store, "toy_semantic", ids[0], path=CLIP, out=tmp_path/"a.gif", k=3, width=80, dpi=50)
    with Image.open(gif) as im: assert im.n_frames == 8                     # one frame per time step of the rows
    from matplotlib import animation
    if not animation.writers.is_available("ffmpeg"):
        with pytest.raises(XattnError, match="ffmpeg"): flow_feature_animation(CLIP, x, t, tmp_path/"a.mp4")
    tx = temporal_views_explorer(store, ids=ids[:2])
    assert type(tx.figure).__name__ == "Figure" and type(tx.view).__name__ == "FigureView"
    tx.controls["view"].value = "heatmap"; z0 = np.asarray(tx.figure.data[0].z).copy()
    tx.controls["video"].value = ids[1]
    assert tx.figure.data[0].type == "heatmap" and not np.allclose(np.asarray(tx.figure.data[0].z), z0)
    assert base64.b64decode(tx._repr_mimebundle_()["image/png"])[:4] == b"\x89PNG"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    "A `xattn demo --tiny` run (EfficientNet-Lite0 + random-init flow-I3D), registered as tiny:v1; in this process (its imports are shared)."
    import contextlib, io
    from xattn.cli import main
    d = tmp_path_factory.mktemp("vizrun"); err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = main(["demo", "--tiny", "--engine", "python", "--name", "tiny", "--run-dir", str(d/"run"), "--dataset-root", str(d/"data"),
                   "--features", str(d/"features.h5"), "--baselines=", "--num-workers", "0", "--device", "cpu"])
    assert rc == 0, err.getvalue()[-3000:]
    return d


def test_attention_on_any_file_and_on_the_run(tiny_run):
    from xattn.pipeline import load_run
    from xattn.predict import Predictor
    from xattn.viz_video import attention_from_dataset, attention_from_file, attended_moments, video_attention_figure
    p = Predictor(model=tiny_run/"run", num_workers=0, device="cpu")
    va = attention_from_file(p, CLIP)                                       # a real clip the model never saw
    Ts, Tm = len(va.spans["sem"]), len(va.spans["mot"])
    assert Ts == p.extract_cfg.frames and va.thumbs["sem"].shape[0] == Ts and va.thumbs["mot"].shape[0] == Tm
    assert 0 <= va.spans["sem"].min() and va.spans["sem"].max() <= 52 / 12 + 1e-6     # spans within the clip
    (got,) = p.predict([CLIP])
    top = [c["class"] for c in got["top_k"]]
    assert [va.class_names[j] for j in np.argsort(-va.probs)[:len(top)]] == top       # the same prediction as `xattn predict`
    mo = attended_moments(va, "sem_to_mot", top=1)["top"][0]
    assert (mo["start"], mo["end"]) == (got["attention"]["motion"]["top"][0]["start"], got["attention"]["motion"]["top"][0]["end"])
    fig = video_attention_figure(va, frame=0)
    assert all(TS.fullmatch(s) for s in fig.layout.xaxis.ticktext) and len(fig.layout.images) == Ts + Tm
    run = load_run(tiny_run/"run"); ds = run["datasets"]["validation"]
    vr = attention_from_dataset(run["model"], ds, 0)                        # the run's own video file, as the store recorded it
    assert vr.path is not None and vr.path.exists() and vr.thumbs["sem"].shape[0] == len(vr.spans["sem"])
