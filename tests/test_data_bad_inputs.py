"Every bad input of issue 3, built from generated files: each gets a precise status and the run goes on."
import dataclasses, json, shutil
from fractions import Fraction
from pathlib import Path
import av
import numpy as np
import pytest
from xattn.data import (VideoRecord, VideoDecodeError, ShortVideoError, ProbeCache, probe_video, probe_records, read_frames,
                        load_ssv2, load_class_folders, load_video_list, check_unique_ids, sample_uniform, sample_chunks,
                        sample_fixed_duration, sample_clips, SamplerConfig, count_frames)
from xattn.qc import apply_filters, QCFilters, find_unannotated, qc_summary
from xattn.loader import VideoClipDataset, make_loader
from xattn.transforms import ClipTransform, TransformConfig


def _frames(n, h=48, w=64, seed=0):
    "n frames with a moving bright square, so frames differ and orientation is visible (brighter top-left corner)."
    rng = np.random.default_rng(seed)
    f = rng.integers(0, 60, (n, h, w, 3), dtype=np.uint8)
    for i in range(n):
        f[i, 2:h // 3, 2 + i % (w // 2): 8 + i % (w // 2)] = 250
    f[:, :6, :6] = (255, 0, 0)
    return f


def write_video(path, frames, codec="libx264", pix_fmt="yuv420p", rate=12, pts=None, rotation=0, time_base=None, fmt=None, options=None,
                codec_options=None):
    "Encode `frames` [T,H,W,3] with PyAV; explicit `pts` (in `time_base` units) give a variable frame rate."
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=fmt, options=options or {}) as c:
        s = c.add_stream(codec, rate=rate, options=codec_options or {})
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        if time_base: s.codec_context.time_base = time_base
        if rotation: s.set_display_rotation(rotation)
        for i, f in enumerate(frames):
            src = "gray" if pix_fmt == "gray" else "rgb24"
            arr = f.mean(-1).astype(np.uint8) if src == "gray" else f
            fr = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format=src).reformat(format=pix_fmt)
            fr = av.VideoFrame.from_ndarray(fr.to_ndarray(), format=pix_fmt)
            if pts is not None: fr.pts, fr.time_base = int(pts[i]), time_base
            for p in s.encode(fr): c.mux(p)
        for p in s.encode(): c.mux(p)
    return path


def _err(f):
    with pytest.raises(VideoDecodeError) as ei: f()
    return ei.value


BACKENDS = ("pyav", "decord")


# ---- files that are not (whole) videos -------------------------------------------------------------------------

def test_zero_byte(tmp_path):
    p = tmp_path/"zero.mp4"; p.write_bytes(b"")
    for b in BACKENDS:
        e = _err(lambda: probe_video(p, b)); assert (e.kind, e.reason) == ("empty", "zero-byte file") and str(e).startswith(str(p))
        assert _err(lambda: read_frames(p, [0], b)).kind == "empty"
    assert _err(lambda: read_frames(p, [0])).kind == "empty"


def test_text_named_mp4(tmp_path):
    p = tmp_path/"readme.mp4"; p.write_text("Download the videos from the website.\n")
    for b in BACKENDS:
        e = _err(lambda: probe_video(p, b)); assert e.kind == "not a video" and "not a video file" in str(e)
    e = _err(lambda: read_frames(p, [0])); assert e.kind == "not a video" and "b'Download the'" in e.reason


