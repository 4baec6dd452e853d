"""Hostile task/model names and sample text stay inert in every output: Markdown, JUnit XML, CSV, the terminal."""

import doctest
import xml.etree.ElementTree as ET

import pandas as pd
import pytest
from builders import make_run

from llamabench import escaping
from llamabench.analysis.check import Unchecked, compare_runs, format_comparisons, write_junit
from llamabench.analysis.report import write_report
from llamabench.cli.app import main
from llamabench.records.results import format_table, write_run
from llamabench.records.store import RunStore

CLEAR_SCREEN = "\x1b[2J"
HOSTILE_MODEL = "=HYPERLINK(1)|`x`<img src=x>[a](b)\n# h\x1b[2J"
HOSTILE_TASK = "-squad|<b>\x00\x1b"


def hostile_runs():
    stats = {HOSTILE_TASK: {"f1": [[10.0], [30.0]]}}
    texts = {"doc_id": ["@d0", "d1"], "prompt": ["+1+2", "ok"], "prediction": ["=1+1", "-x\x1b[2J"]}
    base = make_run(HOSTILE_MODEL, stats, texts=texts)
    cand = make_run("cand", {HOSTILE_TASK: {"f1": [[0.0], [0.0]]}}, started="2025-01-02T00:00:00+00:00", texts=texts)
    return base, cand


# --- the functions, against the formats' own rules ----------------------------------------------------------------


def test_terminal_shows_control_characters_as_escapes():
    assert escaping.terminal("a\x1b[2Jb\x07\x9b\u202e\n") == "a\\x1b[2Jb\\x07\\x9b\\u202e\\x0a"
    assert escaping.terminal("naïve ↑ ✓ 東京") == "naïve ↑ ✓ 東京"  # printable Unicode is kept


def test_markdown_escapes_markup_and_keeps_one_line():
    assert escaping.markdown("a|b") == "a\\|b"
    assert escaping.markdown("<script>&") == "&lt;script&gt;&amp;"
    assert escaping.markdown("[x](http://e) ![i](y) `c` *e* _u_ ~~s~~") == (
        "\\[x\\]\\(http://e\\) \\!\\[i\\]\\(y\\) \\`c\\` \\*e\\* \\_u\\_ \\~\\~s\\~\\~"
    )
    assert escaping.markdown("line1\r\nline2\n# heading") == "line1 line2 \\# heading"
    assert escaping.markdown("a\\b\x1b") == "a\\\\b\\\\x1b"  # the backslash of a visible escape is escaped too


def test_xml_text_drops_what_xml_forbids():
    # XML 1.0 Char: #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF]
    assert escaping.xml_text("a\x00b\x1bc\x0b\ufffe\ud800") == "a\\x00b\\x1bc\\x0b\\ufffe\\ud800"
    assert escaping.xml_text("tab\tnl\ncr\r<&> \U0001f600") == "tab\tnl\ncr\r<&> \U0001f600"


