#!/usr/bin/env bash
# Wheels the lent GPU machine's image lacks for bench/vs_lm_eval.py and bench/gpu_throughput.py
# (it has torch, transformers, accelerate, pandas, sacrebleu, tokenizers; Python 3.12, x86-64, no registry).
# Fills ./.whl (git-ignored); carry it and install there with
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:.
# (~14 MB). The SmolLM2 GGUF (98 MB, incompressible) does not fit in one 64 MiB carry: send it in two
# `split -b 48M` halves over two back-to-back calls (the machine stays warm ~30 s between them), or run
# gpu_throughput.py with --model-shapes 1b,7b, which needs no weights.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir .whl
binary=(lm_eval==0.4.13 datasets==5.2.0 evaluate==0.4.6 dill multiprocess more_itertools pytablewriter DataProperty
    mbstrdecoder pathvalidate tabledata tcolorpy typepy chardet nltk gguf==0.19.0)
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl "${binary[@]}"
# Published as source only; pure Python, so a wheel built here installs there.
python3 -m pip wheel -q --no-deps -w .whl rouge-score==0.1.2 sqlitedict word2number
du -sh .whl
