"""Numbers that are not numbers: a diverged checkpoint (NaN or infinite weights) never yields a score, a chosen
answer or a passed check. Oracles: IEEE arithmetic by hand (a NaN is not a number, whatever argmax says)."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from builders import make_run
from conftest import byte_tokenizer, save_tiny_model, tiny_llama

from llamabench.analysis.check import compare_runs, format_comparisons, write_junit
from llamabench.backends.hf.backend import HFBackend
from llamabench.backends.hf.generation import cache_keyword
from llamabench.cli.app import main
from llamabench.errors import LlamabenchError
from llamabench.metrics import get_metric
from llamabench.metrics.base import Outcome
from llamabench.records.store import RunStore
from llamabench.requests import GenerationRequest, LoglikelihoodRequest, RollingRequest

DIVERGED = {"nan": math.nan, "inf": math.inf}


def diverged_backend(value: float, **kwargs) -> HFBackend:
    """A tiny model one of whose final-norm weights is ``value``: every logit it produces is non-finite."""
    model = tiny_llama(0)
    with torch.no_grad():
        model.model.norm.weight[3] = value
    return HFBackend(model, byte_tokenizer(), model_id="diverged", progress=False, **kwargs)


@pytest.mark.parametrize("value", DIVERGED)
def test_scoring_a_diverged_model_stops_and_hands_nothing_on(value):
    backend = diverged_backend(DIVERGED[value])
    handed_on = []
    with pytest.raises(LlamabenchError, match="non-finite"):
        backend.loglikelihood([LoglikelihoodRequest("The cat", " sat"), LoglikelihoodRequest("The cat", " ran")])
    with pytest.raises(LlamabenchError, match="non-finite"):
        backend.loglikelihood_rolling([RollingRequest("A quick brown fox.")], on_done=lambda i, r: handed_on.append(r))
    assert handed_on == []  # nothing non-finite reaches the request cache


@pytest.mark.parametrize("kv_cache", ["dynamic", "static"])
@pytest.mark.parametrize("value", DIVERGED)
def test_generating_with_a_diverged_model_chooses_no_token(value, kv_cache):
    backend = diverged_backend(DIVERGED[value], kv_cache=kv_cache)
    handed_on = []
    with pytest.raises(LlamabenchError, match="non-finite"):
        backend.generate([GenerationRequest("Q: 2+2?\nA:", 4, ("\n",), True)], on_done=lambda i, t: handed_on.append(t))
    assert handed_on == []


def test_accuracy_never_picks_a_choice_among_nans():
    # np.argmax([nan, -5]) is 0, the label: a NaN would count as a right answer.
    for name in ("acc", "acc_norm"):
        outcome = Outcome("d0", choice_loglikelihoods=[math.nan, -5.0], choices=["yes", "no"], label=0)
        assert math.isnan(get_metric(name).score(outcome))


@pytest.mark.parametrize("name", ["word_perplexity", "byte_perplexity", "token_perplexity", "bits_per_byte"])
def test_a_nan_loglikelihood_is_a_nan_perplexity_not_infinity(name):
    metric = get_metric(name)
    stats = metric.stats([Outcome("d0", loglikelihood=math.nan, n_tokens=4, units_text="a b c")])
    assert math.isnan(metric.aggregate(stats)) and math.isnan(metric.per_sample(stats)[0])


def test_scoring_outcomes_with_non_finite_numbers_stops_naming_model_task_and_document(data_dir):
    from llamabench.scoring import score
    from llamabench.tasks import registry

    (spec,) = registry.resolve(["wikitext2"], registry.task_dirs([]))
    outcomes = [
        Outcome("a", loglikelihood=-10.0, n_tokens=4, units_text="one two"),
        Outcome("b", loglikelihood=-math.inf, n_tokens=4, units_text="three four"),
    ]
    docs = [type("Doc", (), {"prompt_hash": "h", "prompt": "p"})() for _ in outcomes]
    with pytest.raises(LlamabenchError) as raised:
        score(spec, docs, outcomes, model="ckpt-7")
    message = str(raised.value)
    assert "non-finite" in message and "ckpt-7" in message and spec.name in message and "'b'" in message


def nan_runs():
    em = [[100.0], [0.0], [100.0]]
    finite = {"t": {"exact_match": em, "word_perplexity": [[-10.0, 4], [-9.0, 4], [-8.0, 4]]}}
    broken = {"t": {"exact_match": em, "word_perplexity": [[-10.0, 4], [math.nan, 4], [-8.0, 4]]}}
    return make_run("base", finite), make_run("cand", broken, started="2025-01-02T00:00:00+00:00")


def test_check_fails_a_row_that_is_not_a_number_in_every_output(tmp_path, capsys):
    base, cand = nan_runs()
    rows = compare_runs(base, cand)
    (row,) = [r for r in rows if r.metric == "word_perplexity"]
    assert math.isnan(row.candidate) and row.failed and row.verdict != "ok"
    text = format_comparisons(rows, 0.05, [])
    assert "PASS" not in text and "FAIL" in text and "nan" in text
    write_junit(rows, tmp_path / "j.xml", "s", [])
    assert ET.parse(tmp_path / "j.xml").getroot().get("failures") == "1"
    store = RunStore.in_dir(tmp_path / "runs")
    for run in (base, cand):
        store.add(run)
    argv = ["check", "--output-dir", str(tmp_path / "runs"), "--baseline", base.manifest["run_id"]]
    assert main([*argv, "--candidate", cand.manifest["run_id"]]) == 1
    assert "PASS" not in capsys.readouterr().out


def test_check_fails_an_infinite_baseline_too():
    inf_base = make_run("base", {"t": {"word_perplexity": [[-1e6, 1], [-9.0, 4], [-8.0, 4]]}})
    cand = make_run("cand", {"t": {"word_perplexity": [[-10.0, 4], [-9.0, 4], [-8.0, 4]]}}, started="2025-01-02")
    (row,) = compare_runs(inf_base, cand)
    assert math.isinf(row.baseline) and row.failed and row.verdict != "ok"


def test_bootstrap_and_mean_of_a_nan_statistic_stay_nan():
    # Not a number in, not a number out: stderr must not turn into a finite-looking figure.
    for name, row in (("exact_match", [math.nan]), ("word_perplexity", [math.nan, 3])):
        metric = get_metric(name)
        stats = np.array([row, row, row], dtype=float)
        stats[0] = [1.0] * len(row)
        assert math.isnan(metric.aggregate(stats)) and math.isnan(metric.standard_error(stats, iters=20))


def test_run_on_a_diverged_checkpoint_is_one_line_naming_model_and_task(tmp_path, notes_file, capsys):
    model = tiny_llama(0)
    with torch.no_grad():
        model.model.norm.weight[0] = math.nan
    model.save_pretrained(tmp_path / "ckpt")
    byte_tokenizer().save_pretrained(tmp_path / "ckpt")
    argv = ["run", "--model", str(tmp_path / "ckpt"), "--text", str(notes_file), "--text-format", "lines"]
    assert main([*argv, "--no-cache", "--output-dir", str(tmp_path / "runs")]) == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # notes may precede it
    assert line.startswith("llamabench: error: model ") and "ckpt" in line and "task text:" in line
    assert "non-finite log-probabilities" in line and "diverged" in line
    assert not list((tmp_path / "runs").glob("*/results.csv"))  # no score was recorded


def test_a_drafted_position_that_is_not_a_number_chooses_no_token(tiny_backend):
    # "Hello, world. " makes this tiny model repeat "y", so its row drafts; here every position after the first
    # of a pass is NaN, so a confirmed draft would hand the next position's argmax over NaNs on as a token.
    backend = tiny_backend(batch_size=1)
    forward = backend.model.forward
    cache = cache_keyword(backend.model)  # the keyword decoding passes its key/value cache under

    def nan_after_first_position(*args, **kwargs):
        output = forward(*args, **kwargs)
        if output.logits.shape[1] > 1 and kwargs.get(cache) is not None:
            output.logits[:, 1:] = math.nan
        return output

    backend.model.forward = nan_after_first_position
    with pytest.raises(LlamabenchError, match="non-finite"):
        backend.generate([GenerationRequest("Hello, world. ", 60)])


def test_a_perplexity_past_what_a_float_holds_is_refused_not_scored_as_infinity(tmp_path, capsys):
    # One 600-character "word": every log-probability is finite, but the word perplexity is exp(~3400), past a
    # float (exp overflows beyond about 709.8). lm-eval raises OverflowError here; an `inf` must not become a score.
    save_tiny_model(tmp_path / "ckpt")
    text = tmp_path / "one_word.txt"
    text.write_text("x" * 600 + "\n")
    argv = ["run", "--model", str(tmp_path / "ckpt"), "--text", str(text), "--text-format", "lines"]
    assert main([*argv, "--max-length", "128", "--no-cache", "--output-dir", str(tmp_path / "runs")]) == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert "task text:" in line and "one_word.txt" in line and "word_perplexity" in line and "float" in line
    assert not list((tmp_path / "runs").glob("*/results.csv"))
