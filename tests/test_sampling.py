"""The extraction recipes of issue 13 on the real clips of ../shared/data/videos, each run as a user runs it
(`xattn extract` + `xattn store export` in their own processes, small settings, random-init weights at a tiny
input size) and read back as a user's script would (`np.load`, `h5py`); and the engine's stored rows equal the
pure sampling plans (`plan_video`) of the same videos."""
import json, os, subprocess, sys
from pathlib import Path
import numpy as np
import h5py
import pytest
from xattn.core import repo_root
from xattn.data import probe_video, read_frames
from xattn.extract import ExtractConfig, plan_video, records_from_source
from xattn.extractors import EXTRACTORS
from xattn.store import FeatureStore, check_store

CLIPS = repo_root().parent/"shared"/"data"/"videos"
pytestmark = pytest.mark.skipif(not CLIPS.is_dir(), reason="shared real clips not present")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo_root())}
SMALL = ["--device", "cpu", "--allow-random-init", "--threads", "1", "--num-workers", "1", "--no-progress"]


def xattn(*args, ok=True):
    r = subprocess.run([sys.executable, "-m", "xattn.cli", *map(str, args)], capture_output=True, text=True, env=ENV, timeout=900)
    if ok: assert r.returncode == 0, r.stderr[-3000:]
    return r


def videos(tmp, names):
    "A folder holding links to some of the real clips (a folder of videos, as a user points xattn at)."
    d = tmp/"videos"; d.mkdir()
    for n in names: (d/n).symlink_to(CLIPS/n)
    return d


def spec_of(store, e):
    p = store.provenance(e)
    return type("Spec", (), dict(per_frame=p["per_frame"], input=p["input"], frames_per_clip=p["frames_per_clip"]))()


def assert_rows_match_plans(out, cfg_kw):
    "Every stored video's row count, spans and frame ranges are those of `plan_video` on its probed metadata."
    st = FeatureStore(out)
    for e in st.extractors:
        cfg = ExtractConfig(extractors=(e,), **cfg_kw)
        for v in st.video_ids(e):
            meta = probe_video(st.video_meta(v)["path"])
            plan = plan_video(meta, spec_of(st, e), cfg)
            np.testing.assert_allclose(st.spans(e, v), plan.spans, atol=1e-9)
            np.testing.assert_array_equal(st.frames(e, v), plan.frame_ranges)         # first/last frame behind each row
            assert len(st.get(e, v)) == len(plan.rows)


def test_clip_per_2s_npz(tmp_path):
    "CLIP ViT-B/32 (512-d), one row per 2-second clip at 4 fps -> one .npz per video: features [n_clips, 512], fps, clip_length."
    src = videos(tmp_path, ["vf__v_ZNVhz7ctTq0.mp4", "mmaction2__demo.mp4"])
    out = tmp_path/"clip.h5"
    xattn("extract", "--source", src, "--extractors", "clip_vitb32", "--sampling", "clips", "--clip-seconds", "2", "--fps", "4",
          "--overrides", "size=32", "--out", out, *SMALL)
    xattn("store", "export", out, "--format", "npz", "--out", tmp_path/"npz")
    z = np.load(tmp_path/"npz"/"vf__v_ZNVhz7ctTq0.mp4.npz")
    assert z["features"].shape == (7, 512) and float(z["clip_length"]) == 2.0 and float(z["fps"]) == 30.0
    np.testing.assert_allclose(z["spans"][:, 1] - z["spans"][:, 0], 2.0, atol=1e-3)
    assert z["frames"].shape == (7, 2) and (np.diff(z["frames"][:, 0]) == 60).all()          # 2 s at 30 fps: 60 frames apart
    assert np.load(tmp_path/"npz"/"mmaction2__demo.mp4.npz")["features"].shape == (5, 512)
    assert_rows_match_plans(out, dict(sampling="clips", clip_seconds=2.0, fps=4.0))
    assert FeatureStore(out).provenance("clip_vitb32")["sampler"] == dict(name="clips", fps=4.0, clip_seconds=2.0, clip_stride=0.0, last="drop", short="pad")


