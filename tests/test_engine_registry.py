"""The engine registry (``backends/registry.py``): which engine runs a model, and each engine refusing the flags it
does not read, before any task is read or any model loads."""

import pytest

from llamabench.backends.registry import ENGINES, check_engines, engine_of
from llamabench.config import RunConfig
from llamabench.errors import LlamabenchError


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"model": ["ckpt"], "served_model": "m"}, "--served-model applies to --engine server only"),
        ({"model": ["ckpt"], "request_timeout": 30.0}, "--request-timeout applies to --engine server only"),
        ({"tensor_parallel_size": 2}, "--tensor-parallel-size applies to --engine vllm only"),
        ({"engine": "vllm", "device": "cpu"}, "--device applies to --engine hf only"),
        ({"engine": "vllm", "kv_cache": "static"}, "--kv-cache applies to --engine hf only"),
        ({"model": ["http://127.0.0.1:1/v1"], "dtype": "float32"}, "--dtype applies to --engine hf, vllm only"),
        ({"engine": "server"}, "--engine server runs a served model: pass --model http://HOST:PORT/v1"),
        ({"engine": "sglang"}, "--engine sglang is not one of hf, vllm, server"),
    ],
)
def test_an_engine_refuses_flags_it_does_not_read_in_one_line(flags, message):
    with pytest.raises(LlamabenchError, match=message):
        check_engines(RunConfig(tasks=["ppl"], **flags).validate())


def test_a_url_implies_the_server_engine_and_a_checkpoint_runs_on_engine():
    config = RunConfig(tasks=["ppl"], engine="vllm").validate()
    assert engine_of(config, "http://127.0.0.1:8000/v1").name == "server"
    assert engine_of(config, "out/checkpoint-5").name == "vllm"
    assert engine_of(RunConfig(tasks=["ppl"]).validate(), None).name == "hf"


def test_each_engine_reads_only_run_config_fields():
    names = {item for item in RunConfig.__dataclass_fields__}
    for engine in ENGINES.values():
        assert set(engine.flags()) <= names, engine.name


def test_evaluate_model_refuses_an_engine_it_cannot_honour():
    from llamabench.training.in_memory import prepare_in_memory

    with pytest.raises(LlamabenchError, match="evaluate_model: engine vllm: a model in memory runs on the transf"):
        prepare_in_memory(["ppl"], {"engine": "vllm"})


def test_runs_on_different_engines_are_not_comparable_and_older_runs_are_not_compared_on_it():
    """docs/reproducibility.md's policy: the engine is a setting (check, merge and watch read Settings)."""
    from llamabench.records.settings import Settings

    hf = Settings.from_record({"task_hash": "t", "engine": "hf"})
    assert hf.differences(Settings.from_record({"task_hash": "t", "engine": "vllm"})) == ["engine hf vs vllm"]
    older = Settings.from_record({"task_hash": "t"})  # written before the engine was recorded
    assert hf.differences(older) == []
