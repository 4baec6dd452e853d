"""The settings type: every field reaches every rule derived from it (the request cache key, check/report
comparability, watch's "already evaluated" rule), and records written before it existed read and compare as before.

The field lists come from the type, so a new setting is tested here without a new case, and a setting dropped
from one derivation fails the test of that derivation.
"""

import json
from dataclasses import fields, replace

import pytest

from llamabench.backends.base import BACKEND_SETTINGS, BackendInfo
from llamabench.config import RunConfig
from llamabench.records import comparability
from llamabench.records.settings import MODEL, RUN, Settings, requested, watch_differences

# A settings record as llamabench wrote it before the type existed (no "format", no "kv_cache"): copied from a
# manifest of a generating task written by the code this replaces.
OLD_RECORD = {
    "task_hash": "0123456789ab",
    "num_fewshot": 2,
    "limit": None,
    "seed": 0,
    "max_length": 2048,
    "dtype": "float32",
    "chat_template": False,
    "trust_remote_code": False,
    "generation_settings": {"repetition_penalty": 1.1},
    "data_hash": "fedcba9876543210",
    "metric_versions": {"exact_match": "1"},
    "no_effect": ["limit"],
}
NEW = Settings.from_record({**OLD_RECORD, "kv_cache": "dynamic", "engine": "hf"})
# For each setting, a value other than NEW's (of the type the setting holds).
OTHER = {
    "task_hash": "ffffffffffff",
    "num_fewshot": 0,
    "limit": 5,
    "seed": 1,
    "max_length": 1024,
    "dtype": "bfloat16",
    "chat_template": True,
    "trust_remote_code": True,
    "generation_settings": {"repetition_penalty": 1.3},
    "kv_cache": "static",
    "engine": "vllm",
    "data_hash": "0000000000000000",
    "metric_versions": {"exact_match": "2"},
}


def test_every_setting_has_another_value_here():
    assert sorted(OTHER) == sorted(Settings.names())


@pytest.mark.parametrize("name", Settings.names())
def test_changing_a_setting_makes_runs_incomparable(name):
    changed = replace(NEW, **{name: OTHER[name]}, no_effect=frozenset())
    plain = replace(NEW, no_effect=frozenset())
    assert comparability.differences(plain.record(), changed.record()) == [
        f"{name} {getattr(NEW, name)} vs {OTHER[name]}"
    ]


@pytest.mark.parametrize("name", Settings.names())
def test_changing_a_setting_makes_a_stored_run_another_evaluation_for_watch(name):
    """A setting decided before loading is compared as recorded; one the model decides, by what requested it
    (a flag) or, when no flag does, by the checkpoint's files (the watch compares their fingerprint)."""
    config = RunConfig(tasks=["t"], max_length=2048, dtype="float32")
    stored_config = {**json.loads(json.dumps(requested(config))), "tasks": ["t"]}
    decided = next(f.metadata for f in fields(Settings) if f.name == name)
    if decided["decided"] == RUN:
        changed = replace(NEW, **{name: OTHER[name]}, no_effect=frozenset())
        assert watch_differences(stored_config, {"t": replace(NEW, no_effect=frozenset())}, config, {"t": changed})
    else:
        assert decided["decided"] == MODEL
        # decided by the checkpoint (in its cache identity, so its files name it), or the engine itself
        assert name in (*BACKEND_SETTINGS, "engine")
        for key in decided["requested_by"]:
            other = replace(
                config,
                **{
                    key: {
                        "max_length": 1024,
                        "dtype": "bfloat16",
                        "device": "cuda",
                        "kv_cache": "static",
                        "engine": "vllm",
                    }[key]
                },
            )
            assert watch_differences(stored_config, {"t": NEW}, other, {"t": NEW}), key
    assert not watch_differences(stored_config, {"t": NEW}, config, {"t": NEW})


@pytest.mark.parametrize("name", BACKEND_SETTINGS)
def test_changing_a_backend_decided_setting_changes_the_request_cache_key(name):
    info = BackendInfo(model="m", fingerprint="f", **{n: getattr(NEW, n) for n in BACKEND_SETTINGS})
    assert replace(info, **{name: OTHER[name]}).cache_identity() != info.cache_identity()


def test_every_setting_the_backend_decides_is_in_its_record_and_cache_key():
    """The settings a task does not decide are the backend's: BackendInfo holds each (so the cache key does);
    the rest change the requests themselves (prompt text, few-shot draw, seed), which the cache key holds."""
    backend_fields = {f.name for f in fields(BackendInfo)}
    task_decided = {"task_hash", "num_fewshot", "limit", "seed", "chat_template", "data_hash", "metric_versions"}
    assert set(BACKEND_SETTINGS) <= backend_fields
    engine = {"engine"}  # the backend's too: BackendInfo.engine_name (its identity tuple is in the cache key)
    assert "engine_name" in backend_fields
    assert set(Settings.names()) == task_decided | set(BACKEND_SETTINGS) | engine
    assert {name for name in Settings.names(MODEL)} <= set(BACKEND_SETTINGS) | engine


def test_a_record_round_trips_through_its_serialised_form():
    assert Settings.from_record(json.loads(json.dumps(NEW.record()))) == NEW
    assert NEW.record()["format"] == 2 and NEW.record()["no_effect"] == ["limit"]


def test_an_old_record_reads_and_compares_as_it_did():
    """A setting added later (kv_cache) is not compared with a record that lacks it; every other one is."""
    assert comparability.differences(OLD_RECORD, NEW.record()) == []
    assert comparability.differences(OLD_RECORD, {**OLD_RECORD, "num_fewshot": 0}) == ["num_fewshot 2 vs 0"]
    both_static = {**OLD_RECORD, "kv_cache": "static"}
    assert comparability.differences(both_static, NEW.record()) == ["kv_cache static vs dynamic"]
    assert comparability.differences(None, OLD_RECORD) == [
        "settings not recorded (a run from before llamabench 0.2: re-run it)"
    ]


def test_a_setting_without_effect_in_both_runs_is_not_compared():
    first = {**OLD_RECORD, "limit": 10, "no_effect": ["limit"]}
    assert comparability.differences(first, {**OLD_RECORD, "limit": None}) == []
    assert comparability.differences({**first, "no_effect": []}, {**OLD_RECORD, "limit": None}) == ["limit 10 vs None"]