def frame_folders(tmp, names):
    "Frame folders <class>/<video>/img_00001.jpg of some real clips (the layout I3D feature tools read)."
    import cv2
    root = tmp/"frames"
    for n in names:
        meta = probe_video(CLIPS/n)
        d = root/"cls"/Path(n).stem; d.mkdir(parents=True)
        for i, f in enumerate(read_frames(CLIPS/n, np.arange(min(meta.n_frames, 48)))):
            cv2.imwrite(str(d/f"img_{i + 1:05d}.jpg"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    return root


def test_i3d_chunks_from_frame_folders(tmp_path):
    "I3D R50 16-frame chunks from frame folders: short videos skipped with the reason, a run summary, an output tree mirroring the input."
    root = frame_folders(tmp_path, ["mmaction2__rawvideo_part_0.mp4", "decord__video_0.mov", "human2bot__task5_0.webm"])
    out = tmp_path/"i3d.h5"
    xattn("extract", "--source", root, "--source-kind", "frame-folders", "--extractors", "i3d_r50", "--sampling", "chunks",
          "--chunk-size", "16", "--short", "skip", "--overrides", "size=32,frames_per_clip=16", "--out", out, *SMALL)
    s = json.loads(out.with_suffix(".summary.json").read_text())
    assert (s["total_videos"], s["processed_videos"], s["videos_skipped"]) == (3, 2, 1)
    assert "too short: 3 frames < 16" in s["skipped"][0]["reason"] and s["run_date"] and len(s["video_s"]) == 2
    xattn("store", "export", out, "--format", "npz", "--token", "mean", "--out", tmp_path/"npz")     # pooled over I3D's time tokens
    got = sorted(str(p.relative_to(tmp_path/"npz")) for p in (tmp_path/"npz").rglob("*.npz"))
    assert got == ["cls/human2bot__task5_0.npz", "cls/mmaction2__rawvideo_part_0.npz"], got
    z = np.load(tmp_path/"npz"/"cls"/"human2bot__task5_0.npz")
    assert z["features"].shape == (3, 2048) and int(z["clip_length"]) == 16            # 48 frames: 3 chunks of 16
    st = FeatureStore(out).status()
    assert [v["status"] for k, v in st.items() if k.endswith("decord__video_0")] == ["skipped"], st


def test_inception_i3d_64_chunks_rgb_and_flow(tmp_path):
    """Inception-I3D RGB and flow in 64-frame stack/step chunks over a whole video; the last partial chunk padded; pooled and flat.
    (The flat Mixed_5c output at a tiny size: the pooled head needs >= 193 px, too slow for a test on CPU.)"""
    src = videos(tmp_path, ["mmaction2__demo.mp4"])
    out = tmp_path/"inc.h5"
    xattn("extract", "--source", src, "--extractors", "i3d_inception_rgb,i3d_inception_flow", "--sampling", "chunks",
          "--chunk-size", "64", "--last", "pad", "--overrides", "size=32,frames_per_clip=64,output=mixed5c_flat", "--out", out, *SMALL)
    st = FeatureStore(out)
    for e in ("i3d_inception_rgb", "i3d_inception_flow"):
        rows = st.get(e, "mmaction2__demo.mp4")
        assert rows.shape == (5, 1, 1024 * 8)                                        # 280 frames: 4 chunks + a padded one
    assert_rows_match_plans(out, dict(sampling="chunks", chunk_size=64, last="pad"))
    xattn("store", "export", out, "--format", "npy", "--out", tmp_path/"flat")
    assert np.load(tmp_path/"flat"/"mmaction2__demo.mp4_rgb.npy").shape == (5, 8192)
    assert np.load(tmp_path/"flat"/"mmaction2__demo.mp4_flow.npy").shape == (5, 8192)


def test_resnet_multiscale_split_h5(tmp_path):
    "ResNet-50, 64 frames per video at scales 1.0/0.85/1.15 -> a padded HDF5 per split with feature_dim, category_mapping, multi_scale."
    from xattn.synthetic import SyntheticConfig, make_synthetic_dataset
    root = make_synthetic_dataset(tmp_path/"synth", SyntheticConfig(n_per_class=1, size=48, frames=40), progress=False)
    out = tmp_path/"rn.h5"
    xattn("extract", "--source", root, "--extractors", "resnet50", "--frames", "64", "--scales", "1.0,0.85,1.15",
          "--scale-mode", "mean", "--overrides", "size=32", "--out", out, *SMALL)
    xattn("store", "export", out, "--format", "split-h5", "--source", root, "--out", tmp_path/"h5")
    with h5py.File(tmp_path/"h5"/"train.h5") as f:
        assert f["features"].shape[1:] == (64, 2048) and f.attrs["feature_dim"] == 2048 and bool(f.attrs["multi_scale"])
        assert json.loads(f.attrs["scales"]) == [1.0, 0.85, 1.15] and len(json.loads(f.attrs["category_mapping"])) == 12
    s = json.loads(out.with_suffix(".summary.json").read_text())
    assert s["units"]["resnet50"] <= s["units_requested"]["resnet50"] / 3        # each distinct frame once, not once per scale


def test_dense_native_fps_npy(tmp_path):
    "Every frame at the native rate through ResNet-50 -> a .npy per video with timestamps; streamed in windows smaller than the video."
    src = videos(tmp_path, ["mmaction2__rawvideo_part_0.mp4", "human2bot__task5_0.webm"])
    out = tmp_path/"dense.h5"
    xattn("extract", "--source", src, "--extractors", "resnet50", "--sampling", "dense", "--window", "10",
          "--overrides", "size=32", "--out", out, *SMALL)
    xattn("store", "export", out, "--format", "npy", "--out", tmp_path/"npy")
    x, t = np.load(tmp_path/"npy"/"human2bot__task5_0.webm_rgb.npy"), np.load(tmp_path/"npy"/"human2bot__task5_0.webm_timestamps_ms.npy")
    assert x.shape == (52, 2048) and np.allclose(np.diff(t), 1000 / 12)
    assert np.load(tmp_path/"npy"/"mmaction2__rawvideo_part_0.mp4_rgb.npy").shape == (32, 2048)
    assert_rows_match_plans(out, dict(sampling="dense"))
    assert check_store(out)["ok"]


def test_streamed_equals_whole(tmp_path):
    "The same dense run with windows of 7 frames and of the whole video stores the same rows (streaming changes memory, not numbers)."
    from xattn.extract import extract_features
    from xattn.store import store_diff
    recs = [r for r in records_from_source(CLIPS) if r.id == "mmaction2__tests_test.avi"]
    kw = dict(extractors=("resnet50", "i3d_r50_flow"), sampling="dense", device="cpu", allow_random_init=True, num_workers=0, threads=1,
              overrides={"size": 32, "i3d_r50_flow": {"frames_per_clip": 8}}, progress=False)
    a = extract_features(recs, ExtractConfig(out=tmp_path/"a.h5", window=7, **kw))
    b = extract_features(recs, ExtractConfig(out=tmp_path/"b.h5", window=100000, **kw))
    assert a["processed"] == b["processed"] == 1
    assert store_diff(tmp_path/"a.h5", tmp_path/"b.h5") == []


def test_dense_memory_bounded_by_the_window(tmp_path):
    """Dense extraction of a 60-second 240x240 video peaks within 1.5x the memory of a 5-second one (each in a fresh
    process), because frames are decoded in windows; decoding the whole long video at once (one huge window) breaks
    that bound, which shows the check can fail."""
    from xattn.bench_extract import ExtractBenchConfig, write_long_video, peak_rss_of_video
    cfg = ExtractBenchConfig(extractors=("resnet50",), size=32, batch_size=32, device="cpu", threads=1)
    short, long = (write_long_video(tmp_path/f"v{s}.mp4", s, fps=25.0, size=240) for s in (5, 60))
    peak = {k: peak_rss_of_video(v, cfg, tmp_path, sampling="dense", window=64)["peak_rss_extract_mb"] for k, v in (("short", short), ("long", long))}
    assert peak["long"] <= 1.5 * peak["short"], peak
    (tmp_path/"whole").mkdir()
    whole = peak_rss_of_video(long, cfg, tmp_path/"whole", sampling="dense", window=1 << 20)["peak_rss_extract_mb"]
    assert whole > 1.5 * peak["short"], (whole, peak)
