"Sources beyond SSv2 (class folders, frame folders, lists), the probe cache across processes, and the QC commands."
import json, subprocess, sys
from pathlib import Path
import cv2
import numpy as np
import pytest
from xattn.core import repo_root
from xattn.data import (load_ssv2, load_frame_folders, list_frame_files, read_frames, probe_video, ProbeCache, probe_cached,
                        probe_records, load_video_list)
from xattn.synthetic import write_mp4

SHARED = repo_root().parent/"shared"/"data"


def test_ssv2_test_split_and_excerpt():
    L = SHARED/"ssv2"/"something-something-v2-labels.json"
    test = load_ssv2(L, SHARED/"ssv2"/"something-something-v2-test.json", SHARED/"videos")
    assert len(test) == 27157 and all(r.label is None for r in test[:100])
    exc = load_ssv2(L, SHARED/"ssv2"/"validation_excerpt_first50.json", SHARED/"videos")
    full = load_ssv2(L, SHARED/"ssv2"/"something-something-v2-validation.json", SHARED/"videos")
    assert [(r.id, r.label) for r in exc] == [(r.id, r.label) for r in full[:50]]


def test_frame_folder_gaps_mixed_extensions_and_unicode(tmp_path):
    d = tmp_path/"frames"/"vidéo 1"; d.mkdir(parents=True)
    for k, (num, ext) in enumerate([(9, "jpg"), (10, "png"), (100, "jpg"), (11, "bmp")]):
        img = np.full((16, 20, 3), 20 * (k + 1), np.uint8); cv2.imwrite(str(d/f"frame_{num}.{ext}"), img)
    (d/"notes.txt").write_text("x")
    assert [p.name for p in list_frame_files(d)] == ["frame_9.jpg", "frame_10.png", "frame_11.bmp", "frame_100.jpg"]
    rec, = probe_records(load_frame_folders(tmp_path/"frames"), progress=False)
    assert rec.ok and rec.id == "vidéo 1" and rec.meta.n_frames == 4 and rec.meta.fps == 25.0
    f = read_frames(d, [0, 1, 2, 3])
    assert np.allclose(f[:, 0, 0, 0], [20, 40, 80, 60], atol=3)   # numeric order: 9, 10, 11 (bmp: 80), 100 (jpg: 60)


def test_probe_cache_shared_between_processes(tmp_path):
    v = write_mp4(np.zeros((5, 32, 32, 3), np.uint8), tmp_path/"a.mp4")
    db = tmp_path/"probe.sqlite"
    code = f"from xattn.data import ProbeCache, probe_cached; print(probe_cached({str(v)!r}, cache=ProbeCache({str(db)!r})).n_frames)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "5", r.stderr
    assert ProbeCache(db).get(v).n_frames == 5      # written by the other process
    write_mp4(np.zeros((7, 32, 32, 3), np.uint8), v)  # rewritten: stale entry ignored
    assert ProbeCache(db).get(v) is None and probe_cached(v, cache=ProbeCache(db)).n_frames == 7


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "xattn.cli", *map(str, args)], capture_output=True, text=True)


def test_scan_cli_on_folders_and_lists(tmp_path):
    for rel, n in [("train/a/x.mp4", 6), ("train/b/x.mp4", 2), ("train/b/y.mp4", 6)]:
        write_mp4(np.random.default_rng(n).integers(0, 255, (n, 32, 48, 3), dtype=np.uint8), tmp_path/"ds"/rel)
    (tmp_path/"ds"/"train"/"b"/"broken.mp4").write_text("oops")
    r = _cli("scan", "--source", "folders", "--root", tmp_path/"ds", "--split", "train", "--out", tmp_path/"qc", "--no-cache", "--min-frames", "4")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert (s["total"], s["processed"], s["skipped_by_kind"]) == (4, 2, {"not a video": 1, "too short": 1})
    summary = json.loads((tmp_path/"qc"/"summary.json").read_text())
    assert summary["n_frames"]["min"] == 6 and summary["classes"] == 2
    rows = [json.loads(l) for l in (tmp_path/"qc"/"manifest.jsonl").read_text().splitlines()]
    assert {r["id"]: r["kind"] for r in rows} == {"train/a/x.mp4": "ok", "train/b/broken.mp4": "not a video",
                                                  "train/b/x.mp4": "too short", "train/b/y.mp4": "ok"}
    assert (tmp_path/"qc"/"report.png").stat().st_size > 1000
    # The same command in-process (the dispatcher is the console script's `main`).
    from xattn.cli import main
    assert main(["scan", "--source", "list", "--root", str(tmp_path/"ds"), "--out", str(tmp_path/"qc2"), "--cache", str(tmp_path/"p.sqlite"), "--deep"]) == 0
    assert json.loads((tmp_path/"qc2"/"summary.json").read_text())["processed"] == 3
    assert len(ProbeCache(tmp_path/"p.sqlite")) == 4


def test_scan_cli_names_missing_arguments(tmp_path, capsys):
    from xattn.cli import main
    assert main(["scan", "--source", "ssv2", "--out", str(tmp_path/"qc3")]) == 2
    err = capsys.readouterr().err
    assert "needs" in err and "--labels" in err and "--video-dir" in err
