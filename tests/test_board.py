"""The training dashboard: a real small training run writes TensorBoard events that TensorBoard's own reader loads
(scalars, images, hparams), a resumed run repeats none of them, TensorBoard changes nothing the run computes, and
`xattn board` serves the logs on loopback in a real process, with one-line errors (exit 2) for bad input."""
import json, os, socket, subprocess, sys, threading, urllib.request
from pathlib import Path
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _env(): return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from xattn.features import write_toy_store, FeatureDataset, TOY_SEMANTIC, TOY_MOTION
    p, recs = write_toy_store(tmp_path_factory.mktemp("toy")/"toy.h5", n_videos=48, noise=0.8, seed=1)
    return FeatureDataset(p, recs[:36], TOY_SEMANTIC, TOY_MOTION), FeatureDataset(p, recs[36:], TOY_SEMANTIC, TOY_MOTION)


def _train(toy, rd, **kw):
    from xattn.model import FusionConfig, build_model
    from xattn.train import train, TrainConfig
    from xattn.core import seed_everything
    tr, va = toy
    seed_everything(0)
    m = build_model(FusionConfig(dim=16, heads=2, depth=2, n_classes=12), *tr.dims)
    cfg = dict(epochs=4, batch_size=12, lr=2e-3, warmup_epochs=1, log_every=1, tb_images_every=2)
    return train(m, tr, va, TrainConfig(**{**cfg, **kw}), rd)


@pytest.fixture(scope="module")
def run(toy, tmp_path_factory):
    rd = tmp_path_factory.mktemp("runs")/"r1"
    return rd, _train(toy, rd)


