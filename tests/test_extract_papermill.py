"""`xattn extract` in its papermill form (nbs/04e_extract_run.ipynb): parameters in, store + check + QA report out;
a second execution resumes (extracts nothing); the executed notebook records the parameters."""
import json, os, subprocess, sys
from pathlib import Path
from xattn.core import repo_root
from xattn.store import FeatureStore, check_store
from xattn.synthetic import SyntheticConfig, make_synthetic_dataset

BIN = Path(sys.executable).parent


def _papermill(tmp_path, out_nb, store, source):
    cfg = json.dumps(dict(extractors=["dinov3_vits16plus", "i3d_r50_flow"], frames=4, device="cpu", allow_random_init=True,
                          num_workers=2, threads=1, overrides={"size": 32, "i3d_r50_flow": {"frames_per_clip": 2}}))
    env = dict(os.environ, PYTHONPATH=str(repo_root()), MPLBACKEND="Agg", PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run([str(BIN/"papermill"), str(repo_root()/"nbs"/"04e_extract_run.ipynb"), str(out_nb), "-p", "source", str(source),
                           "-p", "out", str(store), "-y", f"config: {cfg}", "-k", "python3", "--cwd", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=600)


def test_papermill_extract_run(tmp_path):
    src = make_synthetic_dataset(tmp_path/"data", SyntheticConfig(n_per_class=1, size=32, frames=12, n_corrupt=1), progress=False)
    store = tmp_path/"out"/"features.h5"
    r = _papermill(tmp_path, tmp_path/"run1.ipynb", store, src)
    assert r.returncode == 0, r.stderr[-3000:]
    s = FeatureStore(store)
    assert s.extractors == ["dinov3_vits16plus", "i3d_r50_flow"] and len(s["i3d_r50_flow"]) == 11
    assert check_store(store)["ok"]
    assert (tmp_path/"out"/"features_qa"/"qa.md").exists() and (tmp_path/"out"/"features.summary.json").exists()
    nb = json.loads((tmp_path/"run1.ipynb").read_text())
    assert nb["metadata"]["papermill"]["parameters"]["source"] == str(src)
    r = _papermill(tmp_path, tmp_path/"run2.ipynb", store, src)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tmp_path/"out"/"features.summary.json").read_text())["processed"] == 0
