"""Inside `watch`, a check against the baseline that `check` refuses (settings that change numbers differ) is said
in one line for every checkpoint and fails `--once`: regression checking never switches off silently."""

from __future__ import annotations

from conftest import save_tiny_model

from llamabench.cli.app import main


def test_every_refused_check_is_one_line_and_fails_the_watch(tmp_path, notes_file, capsys):
    root = tmp_path / "train"
    root.mkdir()
    for step in (100, 200):
        save_tiny_model(root / f"checkpoint-{step}")
    text = ["--text", str(notes_file), "--text-format", "lines", "--no-cache", "--bootstrap-iters", "20"]
    # The baseline's seed seeds its bootstrap stderr, a number: the watch (seed 0) cannot be compared with it.
    baseline_out = tmp_path / "baseline"
    assert (
        main(["run", "--model", str(root / "checkpoint-100"), *text, "--seed", "5", "--output-dir", str(baseline_out)])
        == 0
    )
    (baseline,) = [p for p in baseline_out.iterdir() if (p / "manifest.json").is_file()]
    capsys.readouterr()
    argv = ["watch", str(root), *text, "--output-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "reports")]
    status = main([*argv, "--baseline", str(baseline), "--once", "--every", "0.05"])
    err = capsys.readouterr().err.splitlines()
    refused = [line for line in err if "seed 5 vs 0" in line]
    assert len(refused) == 2, err  # one line per checkpoint, each naming why
    assert all("not checked for regressions" in line for line in refused)
    assert status == 1  # a watch whose checks were refused did not pass
