"""The model registry across processes: concurrent registrations get distinct versions, a registration SIGKILLed at any
point leaves no listed half version, damaged weights fail in one line, and `xattn models list/show` work as commands."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest
import torch
from xattn.core import repo_root
from xattn.registry import (ModelDamagedError, RegistryError, WEIGHTS_FILE, get_version, list_models, list_versions, load_model,
                            register_model)
from xattn.model import FusionConfig, build_model

# A child process: build a seeded toy model, optionally hook the registry (to make a race certain, or to stop in the middle
# of a registration), wait for the start signal, register, and print what it registered.
CHILD = r"""
import json, sys, time
from pathlib import Path
import torch
import xattn.registry as R
from xattn.model import FusionConfig, build_model
root, seed, hook, flag, go = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4]), Path(sys.argv[5])
torch.manual_seed(seed)
model = build_model(FusionConfig(dim=16, heads=2, depth=1, n_classes=5, max_tokens=8), 24, 32).eval()
calls = [0]
if hook == "race":                     # both processes read the same free number before either renames
    orig = R._version_numbers
    def slow(d):
        v = orig(d); calls[0] += 1
        if calls[0] == 1: time.sleep(1.5)
        return v
    R._version_numbers = slow
elif hook == "before_rename":          # stop after everything is written, before the version is published
    orig_claim = R._claim_version
    def stop(*a, **k): flag.write_text("x"); time.sleep(120); return orig_claim(*a, **k)
    R._claim_version = stop
