"""`xattn serve` as a real process on a free loopback port, with real HTTP requests. A model with real extractors is
registered in a private registry (EfficientNet-Lite0 pretrained + random-init I3D R50 flow, the tiny demo's streams; an
untrained fusion head: what is checked is that serving gives `Predictor`'s answer, not that the answer is right). Then:
an upload and a path give the same top-1 and probability as `Predictor`; each bad request (zero bytes, truncated mp4, text
renamed .mp4, a huge declared Content-Length, a body over the limit with and without Content-Length, path traversal, wrong
content types) gets its 4xx while the server keeps serving; a burst beyond workers + queue gets 503s with every request
answered exactly once, and /metrics counts them; SIGTERM during a request lets it finish (200) and the process exit 0."""
import json, shutil, signal, socket, threading, time
from pathlib import Path
import httpx
import pytest
import torch
from xattn.core import repo_root
from xattn.serve import free_port, metric_value, run_load, start_server, stop_server, wait_ready

SHARED = repo_root().parent/"shared"/"data"/"videos"
CLIPS = ["decord__video_0.mov", "human2bot__task5_0.webm", "mmaction2__rawvideo_part_0.mp4"]     # the three smallest real clips
HOLD_S, WORKERS, QUEUE, MAX_MB = 1.0, 1, 2, 2


def register_serving_model(root: Path) -> str:
    "Register an untrained fusion model over the tiny demo's streams (their provenance computed by loading the extractors)."
    from xattn.extract import ExtractConfig, extractor_provenance, load_extractors
    from xattn.model import FusionConfig, build_model
    from xattn.registry import register_model
    sem, mot = "efficientnet_lite0", "i3d_r50_flow"
    cfg = ExtractConfig(extractors=(sem, mot), frames=8, clips=1, flow_method="farneback", device="cpu", precision="fp32", num_workers=0,
                        random_init=(mot,), seed=0, overrides={sem: {"size": 64}, mot: {"size": 32, "frames_per_clip": 8}})
    ex = load_extractors(cfg)
    prov = {n: extractor_provenance(n, ex[n], cfg) for n in (sem, mot)}
    streams = {s: dict(extractor=n, token=t, weights=prov[n]["weights"], provenance=prov[n]) for s, n, t in (("semantic", sem, "cls"), ("motion", mot, "all"))}
    torch.manual_seed(0)
    model = build_model(FusionConfig(dim=32, heads=4, depth=1, n_classes=5), ex[sem].spec.dim, ex[mot].spec.dim).eval()
    meta = dict(class_names=[f"class{i}" for i in range(5)], streams=streams, preprocessing=dict(semantic_token="cls", motion_token="all"))
    return register_model(model, meta, "serving", root).ref


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve")
    videos = d/"videos"; videos.mkdir()
    for c in CLIPS: shutil.copy(SHARED/c, videos/c)             # copies: links would resolve outside --video-root
    (videos/"notes.mp4").write_text("meeting notes, not a video\n" * 40)
    register_serving_model(d/"models")
    port = free_port()
    proc, url = start_server(["--model", "serving", "--root", d/"models", "--video-root", videos, "--workers", WORKERS, "--queue", QUEUE,
                              "--hold-s", HOLD_S, "--max-upload-mb", MAX_MB, "--device", "cpu"], port, env={"OMP_NUM_THREADS": "1"})
    try:
        wait_ready(url, proc, timeout=300)
        yield dict(url=url, port=port, proc=proc, videos=videos, root=d/"models")
    finally:
        if proc.poll() is None: stop_server(proc, timeout=60)


def _metrics(url) -> str: return httpx.get(f"{url}/metrics", timeout=30).text


def test_upload_and_path_match_predictor(server):
    from xattn.predict import Predictor
    url, clip = server["url"], server["videos"]/CLIPS[2]
    up = httpx.post(f"{url}/predict", files={"file": (clip.name, clip.read_bytes(), "video/mp4")}, timeout=300)
    by_path = httpx.post(f"{url}/predict", json={"path": clip.name}, timeout=300)
    assert up.status_code == 200 and by_path.status_code == 200, (up.text, by_path.text)
    ref = Predictor(model="serving", root=server["root"], device="cpu", num_workers=0, progress=False).predict([clip])[0]
    for r in (up.json(), by_path.json()):
        assert r["status"] == "ok" and r["model"] == "serving:v1" and r["path"] == clip.name
        assert r["top_k"][0]["class"] == ref["top_k"][0]["class"]
        assert abs(r["top_k"][0]["prob"] - ref["top_k"][0]["prob"]) < 1e-6
        assert set(r) >= {"agreement", "attention", "streams", "duration"}
    print(f"\nserved top-1 {up.json()['top_k'][0]} == Predictor {ref['top_k'][0]}")


def _raw_post(port: int, headers: str, body: bytes) -> bytes:
    "A hand-written HTTP request (for a Content-Length no client library would send); the first bytes of the answer."
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(headers.encode() + b"\r\n" + body)
        return s.recv(4096)


