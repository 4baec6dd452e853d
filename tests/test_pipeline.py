"""The whole pipeline on a tiny random model over the real public data: tables, metrics, files."""

import json
import math
import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from llamabench.config import RunConfig
from llamabench.errors import LlamabenchError
from llamabench.native import prepare_tasks
from llamabench.pipeline import Evaluation
from llamabench.records.results import RESULT_COLUMNS, write_run
from llamabench.requests import DocRequests, GenerationRequest, LoglikelihoodRequest, RollingRequest
from llamabench.tasks.data import read_wikitext_documents
from llamabench.tasks.kinds import KINDS


def run_tiny(tiny_backend, data_dir, tasks, limit=6, **kwargs):
    config = RunConfig(tasks=tasks, limit=limit, data_dir=data_dir, **kwargs)
    return Evaluation.prepare(config).run_backend(tiny_backend(max_length=256))


def test_tidy_table_has_one_row_per_task_metric(tiny_backend, data_dir):
    run = run_tiny(tiny_backend, data_dir, ["ppl", "bleu", "rouge", "qa"], limit=4)
    assert list(run.results.columns) == RESULT_COLUMNS
    expected = {
        "wikitext2": {"word_perplexity", "byte_perplexity", "bits_per_byte", "token_perplexity"},
        "wmt22-de-en": {"bleu", "chrf"},
        "cnndm": {"rouge1", "rouge2", "rougeL", "rougeLsum"},
        "squad": {"exact_match", "f1"},
    }
    assert {t: set(g.metric) for t, g in run.results.groupby("task")} == expected
    assert (run.results.n == 4).all()
    assert run.results.model.unique().tolist() == ["tiny-0"]
    assert set(run.samples) == set(expected)
    assert run.manifest["tasks"]["squad"]["documents"] == 4


def test_bleu_and_chrf_equal_sacrebleu_on_the_generated_text(tiny_backend, data_dir):
    run = run_tiny(tiny_backend, data_dir, ["bleu"], limit=8)
    samples = run.samples["wmt22-de-en"]
    hyps = samples.prediction.tolist()
    refs = [json.loads(t)[0] for t in samples.target]
    assert run.value("wmt22-de-en", "bleu") == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, abs=1e-9)
    assert run.value("wmt22-de-en", "chrf") == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score, abs=1e-9)
    row = run.results[run.results.metric == "bleu"].iloc[0]
    assert row.signature.startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp")
    # The standard errors: the sample deviation of sacrebleu's score over the run's 1000 bootstrap resamples of
    # the sentences (numpy's generator seeded with --seed 0, n indices drawn with replacement per resample).
    # A random model's BLEU is 0 on every resample here; its chrF is not.
    rng, n = np.random.default_rng(0), len(hyps)
    draws = [rng.integers(0, n, size=n) for _ in range(1000)]
    for name, corpus_score in (("bleu", sacrebleu.corpus_bleu), ("chrf", sacrebleu.corpus_chrf)):
        resampled = [corpus_score([hyps[i] for i in rows], [[refs[i] for i in rows]]).score for rows in draws]
        stderr = run.results[run.results.metric == name].iloc[0].stderr
        assert stderr == pytest.approx(np.std(resampled, ddof=1), rel=1e-9, abs=1e-12), name
    assert run.results[run.results.metric == "chrf"].iloc[0].stderr > 0


def test_rouge_per_sample_values_are_rouge_score(tiny_backend, data_dir):
    run = run_tiny(tiny_backend, data_dir, ["rouge"], limit=3)
    samples = run.samples["cnndm"]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2"], use_stemmer=True)
    for _, row in samples.iterrows():
        scores = scorer.score(json.loads(row.target)[0], row.prediction)
        assert row.rouge1 == pytest.approx(scores["rouge1"].fmeasure)
        assert row.rouge2 == pytest.approx(scores["rouge2"].fmeasure)
    assert run.value("cnndm", "rouge1") == pytest.approx(samples.rouge1.mean())


