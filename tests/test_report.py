"""handgrad report and the sweep page: self-contained pages, checked in a real headless browser
(Debian's chromium and chromium-driver, installed by scripts/ensure-chromium.sh, driven by
selenium): no console errors, no request leaves the page, every image decodes, and the interactive
parallel-coordinates views filter their tables when an axis is brushed."""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("plotly")

from handgrad.app.cli import main  # noqa: E402
from handgrad.app.report import build_report, confidently_wrong, epoch_columns  # noqa: E402
from handgrad.app.sweep import run_name, write_results  # noqa: E402
from handgrad.app.training import TrainConfig, train  # noqa: E402

# Software WebGL (SwiftShader) for the plotly.js views: a headless machine has no GPU.
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--enable-unsafe-swiftshader",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
]
#: What a self-contained page may load: itself, inline data, and what its scripts make in memory.
LOCAL = ("file:", "data:", "blob:", "about:")


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
        train(
            TrainConfig(dataset="digits", model=model, epochs=2, grad_norm_every=5, out=str(root / model)),
            progress=False,
            log=lambda *_: None,
        )
    return root


@pytest.fixture(scope="module")
def page(runs):
    return build_report([runs / "tiny-mlp"])


@pytest.fixture(scope="module")
def two_runs_page(runs):
    """Both runs on one page, written where it goes by default: beside the runs."""
    return build_report([runs / "tiny-mlp", runs / "tiny-cnn"])


def outside_scripts(text: str) -> str:
    """The page without its inline scripts (plotly.js holds URLs that it never fetches here)."""
    return re.sub(r"<script>.*?</script>", "", text, flags=re.S)


def test_page_is_self_contained(page):
    text = page.read_text()
    markup = outside_scripts(text)
    sources = re.findall(r'src="([^"]*)"', markup)
    assert len(sources) == 6  # curves, classes, confusion, wrong images, first layer, gradient norms
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'(href|src)="(https?:|//)', markup)
    assert not re.search(r"<script[^>]*\ssrc=|<link\b", text)
    for heading in (
        "Training curves",
        "Epochs, interactive",
        "Class distribution",
        "Confusion matrix",
        "Most confidently wrong",
        "First-layer weights",
        "Gradient norms",
    ):
        assert heading in text, heading


def test_several_runs_on_one_page(runs, two_runs_page):
    assert two_runs_page == runs / "report.html"
    text = two_runs_page.read_text()
    assert "All runs" in text and "First-layer filters" in text and "First-layer weights" in text
    assert outside_scripts(text).count('src="data:image/png;base64,') == 1 + 6 + 6
    assert text.count("window.handgradParallel =") == 1  # plotly.js and the view script once per page
    assert 'id="epochs-0"' in text and 'id="epochs-1"' in text


@pytest.mark.parametrize(
    "row, expected",
    [
        pytest.param(
            {
                "epoch": 1,
                "train_loss": 1.0,
                "train_acc": 0.5,
                "val_loss": 1.0,
                "val_acc": 0.5,
                "test_loss": 1.0,
                "test_acc": 0.5,
                "lr": 0.1,
                "seconds": 1.0,
                "samples_per_s": 9.0,
            },
            ["epoch", "lr", "train_loss", "val_loss", "test_loss", "train_acc", "val_acc", "test_acc", "seconds"],
            id="the-trainer's-keys-in-order",
        ),
        pytest.param(
            {"top5_acc": 0.9, "epoch": 1, "note": "text", "test_acc": 0.5, "flag": True},
            ["epoch", "test_acc", "top5_acc"],
            id="extra-numbers-follow-text-and-flags-left-out",
        ),
    ],
)
def test_epoch_columns(row, expected):
    assert epoch_columns([row, dict(row)]) == expected


def test_confidently_wrong_orders_by_confidence():
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


# -- in a real browser ---------------------------------------------------------------------------


