"""Parity of every library-backed extractor with the library's own model and loader.

For each extractor: a random state dict is saved in the official checkpoint layout (timm safetensors or
Meta's original DINOv3 .pth, pytorchvideo's {"model_state": ...} .pyth, torchvision .pth, open_clip's full
CLIP state dict), loaded through `load_extractor` (strict key matching), and its output is compared with
the library's own model, loaded from the same file by the library's own route, on the same input.
"""
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from safetensors.torch import save_file

from xattn.zoo import load_extractor
from xattn.weights import random_state_dict
from xattn.extractors import dinov3_timm_to_original

warnings.filterwarnings("ignore", category=FutureWarning)
TOL = dict(atol=1e-4, rtol=1e-4)


def _frames(T, H=96, W=128, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (T, H, W, 3), dtype=np.uint8)


def _close(a, b, **kw):
    np.testing.assert_allclose(np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32), **{**TOL, **kw})


# ----------------------------------------------------------------------------------------------- DINOv3
@pytest.fixture(scope="module")
def dino_files(tmp_path_factory):
    import timm
    d = tmp_path_factory.mktemp("dino")
    ref = timm.create_model("vit_small_plus_patch16_dinov3", num_classes=0)
    sd = random_state_dict(ref, seed=11)
    save_file(sd, str(d / "vit_small_plus_patch16_dinov3.lvd1689m.safetensors"))
    orig = dinov3_timm_to_original(sd)
    torch.save(orig, d / "dinov3_vits16plus_pretrain_lvd1689m-4057cbaa.pth")
    g = torch.Generator().manual_seed(5)   # an original file with real q and v biases (k part masked to 0)
    biased = dict(orig)
    for k in [k for k in orig if k.endswith("attn.qkv.bias")]:
        b = 0.1 * torch.randn(orig[k].shape, generator=g); b[384:768] = 0; biased[k] = b
    torch.save(biased, d / "dinov3_biased.pth")
    return d


