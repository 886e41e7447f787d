"""Inception-I3D parity with the piergiaj/pytorch-i3d reference outputs stored in ../shared/parity.

Full-size (16 x 224 x 224) runs of the whole network on the four fixture inputs: raw features, their
mean, per-step logits, the Mixed_5c mean and every end point's per-channel mean, within the tolerance
the fixture's README states (atol = rtol = 1e-4). Weights are regenerated from the fixture's recipe and
verified against its checksums first, so a failure here is a model difference.
"""
import hashlib, importlib.util, json
from pathlib import Path

import numpy as np
import pytest
import torch

from xattn.zoo import load_extractor
from xattn.weights import load_state_strict, CheckpointLayoutError
from xattn.inception_i3d import InceptionI3d, INCEPTION_I3D_ENDPOINTS

PARITY = Path(__file__).resolve().parents[1].parent / "shared" / "parity"
pytestmark = pytest.mark.skipif(not PARITY.exists(), reason="../shared/parity fixture not present")
TOL = dict(atol=1e-4, rtol=1e-4)


def _recipe():
    spec = importlib.util.spec_from_file_location("i3d_weight_recipe", PARITY / "i3d_weight_recipe.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def weights():
    mod, sums = _recipe(), json.loads((PARITY / "i3d_weight_checksums.json").read_text())
    out = {}
    for kind in ("rgb", "flow"):
        keys = json.loads((PARITY / f"i3d_{kind}_keys.json").read_text())
        sd = mod.make_state_dict([(e["key"], e["shape"], e["dtype"]) for e in keys])
        for e in sums[kind]:
            got = hashlib.sha256(np.ascontiguousarray(sd[e["key"]].numpy()).tobytes()).hexdigest()
            assert got == e["sha256_le_bytes"], f"regenerated {kind} weight {e['key']} differs from the fixture"
        out[kind] = sd
    return out


@pytest.fixture(scope="module")
def expected():
    return dict(np.load(PARITY / "i3d_expected.npz"))


def _inputs():
    codes = np.load(PARITY / "i3d_inputs_random.npz")
    f = lambda c: torch.from_numpy(c.astype(np.float32) / np.float32(127.5) - np.float32(1.0))
    c = codes["rgb_random_codes_u8"]
    odd = np.concatenate([c[0:1], c[1:2]], axis=2)[:, :, :21, :193, :201]
    return {"rgb_random": ("rgb", f(c)), "flow_random": ("flow", f(codes["flow_random_codes_u8"])),
            "rgb_oddsize": ("rgb", f(odd)),
            "rgb_real": ("rgb", torch.from_numpy(np.load(PARITY / "i3d_input_real.npz")["rgb_real"]))}


@pytest.fixture(scope="module")
def models(weights):
    out = {}
    for kind, cin in (("rgb", 3), ("flow", 2)):
        m = InceptionI3d(400, cin).eval()
        load_state_strict(m, weights[kind], f"parity {kind}")
        out[kind] = m
    return out


@pytest.mark.parametrize("name", ["rgb_random", "flow_random", "rgb_oddsize", "rgb_real"])
def test_reference_outputs(name, models, expected):
    torch.set_num_threads(max(1, torch.get_num_threads()))
    kind, x = _inputs()[name]
    m = models[kind]
    with torch.inference_mode():
        m5, eps = m.forward_until(x, collect=True)
        feats = m.pool(m5)
        logits = m(x)
    np.testing.assert_allclose(feats.numpy(), expected[f"{name}__features_raw"], **TOL)
    np.testing.assert_allclose(feats.mean((2, 3, 4)).numpy(), expected[f"{name}__features_mean"], **TOL)
    np.testing.assert_allclose(logits.numpy(), expected[f"{name}__logits"], **TOL)
    np.testing.assert_allclose(m5.mean((2, 3, 4)).numpy(), expected[f"{name}__mixed5c_mean"], **TOL)
    assert [e[0] for e in INCEPTION_I3D_ENDPOINTS] == list(eps)
    for ep, y in eps.items():
        np.testing.assert_allclose(y.mean((0, 2, 3, 4)).numpy(), expected[f"{name}__ep__{ep}__chanmean"], **TOL, err_msg=ep)


def test_oddsize_gives_two_steps(models, expected):
    _, x = _inputs()["rgb_oddsize"]
    with torch.inference_mode(): y = models["rgb"](x)
    assert tuple(y.shape) == (1, 400, 2) == expected["rgb_oddsize__logits"].shape


def test_extractors_reproduce_reference_features(weights, expected, tmp_path):
    """The registry extractors, loaded from files in the official layout, give the reference features."""
    # official files predate num_batches_tracked: save without them
    for kind, fname in (("rgb", "rgb_imagenet.pt"), ("flow", "flow_imagenet.pt")):
        torch.save({k: v for k, v in weights[kind].items() if not k.endswith("num_batches_tracked")}, tmp_path / fname)
    inputs = _inputs()
    for kind, name in (("rgb", "rgb_random"), ("flow", "flow_random"), ("rgb", "rgb_real")):
        e = load_extractor(f"i3d_inception_{kind}", weights=tmp_path / f"{kind}_imagenet.pt", device="cpu")
        got = e(inputs[name][1])
        assert got.shape == (inputs[name][1].shape[0], 1, 1024)
        np.testing.assert_allclose(got[:, 0].numpy(), expected[f"{name}__features_mean"], **TOL)
    t = load_extractor("i3d_inception_rgb", weights=tmp_path / "rgb_imagenet.pt", device="cpu", frames_per_clip=21, output="temporal")
    # temporal tokens of a 21-frame clip: 2 steps (oddsize spatial size is not square, so run the model part directly)
    with torch.inference_mode():
        f = t.model.pool(t.model.forward_until(inputs["rgb_oddsize"][1])).mean((3, 4)).transpose(1, 2)
    np.testing.assert_allclose(f.mean(1).numpy(), expected["rgb_oddsize__features_mean"], **TOL)
    assert t.spec.tokens == 2


def test_preprocessing_reproduces_real_input():
    """The fixture's real input is decoded frames squashed to 224 (bilinear, no antialias) and scaled to [-1, 1]."""
    from xattn.extractors import frames_to_tensor
    frames = np.load(PARITY / "i3d_input_real_frames_u8.npz")["rgb_real_frames_u8_THWC"]
    want = np.load(PARITY / "i3d_input_real.npz")["rgb_real"]
    x = frames_to_tensor(frames, 224, (0.5,) * 3, (0.5,) * 3, crop="none", antialias=False).permute(1, 0, 2, 3)[None]
    np.testing.assert_allclose(x.numpy(), want, atol=1e-6, rtol=0)


def test_charades_and_prefixed_checkpoints(weights, tmp_path):
    sd = dict(weights["rgb"])
    sd["logits.conv3d.weight"] = torch.randn(157, 1024, 1, 1, 1) * 0.01
    sd["logits.conv3d.bias"] = torch.zeros(157)
    torch.save(sd, tmp_path / "rgb_charades.pt")
    e = load_extractor("i3d_inception_rgb", weights=tmp_path / "rgb_charades.pt", device="cpu", frames_per_clip=16, size=224)
    assert e.model.num_classes == 157
    torch.save({"module." + k: v for k, v in weights["rgb"].items()}, tmp_path / "dp.pt")   # nn.DataParallel
    assert load_extractor("i3d_inception_rgb", weights=tmp_path / "dp.pt", device="cpu").spec.dim == 1024
    torch.save(weights["flow"], tmp_path / "flow_as_rgb.pt")                               # wrong modality
    with pytest.raises(CheckpointLayoutError, match="Conv3d_1a_7x7.conv3d.weight: file \\(64, 2, 7, 7, 7\\)"):
        load_extractor("i3d_inception_rgb", weights=tmp_path / "flow_as_rgb.pt", device="cpu")
