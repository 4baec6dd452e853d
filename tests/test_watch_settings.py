"""A restarted ``watch`` evaluates a checkpoint again whenever a setting that can change one of its numbers
changed, and skips it when none did.

The cases are keyed by the fields of :class:`llamabench.records.settings.Settings`: a field added to the type without a
case here fails ``test_every_setting_has_a_watch_case``.
"""

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from builders import GOOD_TASK
from conftest import NOTES, byte_tokenizer, save_tiny_model

from llamabench.cli.app import main
from llamabench.records.settings import Settings
from llamabench.records.store import RunStore

TASK = GOOD_TASK + "num_fewshot: 1\ngeneration: {max_new_tokens: 3}\n"
QA = [("2+2?", "4"), ("3+3?", "6"), ("4+4?", "8"), ("5+5?", "10")]
CHAT_TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"


@dataclass
class Workspace:
    root: Path  # the training folder the watch watches
    checkpoint: Path
    tmp: Path
    extra: list[str]

    def watch(self, *flags: str) -> int:
        argv = [
            *("watch", str(self.root), "--once", "--every", "0.01", "--tasks", "tiny_qa", "--no-cache"),
            *("--tasks-dir", str(self.tmp / "tasks"), "--data-dir", str(self.tmp / "data")),
            *("--text", str(self.tmp / "notes.txt"), "--text-format", "lines", "--batch-size", "1"),
            *("--device", "cpu", "--output-dir", str(self.tmp / "runs"), "--out", str(self.tmp / "reports")),
            *("--bootstrap-iters", "0"),
        ]
        return main(argv + [*self.extra, *flags])

    def runs(self) -> int:
        return len(RunStore.in_dir(self.tmp / "runs").manifests())


def _write_data(folder: Path, pairs) -> None:
    (folder / "tiny").mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"question": q, "answer": a}) for q, a in pairs]
    (folder / "tiny" / "qa.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tiny_qa.yaml").write_text(TASK)
    _write_data(tmp_path / "data", QA)
    (tmp_path / "notes.txt").write_text(NOTES)
    root = tmp_path / "train"
    checkpoint = save_tiny_model(root / "checkpoint-100")
    tokenizer = byte_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE  # so that a task may turn chat_template on
    tokenizer.save_pretrained(checkpoint)
    return Workspace(root, checkpoint, tmp_path, [])


def _edit_task(old: str, new: str) -> Callable[[Workspace], list[str]]:
    def change(ws: Workspace) -> list[str]:
        path = ws.tmp / "tasks" / "tiny_qa.yaml"
        path.write_text(path.read_text().replace(old, new))
        return []

    return change


def _other_data(ws: Workspace) -> list[str]:
    other = ws.tmp / "other-data"
    _write_data(other, [(q, a + "0") for q, a in QA])
    return ["--data-dir", str(other)]


def _generation_config(ws: Workspace) -> list[str]:
    path = ws.checkpoint / "generation_config.json"
    config = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**config, "repetition_penalty": 1.3}))
    return []


def _flags(*flags: str) -> Callable[[Workspace], list[str]]:
    return lambda ws: list(flags)


# Per setting, the ways a user changes it between two watches of the same training folder.
CASES: dict[str, dict[str, Callable[[Workspace], list[str]]]] = {
    "task_hash": {
        "yaml_prompt": _edit_task("Q: ", "Question: "),
        "text_format": _flags("--text-format", "paragraphs"),
        "word_rule": _flags("--word-rule", "whitespace_tokens"),
    },
    "num_fewshot": {"flag": _flags("--num-fewshot", "0"), "yaml": _edit_task("num_fewshot: 1", "num_fewshot: 2")},
    "limit": {"flag": _flags("--limit", "2")},
    "seed": {"flag": _flags("--seed", "7")},
    "max_length": {"flag": _flags("--max-length", "64")},
    "dtype": {"flag": _flags("--dtype", "bfloat16")},
    "chat_template": {"yaml": _edit_task("num_fewshot: 1", "num_fewshot: 1\nchat_template: true")},
    "trust_remote_code": {"flag": _flags("--trust-remote-code")},
    "generation_settings": {"checkpoint_generation_config": _generation_config},
    "kv_cache": {"flag": _flags("--kv-cache", "static")},
    "engine": {"flag": _flags("--engine", "other")},  # "other": the transformers engine registered under a new name
    "data_hash": {"data_dir": _other_data},
    "metric_versions": {"exact_match_version": None},  # patched in the test: a metric's definition changed
}


def _cases() -> list:
    names = Settings.names()
    return [
        pytest.param(name, variant, id=f"{name}-{variant}")
        for name in names
        for variant in CASES.get(name, {"missing": None})
    ]


