"""report.html and the compare page (V5), rendered in headless Chromium.

Chromium (Debian's ``chromium`` package; ``.ci/run`` installs it) is driven through the DevTools
protocol: the page loads from its file with the phone's 390-pixel viewport, and the checks are
what a reader would notice: a console error, an image that does not decode or not at its natural
size, a page wider than the screen (horizontal scrolling), a request to the network. A screenshot
of each page is kept in ``$TRAINLAB_ARTIFACTS`` (default ``tests/artifacts/``, git-ignored).
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import struct
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

import trainlab
from trainlab.cli import main
from trainlab.report.compare import flatten, recipe_differences
from trainlab.report.html import markdown_html, nice_ticks, svg_chart

ARTIFACTS = Path(os.environ.get("TRAINLAB_ARTIFACTS") or Path(__file__).resolve().parents[1] / "artifacts")
PHONE = 390


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


# ---------------------------------------------------------------------------- a DevTools client
class Chromium:
    """Headless Chromium with one page, spoken to over the DevTools protocol (websocket-client)."""

    def __init__(self, binary: str, profile: Path):
        import websocket

        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--hide-scrollbars", "--mute-audio", f"--user-data-dir={profile}",
             "--remote-debugging-port=0", "--remote-allow-origins=*", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError(f"chromium did not start (exit code {self.proc.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        for _ in range(100):
            targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                break
            time.sleep(0.1)
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, event: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in self.events:
                if msg.get("method") == event:
                    return msg
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(event)

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def close(self):
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def inspect_page(browser: Chromium, page: Path, shot: Path) -> dict:
    """Load ``page`` at a phone's width; what a reader would see, and a full-page screenshot."""
    browser.events.clear()
    for domain in ("Page", "Runtime", "Log", "Network"):
        browser.send(f"{domain}.enable")
    browser.send("Emulation.setDeviceMetricsOverride", width=PHONE, height=844, deviceScaleFactor=1, mobile=True)
    browser.send("Page.navigate", url=page.resolve().as_uri())
    browser.wait_for("Page.loadEventFired")
    images = browser.evaluate(
        "Promise.all(Array.from(document.images).map(async im => {"
        " let decoded = true; try { await im.decode(); } catch (e) { decoded = false; }"
        " return {decoded, w: im.naturalWidth, h: im.naturalHeight, shownW: im.getBoundingClientRect().width,"
        " attrW: +im.getAttribute('width'), attrH: +im.getAttribute('height')}; }))")
    layout = browser.evaluate("({scroll: document.documentElement.scrollWidth, inner: window.innerWidth,"
                              " body: document.body.scrollWidth, height: document.documentElement.scrollHeight})")
    browser.send("Page.getLayoutMetrics")
    height = min(layout["height"], 16000)
    shot_data = browser.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                             clip={"x": 0, "y": 0, "width": PHONE, "height": height, "scale": 1})["data"]
    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.write_bytes(base64.b64decode(shot_data))
    errors = []
    for msg in browser.events:
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert", "warning"):
            errors.append(params)
        elif method == "Runtime.exceptionThrown":
            errors.append(params)
        elif method == "Log.entryAdded" and params["entry"].get("level") in ("error", "warning"):
            errors.append(params["entry"])
    requests = [msg["params"]["request"]["url"] for msg in browser.events
                if msg.get("method") == "Network.requestWillBeSent"]
    network = [u for u in requests if not u.startswith(("file:", "data:"))]
    return {"images": images, "layout": layout, "errors": errors, "network": network}


def png_sizes(html: str) -> list[tuple[int, int]]:
    """The (width, height) of every embedded PNG of a page, in document order, from its header."""
    out = []
    for data in re.findall(r'<img src="data:image/png;base64,([^"]+)"', html):
        raw = base64.b64decode(data)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        out.append(struct.unpack(">II", raw[16:24]))
    return out


