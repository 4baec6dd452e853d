"""The HTML report in real headless Chromium: it renders, sorts, draws charts and never runs model text."""

import html
import json
import os
import re
import shutil
import struct
import subprocess

import pytest
from test_store_report_check import em_rows, make_run

from llamabench.report import write_report

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


def autotest(chromium, tmp_path, page, column):
    dom = headless(chromium, tmp_path, "--dump-dom", f"{page.as_uri()}#autotest=sort:{column}")
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
    dom, result = autotest(chromium, tmp_path, page, "label")
    assert 'aria-sort="ascending"' in dom and result["order"][0] == step300  # "</script>..." sorts before "ckpt"


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
    assert dom.count("<script") == 2 and "<img" not in dom and "<b>d0</b>" not in dom
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in dom  # shown as text in the drill-down
    assert "&lt;b&gt;d0&lt;/b&gt;" in dom
    page = report[0].read_text()
    data = re.search(r'<script type="application/json" id="leaderboard-data">(.*?)</script>', page, re.S).group(1)
    assert "<" not in data and ">" not in data and "&" not in data
    assert json.loads(data)["rows"][2]["label"] == PAYLOADS[1] + " step300"


def test_screenshot_is_a_png(chromium, report, tmp_path):
    shot = tmp_path / "leaderboard.png"
    headless(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1280,900", report[0].as_uri())
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert struct.unpack(">II", png[16:24]) == (1280, 900)  # IHDR width, height
