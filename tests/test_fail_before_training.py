"""Bad settings of the Trainer callback and of evaluate_model fail at once, in one line, before any training step
or model forward: an unknown task, a task file that does not parse, an unknown metric, a bad number, an unknown
setting, an unwritable output folder, conflicting cache flags."""

import pytest
import torch
from builders import GOOD_TASK
from conftest import byte_tokenizer, tiny_llama

import llamabench
from llamabench.errors import LlamabenchError
from llamabench.training.trainer_callback import LlamabenchCallback


@pytest.fixture
def tasks_dir(tmp_path):
    """A task folder with one good task (tiny_qa, its data in data/) and the place for a bad one."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "data" / "tiny").mkdir(parents=True)
    (tmp_path / "tasks" / "tiny_qa.yaml").write_text(GOOD_TASK)
    (tmp_path / "data" / "tiny" / "qa.jsonl").write_text('{"question": "2+2?", "answer": "4"}\n')
    return tmp_path


def bad_settings(workspace) -> dict[str, tuple[list[str], dict, str]]:
    """Case name: (tasks, settings, words the one-line error must hold)."""
    common = {"data_dir": workspace / "data", "tasks_dir": [workspace / "tasks"]}
    not_a_folder = workspace / "a-file"  # a folder under a file cannot be made, not even by root
    not_a_folder.write_text("")
    (workspace / "tasks-bad-yaml").mkdir(exist_ok=True)
    (workspace / "tasks-bad-yaml" / "broken.yaml").write_text("name: broken\nkind: [generate\n")
    (workspace / "tasks-bad-metric").mkdir(exist_ok=True)
    bad_metric = GOOD_TASK.replace("name: tiny_qa", "name: tiny_bad").replace("[exact_match]", "[exact_matsh]")
    (workspace / "tasks-bad-metric" / "tiny_bad.yaml").write_text(bad_metric)
    return {
        "unknown task": (["no_such_task"], common, "no_such_task"),
        "unparsable task file": (
            ["broken"],
            {**common, "tasks_dir": [workspace / "tasks-bad-yaml"]},
            "broken.yaml",
        ),
        "unknown metric": (["tiny_bad"], {**common, "tasks_dir": [workspace / "tasks-bad-metric"]}, "exact_matsh"),
        "limit 0": (["tiny_qa"], {**common, "limit": 0}, "--limit 0"),
        "negative few-shot": (["tiny_qa"], {**common, "num_fewshot": -1}, "--num-fewshot -1"),
        "unknown setting": (["tiny_qa"], {**common, "limmit": 5}, "limmit"),
        "unwritable output": (["tiny_qa"], {**common, "output_dir": not_a_folder / "runs"}, "a-file"),
        "conflicting cache flags": (
            ["tiny_qa"],
            {**common, "no_cache": True, "refresh": True},
            "--no-cache and --refresh conflict",
        ),
    }


CASES = [
    "unknown task",
    "unparsable task file",
    "unknown metric",
    "limit 0",
    "negative few-shot",
    "unknown setting",
    "unwritable output",
    "conflicting cache flags",
]


def no_forward(model: torch.nn.Module) -> torch.nn.Module:
    def forward(*args, **kwargs):
        raise AssertionError("the model ran before the settings were checked")

    model.forward = forward
    return model


@pytest.mark.parametrize("case", CASES)
def test_the_trainer_callback_refuses_bad_settings_when_it_is_made(case, tasks_dir):
    tasks, settings, words = bad_settings(tasks_dir)[case]
    with pytest.raises(LlamabenchError) as raised:
        LlamabenchCallback(object(), tasks, every=10, **settings)  # no trainer step has run: none may be needed
    message = str(raised.value)
    assert "\n" not in message and words in message, message


@pytest.mark.parametrize("case", CASES)
def test_evaluate_model_refuses_bad_settings_before_the_model_runs(case, tasks_dir):
    tasks, settings, words = bad_settings(tasks_dir)[case]
    with pytest.raises(LlamabenchError) as raised:
        llamabench.evaluate_model(no_forward(tiny_llama(0)), byte_tokenizer(), tasks, **settings)
    message = str(raised.value)
    assert "\n" not in message and words in message, message


def test_the_callback_refuses_a_step_count_below_one(tasks_dir):
    with pytest.raises(LlamabenchError, match="every=0"):
        LlamabenchCallback(object(), ["tiny_qa"], every=0, data_dir=tasks_dir / "data", tasks_dir=[tasks_dir / "tasks"])
