"""Fault injection for training: SIGKILL at random points (also between the state commit and best.pt), a truncated or
hostile checkpoint. Asserts that no resumed run reports a number the weights do not produce, that nothing is logged twice,
and that every error is one line."""
import json, os, random, signal, subprocess, sys, time
from pathlib import Path
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--dim", "16", "--heads", "2", "--depth", "1", "--epochs", "8", "--batch-size", "8", "--lr", "2e-3", "--warmup-epochs", "1",
        "--log-every", "2", "--selection-fraction", "0.2"]


def _env(): return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from xattn.features import write_toy_dataset, TOY_SEMANTIC, TOY_MOTION
    root = write_toy_dataset(tmp_path_factory.mktemp("toy"), n_videos=96, noise=0.8, seed=3)
    return ["--store", str(root/"features.h5"), "--dataset-root", str(root), "--semantic", TOY_SEMANTIC, "--motion", TOY_MOTION]


def _train(toy, run_dir, **kw):
    return subprocess.run([sys.executable, "-m", "xattn.cli", "train", *toy, *ARGS, "--run-dir", str(run_dir)], env=_env(),
                          capture_output=True, text=True, timeout=600, **kw)


def _epochs(run_dir: Path) -> int:
    p = run_dir/"metrics.jsonl"
    return sum(1 for l in p.read_text().splitlines() if '"kind": "epoch"' in l) if p.exists() else 0


def test_sigkill_anywhere_then_resume_reports_the_right_model(toy, tmp_path):
    ref = _train(toy, tmp_path/"ref"); assert ref.returncode == 0, ref.stderr[-2000:]
    want = json.loads((tmp_path/"ref"/"metrics.json").read_text())
    rd, rng, kills = tmp_path/"killed", random.Random(7), 0
    for _ in range(10):
        p = subprocess.Popen([sys.executable, "-m", "xattn.cli", "train", *toy, *ARGS, "--run-dir", str(rd)], env=_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        target, t0 = _epochs(rd) + rng.choice([0, 1, 2]), time.time()
        while p.poll() is None and _epochs(rd) < target and time.time() - t0 < 300: time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.3))       # anywhere: mid-epoch, mid-commit, between the state and best.pt
        if p.poll() is not None: break
        os.killpg(p.pid, signal.SIGKILL); p.wait(); kills += 1
    r = _train(toy, rd); assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads((rd/"metrics.json").read_text())
    assert kills >= 2
    for k in ("best_epoch", "top1", "top5", "epochs_run"): assert got[k] == want[k], (k, got[k], want[k])
    best = torch.load(rd/"checkpoints"/"best.pt", weights_only=True)
    assert best["best"]["epoch"] == got["best_epoch"]                        # the weights evaluated are the best epoch's
    recs = [json.loads(l) for l in (rd/"metrics.jsonl").read_text().splitlines()]
    keys = [(r["kind"], r.get("step") if r["kind"] == "step" else r["epoch"]) for r in recs]
    assert len(keys) == len(set(keys)), "a resumed run logged a record twice"
    assert [r["epoch"] for r in recs if r["kind"] == "epoch"] == list(range(1, 9))


def test_truncated_state_falls_back_to_the_previous_one(toy, tmp_path):
    rd = tmp_path/"run"
    r = subprocess.run([sys.executable, "-m", "xattn.cli", "train", *toy, *ARGS, "--stop-after-epoch", "5", "--run-dir", str(rd)],
                       env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    last = rd/"checkpoints"/"last.pt"; b = last.read_bytes(); last.write_bytes(b[: len(b) // 3])
    r = _train(toy, rd)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "last.pt is not usable" in r.stderr and "resuming from" in r.stderr and "last.prev.pt (epoch 4)" in r.stderr
    assert json.loads((rd/"metrics.json").read_text())["epochs_run"] == 8


def test_both_states_damaged_is_one_line(toy, tmp_path):
    rd = tmp_path/"run"
    r = subprocess.run([sys.executable, "-m", "xattn.cli", "train", *toy, *ARGS, "--stop-after-epoch", "3", "--run-dir", str(rd)],
                       env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0
    for n in ("last.pt", "last.prev.pt"): (rd/"checkpoints"/n).write_bytes(b"\0" * 64)
    r = _train(toy, rd)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert len(r.stderr.strip().splitlines()) == 1 and "no usable training state" in r.stderr


class _Evil:
    def __reduce__(self): return (os.system, ("echo pwned > " + os.environ.get("XATTN_PWNED", "/dev/null"),))


@pytest.mark.parametrize("what", ["hostile", "truncated", "huge"])
def test_evaluate_refuses_bad_checkpoints_in_one_line(toy, tmp_path, what):
    ck = tmp_path/"bad.pt"
    if what == "hostile": torch.save({"model": _Evil()}, ck)
    elif what == "truncated": ck.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    else: torch.save({"model": {}, "model_config": {"kind": "concat", "dim": 10**9}, "dims": [8, 8]}, ck)
    env = {**_env(), "XATTN_PWNED": str(tmp_path/"pwned")}
    r = subprocess.run([sys.executable, "-m", "xattn.cli", "evaluate", "--checkpoint", str(ck), *toy[:4]], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    line = r.stderr.strip().splitlines()
    assert len(line) == 1 and "weights_only=False" not in line[0], line
    assert not (tmp_path/"pwned").exists()
