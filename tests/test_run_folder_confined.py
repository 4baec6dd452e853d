"""A run folder is read only from inside itself: a manifest naming a file outside it (``../``, an absolute path)
or a file that is a link to one outside is refused in one line, exit 2, by ``report`` and ``check``."""

import json

import pytest
from builders import make_run

from llamabench.cli.app import main
from llamabench.records.results import write_run


@pytest.fixture
def two_folders(tmp_path):
    runs = tmp_path / "runs"
    victim = write_run(make_run("victim", {"squad": {"f1": [[10.0], [20.0]]}}), tmp_path / "elsewhere")
    mine = write_run(make_run("mine", {"squad": {"f1": [[30.0], [40.0]]}}), runs)
    return mine, victim


def refused(capsys, folder, tmp_path) -> str:
    argv = ["report", str(folder), "--output-dir", str(tmp_path / "store"), "--out", str(tmp_path / "report")]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert not (tmp_path / "report").exists()
    return lines[0]


@pytest.mark.parametrize("outside", ["relative", "absolute"])
def test_a_manifest_naming_a_sample_file_outside_its_folder_is_refused(two_folders, tmp_path, capsys, outside):
    mine, victim = two_folders
    manifest = json.loads((mine / "manifest.json").read_text())
    (stem,) = manifest["sample_files"].values()
    target = victim / stem
    manifest["sample_files"]["squad"] = (
        str(target) if outside == "absolute" else f"../../elsewhere/{victim.name}/{stem}"
    )
    (mine / "manifest.json").write_text(json.dumps(manifest))
    line = refused(capsys, mine, tmp_path)
    assert "outside the run folder" in line and str(mine) in line


def test_a_table_that_links_outside_its_folder_is_refused(two_folders, tmp_path, capsys):
    mine, victim = two_folders
    (mine / "results.parquet").unlink()
    (mine / "results.parquet").symlink_to(victim / "results.parquet")
    line = refused(capsys, mine, tmp_path)
    assert "results.parquet" in line and "outside the run folder" in line


def test_a_link_inside_the_folder_and_a_linked_folder_are_read(two_folders, tmp_path, capsys):
    mine, _ = two_folders
    (mine / "kept.parquet").write_bytes((mine / "results.parquet").read_bytes())
    (mine / "results.parquet").unlink()
    (mine / "results.parquet").symlink_to("kept.parquet")
    (tmp_path / "latest").symlink_to(mine)
    argv = ["report", str(tmp_path / "latest"), "--output-dir", str(tmp_path / "store"), "--out", str(tmp_path / "r")]
    assert main(argv) == 0, capsys.readouterr().err
