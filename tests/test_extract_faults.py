"""Fault injection for extraction: a full disk (a real small tmpfs), a read-only output, Ctrl-C. Each ends in one line
with a non-zero exit, keeps what was committed, and the same command run again (with room) completes the store."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest
from xattn.store import FeatureStore, check_store, store_files
from xattn.synthetic import SyntheticConfig, make_synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--extractors", "dinov3_vits16plus", "--frames", "4", "--overrides", "size=32", "--allow-random-init", "--device", "cpu",
        "--num-workers", "0", "--commit-every", "2", "--threads", "1", "--dtype", "float32", "--batch-size", "4"]


def _env(): return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "0"}
def _cmd(src, out, *extra): return [sys.executable, "-m", "xattn.cli", "extract", "--source", str(src), "--out", str(out), *ARGS, *extra]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("faults")/"data", SyntheticConfig(n_per_class=2, size=32, frames=8), progress=False)


@pytest.fixture
def small_disk(tmp_path):
    "A real 3 MB file system (tmpfs), or skip where this machine does not allow mounting one."
    d = tmp_path/"small"; d.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(d)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root): the disk-full path is not exercised on this machine")
    yield d
    subprocess.run(["umount", "-l", str(d)])


def _errors(stderr: str) -> list[str]:
    return [l.strip() for l in stderr.replace("\r", "\n").splitlines() if l.strip().startswith("xattn ")]


def test_disk_full_is_one_line_and_resumable(dataset, small_disk, tmp_path):
    out = small_disk/"f.h5"
    r = subprocess.run(_cmd(dataset, out), env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "Segmentation" not in r.stderr, r.stderr[-3000:]
    err = _errors(r.stderr)
    assert len(err) == 1 and "disk full" in err[0] and "run the same command again" in err[0], err
    kept = len(FeatureStore(out)["dinov3_vits16plus"]) if store_files(out) else 0
    assert kept > 0 and check_store(out)["ok"]                 # what was committed before the disk filled is intact
    big = tmp_path/"big"; big.mkdir()
    for p in small_disk.iterdir(): subprocess.run(["cp", "-a", str(p), str(big)], check=True)     # "free space": move to a bigger disk
    r = subprocess.run(_cmd(dataset, big/"f.h5"), env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["already_done"] == kept and s["processed"] == 24 - kept and check_store(big/"f.h5")["ok"]


def test_read_only_output_is_one_line(dataset, tmp_path):
    ro = tmp_path/"ro"; ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True).returncode:
        pytest.skip("cannot mount a read-only file system here")
    try:
        r = subprocess.run(_cmd(dataset, ro/"sub"/"f.h5"), env=_env(), capture_output=True, text=True, timeout=600)
    finally: subprocess.run(["umount", "-l", str(ro)])
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    err = _errors(r.stderr)
    assert len(err) == 1 and "cannot write there" in err[0] and "Read-only" in err[0], err


def test_ctrl_c_stops_cleanly_and_keeps_what_finished(dataset, tmp_path):
    out = tmp_path/"c"/"f.h5"
    p = subprocess.Popen(_cmd(dataset, out, "--num-workers", "1"), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    t0 = time.time()
    while time.time() - t0 < 300 and p.poll() is None and not (store_files(out) and len(FeatureStore(out)["dinov3_vits16plus"]) >= 4
                                                               if store_files(out) else False):
        time.sleep(0.1)
    os.killpg(p.pid, signal.SIGINT)                     # what a terminal sends to the whole foreground group
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 130, (p.returncode, stderr[-3000:])
    assert "Traceback" not in stderr, stderr[-3000:]
    err = _errors(stderr)
    assert len(err) == 1 and "interrupted (Ctrl-C)" in err[0], err
    kept = len(FeatureStore(out)["dinov3_vits16plus"])
    assert kept >= 4 and check_store(out)["ok"]
    r = subprocess.run(_cmd(dataset, out), env=_env(), capture_output=True, text=True, timeout=600)
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert r.returncode == 0 and s["already_done"] >= kept and s["already_done"] + s["processed"] == 24
