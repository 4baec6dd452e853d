"""Where a task's documents come from: every source confined to --data-dir, paths read as users mean them
(literal names before glob patterns, one folder named several ways), byte-order marks, lone surrogates,
duplicate document ids, and a missing --text path."""

import json
import os
from pathlib import Path

import pytest
from builders import cli_error, task_dict

from llamabench.errors import LlamabenchError
from llamabench.tasks.data import load_documents
from llamabench.tasks.spec import DatasetSource


def load(data_dir, local, text_format, **kwargs) -> list[dict]:
    return load_documents(DatasetSource(local=local, format=text_format), "my_task", data_dir, **kwargs)


# 1. Every data source is confined --------------------------------------------------------------------------------


@pytest.fixture
def secret_dataset(tmp_path) -> Path:
    """A local folder the `datasets` library would load as a dataset, outside the data dir."""
    folder = tmp_path / "secret_ds"
    folder.mkdir()
    (folder / "test.jsonl").write_text('{"text": "secret"}\n')
    (tmp_path / "data").mkdir()
    return folder


def test_a_hub_path_naming_a_local_folder_outside_the_data_dir_is_refused(secret_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for path in [str(secret_dataset), "secret_ds", "./secret_ds", "data/../secret_ds"]:
        source = DatasetSource(hub_path=path, hub_split="test")
        with pytest.raises(LlamabenchError) as info:
            load_documents(source, "my_task", tmp_path / "data")
        message = str(info.value)
        assert "dataset.hub.path" in message and "--data-dir" in message and "\n" not in message, message
    # The flag that lifts the data-dir rule lifts it here too.
    docs = load_documents(DatasetSource(hub_path=str(secret_dataset)), "my_task", tmp_path / "data", allow_outside=True)
    assert [doc["text"] for doc in docs] == ["secret"]


def test_a_hub_path_naming_a_local_folder_is_refused_without_a_data_dir(secret_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LlamabenchError, match="dataset.hub.path"):
        load_documents(DatasetSource(hub_path="secret_ds"), "my_task", None)


def test_cli_hub_path_leading_outside_fails_before_the_model_loads(capsys, secret_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "t.yaml").write_text(
        f"name: t\nkind: loglikelihood_rolling\ndataset: {{hub: {{path: {secret_dataset}}}}}\n"
        "prompt: '{{ text }}'\nmetrics: [word_perplexity]\n"
    )
    err = cli_error(
        capsys, "run", "--tasks", "t", "--tasks-dir", "tasks", "--data-dir", "data", "--model", "no-such-model"
    )
    assert "task t: dataset.hub.path" in err and "no-such-model" not in err


# 2. Paths read as users mean them ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a[1].txt", "*.txt", "b?.txt"])
def test_a_file_whose_name_looks_like_a_pattern_is_read_as_that_file(tmp_path, name):
    (tmp_path / name).write_text("the literal file\n")
    (tmp_path / "a1.txt").write_text("a pattern match\n")
    (tmp_path / "bx.txt").write_text("another pattern match\n")
    assert [doc["text"] for doc in load(tmp_path, name, "lines")] == ["the literal file"]


def test_a_pattern_is_a_pattern_when_no_file_has_its_name(tmp_path):
    (tmp_path / "a1.txt").write_text("one\n")
    (tmp_path / "a2.txt").write_text("two\n")
    assert [doc["text"] for doc in load(tmp_path, "a[12].txt", "lines")] == ["one", "two"]


@pytest.fixture
def books(tmp_path, monkeypatch) -> Path:
    (tmp_path / "books" / "sub").mkdir(parents=True)
    (tmp_path / "books" / "a.txt").write_text("alpha\nbeta\n")
    (tmp_path / "books" / "sub" / "b.txt").write_text("gamma\n")
    (tmp_path / "link").symlink_to(tmp_path / "books")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_one_folder_named_several_ways_gives_the_same_documents(books):
    expected = [("alpha", "books/a.txt:1"), ("beta", "books/a.txt:2"), ("gamma", "books/sub/b.txt:1")]
    for local in ["books", "books/", "./books", "books//", "books/./", "sub/../books", str(books / "books"), "link"]:
        docs = load(books, local, "lines", allow_outside=True)
        assert [(doc["text"], doc["doc_id"]) for doc in docs] == expected, local


def test_one_text_folder_named_several_ways_is_one_task_identity(books):
    from llamabench.tasks.text_task import text_task

    names = {text_task(local).name for local in ["books", "books/", "./books", "books//", str(books / "books"), "link"]}
    assert names == {"text:books"}
    hashes = {text_task(local).config_hash for local in ["books", "books/", "./books", "books//"]}
    assert len(hashes) == 1


def test_a_task_yaml_naming_its_folder_several_ways_has_one_task_hash():
    from llamabench.tasks.task_file import parse_task

    def spec(local):
        return parse_task(
            {
                "name": "t",
                "kind": "loglikelihood_rolling",
                "dataset": {"local": local, "format": "lines"},
                "prompt": "{{ text }}",
                "metrics": ["word_perplexity"],
            },
            "t.yaml",
        )

    assert len({spec(local).config_hash for local in ["books", "books/", "./books", "books//", "books/./"]}) == 1


def test_a_file_in_a_folder_and_a_symlink_to_it_are_read_once(tmp_path):
    (tmp_path / "a.txt").write_text("only once\n")
    (tmp_path / "z.txt").symlink_to(tmp_path / "a.txt")
    assert [doc["text"] for doc in load(tmp_path, ".", "lines")] == ["only once"]


BOM = "\ufeff"


@pytest.mark.parametrize("text_format", ["lines", "paragraphs"])
def test_a_byte_order_mark_on_any_line_is_not_part_of_a_document(tmp_path, text_format):
    # Two files joined with `cat`: the second one's BOM now starts a line in the middle.
    (tmp_path / "a.txt").write_text(f"{BOM}first\n\n{BOM}second\n", encoding="utf-8")
    docs = load(tmp_path, "a.txt", text_format)
    assert [doc["text"] for doc in docs] == ["first", "second"]


def test_a_byte_order_mark_at_the_start_of_jsonl_lines_and_json_files_is_dropped(tmp_path):
    (tmp_path / "d.jsonl").write_text(f'{BOM}{{"text": "a"}}\n{BOM}{{"text": "b"}}\n', encoding="utf-8")
    assert load(tmp_path, "d.jsonl", "jsonl") == [{"text": "a"}, {"text": "b"}]
    (tmp_path / "d.json").write_text(f'{BOM}[{{"text": "a"}}]', encoding="utf-8")
    assert load(tmp_path, "d.json", "json") == [{"text": "a"}]


def test_a_byte_order_mark_is_not_part_of_a_wikitext_article(tmp_path):
    (tmp_path / "w.raw").write_text(f"{BOM} = Alpha = \n \n Alpha is first . \n", encoding="utf-8")
    (page,) = load(tmp_path, "w.raw", "wikitext_documents")
    assert page["page"] == " = Alpha = \n \n Alpha is first . \n"


# 8. Lone surrogates ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_a_lone_surrogate_in_the_data_is_found_when_read_naming_file_document_and_field(tmp_path, fmt):
    rows = ['{"q": "fine", "a": "ok"}', '{"q": "fine", "a": {"text": ["x\\ud800"]}}']
    path = tmp_path / f"d.{fmt}"
    path.write_text("\n".join(rows) + "\n" if fmt == "jsonl" else "[" + ",".join(rows) + "]")
    with pytest.raises(LlamabenchError) as info:
        load(tmp_path, path.name, fmt)
    message = str(info.value)
    assert str(path) in message and "document 2" in message and "a.text" in message and "surrogate" in message


def test_cli_lone_surrogate_fails_before_the_model_loads(capsys, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "d.jsonl").write_text('{"text": "a"}\n{"text": "b\\udfff"}\n')
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "t.yaml").write_text(
        "name: t\nkind: loglikelihood_rolling\ndataset: {local: d.jsonl}\nprompt: '{{ text }}'\n"
        "metrics: [word_perplexity]\n"
    )
    args = ["run", "--tasks", "t", "--tasks-dir", str(tmp_path / "tasks"), "--data-dir", str(tmp_path / "data")]
    err = cli_error(capsys, *args, "--model", str(tmp_path / "no-such-model"))
    assert "d.jsonl" in err and "document 2" in err and "surrogate" in err


