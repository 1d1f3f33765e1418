"""handgrad report: a self-contained page, checked in a real headless browser (Debian's chromium,
installed by scripts/ensure-chromium.sh): no console errors, every image decodes, a screenshot."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from handgrad.app.cli import main  # noqa: E402
from handgrad.app.report import build_report, confidently_wrong  # noqa: E402
from handgrad.app.training import TrainConfig, train  # noqa: E402

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]

# Put first in <head>: records script errors, failed resource loads (capture phase) and
# console.error calls; after the load event writes them and every image's decode status to the DOM.
CHECKER = """<script>
window.__problems = [];
window.addEventListener('error', function (e) {
  window.__problems.push(e.message || ('failed to load ' + (e.target && (e.target.src || e.target.tagName))));
}, true);
var __consoleError = console.error;
console.error = function () {
  window.__problems.push(Array.prototype.join.call(arguments, ' '));
  __consoleError.apply(console, arguments);
};
window.addEventListener('load', function () {
  var images = Array.prototype.map.call(document.images, function (img) {
    return {alt: img.alt, ok: img.complete && img.naturalWidth > 0, width: img.naturalWidth};
  });
  document.documentElement.setAttribute('data-check', JSON.stringify({images: images, problems: window.__problems}));
});
</script>"""


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "/usr/bin/chromium"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    for model in ("tiny-mlp", "tiny-cnn"):
        train(TrainConfig(dataset="digits", model=model, epochs=2, grad_norm_every=5, out=str(root / model)),
              progress=False, log=lambda *_: None)
    return root


@pytest.fixture(scope="module")
def page(runs):
    return build_report([runs / "tiny-mlp"])


def test_page_is_self_contained(page):
    text = page.read_text()
    sources = re.findall(r'src="([^"]*)"', text)
    assert len(sources) == 6  # curves, classes, confusion, wrong images, first layer, gradient norms
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'(href|src)="(https?:|//)', text)
    for heading in ("Training curves", "Class distribution", "Confusion matrix", "Most confidently wrong",
                    "First-layer weights", "Gradient norms"):
        assert heading in text, heading


def test_several_runs_on_one_page(runs):
    page = build_report([runs / "tiny-mlp", runs / "tiny-cnn"])
    assert page == runs / "report.html"
    text = page.read_text()
    assert "All runs" in text and "First-layer filters" in text and "First-layer weights" in text
    assert text.count('src="data:image/png;base64,') == 1 + 6 + 6


def test_confidently_wrong_orders_by_confidence():
    import numpy as np
    logits = np.array([[5.0, 0.0], [0.0, 1.0], [0.0, 9.0], [2.0, 0.0]])
    order, confidence = confidently_wrong(logits, np.array([1, 1, 0, 1]))
    assert list(order) == [2, 0, 3] and np.all(np.diff(confidence) <= 0)


def test_cli(runs, capsys, tmp_path):
    out = tmp_path / "r.html"
    assert main(["report", str(runs / "tiny-cnn"), "--out", str(out)]) == 0
    assert f"report: {out}" in capsys.readouterr().out and out.stat().st_size > 50_000


def test_cli_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 1
    assert "not a run directory" in capsys.readouterr().err


def browse(page: Path, tmp_path: Path, screenshot: Path | None = None) -> dict:
    """Load a copy of ``page`` with CHECKER in chromium; return what CHECKER found."""
    chromium = find_chromium()
    checked = tmp_path / "checked.html"
    checked.write_text(page.read_text().replace("<head>", "<head>" + CHECKER, 1))
    profile = tmp_path / "profile"
    common = CHROMIUM_FLAGS + [f"--user-data-dir={profile}", "--virtual-time-budget=5000"]
    result = subprocess.run([chromium, *common, "--dump-dom", checked.as_uri()], capture_output=True, text=True,
                            timeout=120)
    found = re.search(r"data-check=\"([^\"]*)\"", result.stdout)
    assert found, f"no check result in the DOM; chromium said: {result.stderr[-2000:]}"
    import html
    check = json.loads(html.unescape(found.group(1)))
    if screenshot is not None:
        subprocess.run([chromium, *common, "--window-size=1280,2400", f"--screenshot={screenshot}", page.as_uri()],
                       capture_output=True, timeout=120)
    return check


@pytest.fixture
def chromium():
    path = find_chromium()
    if path is None:
        pytest.skip("no chromium found (scripts/ensure-chromium.sh installs Debian's chromium where apt works)")
    return path


def test_page_in_a_real_browser(chromium, runs, tmp_path):
    page = build_report([runs / "tiny-mlp", runs / "tiny-cnn"], out=tmp_path / "report.html")
    shot = tmp_path / "screenshot.png"
    check = browse(page, tmp_path, screenshot=shot)
    assert check["problems"] == []
    assert len(check["images"]) == 13
    assert all(img["ok"] and img["width"] > 100 for img in check["images"]), check["images"]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_the_browser_check_catches_a_broken_image(chromium, tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><title>t</title></head><body>'
                    '<img alt="bad" src="data:image/png;base64,iVBORw0KGgoAAAAN"></body></html>')
    check = browse(page, tmp_path)
    assert check["images"] == [{"alt": "bad", "ok": False, "width": 0}]
    assert check["problems"]