elif hook == "mid_weights":            # stop with half of the weights file written
    def half(model, path):
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        data = Path(path).read_bytes(); Path(path).write_bytes(data[: len(data) // 2])
        flag.write_text("x"); time.sleep(120)
    R.write_weights = half
flag.write_text("ready") if hook not in ("before_rename", "mid_weights") else None
t0 = time.time()
while go.name != "-" and not go.exists() and time.time() - t0 < 60: time.sleep(0.01)
v = R.register_model(model, dict(seed=seed), "shared", root)
x = (torch.randn(2, 6, 24, generator=torch.Generator().manual_seed(0)), torch.randn(2, 3, 32, generator=torch.Generator().manual_seed(1)))
with torch.no_grad(): logits = model(*x).tolist()
import hashlib
sd = hashlib.sha256(b"".join(t.numpy().tobytes() for _, t in sorted(model.state_dict().items()))).hexdigest()
print(json.dumps(dict(version=v.version, sha256=v.meta["weights"]["sha256"], calls=calls[0], logits=logits, state_sha256=sd)))
"""


def _env(): return {**os.environ, "PYTHONPATH": str(repo_root()), "OMP_NUM_THREADS": "1"}


def _child(root, seed, hook, flag, go="-"):
    return subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(seed), hook, str(flag), str(go)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for(path: Path, procs, timeout=120):
    t0 = time.time()
    while not path.exists():
        for p in procs:
            if p.poll() is not None: raise AssertionError(f"child exited early: {p.stderr.read()[-2000:]}")
        if time.time() - t0 > timeout: raise AssertionError(f"{path} never appeared")
        time.sleep(0.05)


def _inputs():
    return (torch.randn(2, 6, 24, generator=torch.Generator().manual_seed(0)), torch.randn(2, 3, 32, generator=torch.Generator().manual_seed(1)))


def _state_sha256(model) -> str:
    import hashlib
    return hashlib.sha256(b"".join(t.numpy().tobytes() for _, t in sorted(model.state_dict().items()))).hexdigest()


def _toy(seed=0):
    torch.manual_seed(seed)
    return build_model(FusionConfig(dim=16, heads=2, depth=1, n_classes=5, max_tokens=8), 24, 32).eval()


@pytest.mark.parametrize("hook", ["none", "race"])
def test_concurrent_registrations_get_distinct_versions(tmp_path, hook):
    root, go = tmp_path/"models", tmp_path/"go"
    procs = [_child(root, seed, hook, tmp_path/f"ready{seed}", go) for seed in (1, 2)]
    for seed in (1, 2): _wait_for(tmp_path/f"ready{seed}", procs)
    go.write_text("go")                                     # both are imported and waiting: start them together
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(o["version"] for o in outs) == [1, 2]
    if hook == "race": assert max(o["calls"] for o in outs) >= 2      # one of them lost the rename and took the next number
    assert [v.version for v in list_versions("shared", root)] == [1, 2]
    for o in outs:                                          # each version holds the weights its own process wrote
        model, meta = load_model("shared", o["version"], root)
        assert meta["weights"]["sha256"] == o["sha256"]
        assert _state_sha256(model) == o["state_sha256"]      # bit for bit
        with torch.no_grad(): assert torch.allclose(model(*_inputs()), torch.tensor(o["logits"]), atol=1e-5)   # other thread count
    assert [p.name for p in (root/"shared").iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("hook", ["before_rename", "mid_weights"])
def test_sigkill_mid_registration_leaves_no_listed_version(tmp_path, hook):
    root = tmp_path/"models"
    register_model(_toy(0), dict(seed=0), "shared", root)   # v1 exists before the crash
    p = _child(root, 7, hook, tmp_path/"stopped")
    _wait_for(tmp_path/"stopped", [p])
    os.killpg(p.pid, signal.SIGKILL); p.wait(timeout=30)
    leftovers = [q for q in (root/"shared").iterdir() if q.name.startswith(".tmp-")]
    assert len(leftovers) == 1 and any(leftovers[0].iterdir())        # a real half-written version is on disk...
    assert [v.version for v in list_versions("shared", root)] == [1]  # ...and nobody lists or loads it
    assert get_version("shared", root=root).version == 1
    assert list_models(root) == ["shared"]
    v = register_model(_toy(3), dict(seed=3), "shared", root)        # the next writer takes v2 and sweeps the dead one's folder
    assert v.version == 2 and not leftovers[0].exists()
    model, meta = load_model("shared", root=root)
    assert meta["seed"] == 3 and meta["version"] == 2


def test_damaged_weights_fail_in_one_line(tmp_path):
    root = tmp_path/"models"
    v = register_model(_toy(0), {}, "dmg", root)
    f = v.path/WEIGHTS_FILE
    data = bytearray(f.read_bytes()); data[len(data) // 2] ^= 0x01; f.write_bytes(bytes(data))     # same size, one bit off
    with pytest.raises(ModelDamagedError) as e: load_model("dmg", 1, root)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and str(f) in msg and "sha256" in msg
    assert list_versions("dmg", root) == []                 # not listed, so 'latest' does not resolve to it
    with pytest.raises(RegistryError): load_model("dmg", root=root)
    f.write_bytes(bytes(data[:1000]))                       # truncated
    with pytest.raises(ModelDamagedError, match="truncated"): load_model("dmg", 1, root)
    r = subprocess.run([sys.executable, "-m", "xattn.cli", "models", "export", "dmg:1", "--root", str(root), "--out", str(tmp_path/"x.pt")],
                       env=_env(), capture_output=True, text=True, timeout=180)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and str(f) in r.stderr, r.stderr[-2000:]
    assert not (tmp_path/"x.pt").exists()


def test_loading_unpickles_nothing(tmp_path, monkeypatch):
    root = tmp_path/"models"
    m = _toy(5); register_model(m, {}, "safe", root)
    def refuse(*a, **k): raise AssertionError("torch.load called while loading a registered model")
    monkeypatch.setattr(torch, "load", refuse)
    import pickle
    monkeypatch.setattr(pickle, "loads", refuse); monkeypatch.setattr(pickle, "load", refuse)
    back, _ = load_model("safe", root=root)
    with torch.no_grad(): assert torch.equal(back(*_inputs()), m(*_inputs()))


def test_cli_list_and_show(tmp_path):
    root = tmp_path/"models"
    register_model(_toy(0), dict(metrics=dict(top1=0.25)), "alpha", root)
    register_model(_toy(1), dict(metrics=dict(top1=0.5)), "alpha", root)
    register_model(_toy(2), {}, "beta", root)
    xattn = lambda *a: subprocess.run([sys.executable, "-m", "xattn.cli", "models", *map(str, a)], env=_env(), capture_output=True, text=True, timeout=180)
    r = xattn("list", "--root", root)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.strip().splitlines()
    assert "3 version(s) of 2 model(s)" in lines[0]
    assert [l.split()[:2] for l in lines[1:]] == [["alpha", "v1"], ["alpha", "v2"], ["beta", "v1"]]
    assert "top1 0.500" in lines[2]
    rows = json.loads(xattn("list", "--root", root, "--json", "--name", "alpha").stdout)
    assert [(x["name"], x["version"], x["top1"]) for x in rows] == [("alpha", 1, 0.25), ("alpha", 2, 0.5)]
    r = xattn("show", "alpha", "--root", root)
    rec = json.loads(r.stdout)
    assert (r.returncode, rec["version"], rec["path"]) == (0, 2, str(root/"alpha"/"v2"))
    assert rec["architecture"]["class"] == "CrossAttentionFusion" and len(rec["weights"]["sha256"]) == 64
    assert json.loads(xattn("show", "alpha:v1", "--root", root).stdout)["metrics"]["top1"] == 0.25
    r = xattn("show", "gamma", "--root", root)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "no model 'gamma'" in r.stderr