# 5. Duplicate document ids ---------------------------------------------------------------------------------------


def test_two_documents_with_one_doc_id_are_refused_naming_the_task_and_the_id():
    from llamabench.tasks.build import build_requests
    from llamabench.tasks.task_file import parse_task

    keys = {"doc_id": "{{ id }}", "prompt": "{{ q }}", "target": "{{ a }}"}
    spec = parse_task(task_dict("qa", "generate", "d.jsonl", ["exact_match"], **keys), "qa.yaml")
    docs = [{"id": "x1", "q": "a", "a": "b"}, {"id": "x2", "q": "c", "a": "d"}, {"id": "x1", "q": "e", "a": "f"}]
    with pytest.raises(LlamabenchError) as info:
        build_requests(spec, docs)
    assert "task qa" in str(info.value) and "'x1'" in str(info.value) and "d.jsonl" in str(info.value)


# 9. A missing --text path ----------------------------------------------------------------------------------------


def test_a_missing_text_path_names_the_text_flag_not_the_data_dir(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for path in [str(tmp_path / "missing"), "missing.txt", "nothing/*.txt"]:
        err = cli_error(capsys, "run", "--text", path, "--model", str(tmp_path / "no-such-model"))
        assert f"--text {path}" in err and "--data-dir" not in err, err


def test_data_files_are_still_read_in_sorted_order(tmp_path):
    for name in ["b.txt", "a.txt", os.path.join("c", "d.txt")]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(name + "\n")
    assert [doc["doc_id"] for doc in load(tmp_path, ".", "lines")] == ["a.txt:1", "b.txt:1", "c/d.txt:1"]
    assert json.dumps([doc["text"] for doc in load(tmp_path, "*.txt", "lines")]) == '["a.txt", "b.txt"]'


@pytest.mark.parametrize("reader", ["json", "csv", "text", "parquet"])
def test_a_hub_path_naming_a_datasets_file_reader_is_refused(tmp_path, monkeypatch, reader):
    """`load_dataset("json", split="test")` with no data files reads the working directory's `test.jsonl`."""
    (tmp_path / "cwd").mkdir()
    (tmp_path / "cwd" / "test.jsonl").write_text('{"text": "secret from the working directory"}\n')
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    with pytest.raises(LlamabenchError) as info:
        load_documents(DatasetSource(hub_path=reader), "my_task", tmp_path / "data")
    assert f"dataset.hub.path {reader}" in str(info.value) and "--data-dir" in str(info.value)