def _reader(d):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ea = EventAccumulator(str(d), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    ea.Reload()
    return ea


def _records(rd, kind):
    return [r for r in map(json.loads, (rd/"metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def test_tensorboard_reader_loads_the_scalars_images_and_hparams(run):
    rd, res = run
    ea = _reader(rd/"tensorboard")
    scalars = set(ea.Tags()["scalars"])
    want = {"loss/train_step", "loss/train", "loss/val", "accuracy/train_top1", "accuracy/val_top1", "accuracy/val_top5", "optim/lr",
            "optim/lr_epoch_end", "optim/grad_norm", "optim/grad_norm_mean", "perf/samples_per_s", "perf/data_wait_fraction",
            "perf/train_s", "progress/epoch", "hparams/best_val_top1", "hparams/best_epoch"}
    want |= {f"attention_entropy/block{b}/{d}" for b in (0, 1) for d in ("sem_self", "mot_self", "sem_to_mot", "mot_to_sem")}
    assert want <= scalars, sorted(want - scalars)
    epochs, steps = _records(rd, "epoch"), _records(rd, "step")
    assert [e.step for e in ea.Scalars("loss/val")] == [r["step"] for r in epochs]            # one x axis: the optimiser step
    assert [e.value for e in ea.Scalars("accuracy/val_top1")] == pytest.approx([r["val_top1"] for r in epochs])
    assert [e.value for e in ea.Scalars("optim/grad_norm")] == pytest.approx([r["grad_norm"] for r in steps], rel=1e-5)
    assert all(0 <= e.value <= 1 for e in ea.Scalars("perf/data_wait_fraction"))
    assert all(e.value > 0 for e in ea.Scalars("perf/samples_per_s"))
    assert all(0 < e.value <= 1 for e in ea.Scalars("attention_entropy/block1/sem_to_mot"))
    assert sorted(ea.Tags()["images"]) == sorted(["confusion/val"] + [f"attention/video{j}/{d}" for j in (0, 1) for d in ("sem_to_mot", "mot_to_sem")])
    assert [e.step for e in ea.Images("confusion/val")] == [epochs[1]["step"], epochs[3]["step"]]   # every 2 epochs
    img = ea.Images("attention/video0/sem_to_mot")[-1]
    assert img.encoded_image_string[:4] == b"\x89PNG" and max(img.width, img.height) >= 160
    assert ea.Images("confusion/val")[-1].width == ea.Images("confusion/val")[-1].height == 168      # 12 classes x 14 pixels
    from tensorboard.plugins.hparams import plugin_data_pb2
    content = ea.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"} <= set(content)
    hp = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info.hparams
    assert hp["model.depth"].number_value == 2 and hp["model.kind"].string_value == "cross_attention"
    assert hp["train.lr"].number_value == pytest.approx(2e-3) and hp["train.betas"].string_value == "[0.9, 0.999]"
    assert ea.Scalars("hparams/best_val_top1")[0].value == pytest.approx(res["best"]["top1"])
    assert ea.Scalars("hparams/best_epoch")[0].value == res["best"]["epoch"]


def test_tensorboard_changes_nothing_the_run_computes(toy, run, tmp_path):
    rd, _ = run
    off = tmp_path/"off"
    _train(toy, off, tensorboard=False)
    assert not (off/"tensorboard").exists()
    strip = lambda rs: [{k: v for k, v in r.items() if k != "time_s"} for r in rs]
    assert strip(_records(off, "epoch")) == strip(_records(rd, "epoch")) and _records(off, "step") == _records(rd, "step")
    a, b = (torch.load(d/"checkpoints"/"last.pt", weights_only=True)["model"] for d in (rd, off))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_resumed_run_repeats_no_event_and_a_finished_one_adds_none(toy, tmp_path):
    from xattn.train import TrainBoard
    rd = tmp_path/"r"
    _train(toy, rd, stop_after_epoch=2)
    b = TrainBoard(rd/"tensorboard"); b.scalars({"loss/train": 99.0}, 10_000); b.close()   # logged by a process killed mid-epoch
    _train(toy, rd)
    ea = _reader(rd/"tensorboard")
    got = [(e.step, e.value) for e in ea.Scalars("loss/train")]
    assert [s for s, _ in got] == [r["step"] for r in _records(rd, "epoch")] and 99.0 not in [v for _, v in got]
    assert len(ea.Scalars("hparams/best_val_top1")) == 1
    files = sorted((rd/"tensorboard").iterdir())
    _train(toy, rd)                                                   # finished: a no-op, no new event file
    assert sorted((rd/"tensorboard").iterdir()) == files


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def _first_line(p, timeout=180) -> str:
    box = []
    t = threading.Thread(target=lambda: box.append(p.stdout.readline()), daemon=True); t.start(); t.join(timeout)
    return box[0] if box else ""


def test_xattn_board_serves_the_runs_on_loopback(run):
    rd, _ = run
    port = _free_port()
    p = subprocess.Popen([sys.executable, "-m", "xattn.cli", "board", str(rd.parent), "--port", str(port)], env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = _first_line(p)
        url = f"http://127.0.0.1:{port}/"
        assert url in line and "1 run(s) (r1)" in line, (line, p.poll())
        get = lambda route: urllib.request.urlopen(url + route, timeout=60).read()
        assert b"<!doctype html>" in get("")[:200].lower()
        assert json.loads(get("data/runs")) == ["r1/."]
        tags = json.loads(get("data/plugin/scalars/tags"))["r1/."]
        assert {"loss/val", "accuracy/val_top1", "perf/samples_per_s"} <= set(tags)
        assert "confusion/val" in json.loads(get("data/plugin/images/tags"))["r1/."]
    finally:
        p.terminate(); p.wait(timeout=60); p.stdout.close(); p.stderr.close()


@pytest.mark.parametrize("case", ["missing", "no-logs", "port-in-use"])
def test_xattn_board_bad_input_is_one_line_exit_2(run, tmp_path, case):
    rd, _ = run
    target, port = {"missing": tmp_path/"nope", "no-logs": tmp_path/"empty-run", "port-in-use": rd}[case], _free_port()
    (tmp_path/"empty-run"/"checkpoints").mkdir(parents=True)
    with socket.socket() as busy:
        if case == "port-in-use": busy.bind(("127.0.0.1", port)); busy.listen()
        r = subprocess.run([sys.executable, "-m", "xattn.cli", "board", str(target), "--port", str(port)], env=_env(),
                           capture_output=True, text=True, timeout=180)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("xattn board: error: "), r.stderr
    want = {"missing": f"{target}: no such directory", "no-logs": f"{target}: no TensorBoard logs", "port-in-use": f"--port {port}:"}[case]
    assert want in lines[0], lines[0]