def _timm_lib(variant, path):
    import timm
    return timm.create_model(variant, num_classes=0, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()


@pytest.mark.parametrize("fname,variant,size", [
    ("vit_small_plus_patch16_dinov3.lvd1689m.safetensors", "vit_small_plus_patch16_dinov3", 112),
    ("dinov3_vits16plus_pretrain_lvd1689m-4057cbaa.pth", "vit_small_plus_patch16_dinov3", 224),
    ("dinov3_biased.pth", "vit_small_plus_patch16_dinov3_qkvb", 112),
])
def test_dinov3_matches_timm(dino_files, fname, variant, size):
    e = load_extractor("dinov3_vits16plus", weights=dino_files / fname, size=size, device="cpu", registers=True, grid=2)
    x = e.preprocess(_frames(3))
    got = e(x)
    lib = _timm_lib(variant, dino_files / fname)
    with torch.inference_mode(): tok = lib.forward_features(x)
    h = size // 16
    patches = tok[:, 5:].reshape(3, h, h, 384)
    grid = nn.functional.adaptive_avg_pool2d(patches.permute(0, 3, 1, 2), 2).flatten(2).transpose(1, 2)
    want = torch.cat([tok[:, :1], patches.mean((1, 2))[:, None], grid, tok[:, 1:5]], 1)
    assert got.shape == (3, 10, 384) and e.spec.token_names[-4:] == tuple(f"register_{i}" for i in range(4))
    _close(got, want)
    assert e.provenance["weights"].startswith("sha256:")


def test_dinov3_biases_are_kept(dino_files):
    """q/v biases of an original checkpoint change the output; dropping them (the plain variant) would be wrong."""
    e = load_extractor("dinov3_vits16plus", weights=dino_files / "dinov3_biased.pth", size=112, device="cpu")
    plain = load_extractor("dinov3_vits16plus", weights=dino_files / "dinov3_vits16plus_pretrain_lvd1689m-4057cbaa.pth", size=112, device="cpu")
    x = e.preprocess(_frames(2))
    assert (e(x) - plain(x)).abs().max() > 1e-3
    assert "qkvb" in type(e.model).__name__.lower() or hasattr(e.model.blocks[0].attn, "q_bias")


# ----------------------------------------------------------------------------------------------- pytorchvideo
def _pv_checkpoint(model, path, seed):
    sd = random_state_dict(model, seed)
    torch.save({"model_state": sd, "epoch": 196, "cfg": "MODEL:\n  ARCH: i3d\n"}, path)
    return sd


def test_i3d_r50_matches_pytorchvideo(tmp_path):
    from pytorchvideo.models.hub import i3d_r50
    _pv_checkpoint(i3d_r50(), tmp_path / "I3D_8x8_R50.pyth", 3)
    e = load_extractor("i3d_r50", weights=tmp_path / "I3D_8x8_R50.pyth", device="cpu")
    x = e.preprocess(_frames(8, 240, 320))
    assert x.shape == (3, 8, 224, 224)
    got = e(x[None])
    lib = i3d_r50()
    lib.load_state_dict(torch.load(tmp_path / "I3D_8x8_R50.pyth", weights_only=True)["model_state"])   # pytorchvideo's own route
    lib.eval().blocks[-1].proj = nn.Identity()
    with torch.inference_mode():
        pooled = lib(x[None])                                         # head: (4, 7, 7) average, no projection
        h = x[None]
        for b in lib.blocks[:-1]: h = b(h)
    assert got.shape == (1, 4, 2048)
    _close(got[0], h.mean((3, 4))[0].T)
    _close(got.mean(1), pooled)


def test_i3d_r50_flow_checkpoint_with_two_channels(tmp_path):
    from pytorchvideo.models.hub import i3d_r50
    _pv_checkpoint(i3d_r50(input_channel=2), tmp_path / "flow.pyth", 4)
    e = load_extractor("i3d_r50_flow", weights=tmp_path / "flow.pyth", device="cpu", size=112)
    assert "first_conv" not in e.provenance                            # loaded as it is, no adaptation
    flow = np.random.default_rng(1).normal(0, 4, (8, 120, 160, 2)).astype(np.float32)
    x = e.preprocess(flow)
    lib = i3d_r50(input_channel=2)
    lib.load_state_dict(torch.load(tmp_path / "flow.pyth", weights_only=True)["model_state"])
    lib.eval()
    with torch.inference_mode():
        h = x[None]
        for b in lib.blocks[:-1]: h = b(h)
    _close(e(x[None])[0], h.mean((3, 4))[0].T)


def test_slowfast_r50_matches_pytorchvideo(tmp_path):
    from pytorchvideo.models.hub import slowfast_r50
    from xattn.zoo import slowfast_pathways
    _pv_checkpoint(slowfast_r50(), tmp_path / "SLOWFAST_8x8_R50.pyth", 6)
    e = load_extractor("slowfast_r50", weights=tmp_path / "SLOWFAST_8x8_R50.pyth", device="cpu")
    x = e.preprocess(_frames(32, 224, 240))
    got = e(x[None])
    lib = slowfast_r50()
    lib.load_state_dict(torch.load(tmp_path / "SLOWFAST_8x8_R50.pyth", weights_only=True)["model_state"])
    lib.eval().blocks[-1].proj = nn.Identity()
    with torch.inference_mode(): want = lib(slowfast_pathways(x[None]))    # PoolConcatPathway + head without projection
    assert got.shape == (1, 1, 2304)
    _close(got[:, 0], want)


# ----------------------------------------------------------------------------------------------- open_clip
def test_clip_matches_open_clip(tmp_path):
    import open_clip
    full = open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True)
    save_file(random_state_dict(full, 8), str(tmp_path / "open_clip_ViT-B-32_openai.safetensors"))
    e = load_extractor("clip_vitb32", weights=tmp_path / "open_clip_ViT-B-32_openai.safetensors", device="cpu")
    x = e.preprocess(_frames(3))
    lib = open_clip.create_model("ViT-B-32", pretrained=str(tmp_path / "open_clip_ViT-B-32_openai.safetensors"),
                                 force_quick_gelu=True).eval()                # open_clip's own loader
    with torch.inference_mode(): want = lib.encode_image(x)
    got = e(x)
    assert got.shape == (3, 1, 512)
    _close(got[:, 0], want)
    # GELU vs QuickGELU matters: the wrong activation gives different numbers
    g = load_extractor("clip_vitb32", weights=tmp_path / "open_clip_ViT-B-32_openai.safetensors", device="cpu", quick_gelu=False)
    assert (g(x) - got).abs().max() > 1e-4


# ----------------------------------------------------------------------------------------------- torchvision
@pytest.mark.parametrize("name,fname,dim", [
    ("resnet50", "resnet50-11ad3fa6.pth", 2048), ("resnet101", "resnet101-cd907fc2.pth", 2048),
    ("efficientnet_v2_s", "efficientnet_v2_s-dd5fe13b.pth", 1280), ("efficientnet_v2_m", "efficientnet_v2_m-dc08266a.pth", 1280)])
def test_torchvision_matches_library(tmp_path, monkeypatch, name, fname, dim):
    import torchvision
    monkeypatch.setenv("XATTN_WEIGHTS", str(tmp_path))
    builder = getattr(torchvision.models, name)
    torch.save(random_state_dict(builder(weights=None), 9), tmp_path / fname)
    e = load_extractor(name, device="cpu", size=128)                   # found by its canonical name
    assert e.provenance["weights_file"] == str(tmp_path / fname)
    assert e.provenance["digest_known_match"] is False                 # random weights are not torchvision's
    x = e.preprocess(_frames(2))
    lib = builder(weights=None)
    lib.load_state_dict(torch.load(tmp_path / fname, weights_only=True))
    if hasattr(lib, "fc"): lib.fc = nn.Identity()
    else: lib.classifier = nn.Identity()
    with torch.inference_mode(): want = lib.eval()(x)
    got = e(x)
    assert got.shape == (2, 1, dim)
    _close(got[:, 0], want)
