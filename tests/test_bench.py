"""The benchmarks in bench/ at their smallest sizes: every timed run computes all the work it is timed for (no
request cache, no memo or warm result of an earlier run), its own counters say so, and a ratio is printed only
between runs that did the same full work (bench/common.py's rule, also tested here on hand-made records).

A cache that slips into a timed path shows as a run that computed fewer requests, forward passes or positions
than it answered, or fewer than the same side's other repeats of the same work. engines.py needs the vLLM
environment (``.venv-vllm`` or ``$LLAMABENCH_VLLM_PYTHON``) and is skipped without it; it is heavy: run it under
``flock /tmp/llamabench-heavy.lock``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import save_tiny_model
from vllm_env import vllm_python as vllm_environment

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

from common import TimedRun, compare, fastest  # noqa: E402


def run(job="job", side="side", seconds=1.0, requests=4, computed=4, work=100, forwards=10, positions=400):
    return TimedRun(job, side, seconds, requests, computed, work, "tokens", forwards, positions)


def test_ratio_between_runs_of_the_same_full_work():
    slow, quick = run(side="peer", seconds=4.0), run(side="ours", seconds=1.0)
    assert compare("speed-up", slow, quick).ratio == pytest.approx(4.0)
    assert compare("speed-up", slow, quick).line() == "speed-up: 4.00x"


@pytest.mark.parametrize(
    ("other", "why"),
    [
        (run(seconds=0.001, forwards=0, positions=0), "ran 0 forward passes for 100 tokens"),
        (run(seconds=0.001, computed=0), "computed 0 of 4 requests (4 served from a cache)"),
        (run(computed=3), "computed 3 of 4 requests (1 served from a cache)"),
        (run(work=0), "did no work"),
        (run(positions=50), "computed 50 positions, fewer than its 100 tokens"),
        (run(requests=5, computed=5), "answered 4 requests, side 5"),
        (run(work=90), "did 100 tokens, side 90: not the same work"),
    ],
)
def test_no_ratio_where_a_side_did_not_do_the_same_full_work(other, why):
    refused = compare("speed-up", run(), other)
    assert refused.ratio is None and why in refused.reason
    assert refused.line().startswith("speed-up: no ratio: ")


def test_work_tolerance_admits_a_small_difference_only():
    assert compare("x", run(work=100), run(work=96), work_tolerance=0.05).ratio == pytest.approx(0.96)
    assert compare("x", run(work=100), run(work=94), work_tolerance=0.05).ratio is None


def test_fastest_picks_among_full_runs_only():
    honest, cached = run(seconds=11.7), run(seconds=0.01, computed=0, forwards=0, positions=0)
    assert fastest([honest, cached]) is honest
    assert fastest([cached, run(seconds=20.0)]).seconds == 20.0
    assert fastest([cached]) is cached  # and compare then refuses with its shortfall


def assert_full_and_repeatable(runs: list[TimedRun], sides: int, per_side: int) -> None:
    """Each run did its full work itself, and the repeats of one side counted the same work."""
    for timed in runs:
        assert timed.shortfall() is None, timed.line()
    by_side: dict[tuple[str, str], list[TimedRun]] = {}
    for timed in runs:
        by_side.setdefault((timed.job, timed.side), []).append(timed)
    assert len(by_side) == sides and all(len(repeats) == per_side for repeats in by_side.values()), by_side.keys()
    for repeats in by_side.values():
        counts = {(r.requests, r.computed, r.work, r.forwards, r.positions) for r in repeats}
        assert len(counts) == 1, [r.line() for r in repeats]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random Llama over bytes, with room for a whole SQuAD paragraph (no truncation on either side)."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny"), max_positions=2048)


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMABENCH_CACHE", str(tmp_path / "cache"))


def test_vs_lm_eval_repeats_compute_every_generation(tiny_model, data_dir, own_cache, capsys):
    pytest.importorskip("lm_eval")
    import vs_lm_eval

    argv = ["--data-dir", str(data_dir), "--model", str(tiny_model), "--device", "cpu", "--jobs", "ppl,squad"]
    runs = vs_lm_eval.main([*argv, "--ppl-docs", "1", "--qa-docs", "2", "--gen-batch-size", "2"])
    out = capsys.readouterr().out
    # ppl: one run a side; squad: two (--repeats 2) a side (wmt takes the same path)
    assert_full_and_repeatable([r for r in runs if r.job == "wikitext2"], sides=2, per_side=1)
    assert_full_and_repeatable([r for r in runs if r.job != "wikitext2"], sides=2, per_side=2)
    assert all(timed.line() in out for timed in runs)
    assert out.count("speed-up") == 2, out


def test_mc_vs_lm_eval_both_sides_score_every_choice(tiny_model, data_dir, capsys):
    pytest.importorskip("lm_eval")
    import mc_vs_lm_eval

    runs = mc_vs_lm_eval.main(["--data-dir", str(data_dir), "--model", str(tiny_model), "--questions", "4"])
    out = capsys.readouterr().out
    assert_full_and_repeatable(runs, sides=4, per_side=1)
    assert {timed.requests for timed in runs} == {4 * mc_vs_lm_eval.N_CHOICES}
    assert all(timed.line() in out for timed in runs)


def test_gpu_throughput_smoke_runs_count_their_work(capsys):
    pytest.importorskip("lm_eval")
    import gpu_throughput

    rows, _ = gpu_throughput.benchmark(["--smoke", "--model-shapes", "1b"])
    out = capsys.readouterr().out
    # rolling ppl (llamabench only: lm-eval's on smollm2 only), one generation a key/value cache, lm-eval's
    runs = [row.run for row in rows]
    assert len(runs) == 2 + len(gpu_throughput.KV_CACHES)
    assert_full_and_repeatable(runs, sides=len(runs), per_side=1)
    assert all(
        row.peer is not None for row in rows if row.job.startswith("greedy generation,") and "lm-eval" not in row.job
    )
    assert all(timed.line() in out for timed in runs)


def test_profile_rolling_ppl_profiles_a_computed_window(tiny_model, data_dir, capsys):
    pytest.importorskip("lm_eval")
    import profile_rolling_ppl

    argv = ["--data-dir", str(data_dir), "--model", str(tiny_model), "--tokens", "64", "--device", "cpu"]
    runs = profile_rolling_ppl.main(argv)
    out = capsys.readouterr().out
    assert_full_and_repeatable(runs, sides=2, per_side=1)
    assert {timed.work for timed in runs} == {64}  # every token of the window is scored (the first after <s>)
    assert all(timed.line() in out for timed in runs)


def test_fingerprint_speed_hashes_what_it_times(tiny_model, own_cache, capsys):
    import fingerprint_speed

    blake, sha, *rest = fingerprint_speed.main(["--mb", "1", "--model", str(tiny_model)])
    checks, in_memory = rest[:3], rest[3:]
    out = capsys.readouterr().out
    from llamabench.backends.loading.fingerprint import model_files

    files = model_files(tiny_model)
    for timed in (blake, sha, *checks, *in_memory):
        assert timed.shortfall() is None and timed.line() in out
    assert blake.work == sha.work == 1_000_000
    # a model's fingerprint hashes every byte every time (no memo): each of the three timed runs did the full work
    for timed in checks:
        assert timed.computed == timed.requests == len(files) and timed.work == sum(p.stat().st_size for p in files)


def test_cache_scale_steps_store_and_read_what_they_time(tmp_path, capsys):
    import cache_scale

    runs = cache_scale.main(["--rows", "20000", "--out", str(tmp_path / "cache-bench")])
    out = capsys.readouterr().out
    assert all(timed.shortfall() is None and timed.line() in out for timed in runs)
    *batches, filled, opened, read = runs
    assert [timed.work for timed in batches] == [200, 12_800, 20_000]  # min(20,000, 200 x batch) rows each
    assert filled.work == 20_000 and read.work == read.requests == 200  # 100 keys from each 10,000 stored


def test_report_scale_stores_and_reports_every_run(capsys):
    import report_scale

    runs = report_scale.main(["--runs", "2", "--docs", "3", "--prompt-chars", "20"])
    out = capsys.readouterr().out
    assert all(timed.shortfall() is None and timed.line() in out for timed in runs)
    assert [(timed.requests, timed.work) for timed in runs] == [(2, 2), (2, 2)]


# A timed run's line (common.TimedRun.line) as engines.py prints it.
RUN_LINE = re.compile(
    r"^\s+(?P<job>\w+) (?P<side>\S+): [\d.]+ s; (?P<computed>\d+)/(?P<requests>\d+) requests computed, "
    r"(?P<work>\d+) [a-z ]+?(?:, (?P<forwards>\d+) forward passes)?(?:, (?P<positions>\d+) positions computed)?"
    r"(?:, \d+ prompt tokens from this run's own prefixes)?$",
    re.MULTILINE,
)


@pytest.fixture(scope="module")
def vllm_python() -> str:
    return vllm_environment()


def test_engines_every_engine_computes_every_job(vllm_python, tmp_path, data_dir):
    # The embedded SmolLM2, as every vLLM test uses: a tiny random model of head size 32 (the smallest vLLM's CPU
    # attention accepts) stopped this benchmark with non-finite log-probabilities on WikiText, where a transformers
    # forward of the same model is finite; not followed further.
    sizes = ["--ppl-docs", "1", "--mc-docs", "2", "--qa-docs", "2", "--wmt-docs", "2"]
    command = [vllm_python, "engines.py", "--data-dir", str(data_dir), "--enforce-eager"]
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "LLAMABENCH_CACHE": str(tmp_path / "cache")}
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH.parent), env.get("PYTHONPATH", "")])
    done = subprocess.run([*command, *sizes], cwd=BENCH, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = [match.groupdict() for match in RUN_LINE.finditer(done.stdout)]
    engines = {"llamabench-HF", "llamabench-vLLM", "lm-eval-vllm"}
    assert {(run["job"], run["side"]) for run in runs} == {
        (j, e) for j in ("ppl", "mc", "squad", "wmt") for e in engines
    }
    for run in runs:
        assert run["computed"] == run["requests"] != "0" and int(run["work"]) > 0, run
        assert int(run["positions"]) >= int(run["work"]), run  # vLLM's from its outputs, HF's from its passes
        assert run["forwards"] is None or int(run["forwards"]) > 0, run
    # a ratio may be refused only where two engines' greedy texts differ in length (a random model's near-ties)
    shortfalls = ("served from a cache", "0 forward passes", "did no work", "positions, fewer")
    assert not any(shortfall in done.stdout for shortfall in shortfalls), done.stdout
