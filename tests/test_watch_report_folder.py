"""``watch``'s report does not overwrite the one ``report`` wrote: the README runs ``report --out reports`` and then
``watch`` with its default report folder, in the same working folder."""

from builders import write_checkpoint
from conftest import NOTES

from llamabench.cli.app import main


def test_watch_leaves_the_leaderboard_of_report_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text(NOTES)
    (tmp_path / "out").mkdir()
    write_checkpoint(tmp_path / "out" / "checkpoint-100", head_scale=1.0)
    text = ("--text", "notes.txt", "--text-format", "lines", "--batch-size", "1", "--no-cache")
    assert main(["run", "--model", "out/checkpoint-100", *text]) == 0
    assert main(["report", "--out", "reports"]) == 0
    written_by_report = {path.name: path.read_bytes() for path in (tmp_path / "reports").iterdir()}

    assert main(["watch", "out", "--once", "--every", "0.01", "--output-dir", "watched", *text]) == 0

    assert {path.name: path.read_bytes() for path in (tmp_path / "reports").iterdir() if path.is_file()} == (
        written_by_report
    )
    assert (tmp_path / "reports" / "watch" / "leaderboard.md").is_file()