def assert_readable(result: dict, html: str) -> None:
    assert not result["errors"], result["errors"]
    assert not result["network"], result["network"]
    sizes = png_sizes(html)
    assert len(result["images"]) == len(sizes) > 0
    for im, (w, h) in zip(result["images"], sizes):
        assert im["decoded"], im
        assert (im["w"], im["h"]) == (w, h) == (im["attrW"], im["attrH"]), (im, w, h)
        assert im["shownW"] <= PHONE  # shrunk to the screen, never wider
    layout = result["layout"]
    assert layout["inner"] == PHONE, layout  # the page asks for the device's width (viewport meta)
    assert layout["scroll"] <= layout["inner"] and layout["body"] <= layout["inner"], layout


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two finished runs (a CNN with a doctor finding forced by a tiny threshold, and an MLP)."""
    root = tmp_path_factory.mktemp("html")
    cnn = trainlab.fit("digits-cnn", ["train.epochs=2", "train.progress=false", "run.tensorboard=false",
                                      "doctor.underfit_accuracy=1.0", f"run.dir={root / 'cnn'}"], quiet=True)
    mlp = trainlab.fit("digits-mlp", ["train.epochs=3", "train.progress=false", "run.tensorboard=false",
                                      "optim.lr=0.2", f"run.dir={root / 'mlp'}"], quiet=True)
    assert main(["show", str(cnn.dir), "filters"]) == 0
    return root, cnn, mlp


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    binary = chromium_binary()
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run installs it)")
    b = Chromium(binary, tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


# --------------------------------------------------------------------------------------- tests
@pytest.mark.slow
def test_report_html_is_self_contained_and_links_its_parts(runs):
    """V5: report.html sits beside report.md with every plot of report.md embedded (the bytes of
    plots/*.png), no script and nothing from the network, and its table of contents and summary
    links all land on a part of the page: summary, metrics, curves, plots (confusion matrix, the
    filters `trainlab show` drew), doctor, recipe, environment."""
    _, cnn, _ = runs
    page = (cnn.dir / "report.html").read_text()
    assert "<script" not in page.lower() and "http://" not in page and "https://" not in page
    ids = set(re.findall(r'id="([^"]+)"', page))
    for part in ("summary", "metrics", "curves", "plots", "doctor", "recipe", "environment"):
        assert part in ids, part
    for target in re.findall(r'href="#([^"]+)"', page):
        assert target in ids, target
    embedded = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    md_plots = re.findall(r"\(plots/([^)]+\.png)\)", (cnn.dir / "report.md").read_text())
    assert {"loss.png", "confusion.png", "filters.png"} <= set(md_plots)
    assert sorted(base64.b64decode(d) for d in embedded) == sorted((cnn.plots / p).read_bytes() for p in md_plots)
    doctor = page[page.index('<section id="doctor">'):]
    doctor = doctor[: doctor.index("</section>")]
    assert "<td><code>underfitting</code></td>" in doctor and "doctor-gradients" in doctor  # finding, evidence
    assert '<a href="#doctor">1 finding</a>' in page
    assert "torch" in page and "device" in page and "cpu" in page  # the environment
    assert "optim:" in page  # the recipe


@pytest.mark.slow
def test_pages_render_in_headless_chromium_at_phone_width(runs, browser):
    """V5: report.html and the compare page load in headless Chromium with no console error and
    no network request, every image decodes at its natural size, and a 390-px-wide screen shows
    the page without horizontal scrolling; a screenshot of each is kept."""
    root, cnn, mlp = runs
    out = root / "compare" / "compare.html"
    assert main(["compare", str(cnn.dir), str(mlp.dir), "--out", str(out)]) == 0
    for name, page in (("report", cnn.dir / "report.html"), ("compare", out)):
        shot = ARTIFACTS / f"{name}-{PHONE}px.png"
        result = inspect_page(browser, page, shot)
        assert_readable(result, page.read_text())
        assert struct.unpack(">II", shot.read_bytes()[16:24])[0] == PHONE


def test_the_checker_sees_a_broken_page(tmp_path, browser):
    """V5: the browser check fails a page with a console error, an image that does not decode
    and a table wider than a phone's screen (so its passing means something)."""
    page = tmp_path / "bad.html"
    cells = "".join(f"<td>column-{i}-with-a-long-name</td>" for i in range(30))
    page.write_text('<!DOCTYPE html><html><head><meta name="viewport" content="width=device-width"></head><body>'
                    '<img src="data:image/png;base64,iVBORw0KGgoAAAAA" width="10" height="10">'
                    f"<table><tr>{cells}</tr></table><script>console.error('boom')</script></body></html>")
    result = inspect_page(browser, page, tmp_path / "bad.png")
    assert any("boom" in json.dumps(e) for e in result["errors"])
    assert result["images"] and not result["images"][0]["decoded"]
    assert result["layout"]["scroll"] > PHONE
    with pytest.raises(AssertionError):
        assert_readable(result, page.read_text())


def test_live_report_is_rewritten_at_every_epoch_end(tmp_path, capsys):
    """V5: `trainlab fit` prints where report.html is before training, and the page shows the run
    so far after every epoch (epoch k of N, one curve point per epoch, SVG, no PNG yet); the
    finished run's page replaces it."""
    from trainlab.engine.callbacks import Callback

    seen = []

    class Reader(Callback):
        def on_epoch_start(self, trainer):
            trainer.writer.flush()  # the page goes through the background writer, like metrics.jsonl
            path = Path(trainer.recipe.run.dir) / "report.html"
            seen.append(path.read_text())

    run = trainlab.fit("digits-mlp", ["train.epochs=3", "train.progress=false", "run.tensorboard=false",
                                      "run.plots=false", "doctor.enabled=false", f"run.dir={tmp_path / 'r'}"],
                       callbacks=[Reader()])
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith("report: ") and str(tmp_path / "r" / "report.html") in first
    assert len(seen) == 3
    assert "epoch 0 of 3 done" in seen[0] and "epoch 2 of 3 done" in seen[2]
    assert seen[2].count("<svg") >= 2 and "<img" not in seen[2]
    # the loss curve of the page after 2 epochs has 2 points per line (train and val)
    loss_svg = seen[2][seen[2].index('aria-label="loss"'):]
    loss_svg = loss_svg[: loss_svg.index("</svg>")]
    assert loss_svg.count("<circle") == 4
    final = (run.dir / "report.html").read_text()
    assert "in progress" not in final and 'id="metrics"' in final


def test_markdown_sections_render_as_html():
    """V5: the doctor's and the task's Markdown sections (tables, lists, images, code, bold) become
    HTML, with every text escaped (a finding's message cannot inject markup)."""
    lines = ["## Doctor", "", "| severity | code | finding |", "|---|---|---|",
             "| warning | `dead_relu` | 40% of <b>units</b> \\| never fire |", "",
             "- `dead_relu` (X3): **lower** the LR", "- second", "", "![gradient norms](plots/g.png)", "",
             "Monitors sampled 5 steps."]
    got = markdown_html(lines, lambda path, alt: f"[{path}|{alt}]")
    assert '<h3 id="doctor">Doctor</h3>' in got
    assert "<th>severity</th><th>code</th><th>finding</th>" in got
    assert "<td><code>dead_relu</code></td><td>40% of &lt;b&gt;units&lt;/b&gt; | never fire</td>" in got
    assert got.count("<tr>") == 2  # the header and one row: the |---| line is no row
    assert "<li><code>dead_relu</code> (X3): <strong>lower</strong> the LR</li><li>second</li>" in got
    assert "[plots/g.png|gradient norms]" in got and "<p>Monitors sampled 5 steps.</p>" in got


def test_svg_chart_places_points_on_its_axes():
    """V5: the live page's SVG curve puts (epoch, value) where its axes say: x from the first to
    the last epoch across the plot box, y by round ticks (1, 2, 5 × 10^k) covering the values."""
    assert nice_ticks(0.13, 0.87) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(1, 3) == [1.0, 1.5, 2.0, 2.5, 3.0]
    svg = svg_chart([("loss", [1, 2, 3], [1.0, None, 0.0])], "t", "epoch", "loss", width=600, height=320)
    box = re.search(r'<rect x="(\d+)" y="(\d+)" width="(\d+)" height="(\d+)" fill="none"', svg).groups()
    left, top, w, h = map(float, box)
    dots = [(float(a), float(b)) for a, b in re.findall(r'<circle cx="([\d.]+)" cy="([\d.]+)"', svg)]
    assert dots == [(left, top), (left + w, top + h)]  # y ticks 0..1: value 1 at the top, 0 at the bottom
    assert svg.count("<polyline") == 2  # the missing epoch 2 is a gap, not a line through it
    assert svg_chart([("x", [1], [None])], "t", "e", "y") is None


def test_recipe_differences_of_nested_recipes():
    """V5: compare's recipe differences: dotted keys whose values differ (absent counts as
    different), the rest equal; the run's name is not a setting."""
    a = {"name": "a", "optim": {"lr": 0.1, "betas": [0.9, 0.99]}, "model": {"name": "cnn"}, "seed": 0}
    b = {"name": "b", "optim": {"lr": 0.2, "betas": [0.9, 0.99]}, "model": {"name": "cnn", "width": 8}, "seed": 0}
    assert flatten(a) == {"name": '"a"', "optim.lr": "0.1", "optim.betas": "[0.9, 0.99]", "model.name": '"cnn"',
                          "seed": "0"}
    differ, same = recipe_differences([a, b])
    assert differ == ["optim.lr", "model.width"]
    assert same == ["optim.betas", "model.name", "seed"]


@pytest.mark.slow
def test_compare_page_overlays_curves_and_highlights_differences(runs):
    """V5: `trainlab compare` writes one page: a column per run, the best value of each metric in
    bold by its direction (lowest loss, highest accuracy), one overlaid curve image per quantity,
    the differing recipe settings highlighted, links to each run's report; bad input is one line."""
    root, cnn, mlp = runs
    out = root / "cmp.html"
    assert main(["compare", str(cnn.dir), str(mlp.dir), "--out", str(out)]) == 0
    page = out.read_text()
    s1, s2 = (json.loads((r.dir / "summary.json").read_text()) for r in (cnn, mlp))
    best_loss = min(s1["test"]["loss"], s2["test"]["loss"])
    best_acc = max(s1["test"]["accuracy"], s2["test"]["accuracy"])
    row = re.search(r"<td>test loss</td>(.*?)</tr>", page).group(1)
    assert f"<strong>{best_loss:.4f}</strong>" in row and row.count("<strong>") == 1
    row = re.search(r"<td>test accuracy</td>(.*?)</tr>", page).group(1)
    assert f"<strong>{best_acc:.4f}</strong>" in row
    assert page.count('<img src="data:image/png;base64,') == 3  # loss, accuracy, lr
    diff_rows = re.findall(r'<tr class="diff"><td>([^<]+)</td>', page)
    assert "model.name" in diff_rows and "optim.lr" in diff_rows and "seed" not in diff_rows
    assert 'href="cnn/report.html"' in page and 'href="mlp/report.html"' in page
    own = (cnn.dir / "report.html").read_bytes()  # a run's own page is never the --out
    assert main(["compare", str(cnn.dir), str(mlp.dir), "--out", str(cnn.dir / "report.html")]) == 2
    assert (cnn.dir / "report.html").read_bytes() == own


def test_compare_bad_input_is_one_line(tmp_path, capsys):
    """V5: compare refuses one run, a folder that is no run and a non-HTML --out with one line."""
    assert main(["compare", str(tmp_path)]) == 2
    assert main(["compare", str(tmp_path), str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "c.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "expected a .html file name" in err[1] and "is not a folder" in err[2]
    assert not (tmp_path / "c.html").exists()


def test_an_interrupted_run_says_how_to_resume(tmp_path):
    """V5: after Ctrl-C or SIGTERM the live page says the run stopped and how to resume it."""
    from types import SimpleNamespace

    import torch

    from trainlab.recipe import load_recipe
    from trainlab.report.live import LiveReport
    from trainlab.run import Run

    recipe = load_recipe("digits-mlp", [f"run.dir={tmp_path / 'r'}"])
    run = Run.create(recipe, tmp_path / "r")
    written = {}
    history = [{"epoch": 1, "step": 20, "lr": 0.05, "train_loss": 0.5, "val_loss": 0.4, "val_accuracy": 0.9}]
    state = SimpleNamespace(history=history, best_epoch=1, best_value=0.9)
    trainer = SimpleNamespace(task=run.task(recipe), state=state,
                              monitor="val_accuracy", device=torch.device("cpu"),
                              writer=SimpleNamespace(submit=lambda path, data: written.__setitem__(path, data)))
    live = LiveReport(run, recipe)
    live.on_fit_start(trainer)
    assert "Training in progress: epoch 1 of" in written[run.dir / "report.html"].decode()
    live.on_interrupt(trainer)
    page = written[run.dir / "report.html"].decode()
    assert "<title>Run report: digits-mlp (stopped)</title>" in page
    assert f"<code>trainlab fit --resume {run.dir}</code> continues it (epoch 1 of" in page
    assert "cpu" in page[page.index('id="environment"'):]
    assert "epoch 1 (val_accuracy = 0.9000)" in page  # the trainer's monitored metric, not the task's default