def test_perplexity_counts_words_and_bytes_on_the_raw_article(tiny_backend, data_dir):
    run = run_tiny(tiny_backend, data_dir, ["ppl"], limit=2)
    total_ll = run.samples["wikitext2"].loglikelihood.sum()
    raw = [d["page"] for d in read_wikitext_documents(data_dir / "wikitext2_raw_test" / "wiki.test.raw")[:2]]
    n_bytes = sum(len(page.encode()) for page in raw)
    n_words = sum(len(re.split(r"\s+", page)) for page in raw)
    assert run.value("wikitext2", "byte_perplexity") == pytest.approx(math.exp(-total_ll / n_bytes))
    assert run.value("wikitext2", "word_perplexity") == pytest.approx(math.exp(-total_ll / n_words))
    assert run.value("wikitext2", "bits_per_byte") == pytest.approx(-total_ll / n_bytes / math.log(2))


def test_run_is_written_as_csv_parquet_and_manifest(tiny_backend, data_dir, tmp_path):
    run = run_tiny(tiny_backend, data_dir, ["qa"], limit=3)
    folder = write_run(run, tmp_path)
    assert folder.parent == tmp_path
    pd.testing.assert_frame_equal(pd.read_parquet(folder / "results.parquet"), run.results)
    assert pd.read_csv(folder / "results.csv").metric.tolist() == ["exact_match", "f1"]
    assert len(pd.read_parquet(folder / "samples_squad.parquet")) == 3
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["backend"]["batch_sizes_used"] and manifest["tasks"]["squad"]["task_hash"]


def test_fewshot_prompts_hold_k_solved_examples(tiny_backend, data_dir):
    run = run_tiny(tiny_backend, data_dir, ["qa"], limit=3, num_fewshot=2)
    prompt = run.samples["squad"].prompt.iloc[0]
    assert prompt.count("\nA (a short span copied from the text above):") == 3
    assert run.results.num_fewshot.unique().tolist() == [2]


CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def test_chat_template_wraps_whole_prompts_once(tiny_backend, data_dir):
    config = RunConfig(tasks=["qa"], limit=3, data_dir=data_dir)  # SQuAD, two solved examples per prompt
    (plain,) = prepare_tasks(config)
    backend = tiny_backend(max_length=256)
    backend.tokenizer.chat_template = CHAT_TEMPLATE
    evaluation = Evaluation.prepare(config)
    evaluation.native = [replace(plain, spec=replace(plain.spec, chat_template=True))]
    run = evaluation.run_backend(backend)
    expected = [f"<|user|>{doc.prompt}<|end|><|assistant|>" for doc in plain.requests]
    assert [doc.prompt.count("\nQ: ") for doc in plain.requests] == [3, 3, 3]  # the examples are inside the turn
    samples = run.samples["squad"]
    assert samples.prompt.tolist() == expected
    generation = plain.spec.generation
    direct = backend.generate([GenerationRequest(p, generation.max_new_tokens, generation.until) for p in expected])
    assert samples.prediction.tolist() == direct


def test_chat_template_wraps_choice_contexts_and_leaves_perplexity_text():
    pair = [LoglikelihoodRequest("Q?", " a"), LoglikelihoodRequest("Q?", " b")]
    choice = DocRequests("0", "Q?", pair, choices=["a", "b"])
    rolling = DocRequests("1", "text", [RollingRequest("text")], units_text="text")
    wrap = "[{}]".format
    wrapped = KINDS["multiple_choice"].with_chat_template(choice, wrap)
    assert wrapped.prompt == "[Q?]"
    assert wrapped.requests == [LoglikelihoodRequest("[Q?]", " a"), LoglikelihoodRequest("[Q?]", " b")]
    assert wrapped.choices == ["a", "b"]
    assert KINDS["loglikelihood_rolling"].with_chat_template(rolling, wrap) == rolling


def test_chat_template_on_a_model_without_one_is_a_clear_error(tiny_backend, data_dir):
    config = RunConfig(tasks=["qa"], limit=1, data_dir=data_dir)
    (plain,) = prepare_tasks(config)
    with pytest.raises(LlamabenchError, match="model tiny-0 has no chat template; set chat_template: false"):
        evaluation = Evaluation.prepare(config)
        evaluation.native = [replace(plain, spec=replace(plain.spec, chat_template=True))]
        evaluation.run_backend(tiny_backend())
