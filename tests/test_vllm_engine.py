"""The vLLM engine (``--engine vllm``) against the transformers engine: two paths of our code, compared per
document on real data (WikiText-2, SQuAD, WMT22) with SmolLM2-135M in float32.

vLLM lives in its own environment (``bash install.sh vllm``: ``.venv-vllm``, or ``$LLAMABENCH_VLLM_PYTHON``), so
one ``llamabench run --engine vllm`` runs there as a subprocess over every task (one engine start), and the same
command runs here with the HF engine; the tests compare the two run folders. Under ``CI`` a missing vLLM
environment fails instead of skipping.

Tolerances: the two engines sum in different orders, so log-likelihoods agree to a relative :data:`REL_TOL`;
greedy texts agree except where the HF model's two best logits at the first differing token are closer than
:data:`NEAR_TIE` (each difference is printed). Measured on the 2-core CI machine (vLLM 0.32 CPU build,
``--enforce-eager``, ``--max-length 512``, 3 documents a task): worst relative difference 8.9e-08 over the
rolling log-likelihoods of 3 articles (1,000+ tokens each, several full windows), 7.1e-06 over 8 choices, greedy
generations 3/3 identical on SQuAD (prompts truncated to the window) and 3/3 on WMT22; the file takes ~2 minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from vllm_env import vllm_python as vllm_environment

from llamabench.cli.app import main

ROOT = Path(__file__).resolve().parent.parent
REL_TOL = 1e-4
NEAR_TIE = 0.05  # logits: top-1 minus top-2 of the HF model where a greedy text first differs
TASKS = "wikitext2,squad_mc,squad,wmt22-de-en"
LIMIT = "3"
# A window the texts and few-shot prompts overflow: several full rolling windows per article (vLLM fed the whole
# max_length + 1 tokens of each), and SQuAD prompts truncated on the left.
MAX_LENGTH = "512"
# SQuAD's human answers and the article's title as the choices of a multiple-choice question (label: the first
# answer): real contexts and questions for per-choice log-likelihoods.
SQUAD_MC = """\
name: squad_mc
version: 1
description: SQuAD dev questions; the choices are the human answers and the article title
kind: multiple_choice
dataset:
  local: squad_v1.1_dev/dev.jsonl
