"""Golden test of the pretrained EfficientNet-Lite0 semantic extractor on real pixels.

The ImageNet top-5 (names and probabilities) of two real images must match `golden/efficientnet_lite0_imagenet.json`:
matplotlib's bundled photograph of Grace Hopper in US Navy uniform, and frame 370 of a real clip of a child walking a
small white dog (`../shared/data/videos/vf__v_ZNVhz7ctTq0.mp4`). Both top-1s are also what a person sees in the
picture ("military uniform", "West Highland white terrier"). The second half breaks one thing at a time (the key
mapping, the normalisation, the channel order, the padding, the crop, the interpolation) and asserts that the golden
check catches each: a test that cannot fail proves nothing.

Regenerate the golden file (only when the extractor's documented preprocessing changes on purpose):
    PYTHONPATH=. .venv/bin/python tests/test_golden_imagenet.py --write
"""
import json, sys
from pathlib import Path
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "efficientnet_lite0_imagenet.json"
CLIP = ROOT.parent / "shared" / "data" / "videos" / "vf__v_ZNVhz7ctTq0.mp4"
FRAME = 370
PROB_ATOL = 0.01          # CPU kernels differ in the last bits; every sabotage below moves a probability by >= 0.02


def images() -> dict:
    import matplotlib
    from PIL import Image
    from xattn.data import read_frames
    grace = np.array(Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert("RGB"))
    return {"grace_hopper.jpg": grace, f"{CLIP.name}#{FRAME}": read_frames(CLIP, [FRAME])[0]}


def probabilities(ext, frame: np.ndarray) -> dict:
    "ImageNet class name -> probability of one RGB frame through the extractor's own preprocessing."
    from torchvision.models._meta import _IMAGENET_CATEGORIES as NAMES
    p = ext.imagenet_logits(ext.preprocess(frame[None])).softmax(-1)[0]
    return dict(zip(NAMES, p.tolist()))


def top5(probs: dict) -> list:
    return [[n, round(p, 4)] for n, p in sorted(probs.items(), key=lambda kv: -kv[1])[:5]]


def golden_mismatches(predicted: dict, golden: dict) -> list[str]:
    "Differences from the golden top-5: another top-1, or a golden class whose probability moved by more than PROB_ATOL."
    out = []
    for img, want in golden.items():
        p = predicted[img]
        if max(p, key=p.get) != want[0][0]: out.append(f"{img}: top-1 {max(p, key=p.get)!r} != {want[0][0]!r}")
        out += [f"{img}: p({n}) {p[n]:.4f} != {q:.4f}" for n, q in want if abs(p[n] - q) > PROB_ATOL]
    return out


@pytest.fixture(scope="module")
def lite():
    from xattn.zoo import load_extractor
    return load_extractor("efficientnet_lite0", device="cpu")


@pytest.fixture(scope="module")
def golden():
    return json.loads(GOLDEN.read_text())["top5"]


def test_golden_top5_on_real_pixels(lite, golden):
    assert lite.provenance["digest_known_match"] is True, lite.provenance
    pred = {k: probabilities(lite, v) for k, v in images().items()}
    assert top5(pred["grace_hopper.jpg"])[0][0] == "military uniform"
    assert top5(pred[f"{CLIP.name}#{FRAME}"])[0][0] == "West Highland white terrier"
    assert golden_mismatches(pred, golden) == []


def _swap_bn_rules(monkeypatch):
    import xattn.zoo as zoo
    monkeypatch.setitem(zoo._LITE_IR, "_bn0", "bn2"); monkeypatch.setitem(zoo._LITE_IR, "_bn1", "bn1")


SABOTAGE = {
    # name: (how to break it, extractor overrides, frame transform)
    "bn0/bn1 rules swapped": (_swap_bn_rules, {}, None),
    "ImageNet mean/std": (lambda mp: None, {}, "imagenet_norm"),
    "BGR channel order": (lambda mp: None, {}, lambda f: np.ascontiguousarray(f[..., ::-1])),
    "symmetric padding": (lambda mp: mp.setattr(__import__("xattn.zoo").zoo.EfficientNetLite0, "timm_name", "efficientnet_lite0"), {}, None),
    "0.875 centre crop": (lambda mp: None, {"crop_pct": 0.875}, None),
    "bilinear resize": (lambda mp: None, {}, "bilinear"),
}


@pytest.mark.parametrize("what", list(SABOTAGE))
def test_golden_catches_a_broken_pipeline(what, golden, monkeypatch):
    import dataclasses
    from xattn.zoo import load_extractor
    break_it, overrides, tf = SABOTAGE[what]
    break_it(monkeypatch)
    ext = load_extractor("efficientnet_lite0", device="cpu", **overrides)
    if tf == "imagenet_norm": ext.spec = dataclasses.replace(ext.spec, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    if tf == "bilinear": ext.spec = dataclasses.replace(ext.spec, interpolation="bilinear")
    frames = {k: (tf(v) if callable(tf) else v) for k, v in images().items()}
    bad = golden_mismatches({k: probabilities(ext, v) for k, v in frames.items()}, golden)
    print(what, bad)
    assert bad, f"{what}: the golden check did not notice"


if __name__ == "__main__" and "--write" in sys.argv:
    from xattn.zoo import load_extractor
    e = load_extractor("efficientnet_lite0", device="cpu")
    GOLDEN.write_text(json.dumps(dict(
        extractor="efficientnet_lite0", weights=e.provenance["weights"], preprocessing=dict(
            size=e.spec.size, resize=e.spec.resize, crop=e.spec.crop, interpolation=e.spec.interpolation, mean=e.spec.mean, std=e.spec.std),
        made_with="PYTHONPATH=. .venv/bin/python tests/test_golden_imagenet.py --write",
        top5={k: top5(probabilities(e, v)) for k, v in images().items()}), indent=1) + "\n")
    print(GOLDEN.read_text())
