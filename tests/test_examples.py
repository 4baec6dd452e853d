"""``llamabench examples DIR`` never writes over files of the user's: a folder that holds one of the names it
writes is refused in one line, exit 2, before anything is written."""

from llamabench.cli.app import main


def test_a_folder_holding_one_of_the_files_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("the user's own notes\n")
    assert main(["examples", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"llamabench: error: examples: {tmp_path / 'notes.txt'} already exists; "
        "run `llamabench examples DIR` with a new folder DIR"
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "the user's own notes\n"