doc_id: "{{ id }}"
prompt: "{{ context }}\\n\\nQ: {{ question }}\\nA:"
choices: "{{ (answers | unique | list) + [title | replace('_', ' ')] }}"
label: "0"
metrics: [acc, acc_norm]
"""


@pytest.fixture(scope="module")
def vllm_python() -> str:
    return vllm_environment()


def _samples(folder: Path) -> dict[str, pd.DataFrame]:
    (run,) = [path for path in folder.iterdir() if path.is_dir()]
    return {task: pd.read_parquet(run / f"samples_{task}.parquet") for task in TASKS.split(",")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir, vllm_python) -> tuple[dict, dict]:
    """(HF engine samples, vLLM engine samples), each task's rows by document."""
    tmp = tmp_path_factory.mktemp("engines")
    (tmp / "tasks").mkdir()
    (tmp / "tasks" / "squad_mc.yaml").write_text(SQUAD_MC)
    common = ["run", "--tasks", TASKS, "--tasks-dir", str(tmp / "tasks"), "--limit", LIMIT, "--no-cache"]
    common += ["--data-dir", str(data_dir), "--dtype", "float32", "--max-length", MAX_LENGTH]
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "PYTHONPATH": str(ROOT)}
    command = [vllm_python, "-m", "llamabench", *common, "--engine", "vllm", "--enforce-eager"]
    done = subprocess.run(
        [*command, "--output-dir", str(tmp / "vllm")], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # A successful run closes its engine before exit: no teardown traceback (vLLM's process groups).
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert main([*common, "--device", "cpu", "--output-dir", str(tmp / "hf")]) == 0
    # The manifest names the engine that ran (the setting ``engine``: a vLLM run never stands for an HF run).
    for engine in ("hf", "vllm"):
        (folder,) = [path for path in (tmp / engine).iterdir() if path.is_dir()]
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["backend"]["engine_name"] == engine
        assert {task["settings"]["engine"] for task in manifest["tasks"].values()} == {engine}
    return _samples(tmp / "hf"), _samples(tmp / "vllm")


def _relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def test_vllm_engine_rolling_perplexity_matches_hf_engine(runs):
    hf, vllm = (side["wikitext2"] for side in runs)
    assert list(hf.n_tokens) == list(vllm.n_tokens) and min(hf.n_tokens) > 1000  # the same tokens, many windows
    worst = max(_relative(a, b) for a, b in zip(hf.loglikelihood, vllm.loglikelihood, strict=True))
    sys.stderr.write(f"rolling log-likelihood: worst relative difference {worst:.2e} over {len(hf)} articles\n")
    assert worst < REL_TOL


def test_vllm_engine_choice_loglikelihoods_match_hf_engine(runs):
    hf, vllm = ([json.loads(choices) for choices in side["squad_mc"].loglikelihood] for side in runs)
    assert [len(choices) for choices in hf] == [len(choices) for choices in vllm]
    pairs = [pair for choices in zip(hf, vllm, strict=True) for pair in zip(*choices, strict=True)]
    assert len(pairs) >= 2 * len(hf)
    worst = max(_relative(a, b) for a, b in pairs)
    sys.stderr.write(f"choice log-likelihoods: worst relative difference {worst:.2e} over {len(pairs)} choices\n")
    assert worst < REL_TOL


@pytest.mark.parametrize("task", ["squad", "wmt22-de-en"])
def test_vllm_engine_greedy_generations_match_hf_engine_but_near_ties(runs, smollm2, task):
    hf, vllm = (side[task] for side in runs)
    assert list(hf.doc_id) == list(vllm.doc_id)
    assert list(hf.truncated_tokens) == list(vllm.truncated_tokens)
    rows = zip(hf.prompt, hf.prediction, vllm.prediction, strict=True)
    differ = [(prompt, ours, theirs) for prompt, ours, theirs in rows if ours != theirs]
    for prompt, ours, theirs in differ:
        gap = _first_difference_gap(smollm2, prompt, ours, theirs)
        print(f"{task}: differs after a top-2 logit gap of {gap:.4f}: HF {ours!r} / vLLM {theirs!r}")
        assert gap < NEAR_TIE, (ours, theirs)
    print(f"{task}: {len(hf) - len(differ)} of {len(hf)} greedy generations identical")


def _first_difference_gap(backend, prompt: str, ours: str, theirs: str) -> float:
    """The HF model's top-1 minus top-2 logit where its greedy text ``ours`` stops being a prefix of ``theirs``:
    its own new tokens, teacher-forced after the prompt."""
    prompt_ids = backend.tokens.encode(prompt)
    new = backend.tokens.encode(prompt + ours)[len(prompt_ids) :]
    step = next(
        (k for k in range(len(new)) if not theirs.startswith(backend.tokenizer.decode(new[: k + 1]))), len(new) - 1
    )
    with torch.no_grad():
        logits = backend.model(torch.tensor([prompt_ids + new[:step]])).logits[0, -1]
    top = torch.topk(logits.float(), 2).values
    return float(top[0] - top[1])


def test_engine_vllm_without_vllm_names_the_install_command(capsys):
    if "vllm" in sys.modules or _importable("vllm"):
        pytest.skip("vLLM is importable in this Python")
    assert main(["run", "--tasks", "ppl", "--engine", "vllm"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bash install.sh vllm" in err


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


@pytest.mark.parametrize(
    "flag", [["--tensor-parallel-size", "2"], ["--gpu-memory-utilization", "0.5"], ["--enforce-eager"]]
)
def test_vllm_options_without_engine_vllm_are_refused_before_loading(capsys, flag):
    assert main(["run", "--tasks", "ppl", *flag]) == 2
    assert f"{flag[0]} applies to --engine vllm only" in capsys.readouterr().err
