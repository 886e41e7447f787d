"""Every bad setting fails before any work, in one line naming the flag (exit 2): a parametrized table over the commands.
Run in-process through `xattn.cli.main`, as the console script runs it."""
import contextlib, io, os
from pathlib import Path
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
NO_CUDA = not torch.cuda.is_available()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from xattn.features import write_toy_dataset, TOY_SEMANTIC, TOY_MOTION
    d = tmp_path_factory.mktemp("bad")
    root = write_toy_dataset(d/"toy", n_videos=24, seed=1)
    (d/"videos").mkdir(); (d/"videos"/"a.mp4").write_bytes(b"\0" * 10)
    (d/"existing_dir").mkdir()
    return dict(d=d, toy=root, store=root/"features.h5", train=["--store", str(root/"features.h5"), "--dataset-root", str(root),
                                                              "--semantic", TOY_SEMANTIC, "--motion", TOY_MOTION, "--epochs", "1"])


def _extract(data, *a): return ["extract", "--source", str(data["d"]/"videos"), "--out", str(data["d"]/"x.h5"), "--allow-random-init", *a]
def _train(data, *a): return ["train", *data["train"], "--run-dir", str(data["d"]/"r"), *a]
def _synth(data, *a): return ["synth", str(data["d"]/"s"), *a]

