"""xattn.viz, xattn.viz_video and xattn.viz_temporal in a real browser: JupyterLab on 127.0.0.1 runs
`tests/browser/widgets.ipynb` through its UI in Debian's headless Chromium (driven by Playwright for Python), and
every widget (attention, embedding and temporal explorers of 08_viz; the attention-on-the-video, feature-space
and temporal-views explorers of 08a/08b) must draw real plotly traces, show
no "Error displaying widget", log no JS error, and redraw when one of its controls moves.
Nothing is installed here: `make pytest` installs Debian's chromium first (`make browser-deps`), Playwright is pinned.
Screenshots stay under the test's tmp_path and are copied to `runs/browser-test/<stamp>/`."""
import json, os, shutil, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "tests" / "browser" / "widgets.ipynb"
CHROMIUM = Path("/usr/lib/chromium/chromium")        # Debian's chromium; Playwright cannot download a browser here
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
WIDGETS = {"attention": ".heatmaplayer .hm", "embedding": ".scatterlayer .trace .point", "temporal": ".heatmaplayer .hm", "static": ".scatterlayer .trace",
           "video_attention": ".heatmaplayer .hm", "feature_space": ".scatterlayer .trace .point", "views_08b": ".scatterlayer .trace .js-line"}
# one control per widget: (tag, move, what it does, the trace drawn after it, a text the new title must hold)
def _slide(cell, steps: int = 2):
    "Move the cell's first slider `steps` to the right with the keyboard, as a user would."
    h = cell.locator(".noUi-handle").first; h.focus()
    for _ in range(steps): h.press("ArrowRight")


MOVES = [("attention", lambda c: c.locator("select").first.select_option(index=3), "attention: video 3", ".heatmaplayer .hm", ""),
         ("embedding", lambda c: c.get_by_role("button", name="tsne").click(), "embedding: method tsne", ".scatterlayer .trace .point", "(tsne)"),
         ("temporal", lambda c: c.locator("select").nth(1).select_option(index=1), "temporal: motion features", ".heatmaplayer .hm", ""),
         ("video_attention", _slide, "video attention: frame slider", ".heatmaplayer .hm", ""),
         ("video_attention", lambda c: c.locator("select").first.select_option(index=2), "video attention: third video", ".heatmaplayer .hm", ""),
         ("feature_space", lambda c: c.get_by_role("button", name="split", exact=True).click(), "feature space: colour by split",
          ".scatterlayer .trace .point", "coloured by split"),
         ("views_08b", lambda c: c.get_by_role("button", name="heatmap", exact=True).click(), "temporal views: heatmap", ".heatmaplayer .hm", "(heatmap)")]
SETTINGS = {  # JupyterLab's own settings: no news toast over the cells, every cell in the DOM, no update check
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}

if not CHROMIUM.exists():
    if os.environ.get("CI"): raise RuntimeError(f"{CHROMIUM} missing on CI: run `make browser-deps` (apt-get install chromium)")
    pytest.skip(f"{CHROMIUM} missing: run `make browser-deps` (installs Debian's chromium)", allow_module_level=True)
from playwright.sync_api import sync_playwright     # pinned in settings.ini dev_requirements (`make install`)


def _free_port() -> int:
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def _stripped_copy(src: Path, dst: Path) -> int:
    "Copy notebook `src` to `dst` without outputs (JupyterLab autosaves it); returns its number of cells."
    nb = json.loads(src.read_text())
    for c in nb["cells"]:
        if c["cell_type"] == "code": c["outputs"], c["execution_count"] = [], None
    nb["metadata"].pop("widgets", None)
    dst.write_text(json.dumps(nb, indent=1))
    return len(nb["cells"])