def test_every_setting_has_a_watch_case():
    assert sorted(CASES) == sorted(Settings.names())


@pytest.mark.parametrize(("setting", "variant"), _cases())
def test_a_restarted_watch_evaluates_again_when_a_setting_changed(workspace, setting, variant, monkeypatch):
    assert setting in CASES, f"Settings field {setting} has no watch case: add one to CASES"
    assert workspace.watch() == 0
    assert workspace.runs() == 1
    if setting == "engine":
        from llamabench.backends import registry
        from llamabench.backends.hf.engine import HFEngine

        class OtherEngine(HFEngine):
            name = "other"

        monkeypatch.setitem(registry.ENGINES, "other", OtherEngine())
    if setting == "metric_versions":
        from llamabench.metrics import get_metric

        monkeypatch.setattr(type(get_metric("exact_match")), "version", "changed-for-this-test")
        flags = []
    else:
        flags = CASES[setting][variant](workspace)
    workspace.watch(*flags)
    assert workspace.runs() == 2, f"a watch with {setting} changed ({variant}) skipped the checkpoint"


@pytest.mark.parametrize("flags", [[], ["--batch-size", "2"]], ids=["unchanged", "batch_size"])
def test_a_restarted_watch_skips_a_checkpoint_evaluated_with_the_same_settings(workspace, flags):
    """``--batch-size`` changes how requests are grouped, which moves scores by float rounding only (it is no
    setting: check compares such runs, and the request cache serves one batch size's results to another)."""
    assert workspace.watch() == 0
    workspace.watch(*flags)
    assert workspace.runs() == 1


def test_a_restarted_watch_skips_nothing_after_a_checkpoint_was_rewritten(workspace):
    """Training that saves a step's folder again (other weights, same name) gets it evaluated again."""
    assert workspace.watch() == 0
    shutil.rmtree(workspace.checkpoint)
    save_tiny_model(workspace.checkpoint, seed=3)
    byte_tokenizer().save_pretrained(workspace.checkpoint)
    workspace.watch()
    assert workspace.runs() == 2


@pytest.mark.parametrize("change", ["task_yaml", "task_data"])
def test_a_restarted_watch_evaluates_again_when_an_lm_eval_task_or_its_data_changed(workspace, change):
    # lm-eval tasks' settings are recorded once lm-eval ran them; their definitions and documents are known before.
    import yaml
    from conftest import LM_EVAL_ROLLING_TASK

    folder = workspace.tmp / "lm_eval"
    folder.mkdir()
    data = workspace.tmp / "roll.jsonl"
    data.write_text("".join(json.dumps({"text": line}) + "\n" for line in NOTES.splitlines()))
    task = {
        "task": "tiny_roll",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test",
        **LM_EVAL_ROLLING_TASK,
    }
    (folder / "tiny_roll.yaml").write_text(yaml.safe_dump(task))
    workspace.extra = ["--tasks", "tiny_qa,lm_eval:tiny_roll", "--include-path", str(folder)]
    assert workspace.watch() == 0 and workspace.runs() == 1
    assert workspace.watch() == 0 and workspace.runs() == 1  # nothing changed: skipped
    if change == "task_yaml":
        (folder / "tiny_roll.yaml").write_text(yaml.safe_dump({**task, "doc_to_target": "{{text}} "}))
    else:
        data.write_text(data.read_text().replace("cat", "dog"))
    assert workspace.watch() == 0 and workspace.runs() == 2


def test_a_restarted_vllm_watch_of_generation_tasks_expects_the_kv_cache_vllm_decides():
    """vLLM decodes with its paged cache whatever --kv-cache says (it is refused with vllm): a stored vLLM run of a
    generating task records kv_cache vllm-paged, and the same watch restarted must see no difference."""
    from llamabench.backends.base import BackendInfo
    from llamabench.config import RunConfig
    from llamabench.records import settings as records

    config = RunConfig(tasks=["qa"], engine="vllm")
    stored_config = config.record("out/checkpoint-100")
    common = {"task_hash": "t", "num_fewshot": 0, "limit": None, "seed": 0, "chat_template": False}
    common |= {"data_hash": "d", "metric_versions": {"exact_match": "1"}}
    ran = BackendInfo("m", "f", max_length=2048, dtype="float32", kv_cache="vllm-paged", engine_name="vllm")
    stored = {"qa": records.make(**common, backend=ran)}
    requested = BackendInfo("", "", kv_cache=config.kv_cache, trust_remote_code=config.trust_remote_code)
    expected = {"qa": records.make(**common, backend=requested)}
    assert records.watch_differences(stored_config, stored, config, expected) == []
    assert records.watch_differences(stored_config, stored, RunConfig(tasks=["qa"]), expected) == ["engine vllm vs hf"]
