"""The engine on the real clips of ../shared/data/videos (mp4, avi, mkv, mov, webm; H.264, MPEG-4, VP9; 320x240 to
1920x1080; a 3-frame clip): every clip is extracted, rows and spans agree with the probed metadata, the store checks."""
import json, os, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
from xattn.core import repo_root
from xattn.data import probe_video
from xattn.extract import ExtractConfig, extract_features, records_from_source
from xattn.store import FeatureStore, check_store, store_diff
from xattn.export import export_npy

CLIPS = repo_root().parent/"shared"/"data"/"videos"
pytestmark = pytest.mark.skipif(not CLIPS.is_dir(), reason="shared real clips not present")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("real")
    recs = records_from_source(CLIPS)
    cfg = ExtractConfig(extractors=("dinov3_vits16plus", "i3d_r50_flow"), frames=4, device="cpu", allow_random_init=True,
                        overrides={"size": 32, "i3d_r50_flow": {"frames_per_clip": 2}}, batch_size=8, num_workers=2,
                        threads=1, out=d/"features.h5", progress=False)
    return d, recs, cfg, extract_features(recs, cfg)


def test_every_real_clip_is_extracted(run):
    d, recs, cfg, s = run
    assert len(recs) == 8 and {r.path.suffix for r in recs} == {".mp4", ".avi", ".mkv", ".mov", ".webm"}
    assert s["failed"] == [] and s["processed"] == 8, s["failed"]
    st = FeatureStore(cfg.out)
    for r in recs:
        meta = probe_video(r.path)
        rows, spans = st.get("dinov3_vits16plus", r.id), st.spans("dinov3_vits16plus", r.id)
        assert rows.shape == (4, 6, 384) and np.isfinite(rows).all()
        assert st.get("i3d_r50_flow", r.id).shape == (2, 1, 2048)
        assert (spans[:, 0] >= 0).all() and (spans[:, 1] <= meta.duration + 1e-6).all() and (np.diff(spans[:, 0]) >= 0).all()
        vm = st.video_meta(r.id)
        assert vm["n_frames"] == meta.n_frames and abs(vm["fps"] - meta.fps) < 1e-6
    assert check_store(cfg.out)["ok"]


def test_tiny_clip_repeats_frames_not_computation(run):
    "decord__video_0.mov has 3 frames: 4 samples repeat one frame, and the repeated rows are exact copies."
    d, recs, cfg, s = run
    rows = FeatureStore(cfg.out).get("dinov3_vits16plus", "decord__video_0.mov")
    uniq = {r.tobytes() for r in rows}
    assert len(uniq) == 3


def test_real_clips_resume_and_export(run, tmp_path):
    d, recs, cfg, s = run
    again = extract_features(recs, cfg)
    assert (again["processed"], again["already_done"]) == (0, 8)
    n = export_npy(cfg.out, tmp_path/"npy", token="auto", progress=False)
    assert n == 8
    fps = float(np.load(tmp_path/"npy"/"mmaction2__demo.mp4_fps.npy"))
    assert abs(fps - 28.0) < 1e-6
    assert np.load(tmp_path/"npy"/"mmaction2__demo.mp4_rgb.npy").shape == (4, 384)
    assert np.load(tmp_path/"npy"/"mmaction2__demo.mp4_flow.npy").shape == (2, 2048)
