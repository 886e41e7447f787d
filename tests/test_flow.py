"""Optical flow: accuracy of the OpenCV methods on known motion, RAFT parity with torchvision's own model
loaded from the same checkpoint, the cache, and `xattn flow` as a real process on a real clip."""
import json, os, subprocess, sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from xattn.flow import compute_flow, scale_flow_i3d, flow_to_rgb, FlowCache, load_raft, FlowError
from xattn.weights import random_state_dict, MissingWeightsError

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT.parent / "shared" / "data" / "videos" / "mmaction2__rawvideo_part_0.mp4"


def texture(T=3, H=160, W=176, dx=3.0, dy=-2.0, seed=0):
    """Smooth random texture shifted by (dx, dy) px per frame, sub-pixel shifts by warpAffine (bilinear)."""
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.uniform(0, 255, (H + 64, W + 64, 3)).astype(np.float32), (0, 0), 2.5)
    base = (base - base.min()) / (base.max() - base.min()) * 255
    out = []
    for t in range(T):
        M = np.float32([[1, 0, dx * t - 32], [0, 1, dy * t - 32]])
        out.append(cv2.warpAffine(base, M, (W, H), flags=cv2.INTER_LINEAR))
    return np.clip(np.stack(out), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("method,tol", [("farneback", 0.15), ("dis", 0.15), ("tvl1", 0.1)])
@pytest.mark.parametrize("dx,dy", [(3.0, -2.0), (0.5, 1.25), (-6.0, 0.0)])
def test_opencv_methods_recover_known_motion(method, tol, dx, dy):
    flow = compute_flow(texture(dx=dx, dy=dy), method)
    inner = flow[:, 24:-24, 24:-24].reshape(-1, 2)
    np.testing.assert_allclose(np.median(inner, 0), [dx, dy], atol=tol)


def test_flow_of_a_real_clip_methods_agree():
    from xattn.data import read_frames
    frames = read_frames(CLIP, np.arange(10, 13))
    a, b = compute_flow(frames, "tvl1"), compute_flow(frames, "dis")
    assert a.shape == b.shape == (2, 256, 340, 2)
    ma, mb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    assert np.corrcoef(ma.ravel(), mb.ravel())[0, 1] > 0.5
    pics = flow_to_rgb(a, max_magnitude=10)
    assert pics.shape == (2, 256, 340, 3) and pics.dtype == np.uint8
    s = scale_flow_i3d(a)
    assert s.min() >= -1 and s.max() <= 1 and s.dtype == np.float32


@pytest.mark.parametrize("variant", ["small", "large"])
def test_raft_matches_torchvision(tmp_path, monkeypatch, variant):
    from torchvision.models import optical_flow as of
    from xattn.flow import RAFT_CKPTS
    monkeypatch.setenv("XATTN_WEIGHTS", str(tmp_path))
    builder = getattr(of, f"raft_{variant}")
    sd = random_state_dict(builder(weights=None), seed=2)
    torch.save(sd, tmp_path / RAFT_CKPTS[variant].file)
    frames = texture(T=2, H=132, W=150)
    got = compute_flow(frames, "raft", variant=variant, iters=3)
    _, prov = load_raft(variant)
    assert prov["weights"].startswith("sha256:") and prov["weights_file"] == str(tmp_path / RAFT_CKPTS[variant].file)
    lib = builder(weights=None)
    lib.load_state_dict(torch.load(tmp_path / RAFT_CKPTS[variant].file, weights_only=True))
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    x = torch.nn.functional.pad(x, (1, 1, 2, 2), mode="replicate")           # 132x150 -> 136x152, centred
    with torch.inference_mode(): want = lib.eval()(x[:1], x[1:], num_flow_updates=3)[-1][0, :, 2:-2, 1:-1].permute(1, 2, 0)
    np.testing.assert_allclose(got[0], want.numpy(), atol=1e-4, rtol=1e-4)


def test_raft_refuses_missing_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("XATTN_WEIGHTS", str(tmp_path))
    with pytest.raises(MissingWeightsError, match="raft_large_C_T_SKHT_V2-ff5fadd5.pth"):
        compute_flow(texture(T=2, H=128, W=128), "raft", variant="large")


def test_cache_is_keyed_by_content_and_settings(tmp_path):
    cache = FlowCache(tmp_path, dtype="float32")
    f = texture(T=3, H=64, W=64)
    a = compute_flow(f, "farneback", cache=cache)
    np.testing.assert_array_equal(compute_flow(f.copy(), "farneback", cache=cache), a)   # same pixels, new array: hit
    compute_flow(f, "farneback", cache=cache, winsize=9)                                 # other settings: miss
    compute_flow(f, "dis", cache=cache)                                                  # other method: miss
    assert (cache.hits, cache.misses) == (1, 3)
    assert len(list(tmp_path.rglob("*.npz"))) == 3 and not list(tmp_path.rglob("*.tmp*"))


def test_flow_command_on_a_real_clip(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XATTN_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "xattn.cli", "flow", str(CLIP), "--method", "tvl1", "--start", "4", "--num-frames", "3",
           "--short-side", "64", "--out", str(tmp_path / "flow.npz"), "--cache"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["frames"] == [4, 5, 6] and s["shape"] == [2, 64, 85, 2]
    z = np.load(tmp_path / "flow.npz")
    assert z["flow"].shape == (2, 64, 85, 2) and z["indices"].tolist() == [4, 5, 6] and str(z["method"]) == "tvl1"
    assert len(list((tmp_path / "cache" / "flow").rglob("*.npz"))) == 1
    r2 = subprocess.run(cmd[:-1] + ["--method", "lucas"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert r2.returncode == 2 and "flow method 'lucas'" in r2.stderr
