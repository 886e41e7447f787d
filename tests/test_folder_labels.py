"`xattn scan --source folders --labels`: class indices come from the labels file, not from sorted folder names (issue 12)."
import json, subprocess, sys
from pathlib import Path
from xattn.core import repo_root

SHARED = repo_root().parent/"shared"/"data"
LABELS = SHARED/"ssv2"/"something-something-v2-labels.json"
CLIPS = SHARED/"videos"
LAYOUT = [("Closing something", "human2bot__task5_0.webm"), ("putting_something_on_a_surface", "decord__video_0.mov"),
          ("Pushing [something] from left to right", "mmaction2__rawvideo_part_0.mp4")]


def _xattn(*args):
    exe = Path(sys.executable).parent/"xattn"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "xattn.cli"]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=300)


def _layout(root: Path) -> Path:
    for folder, clip in LAYOUT:
        (root/"train"/folder).mkdir(parents=True); (root/"train"/folder/clip).symlink_to(CLIPS/clip)
    return root


def test_scan_folders_takes_indices_from_labels_file(tmp_path):
    root = _layout(tmp_path/"ds")
    r = _xattn("scan", "--source", "folders", "--root", root, "--split", "train", "--labels", LABELS, "--out", tmp_path/"qc", "--no-cache")
    assert r.returncode == 0, r.stderr
    man = [json.loads(l) for l in (tmp_path/"qc"/"manifest.jsonl").read_text().splitlines()]
    official = json.loads(LABELS.read_text())
    got = {r["label_name"]: r["label"] for r in man}
    assert got == {"Closing something": 5, "Pushing something from left to right": 93, "Putting something on a surface": 109}
    assert all(v == int(official[k]) for k, v in got.items())
    assert [r["status"] for r in man] == ["ok"] * 3 and [r["n_frames"] for r in man] == [52, 32, 3]
    r = _xattn("scan", "--source", "folders", "--root", root, "--split", "train", "--out", tmp_path/"qc0", "--no-cache")
    assert r.returncode == 0, r.stderr                       # without --labels: sorted folder names, 0..2
    assert sorted(json.loads(l)["label"] for l in (tmp_path/"qc0"/"manifest.jsonl").read_text().splitlines()) == [0, 1, 2]


def test_scan_folders_unknown_class_is_one_line_error(tmp_path):
    root = _layout(tmp_path/"ds")
    for bad in ("Closing somthing", "dancing"): (root/"train"/bad).mkdir()
    r = _xattn("scan", "--source", "folders", "--root", root, "--split", "train", "--labels", LABELS, "--out", tmp_path/"qc", "--no-cache")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == (f"xattn scan: error: 2 class folder(s) not in {LABELS}: 'Closing somthing', 'dancing' "
                                f"(name each folder after a class of {LABELS}, or add the class to it)")
    assert not (tmp_path/"qc").exists()


def test_scan_folders_with_text_label_map(tmp_path):
    root = _layout(tmp_path/"ds")
    names = ["Pushing something from left to right", "Putting something on a surface", "Closing something"]
    (tmp_path/"classes.txt").write_text("\n".join(names) + "\n")
    r = _xattn("scan", "--source", "folders", "--root", root, "--split", "train", "--labels", tmp_path/"classes.txt",
               "--out", tmp_path/"qc", "--no-cache")
    assert r.returncode == 0, r.stderr
    man = [json.loads(l) for l in (tmp_path/"qc"/"manifest.jsonl").read_text().splitlines()]
    assert {r["label_name"]: r["label"] for r in man} == {n: i for i, n in enumerate(names)}


def test_extract_and_split_h5_export_take_the_class_mapping(tmp_path):
    "`xattn extract --labels` refuses unmatched folders before any work; the padded HDF5 export carries the official indices."
    root = _layout(tmp_path/"ds")
    common = ["--source", root, "--source-kind", "class-folders", "--split", "train", "--labels", LABELS]
    out = tmp_path/"f.h5"
    r = _xattn("extract", *common, "--out", out, "--extractors", "efficientnet_lite0", "--frames", "2",
               "--overrides", "size=64", "--device", "cpu", "--num-workers", "0", "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["processed"] == 3
    r = _xattn("store", "export", out, "--format", "split-h5", "--out", tmp_path/"exp", *common)
    assert r.returncode == 0, r.stderr[-2000:]
    import h5py
    (h5,) = sorted((tmp_path/"exp").glob("*.h5"))
    with h5py.File(h5, "r") as f:
        got = dict(zip([v.decode() if isinstance(v, bytes) else v for v in f["video_ids"][()]], f["labels"][()].tolist()))
        mapping = json.loads(f.attrs["category_mapping"])
    assert sorted(got.values()) == [5, 93, 109]
    assert mapping == {"Closing something": 5, "Pushing something from left to right": 93, "Putting something on a surface": 109}
    (root/"train"/"dancing").mkdir()
    r = _xattn("extract", *common, "--out", tmp_path/"g.h5", "--extractors", "efficientnet_lite0", "--device", "cpu", "--no-progress")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "'dancing'" in r.stderr
    assert not (tmp_path/"g.h5").exists()
