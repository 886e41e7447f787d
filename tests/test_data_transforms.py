"Spatial transforms and the direction-aware flip, on the real SSv2 labels."
import json
import numpy as np
import pytest
import torch
from xattn.core import repo_root
from xattn.transforms import (flip_label_map, FlipMap, hflip_clip, mirror_name, ClipTransform, TransformConfig, to_tchw,
                              random_resized_crop, three_crop, ten_crop, resize_short)

LABELS = repo_root().parent/"shared"/"data"/"ssv2"/"something-something-v2-labels.json"


def test_ssv2_flip_pairs():
    L = {k: int(v) for k, v in json.loads(LABELS.read_text()).items()}
    fm = flip_label_map(LABELS)
    pairs = {("Pushing something from left to right", "Pushing something from right to left"),
             ("Pulling something from left to right", "Pulling something from right to left"),
             ("Turning the camera left while filming something", "Turning the camera right while filming something")}
    assert fm.swap == {**{L[a]: L[b] for a, b in pairs}, **{L[b]: L[a] for a, b in pairs}}
    assert fm.no_flip == frozenset()
    # every other class keeps its label under a flip, including the idiomatic "right out" and "upright"
    for name, i in L.items():
        if i not in fm.swap: assert fm.flipped(i) == i, name
    assert fm.flipped(L["Pushing something from left to right"]) == L["Pushing something from right to left"]


def test_mirror_name_idioms():
    assert mirror_name("Pulling something from right to left") == "Pulling something from left to right"
    assert mirror_name("pulling it right out as you remove your hand") == "pulling it right out as you remove your hand"
    assert mirror_name("Putting something upright") == "Putting something upright"
    assert mirror_name("Spinning something anticlockwise") == "Spinning something clockwise"


def test_flip_swaps_label_with_frames_and_never_flips_unpaired():
    clip = np.zeros((3, 20, 30, 3), np.uint8); clip[:, :, :5] = 255
    fm = FlipMap({0: 1, 1: 0}, frozenset({2}))
    rng = np.random.default_rng(0)
    x, lab = hflip_clip(to_tchw(clip), 0, fm, rng, p=1.0)
    assert lab == 1 and x[0, 0, 0, -1] == 255 and x[0, 0, 0, 0] == 0
    for _ in range(20):
        y, l2 = hflip_clip(to_tchw(clip), 2, fm, rng, p=1.0)
        assert l2 == 2 and torch.equal(y, to_tchw(clip))
    # p=0.5: about half the clips of class 0 come back flipped as class 1, and those are exactly the mirrored ones
    out = [hflip_clip(to_tchw(clip), 0, fm, np.random.default_rng(s), p=0.5) for s in range(200)]
    flipped = [l for x, l in out if x[0, 0, 0, -1] == 255]
    assert set(flipped) == {1} and 70 < len(flipped) < 130
    assert all(l == 0 for x, l in out if x[0, 0, 0, 0] == 255)


def test_train_transform_reproducible_and_clip_consistent():
    rng = np.random.default_rng(0)
    clip = np.repeat(rng.integers(0, 255, (1, 60, 80, 3), dtype=np.uint8), 5, 0)      # 5 identical frames
    t = ClipTransform(TransformConfig(size=32, flip=0.5), train=True)
    a, _ = t(clip, 0, np.random.default_rng(7)); b, _ = t(clip, 0, np.random.default_rng(7))
    assert torch.equal(a, b) and a.shape == (5, 3, 32, 32)
    assert all(torch.equal(a[0], a[i]) for i in range(5))      # one crop (and flip) for the whole clip
    c, _ = t(clip, 0, np.random.default_rng(8))
    assert not torch.equal(a, c)


def test_eval_views():
    x = to_tchw(np.random.default_rng(0).integers(0, 255, (2, 90, 160, 3), dtype=np.uint8))
    r = resize_short(x, 64)
    assert r.shape[-2:] == (64, 113)          # 160 * 64 / 90 = 113.8, floored as torchvision does
    assert [v.shape[-2:] for v in three_crop(r, 64)] == [(64, 64)] * 3
    assert torch.equal(three_crop(r, 64)[0], r[..., :64]) and torch.equal(three_crop(r, 64)[2], r[..., -64:])
    assert len(ten_crop(r, 48)) == 10
    y, _ = ClipTransform(TransformConfig(size=56, crops=3, layout="CTHW"))(x.permute(0, 2, 3, 1).numpy())
    assert y.shape == (3, 3, 2, 56, 56) and y.dtype == torch.float32
