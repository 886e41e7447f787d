"""Acceptance: `torchrun --nproc_per_node 2` extraction (each rank its own shard file, rank 0 merges) gives the same
rows as a single process; a SLURM-array style run (no process group) is merged with `xattn store merge`."""
import json, os, subprocess, sys
from pathlib import Path
import pytest
from xattn.core import repo_root
from xattn.store import FeatureStore, check_store, store_diff, shard_path
from xattn.synthetic import SyntheticConfig, make_synthetic_dataset

ARGS = ["--extractors", "dinov3_vits16plus,i3d_r50_flow", "--frames", "4", "--overrides", "size=32,i3d_r50_flow.frames_per_clip=2",
        "--allow-random-init", "--device", "cpu", "--num-workers", "1", "--batch-size", "8", "--threads", "1", "--no-progress"]


def _env(**kw):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT")}
    return {**env, "PYTHONPATH": str(repo_root()), **kw}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("shard")
    root = make_synthetic_dataset(d/"data", SyntheticConfig(n_per_class=2, size=32, frames=12, n_corrupt=1), progress=False)
    one = d/"one"/"features.h5"
    r = subprocess.run([sys.executable, "-m", "xattn.cli", "extract", "--source", str(root), "--out", str(one), *ARGS],
                       env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return d, root, one


def test_torchrun_two_processes_equal_one(data):
    d, root, one = data
    out = d/"ddp"/"features.h5"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "xattn.cli",
                        "extract", "--source", str(root), "--out", str(out), *ARGS], env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    assert sorted(x["rank"] for x in res) == [0, 1] and all(x["world_size"] == 2 for x in res)
    assert sum(x["processed"] for x in res) == 23 and all(x["processed"] > 0 for x in res)
    for rank in (0, 1):
        s = FeatureStore(shard_path(out, rank, 2))
        assert len(s["i3d_r50_flow"]) in (11, 12)                   # each rank its own half
    assert out.is_file()                                              # rank 0 merged both shards
    assert check_store(out)["ok"]
    assert store_diff(out, one, rtol=2**-9) == []


def test_slurm_array_then_merge(data):
    d, root, one = data
    out = d/"slurm"/"features.h5"
    for task in (3, 4):                       # --array=3-4: tasks 3 and 4 of 2, run one after the other
        r = subprocess.run([sys.executable, "-m", "xattn.cli", "extract", "--source", str(root), "--out", str(out), *ARGS],
                           env=_env(SLURM_ARRAY_TASK_ID=str(task), SLURM_ARRAY_TASK_COUNT="2", SLURM_ARRAY_TASK_MIN="3"),
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        assert json.loads(r.stdout.strip().splitlines()[-1])["rank"] == task - 3
    assert not out.exists()
    assert store_diff(out, one, rtol=2**-9) == []         # the unmerged shards already read as one store
    r = subprocess.run([sys.executable, "-m", "xattn.cli", "store", "merge", str(out), str(shard_path(out, 0, 2)), str(shard_path(out, 1, 2))],
                       env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert store_diff(out, one, rtol=2**-9) == []
    r = subprocess.run([sys.executable, "-m", "xattn.cli", "store", "merge", "--virtual", str(d/"virtual.h5"), str(shard_path(out, 0, 2)),
                        str(shard_path(out, 1, 2))], env=_env(), capture_output=True, text=True, cwd="/")
    assert r.returncode == 0, r.stdout + r.stderr
    assert store_diff(d/"virtual.h5", one, rtol=2**-9) == []