@pytest.fixture
def lab(tmp_path):
    "A JupyterLab server on 127.0.0.1 with its own settings, workspaces, config and runtime folders: (base url, token, folder)."
    for rel, value in SETTINGS.items():
        (tmp_path / "settings" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "settings" / rel).write_text(json.dumps(value))
    for d in ("workspaces", "config", "runtime", "root"): (tmp_path / d).mkdir()
    port, token = _free_port(), "xattn-browser-test"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    log = open(tmp_path / "jupyterlab.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
                             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path / 'root'}",
                             f"--LabApp.user_settings_dir={tmp_path / 'settings'}", f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
                             "--LabApp.expose_app_in_browser=True",
                             "--LabApp.extension_manager=readonly", "--ServerApp.terminals_enabled=False", "--allow-root"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path / "root")
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            if proc.poll() is not None: pytest.fail(f"jupyter lab exited ({proc.returncode}):\n{(tmp_path / 'jupyterlab.log').read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2); break
            except OSError: time.sleep(0.5)
        else: pytest.fail(f"jupyter lab did not answer within 120 s:\n{(tmp_path / 'jupyterlab.log').read_text()[-3000:]}")
        yield base, token, tmp_path
    finally:
        proc.terminate()
        try: proc.wait(20)
        except subprocess.TimeoutExpired: proc.kill()
        log.close()


JS_CELLS = """() => [...document.querySelectorAll('.jp-Notebook .jp-Cell')].map(c => ({
    src: (c.querySelector('.jp-InputArea-editor') || {}).textContent || '',
    prompt: (c.querySelector('.jp-InputPrompt') || {}).textContent || '',
    out: (c.querySelector('.jp-OutputArea') || {}).textContent || ''}))"""
JS_FIGURE = """(cell) => { const gd = cell.querySelector('.js-plotly-plot');
    return gd && gd.data ? JSON.stringify({title: (gd.querySelector('.gtitle') || {}).textContent || '',
                                           data: gd.data.map(t => [t.type, t.z, t.x, t.y]),
                                           shapes: ((gd.layout || {}).shapes || []).map(s => [s.x0, s.x1, s.y0, s.y1, (s.line || {}).color])}) : null; }"""


def _cell(page, tag: str):
    "The locator of the cell whose source starts with `# widget: <tag>`."
    cells = page.evaluate(JS_CELLS)
    idx = [i for i, c in enumerate(cells) if c["src"].lstrip().startswith(f"# widget: {tag}")]
    assert len(idx) == 1, f"cell '# widget: {tag}' not found once in the page: {[c['src'][:40] for c in cells]}"
    return page.locator(".jp-Notebook .jp-Cell").nth(idx[0])


JS_LAYERS = """(cell) => [...cell.querySelectorAll('.js-plotly-plot .cartesianlayer > g > g > g, .js-plotly-plot .barlayer, .js-plotly-plot .trace')]
    .map(e => e.getAttribute('class')).filter((v, i, a) => v && a.indexOf(v) === i)"""


def _expect_plot(cell, tag: str, trace: str, shots: Path, timeout: float = 120):
    "Wait until `cell` holds a plotly plot with `trace` elements; else fail naming what it does hold."
    try: cell.locator(f".js-plotly-plot {trace}").first.wait_for(state="attached", timeout=timeout * 1000)
    except Exception:
        cell.screenshot(path=str(shots / f"{tag}-broken.png"))
        pytest.fail(f"{tag}: no plotly '{trace}' drawn within {timeout:.0f} s; plotly layers present: {cell.evaluate(JS_LAYERS)}; "
                    f"output text: {cell.evaluate('(c) => (c.querySelector(`.jp-OutputArea`) || {}).textContent')[-800:]!r}")


def _wait_figure_change(cell, before: str, what: str, title: str = "", timeout: float = 120):
    "Wait until the figure of `cell` differs from `before` and its title holds `title` (a FigureWidget may redraw its traces a moment before its title)."
    t0, now = time.time(), None
    while time.time() - t0 < timeout:
        now = cell.evaluate(JS_FIGURE)
        if now is not None and now != before and title in json.loads(now)["title"]: return now
        time.sleep(0.25)
    if now is not None and now != before:
        pytest.fail(f"{what}: the figure changed but its title {json.loads(now)['title']!r} still lacks {title!r} after {timeout:.0f} s")
    text = cell.evaluate("(c) => (c.querySelector('.jp-OutputArea') || {}).textContent || ''")
    pytest.fail(f"{what}: the figure did not change within {timeout:.0f} s (a Python callback error goes to the kernel log); "
                f"widget text: {text[:400]!r}")


def _run_notebook(page, base, token, n_cells, shots):
    page.goto(f"{base}/lab/tree/widgets.ipynb?token={token}&reset", wait_until="domcontentloaded")
    page.wait_for_function(f"document.querySelectorAll('.jp-Notebook .jp-Cell').length >= {n_cells}", timeout=90_000)
    page.wait_for_function("window.jupyterapp && document.querySelector('.jp-Notebook')", timeout=60_000)
    page.wait_for_function("() => { const w = window.jupyterapp.shell.currentWidget;"
                           " return w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel"
                           " && w.sessionContext.session.kernel.status === 'idle'; }", timeout=90_000)
    page.locator(".jp-Notebook .jp-Cell").first.click()
    page.mouse.move(2, 2)   # off the notebook: outputs scrolling under a resting pointer would get mouseenter (plotly then swaps a PNG for the plot)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")     # Run > Run All Cells
    t0 = time.time()
    while time.time() - t0 < 180:
        cells = page.evaluate(JS_CELLS)
        if any("ALL-CELLS-DONE" in c["out"] for c in cells): return cells
        if any("Traceback" in c["out"] for c in cells) and not any("*" in c["prompt"] for c in cells): break    # stopped on an error
        time.sleep(1)
    page.screenshot(path=str(shots / "failed-run.png"), full_page=True)
    bad = "\n---\n".join(f"{c['src'][:60]!r}: {c['out'][-1500:]}" for c in cells if c["out"].strip())
    pytest.fail(f"the notebook did not run to its end (prompts {[c['prompt'] for c in cells]}):\n{bad}")


def test_viz_widgets_render_and_react_in_chromium(lab, tmp_path):
    base, token, work = lab
    n_cells = _stripped_copy(NOTEBOOK, work / "root" / "widgets.ipynb")
    shots = tmp_path / "screenshots"; shots.mkdir()
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            _run_notebook(page, base, token, n_cells, shots)
            static = _cell(page, "static")              # a FigureBundle: plotly's renderer shows its PNG, interactive on hover
            static.locator(".jp-RenderedPlotly img.plot-img").wait_for(state="visible", timeout=60_000)
            static.scroll_into_view_if_needed(); static.screenshot(path=str(shots / "static-png.png"))
            static.locator(".jp-RenderedPlotly img.plot-img").dispatch_event("mouseenter")
            for tag, trace in WIDGETS.items():          # every widget draws real plotly traces
                cell = _cell(page, tag); _expect_plot(cell, tag, trace, shots)
                cell.scroll_into_view_if_needed(); cell.screenshot(path=str(shots / f"{tag}.png"))
            body = page.evaluate("() => document.body.textContent")
            assert "Error displaying widget" not in body, "a widget failed to display"
            done = []
            for tag, move, what, trace, title in MOVES:  # one control per widget (two for the video attention): the figure must redraw
                cell = _cell(page, tag); before = cell.evaluate(JS_FIGURE); done.append(tag)
                assert before is not None, f"{tag}: no plotly figure"
                move(cell); _wait_figure_change(cell, before, what, title)
                _expect_plot(cell, f"{tag}-after", trace, shots)
                cell.scroll_into_view_if_needed(); cell.screenshot(path=str(shots / f"{tag}-after{done.count(tag)}.png"))
            page.screenshot(path=str(shots / "notebook.png"), full_page=True)
        finally:
            browser.close()
            keep = ROOT / "runs" / "browser-test" / time.strftime("%Y%m%d-%H%M%S")
            shutil.copytree(shots, keep, dirs_exist_ok=True)
            print(f"screenshots: {shots} (copy: {keep})")
    assert not errors, "JS errors in the page:\n" + "\n".join(errors)
