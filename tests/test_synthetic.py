"Synthetic objects x motions dataset: determinism, balance, splits, motions measured from the decoded files."
import dataclasses, json
from collections import Counter
from pathlib import Path
import numpy as np
import pytest
from xattn.data import load_ssv2, probe_video, read_frames, VideoDecodeError
from xattn.synthetic import SyntheticConfig, make_synthetic_dataset, synthetic_classes, measure_track, CONFIG_NAME

SMALL = SyntheticConfig(n_per_class=3, frames=8, size=64)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("synth")/"a", SMALL, progress=False)


def _decoded(root):
    return {p.name: read_frames(p, range(SMALL.frames)) for p in sorted((root/"videos").glob("*.mp4"))}


def test_same_seed_same_frames(small, tmp_path):
    b = make_synthetic_dataset(tmp_path/"b", SMALL, progress=False)
    for name in ("labels.json", "train.json", "validation.json"):
        assert (small/name).read_bytes() == (b/name).read_bytes()
    da, db = _decoded(small), _decoded(b)
    assert da.keys() == db.keys() and len(da) == 36
    assert all(np.array_equal(da[k], db[k]) for k in da)      # decoded frames, the contract (not file bytes)


def test_other_seed_differs(small, tmp_path):
    c = make_synthetic_dataset(tmp_path/"c", dataclasses.replace(SMALL, seed=7), progress=False)
    da, dc = _decoded(small), _decoded(c)
    assert sum(not np.array_equal(da[k], dc[k]) for k in da) == len(da)


def test_bigger_dataset_contains_smaller_clips(small, tmp_path):
    "A clip's random stream is keyed by (seed, class, index): n_per_class=4 keeps the 3 clips per class of n_per_class=3."
    big = make_synthetic_dataset(tmp_path/"big", dataclasses.replace(SMALL, n_per_class=4), progress=False)
    def by_class(root):
        recs = load_ssv2(root/"labels.json", root/"train.json", root/"videos", ext=".mp4") + \
               load_ssv2(root/"labels.json", root/"validation.json", root/"videos", ext=".mp4")
        return {lab: {read_frames(r.path, [0]).tobytes() for r in recs if r.label == lab} for lab in range(12)}
    s, b = by_class(small), by_class(big)
    assert all(s[k] <= b[k] and len(b[k]) == 4 for k in s)


def test_balance_and_disjoint_splits(small):
    tr = load_ssv2(small/"labels.json", small/"train.json", small/"videos", ext=".mp4")
    va = load_ssv2(small/"labels.json", small/"validation.json", small/"videos", ext=".mp4")
    assert Counter(r.label for r in tr) == Counter({c: 2 for c in range(12)})
    assert Counter(r.label for r in va) == Counter({c: 1 for c in range(12)})
    assert not {r.id for r in tr} & {r.id for r in va}
    assert all(r.ok for r in tr + va)
    labels = json.loads((small/"labels.json").read_text())
    assert labels == {c["template"]: str(c["id"]) for c in synthetic_classes(SMALL)}
    meta = probe_video(tr[0].path)
    assert (meta.n_frames, meta.width, meta.height, meta.codec, meta.fps) == (8, 64, 64, "h264", 12.0)


def test_factors_are_independent_of_class(tmp_path):
    "Background colour and object start position carry no class information: per-class means agree."
    root = make_synthetic_dataset(tmp_path/"f", SyntheticConfig(n_per_class=12, frames=4, size=48, objects=("ball", "star"),
                                                                motions=("left to right", "rotating")), progress=False)
    recs = load_ssv2(root/"labels.json", root/"train.json", root/"videos", ext=".mp4")
    corner = {c: [] for c in range(4)}
    for r in recs: corner[r.label].append(read_frames(r.path, [0])[0, :6, :6].mean())
    means = [np.mean(v) for v in corner.values()]
    spread = np.mean([np.std(v) for v in corner.values()])
    assert max(means) - min(means) < 2 * spread, (means, spread)


def test_motions_move_as_named(tmp_path):
    root = make_synthetic_dataset(tmp_path/"flat", SyntheticConfig(n_per_class=2, background="flat", seed=3), progress=False)
    classes = synthetic_classes()
    seen = Counter()
    for split in ("train", "validation"):
        for r in load_ssv2(root/"labels.json", root/f"{split}.json", root/"videos", ext=".mp4"):
            m = measure_track(read_frames(r.path, range(16)))
            dx, growth, turn = m["x"][-1] - m["x"][0], m["area"][-1] / m["area"][0], abs(m["turn"].sum())
            motion = classes[r.label]["motion"]; seen[motion] += 1
            ok = {"left to right": dx > 25 and abs(growth - 1) < 0.2 and turn < 20,
                  "right to left": dx < -25 and abs(growth - 1) < 0.2 and turn < 20,
                  "towards the camera": abs(dx) < 5 and growth > 2.0 and turn < 20,
                  "rotating": abs(dx) < 5 and abs(growth - 1) < 0.2 and 80 < turn < 240}[motion]
            assert ok, (r.label_name, dx, growth, turn)
    assert seen == Counter({m: 6 for m in ("left to right", "right to left", "towards the camera", "rotating")})


def test_objects_differ_in_appearance(tmp_path):
    "Mean object colour separates the three objects; it is measured on a flat background."
    root = make_synthetic_dataset(tmp_path/"obj", SyntheticConfig(n_per_class=2, background="flat", motions=("rotating",)), progress=False)
    col = {}
    for r in load_ssv2(root/"labels.json", root/"train.json", root/"videos", ext=".mp4"):
        f = read_frames(r.path, [0])[0].astype(int)
        mask = np.abs(f - 128).max(-1) > 40
        col.setdefault(r.label, []).append(f[mask].mean(0))
    c = {k: np.mean(v, 0) for k, v in col.items()}
    assert min(np.abs(c[a] - c[b]).max() for a in c for b in c if a < b) > 40


def test_bad_inputs_named_and_reused(tmp_path):
    cfg = dataclasses.replace(SMALL, n_corrupt=2, n_missing=3)
    root = make_synthetic_dataset(tmp_path/"bad", cfg, progress=False)
    info = json.loads((root/CONFIG_NAME).read_text())
    assert len(info["corrupt_ids"]) == 2 and len(info["missing_ids"]) == 3
    recs = load_ssv2(root/"labels.json", root/"train.json", root/"videos", ext=".mp4") + \
           load_ssv2(root/"labels.json", root/"validation.json", root/"videos", ext=".mp4")
    missing = sorted(r.id for r in recs if r.status.startswith("missing"))
    assert missing == sorted(info["missing_ids"])
    for vid in info["corrupt_ids"]:
        with pytest.raises(VideoDecodeError, match=f"{vid}.mp4: "):
            probe_video(root/"videos"/f"{vid}.mp4")
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    make_synthetic_dataset(root, cfg, progress=False)
    assert mtimes == {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_cli(tmp_path):
    import subprocess, sys
    r = subprocess.run([sys.executable, "-m", "xattn.cli", "synth", str(tmp_path/"cli"), "--n-per-class", "1", "--size", "48",
                        "--frames", "4", "--n-missing", "1"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["videos"] == 12 and out["missing_ids"] == ["13"]
