"""Held-out text as users have it: plain-text formats, data-dir containment, the --text quick path, word rules."""

import json
import math

import pytest

from llamabench.errors import LlamabenchError
from llamabench.escaping import safe_name
from llamabench.tasks.data import load_documents, read_jsonl, read_wikitext_documents

WIKITEXT = (
    " = Alpha = \n \n Alpha is first . \n \n = = History = = \n \n Old . \n"
    " = Beta = \n \n Beta is second . \n"
    " = Gamma = \n \n Gamma is third . \n"
)


def test_jsonl_line_may_hold_a_raw_line_separator_inside_a_string(tmp_path):
    path = tmp_path / "docs.jsonl"
    texts = ["one\u2028two", "three\u2029four\x0cfive\x85six"]
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    assert [row["text"] for row in read_jsonl(path)] == texts


def test_jsonl_tolerates_crlf(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_bytes(b'{"text": "a"}\r\n{"text": "b"}\r\n')
    assert read_jsonl(path) == [{"text": "a"}, {"text": "b"}]


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_wikitext_with_crlf_or_cr_gives_the_same_articles(tmp_path, newline):
    (tmp_path / "lf.raw").write_bytes(WIKITEXT.encode())
    (tmp_path / "other.raw").write_bytes(WIKITEXT.replace("\n", newline).encode())
    lf = read_wikitext_documents(tmp_path / "lf.raw")
    assert [page["page"].splitlines()[0] for page in lf] == [" = Alpha = ", " = Beta = ", " = Gamma = "]
    assert read_wikitext_documents(tmp_path / "other.raw") == lf


def text_source(local: str, text_format: str, separator: str | None = None):
    from llamabench.tasks.spec import DatasetSource

    return DatasetSource(local=local, format=text_format, separator=separator)


def load(data_dir, local, text_format, separator=None, **kwargs) -> list[dict]:
    return load_documents(text_source(local, text_format, separator), "my_task", data_dir, **kwargs)


def texts_and_ids(docs: list[dict]) -> list[tuple[str, str]]:
    return [(doc["text"], doc["doc_id"]) for doc in docs]


LINES = ["The cat sat.", "  Dogs bark at night.", "Zwölf Boxkämpfer"]


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("trailing", [True, False])
def test_lines_are_the_same_for_every_line_ending_with_or_without_a_final_newline(tmp_path, newline, trailing):
    body = newline.join([LINES[0], "", LINES[1], "   ", LINES[2]]) + (newline if trailing else "")
    (tmp_path / "a.txt").write_bytes(body.encode())
    assert texts_and_ids(load(tmp_path, "a.txt", "lines")) == [
        ("The cat sat.", "a.txt:1"),
        ("  Dogs bark at night.", "a.txt:3"),
        ("Zwölf Boxkämpfer", "a.txt:5"),
    ]


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("trailing", [True, False])
def test_paragraphs_split_at_blank_lines(tmp_path, newline, trailing):
    body = newline.join(["First line", "second line", "", "  ", "Next para", "", "", "Last"])
    (tmp_path / "p.txt").write_bytes((body + (newline if trailing else "")).encode())
    assert texts_and_ids(load(tmp_path, "p.txt", "paragraphs")) == [
        ("First line\nsecond line", "p.txt:1"),
        ("Next para", "p.txt:2"),
        ("Last", "p.txt:3"),
    ]


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_paragraphs_split_at_a_custom_separator(tmp_path, newline):
    body = newline.join(["one", "still one", "---", "two", "", "still two", "---", "", "---", "three", ""])
    (tmp_path / "p.txt").write_bytes(body.encode())
    assert texts_and_ids(load(tmp_path, "p.txt", "paragraphs", separator="\n---\n")) == [
        ("one\nstill one", "p.txt:1"),
        ("two\n\nstill two", "p.txt:2"),
        ("three", "p.txt:3"),
    ]


def test_text_is_one_document_per_file_with_crlf_normalised_and_bom_dropped(tmp_path):
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfHello\r\nworld\r\n")
    assert texts_and_ids(load(tmp_path, "bom.txt", "text")) == [("Hello\nworld\n", "bom.txt")]


def test_bom_is_dropped_from_the_first_line(tmp_path):
    (tmp_path / "bom.txt").write_bytes("\ufeffFirst\nSecond\n".encode())
    assert [doc["text"] for doc in load(tmp_path, "bom.txt", "lines")] == ["First", "Second"]


def test_lines_are_streamed_across_chunk_boundaries(tmp_path, monkeypatch):
    from llamabench.tasks import text_readers

    monkeypatch.setattr(text_readers, "_CHUNK_CHARS", 3)  # "\r\n" and lines straddle chunk ends
    (tmp_path / "a.txt").write_bytes(b"abcd\r\nef\r\n\r\nghijklm\rn")
    assert [doc["text"] for doc in load(tmp_path, "a.txt", "lines")] == ["abcd", "ef", "ghijklm", "n"]


def test_folder_gives_every_file_in_sorted_path_order_with_relative_doc_ids(tmp_path):
    books = tmp_path / "books"
    (books / "sub").mkdir(parents=True)
    (books / "b.txt").write_text("B1\nB2\n")
    (books / "a.txt").write_text("A1\n")
    (books / "sub" / "c.txt").write_text("\n\nC3")
    (books / "empty.txt").write_text("")
    assert texts_and_ids(load(tmp_path, "books", "lines")) == [
        ("A1", "books/a.txt:1"),
        ("B1", "books/b.txt:1"),
        ("B2", "books/b.txt:2"),
        ("C3", "books/sub/c.txt:3"),
    ]
    assert load(tmp_path, "books/", "text")[0] == {"text": "A1\n", "doc_id": "books/a.txt", "path": "books/a.txt"}


def test_glob_picks_matching_files_in_sorted_order(tmp_path):
    (tmp_path / "docs").mkdir()
    for name, text in [("z.txt", "last"), ("m.txt", "middle"), ("notes.md", "not matched"), ("a.txt", "first")]:
        (tmp_path / "docs" / name).write_text(text)
    assert texts_and_ids(load(tmp_path, "docs/*.txt", "text")) == [
        ("first", "docs/a.txt"),
        ("middle", "docs/m.txt"),
        ("last", "docs/z.txt"),
    ]


@pytest.mark.parametrize("content", [b"PK\x03\x04\x00\x00binary", b"caf\xe9 au lait\n"])
def test_folder_with_a_binary_file_is_one_clear_error_naming_it(tmp_path, content):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("fine\n")
    (tmp_path / "docs" / "image.bin").write_bytes(content)
    with pytest.raises(LlamabenchError) as error:
        load(tmp_path, "docs", "lines")
    message = str(error.value)
    assert len(message.splitlines()) == 1
    assert "image.bin is not a UTF-8 text file" in message and "convert it to UTF-8" in message


def test_empty_files_give_no_documents_and_an_empty_task_is_an_error_naming_it(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "empty.txt").write_text("")
    (tmp_path / "docs" / "blank.txt").write_text("\n \r\n")
    for text_format in ("text", "lines", "paragraphs"):
        with pytest.raises(LlamabenchError, match="task my_task: docs holds no documents"):
            load(tmp_path, "docs", text_format)


def test_missing_path_and_empty_glob_are_errors(tmp_path):
    with pytest.raises(LlamabenchError, match="not found"):
        load(tmp_path, "nope.txt", "text")
    with pytest.raises(LlamabenchError, match=r"nope/\*.txt matches no files"):
        load(tmp_path, "nope/*.txt", "text")


@pytest.fixture
def outside(tmp_path):
    """A data dir and, beside it, a file outside it."""
    (tmp_path / "data" / "sub").mkdir(parents=True)
    (tmp_path / "secret.txt").write_text("outside the data dir\n")
    return tmp_path


@pytest.mark.parametrize("local", ["ABSOLUTE", "../secret.txt", "../*.txt", "sub/../../secret.txt", "link.txt"])
def test_local_data_may_not_leave_the_data_dir(outside, local):
    data = outside / "data"
    (data / "link.txt").symlink_to(outside / "secret.txt")
    local = str(outside / "secret.txt") if local == "ABSOLUTE" else local
    for text_format in ("text", "jsonl"):
        if text_format == "jsonl" and "*" in local:
            continue
        with pytest.raises(LlamabenchError) as error:
            load(data, local, text_format)
        message = str(error.value)
        assert message.startswith(f"task my_task: dataset.local {local} ")
        assert "--allow-data-outside" in message and len(message.splitlines()) == 1
    assert [doc["text"] for doc in load(data, local, "lines", allow_outside=True)] == ["outside the data dir"]


def test_paths_inside_the_data_dir_pass_even_through_dot_dot_and_inner_symlinks(outside):
    data = outside / "data"
    (data / "a.txt").write_text("inside\n")
    (data / "alias.txt").symlink_to(data / "a.txt")
    assert [doc["text"] for doc in load(data, "sub/../a.txt", "lines")] == ["inside"]
    assert [doc["text"] for doc in load(data, "alias.txt", "lines")] == ["inside"]


def test_jsonl_task_still_reads_its_file_inside_the_data_dir(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "x"}\n')
    assert load_documents(text_source("d.jsonl", "jsonl"), "t", tmp_path) == [{"text": "x"}]


def rolling_task(**overrides) -> dict:
    task = {
        "name": "held_out",
        "kind": "loglikelihood_rolling",
        "dataset": {"local": "books", "format": "lines"},
        "prompt": "{{ text }}",
        "metrics": ["word_perplexity"],
    }
    return {**task, **overrides}


@pytest.mark.parametrize(
    ("kind", "keys"),
    [
        ("generate", {"target": "{{ text }}", "metrics": ["exact_match"]}),
        ("multiple_choice", {"choices": ["a"], "label": "0", "metrics": ["acc"]}),
    ],
)
def test_text_formats_are_refused_for_other_kinds_at_parse_time(kind, keys):
    from llamabench.tasks.task_file import parse_task

    raw = rolling_task(kind=kind, **keys)  # each kind's own keys only: the others are refused for the kind
    with pytest.raises(LlamabenchError) as error:
        parse_task(raw, "tasks/held_out.yaml")
    message = str(error.value)
    assert message.startswith("tasks/held_out.yaml: dataset.format 'lines' is for kind loglikelihood_rolling only")
    assert len(message.splitlines()) == 1


@pytest.mark.parametrize(
    "dataset",
    [
        {"local": "a.txt", "format": "lines", "separator": "---"},
        {"local": "a.txt", "format": "paragraphs", "separator": ""},
        {"local": "a.txt", "format": "paragraphs", "separator": 3},
    ],
)
def test_separator_needs_paragraphs_and_a_non_empty_string(dataset):
    from llamabench.tasks.task_file import parse_task

    with pytest.raises(LlamabenchError, match="t.yaml: dataset.separator must be a non-empty string"):
        parse_task(rolling_task(dataset=dataset), "t.yaml")


def test_unknown_word_rule_is_refused():
    from llamabench.tasks.task_file import parse_task

    with pytest.raises(LlamabenchError, match="t.yaml: 'word_rule' must be one of lm_eval, whitespace_tokens"):
        parse_task(rolling_task(word_rule="spaces"), "t.yaml")


def test_text_task_doc_ids_default_to_the_source_and_word_rule_changes_the_hash():
    from llamabench.tasks.task_file import parse_task

    lm_eval = parse_task(rolling_task(), "t.yaml")
    whitespace = parse_task(rolling_task(word_rule="whitespace_tokens"), "t.yaml")
    assert lm_eval.doc_id == "{{ doc_id }}"
    assert lm_eval.word_rule == "lm_eval" and whitespace.word_rule == "whitespace_tokens"
    assert lm_eval.config_hash != whitespace.config_hash
    separated = parse_task(rolling_task(dataset={"local": "books", "format": "paragraphs", "separator": "\n--\n"}), "t")
    blank_lines = parse_task(rolling_task(dataset={"local": "books", "format": "paragraphs"}), "t")
    assert separated.config_hash != blank_lines.config_hash


def test_builtin_task_hashes_are_unchanged_by_the_new_settings():
    """Values from before word_rule and separator existed: stored baselines stay comparable."""
    from llamabench.tasks import registry

    known = registry.discover(registry.task_dirs())
    hashes = {name: known[name].config_hash for name in ("wikitext2", "squad", "wmt22-de-en", "cnndm", "arc_easy")}
    assert hashes == {
        "wikitext2": "f839aa2c7955",
        "squad": "8417b9308c0c",  # its target reads the hub's mapping too since the trust fixes
        "wmt22-de-en": "33e8f6bb44be",
        "cnndm": "a04873323c6e",  # its hub source went: the hub's full test set is not this 100-article sample
        "arc_easy": "8da68b45a4d2",
    }


def test_word_rules_on_the_readme_example():
    from llamabench.metrics.perplexity import WORD_RULES

    text = "  The cat sat.\n"  # re.split gives ['', 'The', 'cat', 'sat.', '']
    assert WORD_RULES["lm_eval"](text) == 5
    assert WORD_RULES["whitespace_tokens"](text) == 3
    assert len(text.encode("utf-8")) == 15


@pytest.fixture
def cli_workspace(tmp_path, monkeypatch):
    """A tiny checkpoint, held-out text files, the same documents as JSON lines with a task over them."""
    from conftest import save_tiny_model

    save_tiny_model(tmp_path / "tiny")
    (tmp_path / "data" / "held_out").mkdir(parents=True)
    (tmp_path / "data" / "held_out" / "b.txt").write_bytes(b"  The cat sat.\r\n\r\nDogs bark at night.")
    (tmp_path / "data" / "held_out" / "a.txt").write_bytes("\ufeffZwölf Boxkämpfer\n".encode())
    docs = ["Zwölf Boxkämpfer", "  The cat sat.", "Dogs bark at night."]  # sorted files, then lines
    (tmp_path / "data" / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "ref.yaml").write_text(
        "name: ref\nkind: loglikelihood_rolling\ndataset: {local: docs.jsonl}\nprompt: '{{ text }}'\n"
        "metrics: [word_perplexity, byte_perplexity, bits_per_byte, token_perplexity]\n"
    )
    monkeypatch.chdir(tmp_path / "data")
    monkeypatch.setenv("LLAMABENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path


def run_cli(workspace, *args):
    import pandas as pd

    from llamabench.cli.app import main

    out = workspace / "out"
    argv = ["run", "--model", str(workspace / "tiny"), "--device", "cpu", "--no-cache", "--output-dir", str(out)]
    assert main([*argv, *args]) == 0
    (folder,) = [path for path in out.iterdir() if path.is_dir()]
    results = pd.read_csv(folder / "results.csv", keep_default_na=False)
    return results.set_index(["task", "metric"]), folder


def test_cli_text_lines_equal_a_jsonl_task_over_the_same_documents(cli_workspace):
    import pandas as pd

    args = ["--text", "held_out", "--text-format", "lines", "--tasks", "ref", "--tasks-dir"]
    results, folder = run_cli(cli_workspace, *args, str(cli_workspace / "tasks"), "--data-dir", ".")
    for metric in ["word_perplexity", "byte_perplexity", "bits_per_byte", "token_perplexity"]:
        text_row, ref_row = results.loc[("text:held_out", metric)], results.loc[("ref", metric)]
        assert text_row.value == pytest.approx(ref_row.value, rel=1e-9)
        assert text_row.n == ref_row.n == 3
    assert results.loc[("text:held_out", "word_perplexity")].signature == "words:lm_eval"
    stems = json.loads((folder / "manifest.json").read_text())["sample_files"]
    samples = pd.read_parquet(folder / f"{stems['text:held_out']}.parquet")
    assert samples.doc_id.tolist() == ["held_out/a.txt:1", "held_out/b.txt:1", "held_out/b.txt:3"]
    # lm-eval words by hand: "Zwölf Boxkämpfer" 2; "  The cat sat." ['', 'The', 'cat', 'sat.'] 4 (the line ends
    # at "sat.", so no empty word after it); "Dogs bark at night." 4.
    total = samples.loglikelihood.sum()
    assert results.loc[("text:held_out", "word_perplexity")].value == pytest.approx(math.exp(-total / 10), rel=1e-9)


def test_cli_text_whitespace_word_rule_is_in_the_signature_and_the_count(cli_workspace):
    import pandas as pd

    results, folder = run_cli(cli_workspace, "--text", "held_out/b.txt", "--word-rule", "whitespace_tokens")
    row = results.loc[("text:held_out_b.txt", "word_perplexity")]
    assert row.signature == "words:whitespace_tokens" and row.n == 1
    stems = json.loads((folder / "manifest.json").read_text())["sample_files"]
    samples = pd.read_parquet(folder / f"{stems['text:held_out_b.txt']}.parquet")
    assert samples.doc_id.tolist() == ["held_out/b.txt"]
    assert samples.prompt.tolist() == ["  The cat sat.\n\nDogs bark at night."]  # CRLF read as LF
    # whitespace tokens by hand: The cat sat. Dogs bark at night. = 7
    assert row.value == pytest.approx(math.exp(-samples.loglikelihood.iloc[0] / 7), rel=1e-9)


def cli_error(capsys, *args) -> str:
    from llamabench.cli.app import main

    capsys.readouterr()  # drop what fixtures printed
    assert main(["run", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("llamabench: error: ")
    return err


def test_cli_needs_tasks_or_text(capsys):
    assert "nothing to run: pass --tasks NAMES, or --text PATH" in cli_error(capsys)
    assert "--text-format and --word-rule apply to --text tasks" in cli_error(
        capsys, "--tasks", "ppl", "--word-rule", "lm_eval"
    )


def test_cli_binary_file_in_text_glob_fails_before_the_model_loads(capsys, tmp_path):
    (tmp_path / "a.txt").write_bytes(b"\x00\x01\x02")
    err = cli_error(capsys, "--text", str(tmp_path / "*.txt"), "--model", str(tmp_path / "no-such-model"))
    assert "a.txt is not a UTF-8 text file (it holds NUL bytes)" in err


def test_cli_task_data_outside_the_data_dir_needs_the_flag(capsys, cli_workspace):
    (cli_workspace / "tasks" / "ref.yaml").write_text(
        (cli_workspace / "tasks" / "ref.yaml").read_text().replace("docs.jsonl", "../data/docs.jsonl")
    )
    (cli_workspace / "elsewhere").mkdir()
    args = [
        "--tasks",
        "ref",
        "--tasks-dir",
        str(cli_workspace / "tasks"),
        "--data-dir",
        str(cli_workspace / "elsewhere"),
    ]
    err = cli_error(capsys, *args, "--model", str(cli_workspace / "no-such-model"))
    assert "task ref: dataset.local ../data/docs.jsonl leads outside --data-dir" in err
    results, _ = run_cli(cli_workspace, *args, "--allow-data-outside")
    assert results.loc[("ref", "word_perplexity")].n == 3


SMOL_PARAGRAPHS = [
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France.\nIt is named after "
    "the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889.",
    "Photosynthesis is the process by which green plants use sunlight, water and carbon dioxide to make sugar.",
    "  The cat sat on the mat, and the dog slept by the fire.  ",
]


def test_smollm2_text_paragraphs_equal_a_jsonl_task_over_the_same_documents(smollm2, tmp_path):
    """One real-model check: --text (paragraphs, CRLF file) scores exactly what a hand-written JSONL task does."""
    from llamabench.backends.hf.backend import HFBackend
    from llamabench.config import RunConfig
    from llamabench.pipeline import Evaluation

    (tmp_path / "held_out.txt").write_bytes("\n\n".join(SMOL_PARAGRAPHS).replace("\n", "\r\n").encode())
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "docs.jsonl").write_text("".join(json.dumps({"text": p}) + "\n" for p in SMOL_PARAGRAPHS))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "ref.yaml").write_text(
        "name: ref\nkind: loglikelihood_rolling\ndataset: {local: docs.jsonl}\nprompt: '{{ text }}'\n"
        "metrics: [word_perplexity, byte_perplexity, bits_per_byte, token_perplexity]\n"
    )
    config = RunConfig(
        tasks=["ref"],
        tasks_dir=[tmp_path / "tasks"],
        data_dir=tmp_path / "data",
        text=[str(tmp_path / "held_out.txt")],
        text_format="paragraphs",
        bootstrap_iters=0,
    )
    backend = HFBackend(smollm2.model, smollm2.tokenizer, model_id="smollm2", max_length=256, progress=False)
    run = Evaluation.prepare(config).run_backend(backend)
    text_task = "text:" + safe_name(str(tmp_path / "held_out.txt"))
    assert run.samples[text_task].prompt.tolist() == SMOL_PARAGRAPHS
    for metric in ["word_perplexity", "byte_perplexity", "bits_per_byte", "token_perplexity"]:
        assert run.value(text_task, metric) == pytest.approx(run.value("ref", metric), rel=1e-9), metric
    assert 1 < run.value("ref", "word_perplexity") < 1000  # a trained model, not noise


def test_two_text_paths_with_the_same_task_name_are_refused(tmp_path, monkeypatch):
    from llamabench.config import RunConfig
    from llamabench.native import prepare_tasks

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b.txt").write_text("one\n")
    (tmp_path / "a_b.txt").write_text("two\n")
    with pytest.raises(LlamabenchError, match=r"--text a/b.txt and --text a_b.txt both become task text:a_b.txt"):
        prepare_tasks(RunConfig(tasks=[], text=["a/b.txt", "a_b.txt"]))


def test_yaml_task_with_paragraphs_separator_and_word_rule_end_to_end(tiny_backend, tmp_path):
    from llamabench.config import RunConfig
    from llamabench.pipeline import Evaluation

    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "books.yaml").write_text(
        "name: books\nkind: loglikelihood_rolling\n"
        'dataset: {local: "books/*.txt", format: paragraphs, separator: "\\n%%\\n"}\n'
        "prompt: '{{ text }}'\nmetrics: [word_perplexity, byte_perplexity]\nword_rule: whitespace_tokens\n"
    )
    (tmp_path / "books").mkdir()
    (tmp_path / "books" / "one.txt").write_bytes(b"A  tale\r\n%%\r\n of two\r\n\r\ncities\r\n%%\r\n")
    config = RunConfig(tasks=["books"], tasks_dir=[tmp_path / "tasks"], data_dir=tmp_path)
    run = Evaluation.prepare(config).run_backend(tiny_backend())
    samples = run.samples["books"]
    assert samples.doc_id.tolist() == ["books/one.txt:1", "books/one.txt:2"]
    assert samples.prompt.tolist() == ["A  tale", " of two\n\ncities"]
    total = samples.loglikelihood.sum()
    row = run.results.set_index("metric").loc["word_perplexity"]
    assert row.signature == "words:whitespace_tokens"
    assert row.value == pytest.approx(math.exp(-total / 5), rel=1e-9)  # A, tale, of, two, cities
    bytes_row = run.results.set_index("metric").loc["byte_perplexity"]
    assert bytes_row.value == pytest.approx(math.exp(-total / (7 + 15)), rel=1e-9)  # "A  tale", " of two\n\ncities"
