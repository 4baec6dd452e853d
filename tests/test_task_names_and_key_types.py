"""Task names and aliases are plain text and claimed once; task keys have one type each."""

import json
from pathlib import Path

import pytest
from builders import PPL_TASK, QA_TASK, spec_of

from llamabench.errors import LlamabenchError
from llamabench.tasks import registry


def write_task(folder: Path, name: str, aliases: list[str], file: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    task = PPL_TASK.replace("name: tiny_ppl", f"name: {name}\naliases: {json.dumps(aliases)}")
    (folder / f"{file or name}.yaml").write_text(task)


def test_an_alias_cannot_take_another_tasks_name_or_alias(tmp_path):
    write_task(tmp_path / "base", "corpus", ["ppl"])
    write_task(tmp_path / "user", "mine", ["ppl"])
    with pytest.raises(LlamabenchError, match="'ppl' is already the name or an alias of task corpus"):
        registry.discover([tmp_path / "base", tmp_path / "user"])
    write_task(tmp_path / "same", "one", ["x"])
    write_task(tmp_path / "same", "two", ["x"])
    with pytest.raises(LlamabenchError, match="'x' is defined twice"):
        registry.discover([tmp_path / "same"])


def test_a_task_replaced_by_name_takes_its_aliases_along(tmp_path):
    write_task(tmp_path / "base", "corpus", ["ppl"])
    write_task(tmp_path / "user", "corpus", ["mine"])
    known = registry.discover([tmp_path / "base", tmp_path / "user"])
    assert sorted(known) == ["corpus", "mine"]
    (spec,) = registry.resolve(["corpus", "mine"], [tmp_path / "base", tmp_path / "user"])
    assert spec.aliases == ("mine",)


@pytest.mark.parametrize("name", [12, ["a"], "lm_eval:x", "a/b", "", "x" * 101])
def test_task_names_must_be_plain_text(name):
    with pytest.raises(LlamabenchError, match="must be text of 1 to 100"):
        spec_of(PPL_TASK, name=name)


@pytest.mark.parametrize(
    ("generation", "named"),
    [
        ({"until": ""}, "generation.until"),
        ({"until": None}, "generation.until"),
        ({"until": ["\n", 7]}, "generation.until"),
        ({"greedy": "false"}, "generation.greedy"),
        ({"max_new_tokens": True}, "max_new_tokens"),
    ],
)
def test_generation_settings_are_typed(generation, named):
    with pytest.raises(LlamabenchError, match=named):
        spec_of(QA_TASK, generation=generation)


@pytest.mark.parametrize(
    ("key", "value"),
    [("chat_template", "false"), ("num_fewshot", True), ("stride", True), ("prompt", 12), ("target", [1, 2])],
)
def test_task_keys_are_typed(key, value):
    with pytest.raises(LlamabenchError, match=key):
        spec_of(QA_TASK, **{key: value})