class Browser:
    """One headless chromium under chromedriver. Requests to any network address are blocked and
    recorded, so a page that is not self-contained fails ``problems`` even offline."""

    def __init__(self, driver):
        self.driver = driver
        self.showing: tuple | None = None  # (page, width, height) as loaded; None once a drag changed it
        self.brushed: set = set()  # the views brushed since then

    def open(self, page: Path, width: int = 1200, height: int = 900) -> None:
        """Show ``page`` with every interactive view drawn (or 60 s passed). The page already
        showing at that window size is kept, its brushes cleared, instead of loaded again: a load
        costs the browser seconds (plotly.js parsed, the views drawn in software WebGL). What the
        page logged since the last ``problems`` stays for the next one."""
        if self.showing == (page, width, height) and self.clear_brushes():
            return
        self.driver.set_window_size(width, height)
        self.driver.get_log("browser"), self.driver.get_log("performance")  # drop what came before
        self.driver.get(page.as_uri())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not self.js(
            "return document.readyState === 'complete' && Array.prototype.every.call("
            "document.querySelectorAll('.parallel'), function (v) { return v.dataset.ready === 'true'; })"
        ):
            time.sleep(0.1)
        self.showing, self.brushed = (page, width, height), set()

    def clear_brushes(self) -> bool:
        """Take every brush off the views brushed since the page loaded, as ``Plotly.restyle`` does
        (the page refilters its tables on that event); True when no view holds a selection after."""
        cleared = all(
            self.js(
                "var view = document.getElementById(arguments[0]), update = {};"
                "view.data[0].dimensions.forEach(function (d, k) {"
                "  update['dimensions[' + k + '].constraintrange'] = null; });"
                "Plotly.restyle(view, update, [0]);"
                "return view.data[0].dimensions.every(function (d) { return !d.constraintrange; });",
                view_id,
            )
            for view_id in sorted(self.brushed)
        )
        self.brushed = set()
        return cleared

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def problems(self) -> list:
        """Console errors and uncaught exceptions, and every request for anything not in the page."""
        errors = [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]
        requests = [json.loads(e["message"])["message"] for e in self.driver.get_log("performance")]
        external = [
            r["params"]["request"]["url"]
            for r in requests
            if r["method"] == "Network.requestWillBeSent" and not r["params"]["request"]["url"].startswith(LOCAL)
        ]
        return errors + [f"requested {url}" for url in external]

    def images(self) -> list:
        return self.js(
            "return Array.prototype.map.call(document.images, function (img) {"
            "  return {alt: img.alt, ok: img.complete && img.naturalWidth > 0, width: img.naturalWidth};"
            "});"
        )

    def shown(self, view_id: str) -> tuple:
        """The count under a view and the first cell of each table row still shown."""
        count = self.js(f"return document.getElementById('{view_id}-shown').textContent")
        table = self.js(
            f"return document.getElementById('{view_id}').closest('.parallel-box')"
            ".parentElement.querySelector('.table-box table').id"
        )
        cells = self.js(
            f"return Array.prototype.filter.call(document.getElementById('{table}').tBodies[0].rows,"
            " function (r) { return !r.hidden; }).map(function (r) { return r.cells[0].textContent; })"
        )
        return count, cells

    def axis(self, view_id: str, label: str) -> tuple:
        """(position, plotly dimension) of the axis labelled ``label`` in the view ``view_id``."""
        k, dimension = self.js(
            "var dimensions = document.getElementById(arguments[0]).data[0].dimensions, label = arguments[1];"
            "var k = dimensions.findIndex(function (d) { return d.label === label; });"
            "return [k, dimensions[k]];",
            view_id,
            label,
        )
        assert k >= 0, f"no axis labelled {label!r} in #{view_id}"
        return k, dimension

    def brush(self, view_id: str, label: str, ranges) -> None:
        """Select ``ranges`` (plotted units) on the axis labelled ``label``, as a drag along it does."""
        self.js(
            "var view = document.getElementById(arguments[0]), label = arguments[1];"
            "var k = view.data[0].dimensions.findIndex(function (d) { return d.label === label; });"
            "if (k < 0) throw new Error('no axis labelled ' + label);"
            "var update = {}; update['dimensions[' + k + '].constraintrange'] = [arguments[2]];"
            "Plotly.restyle(view, update, [0]);",
            view_id,
            label,
            ranges,
        )
        self.brushed.add(view_id)

    def drag(self, start, end) -> None:
        """Press the mouse at ``start`` (x, y in the viewport), move to ``end`` in steps, release."""
        from selenium.webdriver.common.actions.action_builder import ActionBuilder

        actions = ActionBuilder(self.driver)
        actions.pointer_action.move_to_location(*map(round, start)).pointer_down()
        for f in (0.25, 0.5, 0.75, 1.0):
            actions.pointer_action.move_to_location(
                round(start[0] + f * (end[0] - start[0])), round(start[1] + f * (end[1] - start[1]))
            )
        actions.pointer_action.release()
        actions.perform()
        self.showing = None  # a drag may move an axis, which no restyle here puts back: load again

    def boxes(self, selector: str) -> list:
        """[text, left, top, right, bottom] of each element matching ``selector``, in page order."""
        return self.js(
            "return Array.prototype.map.call(document.querySelectorAll(arguments[0]), function (e) {"
            "  var b = e.getBoundingClientRect(); return [e.textContent, b.left, b.top, b.right, b.bottom];"
            "});",
            selector,
        )

    def screenshot(self, path: Path) -> None:
        self.driver.save_screenshot(str(path))


