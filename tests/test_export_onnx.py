"""`xattn models export --format all` on a demo-like registered model, as a real process: the TorchScript and the ONNX file
each answer like eager PyTorch (within 1e-4) at batch sizes and token counts other than the ones used to export them, within
the position table and beyond it, with padded rows; the ONNX sidecar records the opset and the input contract."""
import json, os, subprocess, sys
import pytest
import torch
from xattn.core import repo_root
from xattn.model import FusionConfig, build_model
from xattn.registry import ONNX_EXAMPLE, example_inputs, load_model, load_onnx, load_torchscript, register_model

# The fusion kinds `xattn demo` registers (its main model; the baselines are trained beside it but not registered).
DEMO_KINDS = ["cross_attention"]


def _demo_like(kind: str):
    "The demo's fusion architecture (dim 256, 8 heads, depth 2, 128 positions) on EfficientNet-Lite0 (1280) and I3D R50 (2048) widths."
    torch.manual_seed(0)
    return build_model(FusionConfig(kind=kind, dim=256, heads=8, depth=2, n_classes=12), 1280, 2048).eval()


@pytest.mark.parametrize("kind", DEMO_KINDS)
def test_onnx_and_torchscript_match_eager_at_new_shapes(tmp_path, kind):
    root = tmp_path/"models"
    register_model(_demo_like(kind), dict(class_names=[f"c{i}" for i in range(12)]), "demo-like", root)
    env = {**os.environ, "PYTHONPATH": str(repo_root()), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "xattn.cli", "models", "export", "demo-like", "--root", str(root), "--out", str(tmp_path/"m")],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(r.stdout)                                   # stdout is the JSON report alone (exporter chatter suppressed)
    assert sorted(rep["exports"]) == ["onnx", "torchscript"] and rep["max_abs_diff"] <= 1e-4
    onnx_model, side = load_onnx(tmp_path/"m.onnx")
    ts_model, _ = load_torchscript(tmp_path/"m.pt")
    assert side["opset"] >= 17 and side["check"]["passed"] and side["exporter"].startswith("torch.onnx.export")
    assert [(a["name"], a["shape"]) for a in side["contract"]["onnx"]["inputs"]] == [
        ("sem", ["batch", "sem_tokens", 1280]), ("mot", ["batch", "mot_tokens", 2048]), ("sem_mask", ["batch", "sem_tokens"]),
        ("mot_mask", ["batch", "mot_tokens"])]
    model, _ = load_model("demo-like", root=root)
    diffs = {}
    for B, Ts, Tm in ((1, 16, 1), (3, 16, 2), (5, 9, 7), (2, 130, 4), (2, 6, 140)):    # 128 positions; the demo feeds 16 + 1 tokens
        assert (B, Ts, Tm) != ONNX_EXAMPLE
        x = example_inputs(model, B, Ts, Tm, seed=Ts + Tm)
        with torch.no_grad():
            ref = model(*x)
            diffs[(B, Ts, Tm)] = (float((onnx_model(*x) - ref).abs().max()), float((ts_model(*x) - ref).abs().max()))
    print(f"\n{kind}: max |onnx - eager|, |torchscript - eager| by (batch, sem_tokens, mot_tokens): {diffs}")
    assert all(o <= 1e-4 and t <= 1e-4 for o, t in diffs.values()), diffs
