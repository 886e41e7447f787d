"Raw-video DataLoader: real worker processes, deterministic per-sample seeding by epoch, bad videos skipped; decode bench CLI."
import json, subprocess, sys
import numpy as np
import pytest
import torch
from xattn.core import repo_root
from xattn.data import load_ssv2, SamplerConfig
from xattn.loader import VideoClipDataset, make_loader, item_seed
from xattn.synthetic import SyntheticConfig, make_synthetic_dataset
from xattn.transforms import ClipTransform, TransformConfig, flip_label_map


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = make_synthetic_dataset(tmp_path_factory.mktemp("ld")/"s", SyntheticConfig(n_per_class=2, frames=8, size=48, n_corrupt=1, n_missing=1),
                                  progress=False)
    recs = [r for s in ("train", "validation") for r in load_ssv2(root/"labels.json", root/f"{s}.json", root/"videos", ext=".mp4")]
    return root, recs


def _epoch(ds, workers, epoch):
    got, skipped = {}, []
    for b in make_loader(ds, batch_size=3, workers=workers, epoch=epoch):
        skipped += b["skipped"]
        for i, v, l in zip(b["index"].tolist(), b["video"], b["label"].tolist()): got[i] = (v.clone(), l)
    return got, skipped


def test_same_samples_with_any_worker_count_and_new_ones_each_epoch(synth):
    root, recs = synth
    fm = flip_label_map(root/"labels.json")
    ds = VideoClipDataset(recs, SamplerConfig(n=4), ClipTransform(TransformConfig(size=32), train=True, flip_map=fm), train=True, seed=3)
    info = json.loads((root/"synthetic_config.json").read_text())
    e0w0, s0 = _epoch(ds, 0, 0)
    e0w2, s2 = _epoch(ds, 2, 0)
    assert e0w0.keys() == e0w2.keys() and len(e0w0) == len(ds) - 1
    assert all(torch.equal(e0w0[i][0], e0w2[i][0]) and e0w0[i][1] == e0w2[i][1] for i in e0w0)
    assert s0 == s2 and [i for i, _ in s0] == info["corrupt_ids"]
    assert [i for i, _ in ds.excluded] == info["missing_ids"]
    e1w2, _ = _epoch(ds, 2, 1)
    assert sum(not torch.equal(e0w0[i][0], e1w2[i][0]) for i in e0w0) > 0.8 * len(e0w0)
    # labels only change where a flip swapped a horizontal motion
    for i, (v, l) in e1w2.items():
        orig = ds.records[i].label
        assert l == orig or fm.swap.get(orig) == l


def test_shuffle_order_seeded_by_epoch(synth):
    _, recs = synth
    ds = VideoClipDataset(recs, SamplerConfig(n=2), ClipTransform(TransformConfig(size=16)), train=True, seed=0)
    order = lambda ep: [i for b in make_loader(ds, batch_size=4, workers=0, epoch=ep) for i in b["index"].tolist()]
    assert order(0) == order(0) and order(0) != order(1)
    assert item_seed(0, 0, 5) != item_seed(0, 1, 5) != item_seed(1, 0, 5)


def test_bench_decode_cli_prints_json():
    r = subprocess.run([sys.executable, "-m", "xattn.cli", "bench", "decode", "--n", "4", "--repeat", "1", "--workers", "0,2",
                        "--loader-passes", "1", "--size", "64", "--max-videos", "3"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["n_videos"] == 3 and set(out["total"]) >= {"decord", "pyav"}
    assert set(out["dataloader"]) == {"workers=0", "workers=2"}
    for b in ("decord", "pyav"):
        assert out["total"][b]["sequential_fps"] > 0 and out["total"][b]["sparse_fps"] > 0