@pytest.fixture(scope="module")
def browser():
    chromium, chromedriver = find_chromium(), shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        pytest.skip(
            "no chromium or chromedriver found (scripts/ensure-chromium.sh installs Debian's chromium and "
            "chromium-driver where apt works)"
        )
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    # the driver given by path: selenium then never looks for (or downloads) one itself
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd(
            "Network.setBlockedURLs", {"urls": ["http://*", "https://*", "ws://*", "wss://*", "ftp://*"]}
        )
        yield Browser(driver)
    finally:
        driver.quit()


def test_report_in_a_real_browser(browser, two_runs_page, tmp_path):
    browser.open(two_runs_page, height=2400)
    assert browser.problems() == []
    images = browser.images()
    assert len(images) == 13
    assert all(img["ok"] and img["width"] > 100 for img in images), images
    assert [browser.shown(f"epochs-{k}")[0] for k in (0, 1)] == ["2 of 2 epochs shown."] * 2
    shot = tmp_path / "screenshot.png"
    browser.screenshot(shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


@pytest.mark.parametrize(
    "label, ranges, epochs",
    [
        pytest.param("epoch", [1.5, 2.5], ["2"], id="epoch-2"),
        pytest.param("epoch", [0.5, 1.5], ["1"], id="epoch-1"),
        pytest.param("train acc (%)", [0.0, 100.0], ["1", "2"], id="every-epoch"),
    ],
)
def test_brushing_the_epochs_view_filters_its_table(browser, page, label, ranges, epochs):
    browser.open(page)
    assert browser.shown("epochs-0") == ("2 of 2 epochs shown.", ["1", "2"])
    browser.brush("epochs-0", label, ranges)
    assert browser.shown("epochs-0") == (f"{len(epochs)} of 2 epochs shown.", epochs)
    assert browser.problems() == []


def synthetic_sweep(out: Path, seed: int = 0) -> list:
    """A sweep's results (rows as sweep() returns them) written with write_results."""
    rng = np.random.default_rng(seed)
    rows = []
    for lr in (0.1, 0.01, 0.001):
        for batch_size in (32, 128):
            for optimizer in ("sgd", "adam"):
                point = {"lr": lr, "batch_size": batch_size, "optimizer": optimizer}
                acc = float(rng.uniform(0.80, 0.98))
                rows.append(
                    {
                        **point,
                        "run": run_name(point),
                        "status": "trained",
                        "parameters": 12_730,
                        "test_acc": acc,
                        "best_test_acc": acc,
                        "val_acc": float(rng.uniform(0.8, 0.98)),
                        "test_loss": float(rng.uniform(0.1, 0.7)),
                        "train_loss": float(rng.uniform(0.1, 0.7)),
                        "seconds_per_epoch": float(rng.uniform(0.3, 3.0)),
                        "epochs_done": 3,
                    }
                )
    write_results(rows, ["lr", "batch_size", "optimizer"], out)
    return rows


@pytest.fixture(scope="module")
def sweep_page(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    return out / "sweep.html", synthetic_sweep(out)


def test_sweep_page_in_a_real_browser(browser, sweep_page):
    page, rows = sweep_page
    browser.open(page)
    assert browser.problems() == []
    assert browser.shown("parallel") == (f"{len(rows)} of {len(rows)} runs shown.", [r["run"] for r in rows])


@pytest.mark.parametrize(
    "label, ranges, keep",
    [
        pytest.param("lr (log)", [math.log10(0.005), math.log10(0.5)], lambda r: r["lr"] >= 0.01, id="lr-0.01-to-0.1"),
        pytest.param("optimizer", [0.5, 1.5], lambda r: r["optimizer"] == "sgd", id="optimizer-sgd"),  # adam 0, sgd 1
        pytest.param("test acc (%)", [90.0, 100.0], lambda r: r["test_acc"] >= 0.9, id="test-acc-above-90%"),
        pytest.param("batch size", [[0, 64], [100, 200]], lambda r: True, id="two-ranges-keep-all"),
    ],
)
def test_brushing_the_sweep_view_filters_the_table(browser, sweep_page, label, ranges, keep):
    page, rows = sweep_page
    browser.open(page)
    assert browser.shown("parallel") == (f"{len(rows)} of {len(rows)} runs shown.", [r["run"] for r in rows])
    browser.brush("parallel", label, ranges)
    expected = [r["run"] for r in rows if keep(r)]
    assert len(expected) > 0
    assert browser.shown("parallel") == (f"{len(expected)} of {len(rows)} runs shown.", expected)
    assert browser.problems() == []


def test_the_lr_axis_is_logarithmic(browser, sweep_page):
    page, _ = sweep_page
    browser.open(page)
    k, _ = browser.axis("parallel", "lr (log)")
    ticks = {
        text: (top + bottom) / 2
        for text, _, top, _, bottom in browser.boxes(f"#parallel .y-axis:nth-of-type({k + 1}) .tick text")
    }
    # 0.001 -> 0.01 -> 0.1: equal steps on screen (a linear axis would make the second 10x the first)
    low, mid, high = ticks["0.001"], ticks["0.01"], ticks["0.1"]
    assert low > mid > high and abs((low - mid) - (mid - high)) < 2, ticks


def test_accuracy_reads_in_percent_in_the_view_and_the_table(browser, sweep_page):
    page, rows = sweep_page
    browser.open(page)
    view = browser.axis("parallel", "test acc (%)")[1]["values"]
    assert view == pytest.approx([100 * r["test_acc"] for r in rows])
    column = browser.js(
        "return Array.prototype.map.call(document.querySelectorAll('#runs th'), "
        "function (th) { return th.textContent; }).indexOf('test_acc')"
    )
    cells = browser.js(
        f"return Array.prototype.map.call(document.querySelectorAll('#runs tbody tr'), "
        f"function (tr) {{ return tr.cells[{column}].textContent; }})"
    )
    assert cells == [f"{100 * r['test_acc']:.2f}%" for r in rows]


def axis_brush_box(browser, view_id: str, label: str) -> list:
    """[left, top, right, bottom] of the strip along an axis where a drag brushes it."""
    k, _ = browser.axis(view_id, label)
    return browser.boxes(f"#{view_id} .axis-brush rect.background")[k][1:]


def test_dragging_along_an_axis_brushes_it(browser, sweep_page):
    page, rows = sweep_page
    browser.open(page)
    left, top, right, bottom = axis_brush_box(browser, "parallel", "test acc (%)")
    x = (left + right) / 2
    browser.drag((x, top + 0.1 * (bottom - top)), (x, top + 0.6 * (bottom - top)))
    selected = browser.axis("parallel", "test acc (%)")[1]["constraintrange"]
    lo, hi = selected[0] if isinstance(selected[0], list) else selected
    expected = [r["run"] for r in rows if lo <= 100 * r["test_acc"] <= hi]
    assert 0 < len(expected) < len(rows)
    assert browser.shown("parallel") == (f"{len(expected)} of {len(rows)} runs shown.", expected)
    assert browser.problems() == []


def test_dragging_an_axis_title_moves_the_axis(browser, sweep_page):
    page, _ = sweep_page
    browser.open(page)
    labels = browser.js(
        "return document.getElementById('parallel').data[0].dimensions.map(function (d) { return d.label; })"
    )
    assert labels[0] == "lr (log)"
    third = axis_brush_box(browser, "parallel", labels[2])
    title = browser.boxes("#parallel .axis-title")[0]
    start = ((title[1] + title[3]) / 2, (title[2] + title[4]) / 2)
    browser.drag(start, (third[2] + 30, start[1]))  # just right of the third axis
    moved = browser.js(
        "return document.getElementById('parallel').data[0].dimensions.map(function (d) { return d.label; })"
    )
    assert sorted(moved) == sorted(labels) and moved.index("lr (log)") == 2, moved


@pytest.mark.parametrize("width", [480, 1000])
def test_axis_labels_do_not_overlap(browser, sweep_page, width):
    page, _ = sweep_page
    browser.open(page, width=width)
    titles = browser.boxes("#parallel .axis-title")
    assert len(titles) == 7
    for (a, *box_a), (b, *box_b) in zip(titles, titles[1:]):
        assert box_a[2] + 4 <= box_b[0] or box_b[2] + 4 <= box_a[0], (a, b, box_a, box_b)


@pytest.mark.parametrize("width", [1000, 700])
def test_the_table_fits_the_page_and_scrolls_in_its_box(browser, sweep_page, width):
    page, _ = sweep_page
    browser.open(page, width=width)
    page_width, window, box_width, box_scroll = browser.js(
        "var box = document.querySelector('.table-box');"
        "return [document.documentElement.scrollWidth, document.documentElement.clientWidth,"
        " box.clientWidth, box.scrollWidth];"
    )
    assert page_width <= window
    assert box_scroll > box_width  # the long run names and all the metrics: wider than the page


@pytest.mark.parametrize(
    "body, expected",
    [
        pytest.param('<img alt="bad" src="data:image/png;base64,iVBORw0KGgoAAAAN">', None, id="broken-image"),
        pytest.param("<script>undefinedFunction();</script>", "undefinedFunction", id="script-error"),
        pytest.param("<script>console.error('drawn wrong');</script>", "drawn wrong", id="console-error"),
        pytest.param(
            '<img alt="far" src="http://127.0.0.1:9/x.png">', "requested http://127.0.0.1:9/x.png", id="external-image"
        ),
        pytest.param(
            "<script>fetch('https://127.0.0.1:9/data.json').catch(function () {});</script>",
            "requested https://127.0.0.1:9/data.json",
            id="external-fetch",
        ),
    ],
)
def test_the_browser_check_catches_a_broken_page(browser, tmp_path, body, expected):
    page = tmp_path / "broken.html"
    page.write_text(f"<!DOCTYPE html><html><head><title>t</title></head><body>{body}</body></html>")
    browser.open(page)
    if expected is None:
        assert browser.images() == [{"alt": "bad", "ok": False, "width": 0}]
    else:
        assert any(expected in problem for problem in browser.problems()), browser.problems()
