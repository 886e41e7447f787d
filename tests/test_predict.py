"""`xattn predict` end to end, as real processes. On a tiny `xattn demo` run (registered beside it): predicting the run's
validation videos from their files gives the same top-1 and the same probabilities as evaluating the registered model on
the features the run stored for them. On the shared real clips plus a file of garbage bytes: every clip answered, the broken
file reported with its reason, exit 0 and the failure counted; only unusable videos: exit 1; an unknown model: one line, exit 2."""
import json, os, subprocess, sys, time
from pathlib import Path
import pytest
from xattn.core import repo_root
from xattn.data import VIDEO_EXTS

SHARED = repo_root().parent/"shared"/"data"/"videos"


def _xattn(*args, timeout=900):
    env = {**os.environ, "PYTHONPATH": str(repo_root())}
    return subprocess.run([sys.executable, "-m", "xattn.cli", *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    "A `xattn demo --tiny` run in a private folder (its own dataset and store), registered as tiny:v1 in <folder>/models."
    d = tmp_path_factory.mktemp("predict")
    r = _xattn("demo", "--tiny", "--engine", "python", "--name", "tiny", "--run-dir", d/"run", "--dataset-root", d/"data",
               "--features", d/"features.h5", "--baselines=", "--num-workers", "0")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((d/"run"/"metrics.json").read_text())["registered"]["ref"] == "tiny:v1"
    return d


def _stored_evaluation(d: Path):
    "The registered model evaluated on the stored features of the validation videos, as `xattn evaluate` does; and the records."
    from xattn.data import load_ssv2
    from xattn.evaluate import evaluate
    from xattn.features import FeatureDataset
    from xattn.registry import load_model
    model, meta = load_model("tiny", root=d/"models")
    val = load_ssv2(d/"data"/"labels.json", d/"data"/"validation.json", d/"data"/"videos", ext=".mp4")
    ds = FeatureDataset(meta["data"]["store"]["path"], val, semantic=meta["streams"]["semantic"]["extractor"],
                        motion=meta["streams"]["motion"]["extractor"], semantic_token=meta["preprocessing"]["semantic_token"],
                        motion_token=meta["preprocessing"]["motion_token"], class_names=meta["class_names"])
    return evaluate(model, ds, device="cpu", progress=False), ds, val


def test_predict_reproduces_stored_feature_evaluation(demo):
    from xattn.predict import compare_with_store
    out = demo/"validation.jsonl"
    t0 = time.perf_counter()
    r = _xattn("predict", demo/"data", "--split", "validation", "--model", "tiny", "--root", demo/"models", "--top-k", "1000",
               "--jsonl", out, "--num-workers", "0", "--device", "cpu")
    wall = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr[-3000:]
    results = _jsonl(out)
    ev, ds, val = _stored_evaluation(demo)
    cmp = compare_with_store(results, ev)
    print(f"\nstored-feature parity: {json.dumps(cmp)}; {r.stdout.splitlines()[-1]} (process {wall:.1f} s)")
    assert cmp["videos"] == len(ds) > 0 and cmp["only_predicted"] == []
    assert cmp["same_top1"] == cmp["videos"]
    assert cmp["max_prob_diff"] < 1e-4
    assert all(len(x["top_k"]) == len(ev["probs"][0]) for x in results if x["status"] == "ok")     # --top-k clamped to the classes
    failed = {x["id"]: x["reason"] for x in results if x["status"] == "failed"}
    assert set(failed) == {v.id for v in val} - {v.id for v in ds.records} != set()      # the truncated and the missing video
    assert all(failed.values())
    assert f"{len(val)} videos, {len(val) - len(failed)} ok, {len(failed)} failed" in r.stdout.splitlines()[-1]
    assert "top-1" in r.stdout.splitlines()[-1]                                            # labels known: accuracy reported


def test_run_directory_gives_the_registered_model(demo):
    from xattn.predict import Predictor
    vids = sorted((demo/"data"/"videos").glob("*.mp4"))[:2]
    by_ref = Predictor(model="tiny:1", root=demo/"models", num_workers=0, device="cpu").predict(vids)
    by_run = Predictor(model=demo/"run", num_workers=0, device="cpu").predict(vids)
    assert [x["model"] for x in by_run] == ["tiny:v1"] * 2
    assert [x.get("top_k") for x in by_run] == [x.get("top_k") for x in by_ref]


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"no shared real clips at {SHARED}")
def test_predict_real_clips_and_a_broken_file(demo, tmp_path):
    broken = tmp_path/"broken.mp4"; broken.write_bytes(os.urandom(8192))
    clips = sorted(p.name for p in SHARED.iterdir() if p.suffix.lower() in VIDEO_EXTS)
    out = tmp_path/"clips.jsonl"
    r = _xattn("predict", SHARED, broken, "--model", "tiny:latest", "--root", demo/"models", "--jsonl", out)
    assert r.returncode == 0, r.stderr[-3000:]
    got = {x["id"]: x for x in _jsonl(out)}
    assert set(got) == set(clips) | {broken.as_posix()}
    for c in clips:
        x = got[c]
        assert x["status"] == "ok", x
        assert len(x["top_k"]) == 5 and x["top_k"][0]["prob"] >= x["top_k"][-1]["prob"]
        assert set(x["agreement"]) >= {"semantic", "motion", "method", "all_agree"}
        for s in ("semantic", "motion"):
            prof = x["attention"][s]["profile"]
            assert abs(sum(p["weight"] for p in prof) - 1) < 1e-3 and all(0 <= p["start"] < p["end"] <= x["duration"] + 1e-3 for p in prof)
    bad = got[broken.as_posix()]
    assert bad["status"] == "failed" and "not a video file" in bad["reason"]
    lines = r.stdout.splitlines()
    assert "random-init weights rebuilt from seed 0" in lines[0]
    assert sum("FAILED: not a video file" in ln for ln in lines) == 1
    assert f"predict: {len(clips) + 1} videos, {len(clips)} ok, 1 failed" in lines[-1]
    assert "predict" in r.stderr                                                            # the progress bar
    print(f"\nshared clips: {lines[-1]}")


def test_exit_status_when_nothing_can_be_predicted(demo, tmp_path):
    broken = tmp_path/"broken.mp4"; broken.write_bytes(b"this is text, not a video\n" * 50)
    r = _xattn("predict", broken, tmp_path/"missing.mp4", "--model", "tiny", "--root", demo/"models", "--num-workers", "0", "--no-progress")
    assert r.returncode == 1, r.stderr[-2000:]
    assert "predict: 2 videos, 0 ok, 2 failed" in r.stdout.splitlines()[-1]
    assert "missing:" in r.stdout
    r = _xattn("predict", broken, "--model", "nope", "--root", demo/"models")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "no model 'nope'" in r.stderr