def test_bad_requests_get_4xx_and_the_server_keeps_serving(server):
    url, port, videos = server["url"], server["port"], server["videos"]
    mp4 = (videos/CLIPS[2]).read_bytes()
    before = _metrics(url)
    post = lambda **kw: httpx.post(f"{url}/predict", timeout=300, **kw)
    def chunks():                                               # a streamed multipart body without Content-Length, over the limit
        yield b'--xx\r\nContent-Disposition: form-data; name="file"; filename="big.mp4"\r\nContent-Type: video/mp4\r\n\r\n'
        for _ in range(MAX_MB * 4): yield b"\0" * (2**20 // 2)
    cases = {
        "zero bytes": (lambda: post(files={"file": ("empty.mp4", b"", "video/mp4")}), 422),
        "truncated mp4": (lambda: post(files={"file": ("cut.mp4", mp4[: len(mp4) // 3], "video/mp4")}), 422),
        "text renamed .mp4": (lambda: post(files={"file": ("notes.mp4", b"just some text\n" * 200, "video/mp4")}), 422),
        "text by path": (lambda: post(json={"path": "notes.mp4"}), 422),
        "over the size limit": (lambda: post(files={"file": ("big.mp4", b"\0" * (MAX_MB * 2**20 + 1000), "video/mp4")}), 413),
        "chunked over the limit": (lambda: post(content=chunks(), headers={"content-type": "multipart/form-data; boundary=xx"}), 413),
        "path traversal": (lambda: post(json={"path": "../../../../etc/passwd"}), 403),
        "traversal via a subfolder": (lambda: post(json={"path": f"sub/../../{videos.name}/../../../etc/hostname"}), 403),
        "absolute path outside": (lambda: post(json={"path": "/etc/passwd"}), 403),
        "wrong content type": (lambda: post(content=mp4, headers={"content-type": "video/mp4"}), 415),
        "text part type": (lambda: post(files={"file": ("clip.mp4", mp4, "text/plain")}), 415),
        "not a video extension": (lambda: post(files={"file": ("clip.txt", mp4, "application/octet-stream")}), 415),
    }
    got = {}
    for name, (send, want) in cases.items():
        r = send()
        got[name] = r.status_code
        assert r.status_code == want, (name, r.status_code, r.text[:300])
        assert set(r.json()) == {"error", "status", "detail"} and r.json()["detail"], name
        assert httpx.get(f"{url}/healthz", timeout=30).status_code == 200, f"server down after {name}"
    huge = _raw_post(port, "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=xx\r\n"
                           f"Content-Length: {10**12}\r\n", b"--xx\r\n")
    assert huge.startswith(b"HTTP/1.1 413"), huge[:200]
    ok = post(files={"file": ("again.webm", (videos/CLIPS[1]).read_bytes(), "video/webm")})
    assert ok.status_code == 200 and ok.json()["status"] == "ok"
    after = _metrics(url)
    delta = lambda **lab: metric_value(after, "xattn_requests_total", endpoint="/predict", **lab) - metric_value(before, "xattn_requests_total", endpoint="/predict", **lab)
    assert {s: delta(status=s) for s in ("413", "415", "422", "403", "200")} == {"413": 3, "415": 3, "422": 4, "403": 3, "200": 1}
    err = lambda r: metric_value(after, "xattn_errors_total", reason=r) - metric_value(before, "xattn_errors_total", reason=r)
    assert (err("too_large"), err("forbidden_path"), err("empty"), err("bad_video")) == (3, 3, 1, 3)
    print(f"\n{got} + declared 10^12 bytes: 413; then a valid upload: 200")


def test_burst_beyond_capacity_gets_503_and_nothing_is_lost(server):
    url = server["url"]
    before = _metrics(url)
    res = run_load(url, server["videos"]/CLIPS[0], clients=8, requests=16, mode="path", path=CLIPS[0], timeout_s=300)
    print("\n" + json.dumps(res))
    assert res["answered_once"] and res["server_counted"] == 16 and res["ok"] + res["errors"] == 16
    assert set(res["status"]) <= {"200", "503"} and res["status"].get("503", 0) >= 1 and res["ok"] >= WORKERS + QUEUE
    after = _metrics(url)
    busy = metric_value(after, "xattn_errors_total", reason="busy") - metric_value(before, "xattn_errors_total", reason="busy")
    assert busy == res["status"]["503"]
    hist = metric_value(after, "xattn_request_duration_seconds_count", endpoint="/predict") - metric_value(before, "xattn_request_duration_seconds_count", endpoint="/predict")
    assert hist == 16
    assert metric_value(after, "xattn_request_duration_seconds_bucket", endpoint="/predict", le="0.5") < metric_value(after, "xattn_request_duration_seconds_count", endpoint="/predict")


def test_sigterm_lets_the_request_in_flight_finish_and_exits_0(server):
    url, proc = server["url"], server["proc"]
    answer = {}
    def request(): answer["r"] = httpx.post(f"{url}/predict", json={"path": CLIPS[1]}, timeout=300)
    t = threading.Thread(target=request); t.start()
    t0 = time.monotonic()
    while httpx.get(f"{url}/healthz", timeout=30).json()["running"] < 1:      # the prediction is on its worker (holding HOLD_S)
        assert time.monotonic() - t0 < 120 and t.is_alive(), "the request never started running"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    t.join(300)
    assert answer["r"].status_code == 200 and answer["r"].json()["status"] == "ok"
    assert proc.wait(120) == 0
    out = proc.stdout.read().strip().splitlines()
    assert json.loads(out[-1])["predict_ok"] >= 1, out
    with pytest.raises(httpx.ConnectError): httpx.get(f"{url}/healthz", timeout=5)