def test_truncated_mp4_without_index(tmp_path):
    "Default mp4: the index (moov) is written last, so a cut file cannot be opened at all."
    p = write_video(tmp_path/"cut.mp4", _frames(24))
    data = p.read_bytes(); p.write_bytes(data[: len(data) // 2])
    for b in BACKENDS:
        e = _err(lambda: probe_video(p, b)); assert e.kind == "corrupt" and "mp4/mov container" in e.reason or b == "decord" and e.kind == "corrupt"
    assert "truncated or damaged" in _err(lambda: probe_video(p)).reason
    assert _err(lambda: read_frames(p, [0])).kind == "corrupt"


def test_truncated_mp4_with_index_first(tmp_path):
    "faststart mp4: the index survives, the media data is cut: fewer frames decode than the index lists."
    p = write_video(tmp_path/"cut_fs.mp4", _frames(48, 96, 128), options={"movflags": "faststart"})
    full = probe_video(p); data = p.read_bytes(); p.write_bytes(data[: int(len(data) * 0.5)])
    m = None
    try: m = probe_video(p)
    except VideoDecodeError as e: assert e.kind in ("truncated", "corrupt"), e
    if m is not None: assert m.n_frames <= full.n_frames
    e = _err(lambda: probe_video(p, deep=True))
    assert e.kind in ("truncated", "corrupt")
    with pytest.raises(VideoDecodeError):
        read_frames(p, [full.n_frames - 1], "pyav")


def test_truncated_webm(tmp_path):
    "A cut webm keeps its header duration: the stream ends early and the probe says so."
    p = write_video(tmp_path/"cut.webm", _frames(60, 48, 64), codec="libvpx-vp9", rate=12, fmt="webm")
    full = probe_video(p); assert full.n_frames == 60 and full.codec == "vp9"
    data = p.read_bytes(); p.write_bytes(data[: len(data) // 3])
    e = _err(lambda: probe_video(p))
    assert e.kind == "truncated" and "container says" in e.reason, e


def test_audio_only(tmp_path):
    p = tmp_path/"song.mp4"
    with av.open(str(p), "w") as c:
        s = c.add_stream("aac", rate=16000); s.layout = "mono"
        for i in range(10):
            fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono"); fr.sample_rate = 16000; fr.pts = i * 1024
            for pk in s.encode(fr): c.mux(pk)
        for pk in s.encode(): c.mux(pk)
    e = _err(lambda: probe_video(p)); assert (e.kind, e.reason) == ("no video stream", "no video stream (streams: audio)")
    assert _err(lambda: read_frames(p, [0])).kind in ("no video stream", "corrupt")
    assert _err(lambda: read_frames(p, [0], "pyav")).kind == "no video stream"


# ---- very short, very large, unusual streams ----------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 3])
def test_one_and_three_frames(tmp_path, n):
    p = write_video(tmp_path/f"f{n}.mp4", _frames(n))
    for b in BACKENDS:
        m = probe_video(p, b); assert m.n_frames == n
        assert read_frames(p, range(n), b).shape == (n, 48, 64, 3)
        assert _err(lambda: read_frames(p, [n], b)).kind == "out of range"
    assert count_frames(p) == n
    m = probe_video(p)
    assert sample_uniform(m, 8)[0].indices.max() == n - 1 and len(sample_uniform(m, 8)[0]) == 8
    assert sample_chunks(m, 16)[0].note == f"short: {n} < 16 frames, pad"
    assert sample_chunks(m, 16, short="loop")[0].indices.tolist()[: 2 * n] == list(range(n)) * 2
    with pytest.raises(ShortVideoError, match=f"too short: {n} frames < 16 needed"):
        sample_clips(m, SamplerConfig(kind="chunks", short="skip"))
    rec, = apply_filters(probe_records([VideoRecord("v", p)], progress=False), QCFilters(min_frames=4))
    assert rec.status == f"too short: {n} frames < 4"


def test_very_large_resolution(tmp_path):
    p = write_video(tmp_path/"8k.mp4", _frames(2, 4320, 7680), codec_options={"preset": "ultrafast"})
    for b in BACKENDS:
        m = probe_video(p, b); assert (m.width, m.height, m.n_frames) == (7680, 4320, 2)
    a, c = read_frames(p, [1], "decord"), read_frames(p, [1], "pyav")
    assert a.shape == (1, 4320, 7680, 3) and np.abs(a.astype(np.int16) - c).mean() < 0.5
    rec, = apply_filters(probe_records([VideoRecord("big", p)], progress=False), QCFilters(max_side=3840))
    assert rec.status == "too large: 7680x4320, long side > 3840"


def test_variable_frame_rate(tmp_path):
    pts = [0, 1, 2, 5, 6, 7, 12, 13]                          # in 1/10 s: three frames held longer
    p = write_video(tmp_path/"vfr.mp4", _frames(8), pts=pts, time_base=Fraction(1, 10), rate=10)
    for b in BACKENDS:
        m = probe_video(p, b)
        assert m.n_frames == 8 and m.vfr, m
        assert m.pts == pytest.approx([t / 10 for t in pts], abs=1e-3)
        assert m.duration == pytest.approx(1.4, abs=1e-3)
    m = probe_video(p)
    assert m.frame_at([0.25, 0.45, 1.0]).tolist() == [2, 2, 5]          # seconds come from timestamps
    clip, = sample_fixed_duration(m, 1.4, fps=10)
    assert clip.indices.tolist() == [0, 1, 2, 2, 2, 3, 4, 5, 5, 5, 5, 5, 6, 7]
    assert (clip.start, clip.end) == pytest.approx((0.0, 1.4))
    a = read_frames(p, range(8), "decord"); c = read_frames(p, range(8), "pyav")
    assert np.abs(a.astype(np.int16) - c).mean() < 0.5


def test_grayscale(tmp_path):
    p = write_video(tmp_path/"gray.mp4", _frames(6), pix_fmt="gray")
    for b in BACKENDS:
        f = read_frames(p, range(6), b)
        assert f.shape == (6, 48, 64, 3)
        assert np.abs(f[..., 0].astype(int) - f[..., 1]).max() <= 2 and np.abs(f[..., 0].astype(int) - f[..., 2]).max() <= 2
        assert f.std() > 10
    assert probe_video(p).codec == "h264"


def _marker_centre(f):
    "Centroid (row, col) of the red marker in frame `f`."
    ys, xs = np.nonzero((f[..., 0] > 180) & (f[..., 1] < 80) & (f[..., 2] < 80))
    return ys.mean(), xs.mean()


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotated(tmp_path, rotation):
    src = _frames(4, 48, 64)                                  # stored 64 wide x 48 high, red marker top-left
    p = write_video(tmp_path/f"rot{rotation}.mp4", src, rotation=rotation)
    m = probe_video(p)
    assert m.rotation == rotation
    assert (m.width, m.height) == ((48, 64) if rotation in (90, 270) else (64, 48))
    c = read_frames(p, range(4), "pyav")
    assert c.shape == (4, m.height, m.width, 3)
    # Display = stored turned counter-clockwise by `rotation`: the marker lands where np.rot90 puts it.
    want = _marker_centre(np.rot90(src[0], rotation // 90))
    assert np.allclose(_marker_centre(c[0]), want, atol=1.5), (_marker_centre(c[0]), want)
    assert np.array_equal(read_frames(p, range(4)), c)         # auto gives PyAV's correct frames
    try: a = read_frames(p, range(4), "decord")
    except VideoDecodeError as e:                              # decord 0.6.0 mis-sizes 90/270: detected, named
        assert rotation in (90, 270) and e.kind == "decoder" and "backend='pyav'" in str(e)
    else: assert a.shape == c.shape and np.abs(a.astype(np.int16) - c).mean() < 0.5


def test_non_ascii_and_space_paths(tmp_path):
    d = tmp_path/"vidéos d'été"/"München 東京"
    p = write_video(d/"clip 1 – ü.mp4", _frames(5))
    cache = ProbeCache(tmp_path/"probe.sqlite")
    for b in BACKENDS:
        assert probe_video(p, b).n_frames == 5
        assert read_frames(p, [0, 4], b).shape == (2, 48, 64, 3)
    rec, = probe_records(load_video_list(tmp_path/"vidéos d'été"), cache=cache, progress=False)
    assert rec.ok and rec.id == "München 東京/clip 1 – ü.mp4" and cache.get(p) == rec.meta
    lst = tmp_path/"list.txt"; lst.write_text(f"vidéos d'été/München 東京/clip 1 – ü.mp4 4\n", encoding="utf-8")
    r, = load_video_list(lst)
    assert (r.ok, r.label, r.path) == (True, 4, p)


def test_duplicate_stems(tmp_path):
    for cls in ("jump", "run"):
        write_video(tmp_path/"train"/cls/"clip_001.mp4", _frames(3, seed=len(cls)))
    recs = probe_records(load_class_folders(tmp_path, "train"), progress=False)
    assert [r.id for r in recs] == ["train/jump/clip_001.mp4", "train/run/clip_001.mp4"]
    assert [r.label for r in recs] == [0, 1] and all(r.ok for r in recs)
    assert [r.id for r in load_video_list(tmp_path)] == ["train/jump/clip_001.mp4", "train/run/clip_001.mp4"]
    with pytest.raises(Exception, match="duplicate video id 'clip_001'"):
        check_unique_ids([VideoRecord(Path(r.path).stem, r.path) for r in recs])


# ---- annotations and files that do not match ----------------------------------------------------------------------

@pytest.fixture
def ssv2_like(tmp_path):
    vd = tmp_path/"videos"
    for i in ("10", "11", "99"): write_video(vd/f"{i}.webm", _frames(4), codec="libvpx-vp9", fmt="webm")
    (tmp_path/"labels.json").write_text(json.dumps({"Pushing something from left to right": "0", "Pushing something from right to left": "1"}))
    (tmp_path/"val.json").write_text(json.dumps([
        {"id": "10", "label": "pushing a pen from left to right", "template": "Pushing [something] from left to right", "placeholders": ["a pen"]},
        {"id": "11", "label": "spinning a top", "template": "Spinning [something]", "placeholders": ["a top"]},
        {"id": "12", "label": "pushing a cup from right to left", "template": "Pushing [something] from right to left", "placeholders": ["a cup"]}]))
    return tmp_path


def test_annotation_without_video_unknown_template_video_without_annotation(ssv2_like):
    d = ssv2_like
    recs = load_ssv2(d/"labels.json", d/"val.json", d/"videos")
    assert [(r.id, r.label, r.status_kind) for r in recs] == [("10", 0, "ok"), ("11", None, "unknown template"), ("12", 1, "missing")]
    assert recs[1].status == "unknown template: 'Spinning something' not in labels.json"
    assert recs[2].status.startswith("missing: no video 12.webm in ")
    extra = find_unannotated(recs, d/"videos")
    assert [(r.id, r.status) for r in extra] == [("unannotated/99.webm", "unannotated: no annotation refers to 99.webm")]


def test_everything_in_one_run(tmp_path, ssv2_like):
    "All the bad inputs in one list: the probe, the QC summary and a DataLoader epoch all complete, each video with its status."
    bad = tmp_path/"bad"; bad.mkdir()
    (bad/"zero.mp4").write_bytes(b""); (bad/"text.mp4").write_text("not a video")
    cut = write_video(bad/"cut.mp4", _frames(12)); cut.write_bytes(cut.read_bytes()[:400])
    write_video(bad/"one.mp4", _frames(1)); write_video(bad/"ok.mp4", _frames(12)); write_video(bad/"gray.mp4", _frames(12), pix_fmt="gray")
    write_video(bad/"rot.mp4", _frames(12), rotation=90)
    recs = load_ssv2(ssv2_like/"labels.json", ssv2_like/"val.json", ssv2_like/"videos")
    recs += load_video_list(bad) + find_unannotated(recs, ssv2_like/"videos") + [VideoRecord("gone", bad/"gone.mp4")]
    recs = apply_filters(probe_records(recs, progress=False), QCFilters(min_frames=2))
    kinds = {r.id: r.status_kind for r in recs}
    assert kinds == {"10": "ok", "11": "unknown template", "12": "missing", "cut.mp4": "corrupt", "gray.mp4": "ok", "ok.mp4": "ok",
                     "one.mp4": "too short", "rot.mp4": "ok", "text.mp4": "not a video", "zero.mp4": "empty",
                     "unannotated/99.webm": "unannotated", "gone": "missing"}
    s = qc_summary(recs)
    assert (s["total"], s["processed"], s["skipped"]) == (12, 4, 8)
    # A record that looked fine when listed but broke afterwards: the loader skips it with its reason.
    late = bad/"late.mp4"; shutil.copy(bad/"ok.mp4", late)
    recs.append(VideoRecord("late", late)); late.write_bytes(b"")
    ds = VideoClipDataset(recs, SamplerConfig(n=4), ClipTransform(TransformConfig(size=32)), train=False)
    seen, skipped = [], []
    for b in make_loader(ds, batch_size=2, workers=0):
        seen += b["ids"]; skipped += b["skipped"]
    assert sorted(seen) == ["10", "gray.mp4", "ok.mp4", "rot.mp4"]
    assert skipped == [("late", "empty: zero-byte file")]
    assert len(ds.excluded) == 8
