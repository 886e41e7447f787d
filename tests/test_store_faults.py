"""Store faults injected into real files, seen as a user sees them (issue 12): flipped bits, garbage index offsets,
a deleted and a truncated segment. `xattn store check` fails naming the damage, readers (`store info`, `store export`,
the training dataset) refuse in one line instead of returning wrong rows, and `xattn store repair` followed by the
writer's next run restores a complete, checked store without losing any intact video."""
import json, subprocess, sys
from pathlib import Path
import h5py, numpy as np, pytest
from xattn.store import FeatureStore, FeatureWriter, StoreError, check_store, parts_dir

N = 8


def _rows(i): return np.random.default_rng(i).standard_normal((3, 2, 16)).astype(np.float32)


def _write(path: Path, ids, commit_every=2):
    with FeatureWriter(path, commit_every=commit_every, consolidate=False) as w:
        w.set_provenance("clip", {"weights": "test", "frames": 3})
        for i in ids:
            w.add("clip", f"v{i}", _rows(i), np.stack([np.arange(3), np.arange(3) + 1], 1).astype(float))
            w.describe(f"v{i}", fps=12.0, n_frames=4, duration=4 / 12); w.done(f"v{i}")


def _xattn(*args):
    r = subprocess.run([sys.executable, "-m", "xattn.cli", *map(str, args)], capture_output=True, text=True, timeout=300)
    return r.returncode, r.stdout, r.stderr


def _one_error_line(err: str, needle: str) -> bool:
    "stderr holds exactly one error line, naming `needle`, and no traceback (a progress bar may precede it)."
    errs = [l for l in err.splitlines() if "error:" in l]
    return len(errs) == 1 and needle in errs[0] and "Traceback" not in err


def _assert_refused(path: Path, needle: str, tmp_path: Path):
    "Every reader refuses: one stderr line (exit 2) naming `needle`; nothing exported."
    for args in (("store", "info", path), ("store", "export", path, "--out", tmp_path/"exp")):
        rc, out, err = _xattn(*args)
        assert rc == 2 and out == "", (args, rc, out, err)
        assert _one_error_line(err, needle), err
    assert not any((tmp_path/"exp").glob("*")) if (tmp_path/"exp").exists() else True


def _flip_a_bit_in_rows(seg: Path):
    with h5py.File(seg, "r") as f: first = f["clip"]["rows"][0].tobytes()
    b = bytearray(seg.read_bytes()); at = bytes(b).find(first[:32]); assert at > 0
    b[at + 7] ^= 0x10; seg.write_bytes(bytes(b))


def test_flipped_bit_is_caught_and_repaired(tmp_path):
    st = tmp_path/"s.h5"; _write(st, range(N))
    seg = sorted(parts_dir(st).glob("*.h5"))[1]                     # videos v2, v3
    _flip_a_bit_in_rows(seg)
    rc, out, _ = _xattn("store", "check", st)
    assert rc == 1 and "fail their checksum" in out
    with pytest.raises(StoreError, match="checksum"): FeatureStore(st).get("clip", "v2")
    rc, out, err = _xattn("store", "export", st, "--out", tmp_path/"exp")
    assert rc == 2 and _one_error_line(err, "checksum"), err
    rc, out, err = _xattn("store", "repair", st)
    assert rc == 0, err
    assert _xattn("store", "check", st)[0] == 0
    assert sorted(FeatureStore(st).video_ids("clip")) == [f"v{i}" for i in range(N) if i not in (2, 3)]
    assert any(p.name.startswith(seg.name) for p in (tmp_path/"s.h5.damaged").iterdir())   # moved aside, not deleted
    _write(st, (2, 3))                                               # the next run redoes exactly what was dropped
    s = FeatureStore(st)
    assert sorted(s.video_ids("clip")) == [f"v{i}" for i in range(N)]
    for i in range(N): np.testing.assert_array_equal(s.get("clip", f"v{i}"), _rows(i).astype(np.float16))


def test_garbage_offsets_are_refused_by_every_reader(tmp_path):
    st = tmp_path/"s.h5"; _write(st, range(N))
    seg = sorted(parts_dir(st).glob("*.h5"))[0]
    with h5py.File(seg, "r+") as f: f["clip"]["offsets"][1] = 10**6          # v1 now points past the end of the rows
    rc, out, _ = _xattn("store", "check", st)
    assert rc == 1 and "points outside" in out
    _assert_refused(st, "points outside", tmp_path)
    with h5py.File(seg, "r+") as f: f["clip"]["offsets"][1] = 0              # v1 now reads v0's rows: overlapping ranges
    assert _xattn("store", "check", st)[0] == 1
    _assert_refused(st, "share rows", tmp_path)
    assert _xattn("store", "repair", st)[0] == 0 and _xattn("store", "check", st)[0] == 0


def test_deleted_and_truncated_segments(tmp_path):
    st = tmp_path/"s.h5"; _write(st, range(N))
    segs = sorted(parts_dir(st).glob("*.h5"))
    segs[3].unlink()                                                  # v6, v7 gone
    rc, out, _ = _xattn("store", "check", st)
    assert rc == 1 and "recorded as committed but missing" in out
    _assert_refused(st, "missing", tmp_path)
    b = segs[0].read_bytes(); segs[0].write_bytes(b[: len(b) // 2])  # v0, v1 truncated
    rc, out, _ = _xattn("store", "check", st)
    assert rc == 1
    rc, out, err = _xattn("store", "repair", st)
    assert rc == 0, err
    rep = check_store(st); assert rep["ok"], rep["errors"]
    assert sorted(FeatureStore(st).video_ids("clip")) == ["v2", "v3", "v4", "v5"]
    _write(st, (0, 1, 6, 7))                                          # a writer resumes on the repaired store
    assert sorted(FeatureStore(st).video_ids("clip")) == [f"v{i}" for i in range(N)]
    assert check_store(st)["ok"]
