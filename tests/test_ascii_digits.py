"""Numbers read from flags, the environment and names are ASCII digits only: ``'²'.isdigit()`` is True and
``int('²')`` raises, so a Unicode digit once ended in "unexpected ValueError". Each is now one line naming the
variable or flag (exit 2), or not a number at all where a name only may hold one."""

import pytest

from llamabench.analysis.report.leaderboard import checkpoint_step
from llamabench.cli.app import main
from llamabench.errors import LlamabenchError
from llamabench.shard_spec import Shard, parse_shard

SLURM = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "4"}


@pytest.mark.parametrize("variable", ["SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN"])
@pytest.mark.parametrize("value", ["²", "١", "٣", "1²", "x"])
def test_a_slurm_variable_that_is_not_ascii_digits_is_one_line_naming_it(variable, value):
    with pytest.raises(LlamabenchError, match=variable) as raised:
        parse_shard("auto", {**SLURM, variable: value})
    assert "\n" not in str(raised.value)


def test_slurm_variables_in_ascii_digits_still_give_the_shard():
    assert parse_shard("auto", {**SLURM, "SLURM_ARRAY_TASK_MIN": " 1 ", "SLURM_ARRAY_TASK_ID": "2"}) == Shard(1, 4)
    assert parse_shard("auto", SLURM) == Shard(1, 4)


@pytest.mark.parametrize("text", ["١/٣", "0/²", "¹/3"])
def test_a_shard_flag_in_other_digits_is_refused(text):
    with pytest.raises(LlamabenchError, match="--shard"):
        parse_shard(text)


def test_the_command_line_says_which_variable_not_unexpected_valueerror(monkeypatch, capsys, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("one line\n")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "²")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    assert main(["run", "--text", str(notes), "--shard", "auto", "--output-dir", str(tmp_path / "runs")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "SLURM_ARRAY_TASK_ID" in line and "unexpected" not in line


@pytest.mark.parametrize("argv", [["run", "--batch-size", "²"], ["watch", "."]])
def test_batch_size_and_world_size_in_other_digits_are_one_line(argv, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "²" if argv[0] == "watch" else "1")
    assert main([*argv, "--text", "notes.txt"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert ("--batch-size" if argv[0] == "run" else "WORLD_SIZE") in line and "unexpected" not in line


def test_a_name_holding_other_digits_has_no_step():
    assert checkpoint_step("²") is None and checkpoint_step("step²") is None and checkpoint_step("step12") == 12
