"""Compute lm-eval's own WikiText rolling-perplexity figures for a model, offline.

Writes the same WikiText-2 test pages llamabench evaluates to a local JSONL, runs lm-eval's
HF backend with its `wikitext` task definition pointed at that file, and prints the figures
that `tests/test_real_model.py` pins.

    python bench/lm_eval_reference.py --data-dir ../shared/data [--limit N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from llamabench.backends.loading import cache_root, fingerprint, load_model_and_tokenizer, resolve_model
from llamabench.tasks.data import read_wikitext_documents

TASK_YAML = """\
task: wikitext_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data_file}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: !function hooks.wikitext_detokenizer
process_results: !function hooks.process_results
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
"""
HOOKS = "from lm_eval.tasks.wikitext.preprocess_wikitext import process_results, wikitext_detokenizer  # noqa\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--model", default=None)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--batch-size", default="1")
    args = parser.parse_args()

    import lm_eval
    from lm_eval.tasks import TaskManager

    source = resolve_model(args.model)
    load_model_and_tokenizer(source, dtype=torch.float32, device="cpu")  # builds the dense cache for GGUF
    pretrained = str(cache_root() / "dense" / fingerprint(source)) if source.gguf_file else source.location
    pages = read_wikitext_documents(args.data_dir / "wikitext2_raw_test" / "wiki.test.raw")[: args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        data_file = Path(tmp) / "pages.jsonl"
        data_file.write_text("".join(json.dumps(page) + "\n" for page in pages))
        (Path(tmp) / "wikitext_local.yaml").write_text(TASK_YAML.format(data_file=data_file))
        (Path(tmp) / "hooks.py").write_text(HOOKS)
        start = time.perf_counter()
        out = lm_eval.simple_evaluate(
            model="hf",
            model_args=f"pretrained={pretrained},dtype=float32",
            tasks=["wikitext_local"],
            task_manager=TaskManager(include_path=tmp),
            batch_size=args.batch_size,
            device="cpu",
        )
        elapsed = time.perf_counter() - start
    figures = {
        k.split(",")[0]: v for k, v in out["results"]["wikitext_local"].items() if "_stderr" not in k and "," in k
    }
    print(json.dumps({"documents": len(pages), "seconds": round(elapsed, 1), **figures}, indent=1))


if __name__ == "__main__":
    main()
