"""Feature store across real processes: one writer per store (lock), readers beside a live writer, a writer killed
mid-commit, virtual merges that move with their shards, spawn-started DataLoader workers, the CLI's exit codes."""
import json, os, shutil, signal, subprocess, sys, textwrap, time
from pathlib import Path
import numpy as np
import pytest
import torch
from xattn.core import repo_root
from xattn.store import (FeatureWriter, FeatureStore, StoreError, check_store, merge_stores, store_diff, parts_dir, store_files)

ENV = {**os.environ, "PYTHONPATH": str(repo_root())}

WRITER = textwrap.dedent("""
    import sys, time, numpy as np
    from xattn.store import FeatureWriter
    path, n, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    with FeatureWriter(path, commit_every=1) as w:
        w.set_provenance("e", {"weights": "random-init"})
        done = w.stored("e")                     # a resumed writer skips what the store holds
        for i in range(n):
            if f"v{i:05d}" in done: continue
            w.add("e", f"v{i:05d}", np.full((8, 4, 256), i, np.float32), np.zeros((8, 2)))
            print(i, flush=True); time.sleep(pause)
""")


def _writer(path, n, pause):
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(n), str(pause)], env=ENV, stdout=subprocess.PIPE, text=True)


def _wait_lines(p, k):
    for _ in range(k): assert p.stdout.readline() != ""


def test_second_writer_is_refused_and_readers_see_commits(tmp_path):
    path = tmp_path/"s.h5"
    p = _writer(path, 50, 0.2)
    try:
        _wait_lines(p, 4)
        with pytest.raises(StoreError, match="being written by another process"): FeatureWriter(path)
        s = FeatureStore(path)                       # committed segments are readable while the writer runs
        ids = s.video_ids("e")
        assert len(ids) >= 3
        assert all(float(s.get("e", v)[0, 0, 0]) == int(v[1:]) for v in ids)
    finally:
        p.kill(); p.wait()


def test_writer_killed_mid_commit_leaves_a_valid_store(tmp_path):
    path, n, stored = tmp_path/"k.h5", 150, []
    for round_ in range(3):                          # kill, resume, kill, resume to the end
        p = _writer(path, n, 0.0)
        if round_ == 2: assert p.wait() == 0; break
        _wait_lines(p, 20); os.kill(p.pid, signal.SIGKILL); p.wait()
        rep = check_store(path); assert rep["ok"], rep["errors"]
        stored.append(len(FeatureStore(path)["e"]))
        assert stored[-1] >= 19 * (round_ + 1)       # committed one by one: at most the video in flight is lost
    s = FeatureStore(path)
    assert check_store(path)["ok"] and len(s["e"]) == n and not parts_dir(path).exists()
    assert all(float(s.get("e", v)[-1, -1, -1]) == int(v[1:]) for v in s.video_ids("e"))


def test_virtual_merge_moves_with_its_shards(tmp_path):
    d = tmp_path/"a"; d.mkdir()
    for k in range(2):
        with FeatureWriter(d/f"f.rank{k}-of-2.h5") as w:
            w.set_provenance("e", {"weights": "random-init"})
            for i in range(3): w.add("e", f"r{k}v{i}", np.random.default_rng(i + 10 * k).normal(size=(2, 1, 4)), np.zeros((2, 2)))
    merge_stores(d/"f.h5", d/"virtual.h5", virtual=True)
    merge_stores(d/"f.h5", d/"copy.h5")
    shutil.move(d, tmp_path/"b")                     # the whole folder moves: relative sources still resolve
    b = tmp_path/"b"
    assert store_diff(b/"virtual.h5", b/"copy.h5") == []
    assert check_store(b/"virtual.h5")["ok"]


def _read(args):
    store, vid = args
    return store.get("e", vid).sum()


class _DS(torch.utils.data.Dataset):
    def __init__(self, store, ids): self.store, self.ids = store, ids
    def __len__(self): return len(self.ids)
    def __getitem__(self, i): return self.ids[i], torch.from_numpy(np.asarray(self.store.get("e", self.ids[i]), np.float32))


@pytest.mark.parametrize("in_memory", [False, True])
def test_spawned_dataloader_workers(tmp_path, in_memory):
    path = tmp_path/"s.h5"
    with FeatureWriter(path, dtype="float32") as w:
        w.set_provenance("e", {"weights": "random-init"})
        for i in range(12): w.add("e", f"v{i}", np.full((3, 1, 4), i, np.float32), np.zeros((3, 2)))
    store = FeatureStore(path, in_memory=in_memory)
    dl = torch.utils.data.DataLoader(_DS(store, store.video_ids("e")), batch_size=None, num_workers=2, multiprocessing_context="spawn")
    got = {v: x for v, x in dl}
    assert len(got) == 12 and all(float(x[0, 0, 0]) == int(v[1:]) for v, x in got.items())


def test_cli_check_exit_codes(tmp_path):
    path = tmp_path/"s.h5"
    with FeatureWriter(path) as w:
        w.set_provenance("e", {"weights": "random-init"})
        w.add("e", "a", np.ones((2, 1, 4)), np.zeros((2, 2)))
    ok = subprocess.run([sys.executable, "-m", "xattn.cli", "store", "check", str(path), "--json"], env=ENV, capture_output=True, text=True)
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True
    data = path.read_bytes(); path.write_bytes(data[: len(data) // 3])
    bad = subprocess.run([sys.executable, "-m", "xattn.cli", "store", "check", str(path)], env=ENV, capture_output=True, text=True)
    assert bad.returncode == 1 and "FAILED" in bad.stdout
