"""`xattn search` end to end with real processes: a study of 8+ trials on toy features (each trial a papermill run of the
training notebook, two at a time) is killed mid-run (SIGKILL of its process group) and resumed without losing its finished
trials; a clearly bad learning rate is pruned; the exported best config is accepted by `xattn train`."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import optuna
import psutil
import pytest
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
XATTN = [sys.executable, "-m", "xattn.cli"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from xattn.features import write_toy_dataset
    return write_toy_dataset(tmp_path_factory.mktemp("toy")/"toy", n_videos=64, noise=0.8, seed=2)


def search_cmd(toy, out):
    "8 finished trials, 2 at a time, 2 epochs each; the space: a good and a clearly bad lr x two widths; median pruner after 1 complete trial."
    return XATTN + ["search", "--store", str(toy/"features.h5"), "--dataset-root", str(toy), "--out", str(out),
                    "--data", "semantic=toy_semantic;motion=toy_motion", "--model", "dim=32;heads=4;depth=1",
                    "--train", "epochs=2;batch_size=16;lr=0.01;warmup_epochs=0;device=cpu",
                    "--no-default-space", "--space", "lr=0.000001,0.01", "--space", "dim=16,32",
                    "--enqueue", "lr=0.01,dim=16", "--enqueue", "lr=0.000001,dim=32", "--enqueue", "lr=0.000001,dim=16",
                    "--n-trials", "8", "--n-jobs", "2", "--sampler", "random", "--startup-trials", "1"]


def trials(out):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not (out/"study.db").exists(): return []
    try: return optuna.load_study(study_name="search", storage=f"sqlite:///{out/'study.db'}").get_trials()
    except Exception: return []          # the study is not created yet (or the database is busy)


def by_state(ts, *states): return {t.number: t for t in ts if t.state in states}


def processes_under(folder):
    "Processes (papermill children, kernels) whose command line or working directory lies under `folder`."
    out = []
    for p in psutil.process_iter(["cmdline", "cwd"]):
        try:
            if str(folder) in " ".join(p.info["cmdline"] or []) or str(folder) in (p.info["cwd"] or ""): out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied): pass
    return out


def test_search_killed_resumed_pruned_best_config_trains(toy, tmp_path):
    out = tmp_path/"search"
    log = open(tmp_path/"first.log", "w")
    proc = subprocess.Popen(search_cmd(toy, out), cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    t0 = time.time()
    while True:                                      # kill once 2 trials are complete and others are running
        ts = trials(out)
        if len(by_state(ts, TrialState.COMPLETE)) >= 2 and by_state(ts, TrialState.RUNNING): break
        assert proc.poll() is None, f"the search ended before it was killed: {(tmp_path/'first.log').read_text()[-3000:]}"
        assert time.time() - t0 < 600, "no 2 complete trials after 10 minutes"
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL); proc.wait(); log.close()
    before = trials(out)
    complete0, running0 = by_state(before, TrialState.COMPLETE), by_state(before, TrialState.RUNNING)
    assert len(complete0) >= 2 and running0
    for _ in range(40):                              # every kernel follows its papermill parent out
        if not processes_under(out/"trials"): break
        time.sleep(0.5)
    assert processes_under(out/"trials") == []

    r = subprocess.run(search_cmd(toy, out), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    after = trials(out)
    complete1, pruned1 = by_state(after, TrialState.COMPLETE), by_state(after, TrialState.PRUNED)
    assert {n: t.value for n, t in complete0.items()} == {n: complete1[n].value for n in complete0}   # nothing finished was lost
    assert len(complete1) + len(pruned1) >= 8 and not by_state(after, TrialState.RUNNING, TrialState.WAITING)
    assert set(running0) <= set(by_state(after, TrialState.FAIL))             # killed mid-run: failed, never counted as finished
    retried = {t.user_attrs.get("retry_of") for t in after} - {None}
    assert retried == set(running0)
    assert f"trials: {len(complete1)} complete, {len(pruned1)} pruned, {len(running0)} failed" in r.stdout

    bad = [t for t in after if t.params.get("train.lr") == 1e-6 and t.state != TrialState.FAIL]
    assert bad and all(t.state == TrialState.PRUNED for t in bad)           # lr=1e-6 against the median of lr=1e-2 runs
    for t in pruned1.values():                                             # (a weak lr=1e-2 run may be pruned too)
        epoch = max(t.intermediate_values)
        nb = json.loads((Path(t.user_attrs["run_dir"])/"06b_train_run.out.ipynb").read_text())
        assert f"Pruned by `xattn search` at epoch {epoch}" in "".join(nb["cells"][-1]["source"])
    assert all(max(t.intermediate_values) == 1 for t in bad)
    for t in complete1.values():
        run = Path(t.user_attrs["run_dir"])
        assert (run/"06b_train_run.out.ipynb").exists() and json.loads((run/"metrics.json").read_text())["epochs_run"] == 2

    summary = json.loads((out/"summary.json").read_text())
    best = max(complete1.values(), key=lambda t: t.value)
    assert summary["best_value"] == best.value and summary["best_params"]["train.lr"] == 0.01
    assert summary["trials"] == dict(complete=len(complete1), pruned=len(pruned1), failed=len(running0), running=0, waiting=0)
    assert len((out/"trials.csv").read_text().splitlines()) == len(after) + 1
    cfg = json.loads((out/"best_config.json").read_text())
    assert (cfg["model"]["dim"], cfg["train"]["lr"]) == (best.params["model.dim"], best.params["train.lr"])
    r = subprocess.run(XATTN + ["train", "--config", str(out/"best_config.json"), "--epochs", "1", "--run-dir", str(tmp_path/"train")],
                       cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 0 <= json.loads(r.stdout.splitlines()[-1])["top1"] <= 1
    run_cfg = json.loads((tmp_path/"train"/"config.json").read_text())
    assert (run_cfg["model"]["dim"], run_cfg["train"]["lr"], run_cfg["train"]["epochs"]) == (best.params["model.dim"], 0.01, 1)


def test_search_bad_inputs(toy, tmp_path):
    r = subprocess.run(XATTN + ["search", "--out", str(tmp_path/"s")], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "set store and dataset_root" in r.stderr
    base = ["search", "--store", str(toy/"features.h5"), "--dataset-root", str(toy), "--out", str(tmp_path/"s")]
    r = subprocess.run(XATTN + base + ["--space", "colour=red,blue"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "'colour'" in r.stderr
    r = subprocess.run(XATTN + base + ["--no-default-space", "--space", "lr=0.01", "--enqueue", "lr=0.1"], cwd=ROOT, env=ENV,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "train.lr=0.1 lies outside" in r.stderr


def test_two_processes_take_each_queued_trial_once(tmp_path):
    "Workers in separate processes on one study.db: every queued trial goes to exactly one of them (SQLite BEGIN IMMEDIATE)."
    from xattn.search import SearchConfig, open_study
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(SearchConfig(out=tmp_path, space={"train.lr": [0.1]}))
    for i in range(48): study.enqueue_trial({"train.lr": 0.1}, user_attrs={"i": i})
    code = ("import sys, time, pathlib, optuna; from xattn.search import SearchConfig, open_study; optuna.logging.set_verbosity(optuna.logging.WARNING); "
            "st = open_study(SearchConfig(out=sys.argv[1], space={'train.lr': [0.1]})); print('ready', flush=True); go = pathlib.Path(sys.argv[1])/'go'\n"
            "while not go.exists(): time.sleep(0.01)\n"
            "print(' '.join(str(st.ask().number) for _ in range(24)))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    assert [p.stdout.readline().strip() for p in procs] == ["ready", "ready"]
    (tmp_path/"go").touch()                                                # both ask at once
    got = [set(map(int, p.communicate(timeout=300)[0].split())) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert got[0].isdisjoint(got[1]) and got[0] | got[1] == set(range(48))
    assert len(study.get_trials(states=(TrialState.RUNNING,))) == 48 == len(study.get_trials())
