"""One config: every flag of ``llamabench run`` is a field of RunConfig with the flag's name (and every field a
flag), so the Python keyword arguments are the flags; each value is checked in one place, RunConfig.validate."""

import argparse
import dataclasses
import math

import pytest
from conftest import byte_tokenizer, tiny_llama

import llamabench
from llamabench.cli.app import build_parser
from llamabench.cli.run import add_evaluation_options, add_scale_options
from llamabench.config import RunConfig
from llamabench.errors import LlamabenchError


def run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", action="append", default=[])
    add_evaluation_options(parser)
    add_scale_options(parser)
    return parser


# Flags of `llamabench run` that only change what is printed after the run, never a number of it.
DISPLAY_ONLY_FLAGS = {"contamination"}


def test_every_run_flag_is_a_config_field_of_the_same_name_and_back():
    """The real `run` parser (not a copy of its options), so a flag added beside add_evaluation_options counts."""
    run = build_parser()._subparsers._group_actions[0].choices["run"]
    flags = {action.dest for action in run._actions if action.dest != "help"}
    assert flags - DISPLAY_ONLY_FLAGS == {field.name for field in dataclasses.fields(RunConfig)}


def test_parsed_flags_become_the_config_they_spell():
    args = run_parser().parse_args(
        ["--tasks", "ppl, qa", "--model", "a", "--model", "b", "--tasks-dir", "t", "--text", "x.txt", "--no-cache"]
    )
    config = RunConfig.from_args(args)
    assert (config.tasks, config.model, [str(p) for p in config.tasks_dir], config.text) == (
        ["ppl", "qa"],
        ["a", "b"],
        ["t"],
        ["x.txt"],
    )
    assert config.cache_mode == "off"


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"batch_size": 0}, "--batch-size 0 must be 'auto' or a positive whole number"),
        ({"batch_size": "12x"}, "--batch-size 12x must be 'auto' or a positive whole number"),
        ({"max_length": 1}, "--max-length 1 must be >= 2 tokens"),
        ({"limit": 0}, "--limit 0 must be a positive number of documents"),
        ({"seed": -1}, "--seed -1 must be a whole number"),
        ({"no_cache": True, "refresh": True}, "--no-cache and --refresh conflict"),
        ({"word_rule": "lm_eval"}, "--text-format and --word-rule apply to --text tasks"),
        ({"kv_cache": "paged"}, "--kv-cache must be one of dynamic, static"),
    ],
)
def test_validate_names_the_flag_at_fault(fields, named):
    with pytest.raises(LlamabenchError, match=named):
        RunConfig(tasks=["ppl"], **fields).validate()


def test_validate_gives_the_batch_size_in_its_effective_type():
    assert RunConfig(tasks=["ppl"], batch_size="8").validate().batch_size == 8


def test_unknown_keyword_is_one_line_listing_the_flags():
    with pytest.raises(LlamabenchError, match=r"evaluate_model: unknown setting\(s\) tasks_dirs; .* tasks_dir"):
        RunConfig.from_keywords("evaluate_model", ["ppl"], {"tasks_dirs": []})


def test_python_keywords_are_the_flag_names(notes_file, tmp_path):
    # The keywords the README names after the flags (tasks_dir, text, word_rule, include_path, no_cache) all run.
    run = llamabench.evaluate_model(
        tiny_llama(0),
        byte_tokenizer(),
        [],
        text=[str(notes_file)],
        text_format="lines",
        word_rule="whitespace_tokens",
        tasks_dir=[tmp_path],
        include_path=[tmp_path],
        no_cache=True,
        batch_size="2",
    )
    values = run.results.set_index("metric").value
    assert math.isfinite(values["word_perplexity"]) and run.manifest.config["word_rule"] == "whitespace_tokens"
