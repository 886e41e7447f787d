"DistributedDataParallel through a real `torchrun --nproc_per_node 2` on CPU (gloo)."
import json, os, subprocess, sys, textwrap
from pathlib import Path
import pytest, torch

ROOT = Path(__file__).resolve().parents[1]

JOB = textwrap.dedent("""
    import sys, json, torch
    from pathlib import Path
    from xattn.core import seed_everything
    from xattn.features import write_toy_store, FeatureDataset, TOY_SEMANTIC as S, TOY_MOTION as M
    from xattn.train import TrainConfig, train
    from xattn.model import FusionConfig, build_model
    run_dir, batch, stop, dropout = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    from xattn.data import load_ssv2
    root = Path(sys.argv[-1])                    # a toy dataset written once by the test (one writer per store)
    recs = load_ssv2(root/"labels.json", root/"train.json", root, ".mp4") + load_ssv2(root/"labels.json", root/"validation.json", root, ".mp4")
    st = root/"features.h5"
    tr, va = FeatureDataset(st, recs[:40], S, M), FeatureDataset(st, recs[40:], S, M)
    seed_everything(0)
    model = build_model(FusionConfig(dim=32, heads=4, depth=2, n_classes=12, dropout=dropout, drop_path=dropout), *tr.dims)
    res = train(model, tr, va, TrainConfig(epochs=4, batch_size=batch, lr=2e-3, warmup_epochs=1, log_every=1,
                                            stop_after_epoch=None if stop == "none" else int(stop)), run_dir)
    torch.save(model.state_dict(), Path(run_dir)/f"final-rank{res['rank']}.pt")
    # One file per rank, not stdout: ranks share the pipe, and with PYTHONUNBUFFERED each print() is several
    # writes, so two ranks' lines can interleave.
    (Path(run_dir)/f"result-rank{res['rank']}.json").write_text(json.dumps(dict(
        rank=res["rank"], world=res["world"], epochs_run=res["epochs_run"], history=res["history"], best=res["best"])))
""")


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _results(run_dir):
    "The result each rank of the last run in `run_dir` wrote (then removed, so a later run cannot be read stale)."
    out = []
    for f in sorted(Path(run_dir).glob("result-rank*.json")):
        out.append(json.loads(f.read_text())); f.unlink()
    return out


def _torchrun(script, run_dir, batch, stop="none", dropout=0.0):
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
                        str(run_dir), str(batch), str(stop), str(dropout)],
                       capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return sorted(_results(run_dir), key=lambda x: x["rank"])


def _single(script, run_dir, batch, dropout=0.0):
    r = subprocess.run([sys.executable, str(script), str(run_dir), str(batch), "none", str(dropout)],
                       capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    return _results(run_dir)[0]


@pytest.fixture
def script(tmp_path):
    from xattn.features import write_toy_dataset
    root = write_toy_dataset(tmp_path/"toy", val_fraction=20 / 60, n_videos=60, noise=0.8, seed=3)
    p = tmp_path/"job.py"; p.write_text(JOB.replace("sys.argv[-1]", repr(str(root)))); return p


def _strip(h): return [{k: v for k, v in e.items() if k != "time_s"} for e in h]


def test_ddp_two_processes_match_one_process_with_double_batch(script, tmp_path):
    ranks = _torchrun(script, tmp_path/"ddp", batch=4)
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world"] == 2 for r in ranks)
    w0 = torch.load(tmp_path/"ddp"/"final-rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path/"ddp"/"final-rank1.pt", weights_only=True)
    for k in w0: assert torch.equal(w0[k], w1[k]), k                    # DDP keeps the replicas identical
    assert ranks[0]["history"] == ranks[1]["history"] or _strip(ranks[0]["history"]) == _strip(ranks[1]["history"])
    h = ranks[0]["history"]
    assert [e["val_n"] for e in h] == [20] * 4                          # validation sharded without padding: each video once
    # rank 0 alone writes: one epoch record per epoch, 5 steps (40 videos / 2 ranks / batch 4) per epoch
    recs = [json.loads(l) for l in (tmp_path/"ddp"/"metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs if r["kind"] == "epoch"] == [1, 2, 3, 4]
    assert [r["step"] for r in recs if r["kind"] == "step"] == list(range(1, 21))
    # only rank 0 commits training state: last.pt, its previous generation, the digests, and best.pt
    assert sorted(p.name for p in (tmp_path/"ddp"/"checkpoints").iterdir()) == ["best.pt", "last.prev.pt", "last.pt", "state.json"]
    # 2 ranks x batch 4 follow the same trajectory as 1 process x batch 8 (same samples per step, gradients averaged)
    one = _single(script, tmp_path/"one", batch=8)
    ws = torch.load(tmp_path/"one"/"final-rank0.pt", weights_only=True)
    for k in w0: torch.testing.assert_close(w0[k], ws[k], rtol=1e-4, atol=1e-5, msg=k)
    for a, b in zip(h, one["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4) and a["val_top1"] == b["val_top1"]


def test_ddp_exact_resume(script, tmp_path):
    _torchrun(script, tmp_path/"full", batch=4, dropout=0.2)
    part = _torchrun(script, tmp_path/"split", batch=4, stop=2, dropout=0.2)
    assert all(r["epochs_run"] == 2 for r in part)
    _torchrun(script, tmp_path/"split", batch=4, dropout=0.2)
    a = torch.load(tmp_path/"full"/"checkpoints"/"last.pt", weights_only=True)
    b = torch.load(tmp_path/"split"/"checkpoints"/"last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 4
    for k in a["model"]: assert torch.equal(a["model"][k], b["model"][k]), k