@pytest.mark.parametrize("cell", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"])
def test_csv_cell_prefixes_formulas(cell):
    assert escaping.csv_cell(cell) == "'" + cell


def test_csv_frame_keeps_numbers_numbers():
    frame = pd.DataFrame({"text": ["=cmd", "plain", "-3"], "loglikelihood": [-1.5, -2.0, -0.25], "n": [1, 2, 3]})
    safe = escaping.csv_frame(frame)
    assert safe.text.tolist() == ["'=cmd", "plain", "'-3"]
    assert safe.loglikelihood.tolist() == [-1.5, -2.0, -0.25] and safe.n.tolist() == [1, 2, 3]
    assert frame.text[0] == "=cmd"  # the caller's frame is not changed


# --- the writers ---------------------------------------------------------------------------------------------------


def test_leaderboard_markdown_renders_hostile_names_as_text(tmp_path):
    paths = write_report(list(hostile_runs()), tmp_path)
    markdown = paths[1].read_text()
    assert "<img" not in markdown and "<b>" not in markdown and "\x1b" not in markdown and "\x00" not in markdown
    assert "### -squad\\|&lt;b&gt;\\\\x00\\\\x1b" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| =HYPERLINK"))
    assert row.startswith("| =HYPERLINK\\(1\\)\\|\\`x\\`&lt;img src=x&gt;\\[a\\]\\(b\\) \\# h\\\\x1b\\[2J | 1 |")
    assert row.count(" | ") == 2  # model | x | f1: no cell was split by a "|" from a name
    assert "\n# h" not in markdown  # the newline in the name did not start a heading


def test_junit_parses_whatever_the_names(tmp_path):
    base, cand = hostile_runs()
    rows = compare_runs(base, cand, iters=20, alpha=0.3)  # two documents, both worse: exact p 1/4
    path = tmp_path / "check.xml"
    write_junit(rows, path, f"check {HOSTILE_MODEL}", [Unchecked(HOSTILE_TASK, None, "no per-sample statistics")])
    root = ET.parse(path).getroot()
    assert root.get("name") == "check =HYPERLINK(1)|`x`<img src=x>[a](b)\n# h\\x1b[2J"
    names = {case.get("classname") for case in root.iter("testcase")}
    assert names == {"llamabench.-squad|<b>\\x00\\x1b"}
    (failure,) = root.iter("failure")
    assert failure.get("message").startswith("-squad|<b>\\x00\\x1b/f1 regressed")


def test_csv_files_neutralise_formulas_but_keep_numbers(tmp_path):
    base, _ = hostile_runs()
    base.samples[HOSTILE_TASK]["loglikelihood"] = [-3.5, -1.25]
    folder = write_run(base, tmp_path)
    results = pd.read_csv(folder / "results.csv")
    assert results.model.tolist() == ["'" + HOSTILE_MODEL] and results.task.tolist() == ["'" + HOSTILE_TASK]
    assert results.value.tolist() == [20.0]
    (samples_csv,) = folder.glob("samples_*.csv")
    samples = pd.read_csv(samples_csv)
    assert samples.doc_id.tolist() == ["'@d0", "d1"] and samples.prompt.tolist() == ["'+1+2", "ok"]
    assert samples.prediction.tolist() == ["'=1+1", "'-x\x1b[2J"]
    assert samples.loglikelihood.tolist() == [-3.5, -1.25]  # numbers, not "'-3.5"
    # The parquet tables keep the text as it was.
    assert pd.read_parquet(folder / "results.parquet").model.tolist() == [HOSTILE_MODEL]
    board = pd.read_csv(write_report([base], tmp_path / "report")[0])
    assert board.model.tolist() == ["'" + HOSTILE_MODEL] and f"'{HOSTILE_TASK}/f1" in board.columns
    assert board[f"'{HOSTILE_TASK}/f1"].tolist() == [20.0]


def test_terminal_tables_show_escapes_not_control_sequences(tmp_path, capsys):
    base, cand = hostile_runs()
    comparisons = compare_runs(base, cand, iters=20, alpha=0.3)  # two documents, both worse: exact p 1/4
    for text in (format_table(base.results), format_comparisons(comparisons, 0.3, [])):
        assert "\x1b" not in text and "\x00" not in text
        assert "\\x1b" in text
    store = RunStore.in_dir(tmp_path)
    store.add(base)
    store.add(cand)
    ids = [run.manifest["run_id"] for run in (base, cand)]
    argv = ["check", "--output-dir", str(tmp_path), "--alpha", "0.3", "--baseline", ids[0], "--candidate", ids[1]]
    assert main(argv) == 1
    assert main(["runs", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert CLEAR_SCREEN not in out and "\x00" not in out and "\\x1b[2J" in out


def test_a_task_named_with_control_characters_is_refused_in_escaped_words(tmp_path, capsys):
    task = 'name: "evil\\e[2J"\nkind: loglikelihood_rolling\ndataset: {local: x.jsonl}\nprompt: "{{ text }}"\n'
    (tmp_path / "evil.yaml").write_text(task + "metrics: [word_perplexity]\n")
    assert main(["tasks", "--tasks-dir", str(tmp_path)]) == 0  # the file is skipped with a warning, escaped
    err = capsys.readouterr().err
    assert "\x1b" not in err and "name must be text of 1 to 100" in err and "'evil\\x1b[2J'" in err


def test_documented_examples_hold():
    failures, tried = doctest.testmod(escaping)
    assert (failures, tried > 0) == (0, True)
