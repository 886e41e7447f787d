"""`xattn weights fetch` against a real HTTP server on 127.0.0.1 (no real download): resume with Range after an
interrupted transfer, sha256 checks, atomic placement, concurrent fetches of one file, and the CLI's one-line errors."""
import hashlib, http.server, os, subprocess, sys, threading, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]


class _Handler(http.server.BaseHTTPRequestHandler):
    "Serves `files` (name -> bytes) with HTTP Range; `cut[name] = n` drops the connection after n bytes, once."
    files: dict = {}
    cut: dict = {}
    requests: list = []
    delay: float = 0.0

    def log_message(self, *a): pass

    def do_GET(self):
        name = self.path.lstrip("/")
        self.requests.append((name, self.headers.get("Range")))
        if name not in self.files: self.send_error(404, "Not Found"); return
        data, start = self.files[name], 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            self.send_response(206); self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else: self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start)); self.end_headers()
        body = data[start:]
        if name in self.cut:
            body = body[:self.cut.pop(name)]
        for i in range(0, len(body), 1 << 16):
            self.wfile.write(body[i:i + (1 << 16)])
            if self.delay: time.sleep(self.delay)
        if len(body) < len(data) - start: self.wfile.flush(); self.connection.shutdown(2)


@pytest.fixture
def server():
    files, cut, reqs = {}, {}, []
    H = type("H", (_Handler,), dict(files=files, cut=cut, requests=reqs))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield dict(base=f"http://127.0.0.1:{srv.server_port}", files=files, cut=cut, requests=reqs, handler=H)
    srv.shutdown(); srv.server_close()


def _cli(*args, env):
    return subprocess.run([sys.executable, "-m", "xattn.cli", "weights", "fetch", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env}, timeout=120)


def test_interrupted_download_resumes_with_range(server, tmp_path):
    from xattn.weights import download, WeightsFetchError
    blob = os.urandom(5 << 20); server["files"]["w.pth"] = blob; server["cut"]["w.pth"] = 2 << 20
    dest = tmp_path / "w.pth"
    with pytest.raises(WeightsFetchError, match="run again to resume"):
        download(f"{server['base']}/w.pth", dest, sha256=hashlib.sha256(blob).hexdigest(), progress=False)
    assert not dest.exists() and (tmp_path / "w.pth.part").stat().st_size == 2 << 20   # what arrived is kept, nothing in place
    r = download(f"{server['base']}/w.pth", dest, sha256=hashlib.sha256(blob).hexdigest(), progress=False)
    assert r["resumed_from"] == 2 << 20 and r["verified"] and dest.read_bytes() == blob
    assert server["requests"][-1] == ("w.pth", f"bytes={2 << 20}-")
    assert not (tmp_path / "w.pth.part").exists()


def test_digest_mismatch_deletes_the_download(server, tmp_path):
    from xattn.weights import download, WeightsFetchError
    server["files"]["w.pth"] = b"tampered" * 1000
    with pytest.raises(WeightsFetchError, match="does not match the known"):
        download(f"{server['base']}/w.pth", tmp_path / "w.pth", sha256_prefix="11ad3fa6", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".lock") == []


def test_two_processes_fetching_one_file_write_it_once(server, tmp_path):
    blob = os.urandom(2 << 20); server["files"]["I3D_8x8_R50.pyth"] = blob; server["handler"].delay = 0.01
    env = {"XATTN_WEIGHTS": str(tmp_path)}
    cmd = [sys.executable, "-m", "xattn.cli", "weights", "fetch", "i3d_r50", "--mirror", server["base"]]
    procs = [subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(ROOT), **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert (tmp_path / "I3D_8x8_R50.pyth").read_bytes() == blob
    assert sum(1 for n, _ in server["requests"] if n == "I3D_8x8_R50.pyth") == 1      # the second process waited and found it done


def test_cli_fetch_all_from_a_mirror(server, tmp_path):
    server["files"]["vit_small_plus_patch16_dinov3.lvd1689m.safetensors"] = b"dino" * 100
    server["files"]["I3D_8x8_R50.pyth"] = b"i3d" * 100
    r = _cli("all", "--mirror", server["base"], env={"XATTN_WEIGHTS": str(tmp_path)})
    assert r.returncode == 1, r.stdout + r.stderr                          # the mirror lacks most files
    assert "fetched  dinov3_vits16plus" in r.stdout and "fetched  i3d_r50 " in r.stdout
    assert "i3d_r50_flow" not in r.stdout                                  # same file as i3d_r50: fetched once
    assert "present  efficientnet_lite0" in r.stdout                        # shipped by its pip package
    assert "FAILED   resnet50:" in r.stdout and "HTTP 404" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr
    assert (tmp_path / "vit_small_plus_patch16_dinov3.lvd1689m.safetensors").read_bytes() == b"dino" * 100


def test_cli_offline_fails_in_one_line(tmp_path):
    import socket
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()      # nothing listens there
    r = _cli("resnet50", "--mirror", f"http://127.0.0.1:{port}", "--timeout", "5", env={"XATTN_WEIGHTS": str(tmp_path)})
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot connect" in lines[0], r.stderr
    assert "save it as " + str(tmp_path / "resnet50-11ad3fa6.pth") in lines[0]
    r = _cli("nosuch", env={"XATTN_WEIGHTS": str(tmp_path)})
    assert r.returncode == 2 and "unknown checkpoint(s) ['nosuch']" in r.stderr and "Traceback" not in r.stderr
