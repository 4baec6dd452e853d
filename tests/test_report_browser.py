"""The HTML report in real headless Chromium: it renders, sorts, draws charts and never runs model text."""

import html
import json
import os
import re
import shutil
import struct
import subprocess
import zlib

import pytest
from builders import em_rows, make_run

from llamabench.analysis.report import write_report

PAYLOADS = [
    "<script>window.pwned=1</script>",
    '</script><script>window.pwned=2</script><img src=x onerror="document.documentElement.dataset.pwned=3">',
    "]]><!-- & \u2028 \"quoted\" 'single'",
]


@pytest.fixture(scope="module")
def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium not found; .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return path


def headless(chromium, tmp_path, *args):
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    done = subprocess.run([chromium, *flags, *args], capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A report on three checkpoints whose model names, doc ids, prompts and predictions try to inject script."""
    texts = {"doc_id": ["<b>d0</b>", "d1"], "prompt": PAYLOADS[1:], "prediction": PAYLOADS[:2]}
    f1 = {"ckpt-step100": [40.0, 60.0], "ckpt-step200": [60.0, 80.0], PAYLOADS[1] + " step300": [50.0, 70.0]}
    runs = [
        make_run(
            model,
            {
                "squad": {"f1": [[v] for v in values], "exact_match": em_rows([1, 0])},
                "wikitext2": {"word_perplexity": [[-10.0 * (3 - i), 10.0]] * 2},  # exp(3 - i)
            },
            started=f"2025-01-0{i + 1}T00:00:00+00:00",
            texts=texts,
        )
        for i, (model, values) in enumerate(f1.items())
    ]
    out = tmp_path_factory.mktemp("report")
    write_report(runs, out)
    return out / "leaderboard.html", [run.manifest["run_id"] for run in runs]


# Driven from outside the page: the test appends this script to a copy of the report, after the report's own
# script, so production JavaScript carries no test hook. It clicks (or presses Enter on) a column header, opens
# the first drill-down, and writes what a reader would see into <pre id="autotest">.
DRIVER = """<script>
(() => {
  const [key, how] = %s;
  const header = Array.from(document.querySelectorAll("#leaderboard th")).find((th) => th.dataset.key === key);
  if (how === "click") header.click();
  else header.dispatchEvent(new KeyboardEvent("keydown", {key: "Enter", bubbles: true}));
  const data = JSON.parse(document.getElementById("leaderboard-data").textContent);
  const details = document.querySelector("details");
  details.querySelector("summary").click();
  const out = document.createElement("pre");
  out.id = "autotest";
  out.textContent = JSON.stringify({
    order: Array.from(document.querySelectorAll("#leaderboard tbody tr"), (row) => data.rows[row.dataset.index].runId),
    sort: header.getAttribute("aria-sort"),
    drilldownOpen: details.open,
    drilldownCells: Array.from(details.querySelectorAll("tbody tr:first-child td"), (td) => td.textContent),
    pwned: typeof window.pwned,
  });
  document.body.appendChild(out);
})();
</script>"""


def autotest(chromium, tmp_path, page, column, how="click"):
    driven = tmp_path / "driven.html"
    driven.write_text(page.read_text().replace("</body>", DRIVER % json.dumps([column, how]) + "</body>"))
    dom = headless(chromium, tmp_path, "--dump-dom", driven.as_uri())
    match = re.search(r'<pre id="autotest">(.*?)</pre>', dom, re.S)
    assert match, "the page script did not run"
    return dom, json.loads(html.unescape(match.group(1)))


def test_table_renders_and_header_clicks_sort_it(chromium, report, tmp_path):
    page, (step100, step200, step300) = report
    dom, result = autotest(chromium, tmp_path, page, "x")
    assert result["order"] == [step100, step200, step300]
    assert len(re.findall(r'<tr data-index="\d">', dom)) == 3
    assert "<td>ckpt-step100</td>" in dom and 'class="best"' in dom
    # f1 is 50, 70, 60: the first click puts the best first; lower-is-better perplexity sorts ascending.
    assert autotest(chromium, tmp_path, page, "squad/f1")[1]["order"] == [step200, step300, step100]
    assert autotest(chromium, tmp_path, page, "wikitext2/word_perplexity")[1]["order"] == [step300, step200, step100]
    dom, result = autotest(chromium, tmp_path, page, "label", how="key")
    assert result["sort"] == "ascending" and result["order"][0] == step300  # "</script>..." sorts before "ckpt"


def test_drilldown_opens_and_shows_model_text_as_text(chromium, report, tmp_path):
    _, result = autotest(chromium, tmp_path, report[0], "x")
    assert result["drilldownOpen"] is True
    # The first run's first document: doc_id, prompt (end), prediction, target, then f1 and exact_match.
    assert result["drilldownCells"] == ["<b>d0</b>", PAYLOADS[1], PAYLOADS[0], "gold 0", "40.00", "100.00"]


def test_charts_are_inline_svg(chromium, report, tmp_path):
    dom, _ = autotest(chromium, tmp_path, report[0], "x")
    charts = re.findall(r'<svg class="chart".*?</svg>', dom, re.S)
    assert len(charts) == 3  # squad f1, squad exact_match, wikitext2 word_perplexity
    for chart in charts:
        assert "<polyline" in chart and chart.count("<circle") == 3


def test_model_and_data_text_is_never_executed(chromium, report, tmp_path):
    dom, result = autotest(chromium, tmp_path, report[0], "x")
    assert result["pwned"] == "undefined"
    assert "data-pwned" not in re.search(r"<html[^>]*>", dom).group(0)
    assert dom.count("<script") == 3 and "<img" not in dom and "<b>d0</b>" not in dom  # the page's 2 + the driver
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in dom  # shown as text in the drill-down
    assert "&lt;b&gt;d0&lt;/b&gt;" in dom
    page = report[0].read_text()
    data = re.search(r'<script type="application/json" id="leaderboard-data">(.*?)</script>', page, re.S).group(1)
    assert "<" not in data and ">" not in data and "&" not in data
    assert json.loads(data)["rows"][2]["label"] == PAYLOADS[1] + " step300"


def png_pixels(png: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the unfiltered rows of an 8-bit RGB or RGBA PNG (PNG spec, sections 4.1, 9 and 11.2.2)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, offset = {}, 8
    while offset < len(png):
        (length,), kind = struct.unpack(">I", png[offset : offset + 4]), png[offset + 4 : offset + 8]
        chunks[kind] = chunks.get(kind, b"") + png[offset + 8 : offset + 8 + length]
        offset += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert depth == 8 and color in (2, 6), (depth, color)
    channels = 3 if color == 2 else 4
    raw, stride, rows = zlib.decompress(chunks[b"IDAT"]), width * channels, []
    previous = bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        previous = line
    return width, height, [bytes(row[i] for i in range(len(row)) if i % channels < 3) for row in rows]


def non_white_share(png: bytes) -> float:
    width, height, rows = png_pixels(png)
    pixels = [row[i : i + 3] for row in rows for i in range(0, len(row), 3)]
    return sum(pixel != b"\xff\xff\xff" for pixel in pixels) / (width * height)


def test_screenshot_is_not_blank(chromium, report, tmp_path):
    shot = tmp_path / "leaderboard.png"
    headless(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1280,900", report[0].as_uri())
    width, height, _ = png_pixels(shot.read_bytes())
    assert (width, height) == (1280, 900)
    # Text, the table's borders and shaded headers, and the charts cover about 14 % of the first screen.
    assert non_white_share(shot.read_bytes()) > 0.05


def test_non_white_share_measures_a_known_page(chromium, tmp_path):
    # The measure itself: a black 640 x 225 box on a white 1280 x 900 page is one eighth of its pixels.
    page, shot = tmp_path / "box.html", tmp_path / "box.png"
    page.write_text('<!doctype html><body style="margin:0"><div style="width:640px;height:225px;background:#000">')
    headless(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1280,900", page.as_uri())
    assert non_white_share(shot.read_bytes()) == 1 / 8
    page.write_text("<!doctype html><body>")
    headless(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1280,900", page.as_uri())
    assert non_white_share(shot.read_bytes()) == 0