CASES = [
    # (id, argv builder, expected text in the one error line)
    ("extract-device-cuda", lambda d: _extract(d, "--device", "cuda"), "CUDA device" if NO_CUDA else None),
    ("extract-device-typo", lambda d: _extract(d, "--device", "gpu"), "not a device"),
    ("extract-num-workers", lambda d: _extract(d, "--num-workers", "-1"), "--num-workers -1"),
    ("extract-flow-method", lambda d: _extract(d, "--flow-method", "nosuch"), "--flow-method 'nosuch'"),
    ("extract-backend", lambda d: _extract(d, "--backend", "decrod"), "--backend 'decrod'"),
    ("extract-clips", lambda d: _extract(d, "--clips", "-1"), "--clips -1"),
    ("extract-frames", lambda d: _extract(d, "--frames", "0"), "--frames 0"),
    ("extract-batch", lambda d: _extract(d, "--batch-size", "0"), "--batch-size 0"),
    ("extract-limit", lambda d: _extract(d, "--limit", "-1"), "--limit -1"),
    ("extract-flow-size", lambda d: _extract(d, "--flow-size", "-3"), "--flow-size -3"),
    ("extract-precision", lambda d: _extract(d, "--precision", "fp8"), "--precision 'fp8'"),
    ("extract-dtype", lambda d: _extract(d, "--dtype", "int8"), "--dtype"),
    ("extract-compression", lambda d: _extract(d, "--compression", "zip"), "zip"),
    ("extract-commit", lambda d: _extract(d, "--commit-every", "0"), "--commit-every 0"),
    ("extract-threads", lambda d: _extract(d, "--threads", "-2"), "--threads -2"),
    ("extract-overrides-size", lambda d: _extract(d, "--overrides", "size=-5"), "size=-5"),
    ("extract-overrides-unknown", lambda d: _extract(d, "--overrides", "dinov3_vits16plus.gird=2"), "unknown setting(s) ['gird']"),
    ("extract-overrides-syntax", lambda d: _extract(d, "--overrides", "size"), "expected key=value"),
    ("extract-extractor", lambda d: _extract(d, "--extractors", "dinov4"), "'dinov4' is not registered"),
    ("extract-random-init-name", lambda d: _extract(d, "--random-init", "i3d_r50"), "random_init names ['i3d_r50']"),
    ("extract-out-dir", lambda d: ["extract", "--source", str(d["d"]/"videos"), "--out", str(d["d"]/"existing_dir")], "is a folder"),
    ("extract-source", lambda d: ["extract", "--source", str(d["d"]/"nowhere"), "--out", str(d["d"]/"x.h5")], "no such file or folder"),
    ("extract-split", lambda d: ["extract", "--source", str(d["toy"]), "--split", "nosuch", "--out", str(d["d"]/"x.h5")], "nosuch"),
    ("extract-source-kind", lambda d: _extract(d, "--source-kind", "zip"), "invalid choice: 'zip'"),
    ("extract-int-flag", lambda d: _extract(d, "--frames", "many"), "invalid int value: 'many'"),
    ("train-batch", lambda d: _train(d, "--batch-size", "0"), "--batch-size 0"),
    ("train-lr", lambda d: _train(d, "--lr", "-1"), "--lr -1"),
    ("train-label-smoothing", lambda d: _train(d, "--label-smoothing", "5"), "--label-smoothing 5"),
    ("train-dropout", lambda d: _train(d, "--dropout", "2"), "--dropout 2"),
    ("train-betas", lambda d: _train(d, "--betas", "0.9"), "--betas"),
    ("train-dim", lambda d: _train(d, "--dim", "0"), "--dim 0"),
    ("train-heads", lambda d: _train(d, "--dim", "30", "--heads", "8"), "not divisible by heads"),
    ("train-epochs", lambda d: _train(d, "--epochs", "0"), "--epochs 0"),
    ("train-selection", lambda d: _train(d, "--selection-fraction", "2"), "--selection-fraction 2"),
    ("train-eval-views", lambda d: _train(d, "--eval-views", "nosuch"), "--eval-views 'nosuch'"),
    ("train-semantic-token", lambda d: _train(d, "--semantic-token", "pooled"), "--semantic-token 'pooled'"),
    ("train-kind", lambda d: _train(d, "--kind", "attention"), "kind='attention'"),
    ("train-precision", lambda d: _train(d, "--precision", "fp64"), "--precision 'fp64'"),
    ("train-device", lambda d: _train(d, "--device", "cuda:3"), "CUDA device" if NO_CUDA else None),
    ("train-warmup", lambda d: _train(d, "--warmup-epochs", "-1"), "--warmup-epochs -1"),
    ("train-grad-clip", lambda d: _train(d, "--grad-clip", "-1"), "--grad-clip -1"),
    ("train-workers", lambda d: _train(d, "--num-workers", "-1"), "--num-workers -1"),
    ("train-store", lambda d: ["train", "--store", str(d["d"]/"none.h5"), "--dataset-root", str(d["toy"])], "no feature store found"),
    ("train-dataset-root", lambda d: ["train", "--store", str(d["store"]), "--dataset-root", str(d["d"]/"nowhere")], "not found"),
    ("train-no-store", lambda d: ["train", "--dataset-root", str(d["toy"])], "DataConfig.store is not set"),
    ("synth-n", lambda d: _synth(d, "--n-per-class", "0"), "--n-per-class 0"),
    ("synth-fps", lambda d: _synth(d, "--fps", "0"), "--fps 0"),
    ("synth-crf", lambda d: _synth(d, "--crf", "100"), "--crf 100"),
    ("synth-corrupt", lambda d: _synth(d, "--n-corrupt", "50", "--n-per-class", "1"), "--n-corrupt 50"),
    ("synth-size", lambda d: _synth(d, "--size", "33"), "size=33"),
    ("synth-object", lambda d: _synth(d, "--objects", "cube"), "unknown object/motion ['cube']"),
    ("synth-variant", lambda d: _synth(d, "--variant", "double"), "variant='double'"),
    ("synth-frames", lambda d: _synth(d, "--frames", "1"), "frames=1"),
    ("demo-size", lambda d: ["demo", "--tiny", "--size", "0", "--run-dir", str(d["d"]/"demo")], "--size 0"),
    ("demo-random-init", lambda d: ["demo", "--tiny", "--allow-random-init", "motoin", "--run-dir", str(d["d"]/"demo")], "allow_random_init"),
    ("demo-device", lambda d: ["demo", "--tiny", "--device", "cuda", "--run-dir", str(d["d"]/"demo")], "CUDA device" if NO_CUDA else None),
    ("store-check-missing", lambda d: ["store", "check", str(d["d"]/"none.h5")], None),
    ("store-export-format", lambda d: ["store", "export", str(d["store"]), "--out", str(d["d"]/"e"), "--format", "csv"], "invalid choice: 'csv'"),
    ("store-export-out", lambda d: ["store", "export", str(d["store"]), "--format", "npz"], "--out"),
    ("weights-fetch-name", lambda d: ["weights", "fetch", "nosuch"], "unknown checkpoint(s) ['nosuch']"),
    ("probe-backend", lambda d: ["probe", str(d["d"]/"videos"/"a.mp4"), "--backend", "ffmpeg"], "invalid choice: 'ffmpeg'"),
    ("ablate-grid", lambda d: ["ablate", "--store", str(d["store"]), "--dataset-root", str(d["toy"]), "--grid", "kind"], "expected key=value"),
    ("evaluate-checkpoint", lambda d: ["evaluate", "--checkpoint", str(d["d"]/"none.pt"), "--store", str(d["store"]), "--dataset-root", str(d["toy"])], "not found"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_setting_is_one_line_before_any_work(case, data, monkeypatch):
    from xattn.cli import main
    name, argv, want = case
    if want is None and name != "store-check-missing": pytest.skip("this machine has the device")
    monkeypatch.setenv("XATTN_CACHE", str(data["d"]/"cache"))
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try: rc = main(argv(data))
        except SystemExit as e: rc = e.code
    lines = [l for l in err.getvalue().splitlines() if l.strip() and "WARNING" not in l]
    assert rc in (1, 2), (rc, out.getvalue()[-500:], err.getvalue()[-2000:])
    assert "Traceback" not in err.getvalue()
    if name == "store-check-missing": return            # reported on stdout by the check itself, exit 1
    assert len(lines) == 1, lines
    assert want in lines[0], lines[0]
    assert not (data["d"]/"x.h5").exists() and not (data["d"]/"r"/"checkpoints").exists()     # nothing was started
